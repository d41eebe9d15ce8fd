"""A replayed z-stack scan through a real daemon (tiny bundle, sockets on 127.0.0.1): one
converted tile and one height map per position, every plane counted, an incomplete stack
fused on its timeout and counted."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq
from helpers import endpoint, wait_for

from edge.protocol import encode_tile
from edge.serve.config_file import build_config
from edge.serve.daemon import Daemon
from edge.tools.rig import replay_scan
from edge.tools.scanfile import read_scan
from edge.tools.supervise import scrape
from trainer.sim.scan import simulate_scan

pytestmark = pytest.mark.timeout(120)
PLANES = 3


@pytest.fixture()
def daemon(tiny_bundle):
    rig, out = endpoint(), endpoint()
    config = build_config({"input": {"socket": "pull", "endpoint": rig},
                           "output": {"endpoint": out}, "metrics": {"port": 0},
                           "model": {"bundle": str(tiny_bundle), "threads": 1},
                           "stacks": {"timeout_s": 0.5}}, "test")
    running = Daemon(config)
    running.start()
    yield running, rig, out
    running.stop()


def test_a_replayed_stacked_scan_is_fused_converted_and_counted(tmp_path, ctx, collector,
                                                                daemon):
    running, rig, out = daemon
    scan = simulate_scan(tmp_path / "scan", rows=1, cols=2, tile=64, overlap=8, seed=7,
                         planes=PLANES, multilayer=True)
    consumer = collector(out)
    time.sleep(0.5)  # the consumer's subscription reaches the daemon's PUB
    replay_scan(scan, rig, socket="push", bind=False, timeout_s=30, context=ctx)
    consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
    kinds = [m.kind for m in consumer.messages]
    assert kinds == ["sem", "height", "sem", "height", "scan-end"], kinds
    z_nm = [t.z_nm for t in read_scan(scan).tiles[:PLANES]]
    for sem, height in zip(consumer.kinds("sem"), consumer.kinds("height"), strict=True):
        assert sem.header["stack"]["complete"] and sem.header["stack"]["z_nm"] == z_nm
        assert sem.image.shape == (64, 64) and height.image.shape == (64, 64)
        assert (height.header["row"], height.header["col"]) == (sem.header["row"],
                                                                sem.header["col"])
        assert set(np.unique(height.image)) <= {np.float32(z) for z in z_nm}
    end = consumer.messages[-1].header
    assert (end["n_tiles"], end["converted"], end["stacks"]) == (2 * PLANES, 2 * PLANES, 2)
    metrics = scrape(running.metrics_port)
    assert metrics["ssum_edge_tiles_received_total"] == 2 * PLANES
    assert metrics["ssum_edge_tiles_published_total"] == 2 * PLANES
    assert metrics["ssum_edge_stacks_fused_total"] == 2


def test_an_incomplete_stack_is_fused_on_its_timeout_and_counted(ctx, collector, daemon):
    running, rig, out = daemon
    consumer = collector(out)
    push = ctx.socket(zmq.PUSH)
    push.connect(rig)
    time.sleep(0.5)
    image = np.random.default_rng(0).integers(0, 65536, (32, 32)).astype(np.uint16)
    for seq, z_nm in enumerate((0.0, 300.0)):  # 2 of 3 planes
        header = {"scan_id": "part", "seq": seq, "row": 0, "col": 0, "x_nm": 0.0, "y_nm": 0.0,
                  "pixel_size_nm": 10.0, "t_capture": time.time(), "z_nm": z_nm,
                  "stack_size": 3}
        push.send_multipart(encode_tile(header, image))
    consumer.wait_for(lambda ms: any(m.kind == "sem" for m in ms), timeout_s=30)
    stack = consumer.kinds("sem")[0].header["stack"]
    assert (stack["planes"], stack["complete"], stack["incomplete"]) == (2, False, "timeout")
    value = running.metrics.counter_value
    wait_for(lambda: value("tiles_published") == 2, 10, "both planes published")
    assert value("stacks_incomplete", reason="timeout") == 1 and value("stacks_fused") == 1
    assert running.metrics.registry.get_sample_value("ssum_edge_open_stacks") == 0
    push.close(linger=0)
