"""Stops systemd can wait for, and failures systemd can see: a `ssum edge run` process whose
consumer is stuck exits within its drain deadline with honest counters and exit code 3; a
process whose stage dies exits 1; a configuration the machine cannot hold is refused at start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zmq
from helpers import daemon_toml, raw_tiles, tile_header, wait_for

from edge.protocol import encode_tile
from edge.tools.supervise import NotifyListener, free_port, scrape
from ssum.cli import main

pytestmark = pytest.mark.timeout(120)
DRAIN_S = 2.0


def stop_line(log: str) -> tuple[int, ...]:
    match = re.search(r"stopped: received (\d+), published (\d+), rejected (\d+), dropped (\d+), "
                      r"in flight (\d+)", log)
    assert match, log
    return tuple(map(int, match.groups()))


def test_sigterm_with_a_stuck_push_output_exits_within_the_drain_deadline(tmp_path, ctx,
                                                                           tiny_bundle):
    """A PUSH output nobody pulls from: nothing can be delivered."""
    config, ports = daemon_toml(
        tmp_path / "edge.toml", tiny_bundle,
        output={"socket": "push", "endpoint": f"tcp://127.0.0.1:{free_port()}", "mode": "bind",
                "hwm": 1},
        queues={"capacity": 4}, shutdown={"drain_timeout_s": DRAIN_S})
    notify = NotifyListener(tmp_path)
    log_path = tmp_path / "daemon.log"
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), PYTHONUNBUFFERED="1")
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ssum", "edge", "run", "--config",
                                 str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    push = ctx.socket(zmq.PUSH)
    push.sndtimeo = 100
    push.connect(f"tcp://127.0.0.1:{ports['input']}")
    try:
        notify.wait_ready(proc, 60)
        sent = 0
        for seq, raw in enumerate(raw_tiles(40)):
            try:
                push.send_multipart(encode_tile(tile_header("stuck", seq), raw))
                sent += 1
            except zmq.Again:
                break
        wait_for(lambda: scrape(ports["metrics"]).get("ssum_edge_tiles_received_total", 0) >= 8,
                 30, "the daemon to take tiles")
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
        push.close(linger=0)
    text = log_path.read_text()
    received, published, rejected, dropped, in_flight = stop_line(text)
    assert code == 3, text
    assert took < DRAIN_S + 5.0 + 3.0, (took, text)  # the deadline, the abort wait, start-up slack
    assert received >= 8 and in_flight == 0 and rejected == 0
    assert published == 0 and dropped == received, text


def test_a_stage_that_dies_stops_the_process_with_exit_code_1(tmp_path):
    """The daemon's own main loop (run_daemon) with a converter whose blend raises what no
    stage catches, as a bug would."""
    config, ports = daemon_toml(tmp_path / "edge.toml", Path("unused"))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from helpers import fake_converter
        from edge.serve.config_file import load_config
        from edge.serve.daemon import run_daemon

        class Bug(BaseException):
            pass

        def merge(outputs, plan):
            raise Bug("a bug in a stage")

        converter = fake_converter(32)
        converter.tiler.merge = merge
        sys.exit(run_daemon(load_config({str(config)!r}), converter))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{ports['input']}")
    try:
        wait_for(lambda: "ssum_edge_tiles_received_total" in scrape(ports["metrics"]), 30,
                 "the daemon's metrics")
        push.send_multipart(encode_tile(tile_header("bug", 0), raw_tiles(1, 32)[0]))
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        context.destroy(linger=0)
    assert proc.returncode == 1, output
    assert "the blend stage died" in output and "a bug in a stage" in output


@pytest.mark.parametrize(("section", "text", "key"), [
    ("tiling", "max_pixels = 1000000000000", "[tiling] max_pixels = 1000000000000"),
    ("queues", "capacity = 1000000", "[queues] capacity = 1000000"),
])
def test_a_configuration_beyond_this_machines_memory_is_one_line(tmp_path, capsys, tiny_bundle,
                                                                 section, text, key):
    config = tmp_path / "edge.toml"
    config.write_text(f'[model]\nbundle = "{tiny_bundle}"\n[metrics]\nenabled = false\n'
                      f"[{section}]\n{text}\n")
    assert main(["edge", "run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert key in err and "GiB" in err and "Traceback" not in err
