"""The trust score through a real daemon (the trusted tiny bundle: a reverse generator and the
trust statistics of simulated pairs; sockets on 127.0.0.1): lower on out-of-domain tiles than on
in-domain ones, in the header, as a trust/ map message after its tile, in the histogram; the
[trust] mode and map keys decide which tiles are judged and what is published."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import zmq
from helpers import endpoint, tile_header
from prometheus_client.parser import text_string_to_metric_families
from tiny_bundle import TRUST_SIZE

from edge.imaging.imageio import to_uint16
from edge.protocol import encode_tile
from edge.serve.config_file import build_config
from edge.serve.daemon import Daemon
from edge.tools.supervise import fetch_metrics
from trainer.sim.pairs import make_pair

pytestmark = pytest.mark.timeout(120)
SEEDS = (5000, 5001, 5002)  # not among the bundle's training pairs (tiny_bundle.TRUST_SEED)


def in_domain() -> list[np.ndarray]:
    return [make_pair(seed, TRUST_SIZE)[0] for seed in SEEDS]


def out_of_domain(tiles: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Heavily blurred, noisy and contrast-inverted versions of in-domain tiles."""
    rng = np.random.default_rng(3)
    noisy = tiles[1] + rng.normal(0.0, 0.05, tiles[1].shape)
    return {"blurred": cv2.GaussianBlur(tiles[0], (0, 0), 2.0),
            "noisy": np.clip(noisy, 0.0, 1.0).astype(np.float32),
            "inverted": 1.0 - tiles[2]}


def start_daemon(bundle, **trust: object) -> tuple[Daemon, str, str]:
    rig, out = endpoint(), endpoint()
    sections = {"input": {"socket": "pull", "endpoint": rig}, "output": {"endpoint": out},
                "metrics": {"port": 0}, "model": {"bundle": str(bundle), "threads": 1}}
    if trust:
        sections["trust"] = trust
    daemon = Daemon(build_config(sections, "test"))
    daemon.start()
    return daemon, rig, out


def send(ctx: zmq.Context, rig: str, images: list[np.ndarray], scan_id: str) -> None:
    push = ctx.socket(zmq.PUSH)
    push.connect(rig)
    for seq, image in enumerate(images):
        push.send_multipart(encode_tile(tile_header(scan_id, seq), to_uint16(image)))
    push.send_multipart([f"scan-end/{scan_id}".encode(),
                         f'{{"v": 1, "scan_id": "{scan_id}", "n_tiles": {len(images)}}}'.encode(),
                         b""])
    push.close(linger=2000)


def trust_histogram(port: int) -> dict[str, float]:
    """The ssum_edge_trust_score samples served over HTTP: "count", "sum" and each bucket's le."""
    out = {}
    for family in text_string_to_metric_families(fetch_metrics(port)):
        for sample in family.samples:
            if sample.name.startswith("ssum_edge_trust_score"):
                out[sample.labels.get("le") or sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def received(consumer, ctx, rig, images, scan_id="trust"):
    time.sleep(0.5)  # the consumer's subscription reaches the daemon's PUB
    send(ctx, rig, images, scan_id)
    consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
    return consumer.messages


def test_out_of_domain_tiles_get_a_lower_trust_than_in_domain_ones(trusted_bundle, ctx,
                                                                   collector):
    daemon, rig, out = start_daemon(trusted_bundle)
    try:
        tiles = in_domain()
        odd = out_of_domain(tiles)
        messages = received(collector(out), ctx, rig, tiles + list(odd.values()))
        histogram = trust_histogram(daemon.metrics_port)
    finally:
        daemon.stop()
    kinds = [m.kind for m in messages]
    assert kinds == ["sem", "trust"] * 6 + ["scan-end"], kinds
    sem, maps = messages[0:-1:2], messages[1:-1:2]
    scores = [m.header["trust"]["score"] for m in sem]
    for tile, trust_map in zip(sem, maps, strict=True):
        header = tile.header["trust"]
        assert set(header["components"]) == {"stats", "cycle"}
        assert header["score"] == pytest.approx(np.prod(list(header["components"].values())),
                                                abs=1e-3)
        assert header["map"] == [2, 2] and trust_map.image.shape == (2, 2)
        assert trust_map.image.dtype == np.float32 and 0 <= trust_map.image.min() <= 1
        assert trust_map.header["seq"] == tile.header["seq"]
        assert trust_map.header["score"] == header["score"]
        assert "trust" in tile.header["latency_ms"]
    inside, outside = scores[:3], dict(zip(odd, scores[3:], strict=True))
    assert min(inside) > 0.5, scores
    assert max(outside.values()) < min(inside) / 2, (inside, outside)
    assert sem[3].header["trust"]["outlier"] == "log10_noise"  # a blur smooths the noise away
    assert histogram["count"] == 6 and histogram["0.5"] == 3


@pytest.mark.parametrize(("trust", "judged", "maps"), [
    ({"mode": "off"}, [], 0),
    ({"mode": "nth", "every_n": 3, "map": False}, [0, 3, 6], 0),
    ({"mode": "nth", "every_n": 3}, [0, 3, 6], 3),
], ids=["off", "nth-no-map", "nth"])
def test_the_mode_decides_which_tiles_are_judged(trusted_bundle, ctx, collector, trust,
                                                 judged, maps):
    daemon, rig, out = start_daemon(trusted_bundle, **trust)
    try:
        tiles = [in_domain()[0]] * 7
        messages = received(collector(out), ctx, rig, tiles)
        count = trust_histogram(daemon.metrics_port)["count"]
    finally:
        daemon.stop()
    sem = [m for m in messages if m.kind == "sem"]
    assert len(sem) == 7
    assert [m.header["seq"] for m in sem if "trust" in m.header] == judged
    assert [m.header["seq"] for m in messages if m.kind == "trust"] == judged[:maps]
    assert count == len(judged)
