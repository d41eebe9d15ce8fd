"""`ssum calibrate`: INT8 Q/DQ and FP16 variants, the quality gate, and serving the INT8 variant."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
import zmq
from onnx import numpy_helper
from tiny_bundle import make_tiny_bundle

from edge.inference.backends import load_backend
from edge.inference.bundle import load_bundle
from edge.protocol import decode_message, encode_tile
from edge.tools.supervise import NotifyListener, free_port, start_daemon, stop_daemon
from ssum.cli import main
from trainer.evaluation.metrics import psnr


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from trainer.sim.pairs import write_pairs

    return write_pairs(tmp_path_factory.mktemp("calib") / "pairs", n=6, seed=77, size=128)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, pairs):
    bundle = make_tiny_bundle(tmp_path_factory.mktemp("calibrated") / "bundle")
    code = main(["calibrate", "--bundle", str(bundle), "--data", str(pairs), "--holdout", "2",
                 "--calib-patches", "8", "--method", "max", "--threshold-db", "3", "--threads", "1"])
    assert code == 0
    return bundle


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def test_int8_is_symmetric_qdq_with_first_and_last_conv_in_float(calibrated):
    model = onnx.load(str(calibrated / "generator.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = _initializer(model, node.input[2])
            assert zero is not None and zero.dtype == np.int8 and not zero.any()
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in (convs[0], convs[-1]):
        assert producers[conv.input[0]].op_type != "DequantizeLinear"
        weight = conv.input[1]
        assert weight not in producers or producers[weight].op_type != "DequantizeLinear"
    assert any(producers.get(c.input[0]) is not None
               and producers[c.input[0]].op_type == "DequantizeLinear" for c in convs[1:-1])
    tanh_input = next(n for n in model.graph.node if n.op_type == "Tanh").input[0]
    assert producers[tanh_input].op_type != "DequantizeLinear"


def test_passing_variants_are_added_with_their_figures(calibrated):
    bundle = load_bundle(calibrated)  # sha256 of every file verified
    int8, fp16 = bundle.model("onnx", "int8"), bundle.model("onnx", "fp16")
    report = json.loads((calibrated / "calibration.json").read_text())
    for entry, name in ((int8, "int8"), (fp16, "fp16")):
        quality = entry.entry["quality"]
        assert quality["passed"] and quality["psnr_loss_db"] <= 3
        assert report["variants"][name]["psnr_loss_db"] == pytest.approx(quality["psnr_loss_db"], abs=1e-3)
    assert report["fp32"]["psnr_sem_db"] > 0 and len(report["settings"]["holdout"]) == 2
    assert fp16.entry["quality"]["psnr_fp32_db"] > 50  # fp16 rounding only


def test_int8_and_fp16_run_in_onnxruntime_close_to_fp32(calibrated):
    bundle = load_bundle(calibrated)
    batch = np.random.default_rng(1).random((2, 1, 128, 128), dtype=np.float32)
    reference = load_backend(bundle).infer(batch)
    for precision, floor in (("int8", 25.0), ("fp16", 50.0)):
        backend = load_backend(bundle, "onnxruntime", precision)
        assert backend.precision == precision
        out = np.clip(backend.infer(batch), 0, 1).reshape(-1, 128)
        assert psnr(out, np.clip(reference, 0, 1).reshape(-1, 128)) > floor


def test_the_gate_excludes_sensitive_convs_until_it_passes(tmp_path, pairs, monkeypatch):
    from calibration import gate

    real_verdict = gate.verdict
    seen: list[int] = []

    def strict(fp32, variant, threshold_db):  # passes only once two convs are kept in float
        result = real_verdict(fp32, variant, threshold_db)
        result["passed"] = len(seen) >= 1
        seen.append(1)
        return result

    monkeypatch.setattr(gate, "verdict", strict)
    bundle = make_tiny_bundle(tmp_path / "bundle")
    assert main(["calibrate", "--bundle", str(bundle), "--data", str(pairs), "--precisions", "int8",
                 "--holdout", "2", "--calib-patches", "4", "--method", "max"]) == 0
    entry = load_bundle(bundle).model("onnx", "int8").entry
    rounds = entry["calibration"]["rounds"]
    assert [r["passed"] for r in rounds] == [False, True]
    assert len(rounds[1]["excluded"]) == 2 == len(entry["calibration"]["excluded_convs"])


def test_a_variant_that_never_passes_is_abandoned_and_not_added(tmp_path, pairs, monkeypatch, capsys):
    from calibration import gate

    real_verdict = gate.verdict
    monkeypatch.setattr(gate, "verdict", lambda f, v, t: {**real_verdict(f, v, t), "passed": False})
    bundle = make_tiny_bundle(tmp_path / "bundle")
    assert main(["calibrate", "--bundle", str(bundle), "--data", str(pairs), "--precisions", "int8",
                 "--holdout", "2", "--calib-patches", "4", "--method", "max"]) == 0
    assert "FAILED, not added" in capsys.readouterr().out
    assert not (bundle / "generator.int8.onnx").exists()
    assert [m.precision for m in load_bundle(bundle).models()] == ["fp32"] * 3  # no int8
    report = json.loads((bundle / "calibration.json").read_text())
    assert report["variants"]["int8"]["passed"] is False
    assert len(report["variants"]["int8"]["calibration"]["rounds"]) > 2


def test_bad_arguments_are_one_line_errors(tmp_path, capsys, calibrated):
    assert main(["calibrate", "--bundle", str(calibrated), "--data", str(tmp_path),
                 "--precisions", "int4"]) == 2
    assert main(["calibrate", "--bundle", str(calibrated), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "int4" in err and "osr" in err and "Traceback" not in err


def test_the_daemon_serves_the_int8_variant_end_to_end(tmp_path, calibrated):
    ports = {k: free_port() for k in ("input", "output", "metrics")}
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[input]\nsocket = "pull"\nendpoint = "tcp://127.0.0.1:{ports["input"]}"\nmode = "bind"\n'
        f'[output]\nsocket = "pub"\nendpoint = "tcp://127.0.0.1:{ports["output"]}"\n'
        f'[model]\nbundle = "{calibrated}"\nprecision = "int8"\nthreads = 1\n'
        f'[metrics]\nport = {ports["metrics"]}\n')
    notify = NotifyListener(tmp_path)
    daemon = start_daemon(config, notify, tmp_path / "daemon.log")
    context = zmq.Context()
    try:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"sem/")
        sub.connect(f"tcp://127.0.0.1:{ports['output']}")
        push = context.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{ports['input']}")
        time.sleep(0.5)
        tile = np.random.default_rng(2).integers(0, 65535, (96, 160), dtype=np.uint16)
        header = {"scan_id": "q8", "seq": 0, "row": 0, "col": 0, "x_nm": 0.0, "y_nm": 0.0,
                  "pixel_size_nm": 10.0, "t_capture": 0.0}
        push.send_multipart(encode_tile(header, tile))
        assert sub.poll(60000), (tmp_path / "daemon.log").read_text()
        message = decode_message(sub.recv_multipart())
        assert message.header["precision"] == "int8" and message.header["backend"] == "onnxruntime"
        assert message.image.shape == tile.shape and message.image.dtype == np.uint16
    finally:
        context.destroy(linger=0)
        assert stop_daemon(daemon) == 0
        notify.close()
