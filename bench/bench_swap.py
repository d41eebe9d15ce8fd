"""Hot model swaps under a steady stream: tiles lost or errored, the longest gap between two
published tiles around a swap against the usual gap, and the daemon's memory after 1 and after
N swaps, each measured once the daemon has caught up with the stream (`make bench`;
bench/results/swap_<device>.json).

A real daemon process (`ssum edge run`, PULL in, PUB out) converts a steady stream of simulated
tiles from bundle A; every few seconds the symlink it serves is moved to the other bundle (B is
a copy of A under another name, so every swap loads, verifies and warms a model for real) and
`ssum edge reload` swaps it in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import itertools

from run import DaemonClient, machine, make_tiles, relative, tile_header

from edge.inference.bundle import default_bundle_path, load_bundle, write_manifest
from edge.protocol import decode_message, encode_tile
from edge.serve.config_file import build_config, to_toml
from edge.tools.supervise import NotifyListener, free_port, start_daemon, stop_daemon


def renamed_copy(bundle: Path, target: Path, name: str) -> Path:
    shutil.copytree(bundle, target)
    manifest = dict(load_bundle(target, verify=False).manifest)
    write_manifest(target, {**manifest, "name": name})
    return target


def rss_floor(pid: int, seconds: float) -> int:
    """The least RSS of `pid` sampled every 0.2 s for `seconds` (at least one sample)."""
    least, end = rss_bytes(pid), time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.2)
        least = min(least, rss_bytes(pid))
    return least


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Stream:
    """A steady stream of tiles into the daemon (bench/run.py's client), every answer kept."""

    def __init__(self, ports: dict[str, int], tiles: list[np.ndarray], rate_hz: float) -> None:
        self.client = DaemonClient(ports)
        self.push, self.sub = self.client.push, self.client.sub
        self.tiles, self.rate_hz = tiles, rate_hz
        self.stop = threading.Event()
        self.sent = 0
        self.received: list[tuple[float, str, str]] = []  # (time, kind, model)
        time.sleep(0.5)
        self.threads = [threading.Thread(target=self._send), threading.Thread(target=self._receive)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            time.sleep(max(0.0, start + self.sent / self.rate_hz - time.monotonic()))
            header = tile_header("swap-bench", self.sent, self.tiles[0].shape[1])
            self.push.send_multipart(encode_tile(header, self.tiles[self.sent % len(self.tiles)]))
            self.sent += 1

    def _receive(self) -> None:
        while self.sub.poll(60000):
            message = decode_message(self.sub.recv_multipart())
            self.received.append((time.monotonic(), message.kind,
                                  str(message.header.get("model", ""))))
            if self.stop.is_set() and len(self.received) >= self.sent:
                return

    def drained(self, timeout_s: float) -> bool:
        """Wait until every tile sent so far came back (the daemon kept up)."""
        target, deadline = self.sent, time.monotonic() + timeout_s
        while len(self.received) < target and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.received) >= target

    def finish(self) -> None:
        self.drained(120)
        self.stop.set()
        for thread in self.threads:
            thread.join(120)
        self.client.close()


def reload(config: Path) -> tuple[int, float, str]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ssum", "edge", "reload", "--config",
                           str(config)], capture_output=True, text=True, check=False)
    return done.returncode, time.monotonic() - start, (done.stdout + done.stderr).strip()


def gaps_around(received: list[tuple[float, str, str]], swaps_at: list[tuple[float, float]]
                ) -> tuple[list[float], list[float]]:
    """Gaps between consecutive published tiles: those during a reload, and all the others."""
    times = [t for t, kind, _ in received if kind == "sem"]
    during: list[float] = []
    other: list[float] = []
    for a, b in itertools.pairwise(times):
        in_swap = any(start <= b and a <= end for start, end in swaps_at)
        (during if in_swap else other).append(b - a)
    return during, other


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="bundle A (default: shipped)")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between swaps")
    parser.add_argument("--rate", type=float, default=0.5, help="tiles per second")
    parser.add_argument("--tile", type=int, default=256, help="tile size in px")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/swap_cpu.json")
    args = parser.parse_args(argv)

    bundle = Path(args.bundle or default_bundle_path()).resolve()
    with tempfile.TemporaryDirectory(prefix="ssum-swap-") as tmp:
        root = Path(tmp)
        targets = [bundle, renamed_copy(bundle, root / "b", load_bundle(bundle).name + "-b")]
        current = root / "current"
        current.symlink_to(targets[0])
        ports = {name: free_port() for name in ("input", "output", "metrics")}
        config = root / "edge.toml"
        config.write_text(to_toml(build_config({
            "input": {"socket": "pull", "endpoint": f"tcp://127.0.0.1:{ports['input']}"},
            "output": {"endpoint": f"tcp://127.0.0.1:{ports['output']}"},
            "model": {"bundle": str(current), "threads": args.threads},
            "metrics": {"port": ports["metrics"]}, "log": {"level": "WARNING"}}, "bench")))
        notify = NotifyListener(root)
        daemon = start_daemon(config, notify, root / "daemon.log")
        stream = Stream(ports, make_tiles(4, args.tile, seed=424242), args.rate)
        reloads, memory, floors = [], [], []
        try:
            time.sleep(args.every)
            for k in range(1, args.swaps + 1):
                link = root / "next"
                link.symlink_to(targets[k % 2])
                link.replace(current)
                start = time.monotonic()
                code, seconds, said = reload(config)
                reloads.append({"code": code, "seconds": seconds, "said": said,
                                "window": (start, time.monotonic()),
                                "caught_up": stream.drained(60)})
                memory.append(rss_bytes(daemon.pid))
                floors.append(rss_floor(daemon.pid, max(0.0, args.every - seconds)))
        finally:
            stream.finish()
            exit_code = stop_daemon(daemon)
            notify.close()
            log_tail = (root / "daemon.log").read_text()[-2000:]
    during, other = gaps_around(stream.received, [r["window"] for r in reloads])
    kinds = [kind for _, kind, _ in stream.received]
    models = [model for _, kind, model in stream.received if kind == "sem"]
    switches = sum(a != b for a, b in itertools.pairwise(models))
    result: dict[str, Any] = {
        "benchmark": "hot_swap", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/bench_swap.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(), "bundle": relative(bundle), "tile_px": args.tile,
        "rate_hz": args.rate, "swaps": args.swaps, "reload_exit_codes": [r["code"] for r in reloads],
        "reload_seconds": [round(r["seconds"], 2) for r in reloads],
        "reload_failures": [r["said"] for r in reloads if r["code"] != 0],
        "caught_up_after_each_swap": [r["caught_up"] for r in reloads],
        "tiles_sent": stream.sent, "tiles_converted": kinds.count("sem"),
        "tiles_errored": kinds.count("error"), "tiles_lost": stream.sent - len(kinds),
        "model_switches_in_headers": switches,
        "longest_gap_during_swap_s": max(during, default=0.0),
        "median_gap_otherwise_s": float(np.median(other)) if other else 0.0,
        "longest_gap_otherwise_s": max(other, default=0.0),
        "rss_after_first_swap_bytes": memory[0] if memory else 0,
        "rss_after_last_swap_bytes": memory[-1] if memory else 0,
        "rss_after_each_swap_bytes": memory,
        "rss_floor_after_each_swap_bytes": floors,
        "rss_floor_note": "the least RSS sampled every 0.2 s until the next swap: the memory the "
                          "daemon holds between conversions (a sample right after a tile can "
                          "catch ONNX Runtime's working memory of that conversion)",
        "daemon_exit_code": exit_code,
    }
    if exit_code != 0:
        print(f"the daemon exited with {exit_code}; its log ends:\n{log_tail}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.swaps} swaps: exit codes {set(result['reload_exit_codes'])}, reload "
          f"{np.median(result['reload_seconds']):.1f} s median; {stream.sent} tiles sent, "
          f"{result['tiles_converted']} converted, {result['tiles_errored']} errored, "
          f"{result['tiles_lost']} lost; {switches} model switches in the headers")
    print(f"gaps between published tiles: longest during a swap "
          f"{result['longest_gap_during_swap_s']:.2f} s, otherwise median "
          f"{result['median_gap_otherwise_s']:.2f} s, longest {result['longest_gap_otherwise_s']:.2f} s")
    print(f"daemon RSS after swap 1: {result['rss_after_first_swap_bytes'] / 2**20:.0f} MiB, after "
          f"swap {args.swaps}: {result['rss_after_last_swap_bytes'] / 2**20:.0f} MiB; settled "
          f"(least until the next swap) {floors[0] / 2**20:.0f} and {floors[-1] / 2**20:.0f} MiB")
    print(f"wrote {relative(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
