"""The live view (`ssum view`): the page, its state and mosaics, fed by real ZeroMQ streams; and
the page in a real headless Chromium, filling in as tiles are published."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
import zmq
from helpers import endpoint, tile_header, wait_for

from edge.protocol import encode_result, encode_scan_end, encode_tile, encode_trust
from edge.tools.view import ViewServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TILE = 96


def tiles(n: int = 4) -> list[tuple[dict, np.ndarray]]:
    """A 2x2 scan of 96 px tiles, 80 px apart (stage positions at 10 nm/px)."""
    rng = np.random.default_rng(3)
    out = []
    for seq in range(n):
        header = {**tile_header("live", seq, columns=2), "x_nm": 800.0 * (seq % 2),
                  "y_nm": 800.0 * (seq // 2), "width": TILE, "height": TILE, "dtype": "uint8"}
        out.append((header, rng.integers(0, 256, (TILE, TILE), dtype=np.uint8)))
    return out


def publish(pub: zmq.Socket, rig: zmq.Socket | None, scan: list[tuple[dict, np.ndarray]]) -> None:
    for header, image in scan:
        if rig is not None:
            rig.send_multipart(encode_tile(header, image))
        converted = (255 - image).astype(np.float32) / 255
        pub.send_multipart(encode_result({**header, "v": 1}, converted,
                                         {"model": "m", "latency_ms": {"total": 100.0 + header["seq"]}}))
        trust_map = np.array([[0.2, 1.0], [1.0, 1.0]], np.float32)  # the top-left block low
        pub.send_multipart(encode_trust(header, trust_map, 0.8))
    pub.send_multipart(encode_scan_end("live", {"n_tiles": len(scan)}))


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


@pytest.fixture()
def streams(ctx):
    daemon_out, rig_out = endpoint(), endpoint()
    pub, rig = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
    pub.bind(daemon_out)
    rig.bind(rig_out)
    server = ViewServer(daemon_out, rig_out, port=0)
    time.sleep(0.5)  # the view's subscriptions reach both publishers
    yield server, pub, rig
    server.close()
    pub.close(linger=0)
    rig.close(linger=0)


def test_the_view_shows_the_scan_as_it_arrives(streams):
    server, pub, rig = streams
    assert get(server.url + "mosaic/converted.png")[0] == 204  # nothing yet
    publish(pub, rig, tiles())
    wait_for(lambda: json.loads(get(server.url + "state.json")[1])["complete"], 10, "the scan")
    state = json.loads(get(server.url + "state.json")[1])
    assert state["scan_id"] == "live"
    assert state["tiles"] == {"converted": 4, "input": 4, "trust": 4}
    assert state["latency_ms"]["p50"] == pytest.approx(101.5)
    for layer, expected in (("converted", 255 - tiles()[0][1]), ("input", tiles()[0][1])):
        status, png = get(server.url + f"mosaic/{layer}.png")
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert status == 200 and image.shape == (176, 176)  # 80 + 96 px each way
        assert np.abs(image[:70, :70].astype(int) - expected[:70, :70]).max() <= 1
    status, png = get(server.url + "mosaic/trust.png")
    trust = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert status == 200 and trust.shape == (176, 176)  # the maps at the tiles' positions
    assert abs(int(trust[10, 10]) - 51) <= 1 and trust[60, 60] == 255  # 0.2, then 1.0
    with pytest.raises(urllib.error.HTTPError):
        get(server.url + "mosaic/bogus.png")
    assert b"ssum-edge live view" in get(server.url)[1]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package "
                    "chromium; .ci/prepare installs it)")
def test_the_page_fills_in_in_a_real_browser(streams, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    server, pub, rig = streams
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(server.url)
            assert "no scan yet" in page.inner_text("#scan")
            publish(pub, rig, tiles())
            page.wait_for_function("document.getElementById('counts').textContent"
                                   ".includes('4 trust maps')", timeout=15000)
            page.wait_for_function("document.getElementById('mosaic').naturalWidth > 0",
                                   timeout=15000)
            assert "complete" in page.inner_text("#scan")
            page.click("#b-trust")
            page.wait_for_function("document.getElementById('mosaic').src.includes('trust')",
                                   timeout=15000)
            page.click("#b-input")
            page.wait_for_function("document.getElementById('mosaic').src.includes('input')",
                                   timeout=15000)
            shot = page.screenshot(path=str(tmp_path / "view.png"))
        finally:
            browser.close()
    picture = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert picture.std() > 10  # not blank: text, buttons and the mosaic are drawn
