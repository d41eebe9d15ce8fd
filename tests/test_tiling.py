"""Tiling: geometry, partition of unity, and equality with whole-image inference."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edge.errors import UserError
from edge.inference.backends import load_backend
from edge.inference.bundle import load_bundle
from edge.inference.tiling import WINDOWS, Tiler, convert_image
from trainer.evaluation.metrics import psnr


class Identity:
    name, precision, device = "identity", "fp32", "cpu"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def bundle(tiny_bundle_source):
    return load_bundle(tiny_bundle_source)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", [(37, 1000), (130, 130), (513, 700), (1, 5), (64, 2048)])
def test_any_size_round_trips_through_an_identity_model(window, shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = convert_image(image, Identity(), Tiler(128, 28, window=window), batch_size=3)
    assert out.shape == shape
    np.testing.assert_allclose(out, image, atol=1e-6)


@pytest.mark.parametrize("window", WINDOWS)
def test_weights_partition_unity_and_cores_start_on_the_stride_grid(window):
    tiler = Tiler(96, 20, window=window)  # overlap rounds up to 20, core 56
    plan = tiler.plan((301, 77))
    for axis, length in ((plan.rows, 301), (plan.cols, 77)):
        total = np.zeros(axis.extended)
        for start, weights in zip(axis.starts, axis.weights):
            total[start : start + tiler.core] += weights
        np.testing.assert_allclose(total[:length], 1.0, atol=1e-6)
        assert all(start % 4 == 0 for start in axis.starts)
        assert axis.extended % 4 == 0 and axis.extended >= length


def test_overlap_is_rounded_up_to_the_multiple_and_bad_settings_are_clear():
    assert Tiler(128, 26).overlap == 28
    with pytest.raises(UserError, match="window"):
        Tiler(128, 28, window="bartlett")
    with pytest.raises(UserError, match="no core"):
        Tiler(64, 32)
    with pytest.raises(UserError, match="multiple"):
        Tiler(130, 28)
    with pytest.raises(ValueError, match="2-D"):
        Tiler(128, 28).split(np.zeros((4, 4, 3), np.float32))


def _whole_image(bundle, image: np.ndarray, pad: int) -> np.ndarray:
    """One ONNX Runtime call on the whole image, reflect-padded like the tiler pads it."""
    session = ort.InferenceSession(str(bundle.model().path), providers=["CPUExecutionProvider"])
    padded = np.pad(image, pad, mode="reflect") if pad else image
    (out,) = session.run(None, {"osr": padded[None, None]})
    out = out[0, 0]
    return out[pad : pad + image.shape[0], pad : pad + image.shape[1]] if pad else out


@pytest.fixture(scope="module")
def chip_2048():
    from trainer.sim.pairs import make_pair

    return make_pair(11, size=2048)[0]


@pytest.mark.parametrize("window", ["hann", "crop"])
def test_tiled_conversion_equals_whole_image_inference_on_2048(bundle, chip_2048, window):
    backend = load_backend(bundle, threads=2)
    tiler = Tiler(256, int(bundle.io["overlap"]), window=window)
    tiled = convert_image(chip_2048, backend, tiler, batch_size=8)
    whole = _whole_image(bundle, chip_2048, tiler.overlap)
    assert psnr(tiled, whole) >= 50.0
    # Against the network's own border handling too: equal away from the image border.
    plain = _whole_image(bundle, chip_2048, 0)
    m = int(bundle.io["receptive_margin"])
    assert psnr(tiled[m:-m, m:-m], plain[m:-m, m:-m]) >= 50.0


def test_a_batch_gathered_across_two_tiles_merges_back_per_tile(bundle):
    backend = load_backend(bundle)
    tiler = Tiler(128, int(bundle.io["overlap"]))
    rng = np.random.default_rng(3)
    images = [rng.random((200, 150), dtype=np.float32), rng.random((90, 300), dtype=np.float32)]
    splits = [tiler.split(im) for im in images]
    patches = np.concatenate([p for p, _ in splits])
    outputs = np.concatenate([backend.infer(patches[i : i + 5]) for i in range(0, len(patches), 5)])
    first = len(splits[0][0])
    merged = [tiler.merge(outputs[:first], splits[0][1]), tiler.merge(outputs[first:], splits[1][1])]
    for image, out in zip(images, merged):
        np.testing.assert_allclose(out, convert_image(image, backend, tiler), atol=1e-5)
