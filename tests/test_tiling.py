"""Tiling: the patch planner's coverage and waste, partition of unity, and equality with
whole-image inference, the border rule included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.errors import UserError
from edge.inference.backends import load_backend
from edge.inference.backends.base import BoundedBackend
from edge.inference.bundle import load_bundle
from edge.inference.converter import Converter, ConverterSettings
from edge.inference.planner import patches_needed
from edge.inference.tiling import WINDOWS, Tiler, convert_image
from trainer.evaluation.metrics import psnr

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default"
FIT_PIXELS = {"fixed": 0, "fit": 2**14}  # 2**14 px per patch: several patches per test image
EXACT_DB = 100.0  # equal up to float rounding (measured: 150-170 dB, or identical)


class Identity:
    name, precision, device = "identity", "fp32", "cpu"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        return batch.copy()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def bundle(tiny_bundle_source):
    return load_bundle(tiny_bundle_source)


@pytest.mark.parametrize("mode", FIT_PIXELS)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", [(37, 1000), (130, 130), (513, 700), (1, 5), (64, 2048)])
def test_any_size_round_trips_through_an_identity_model(window, shape, mode):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    tiler = Tiler(128, 28, window=window, fit_pixels=FIT_PIXELS[mode])
    out = convert_image(image, Identity(), tiler, batch_size=3)
    assert out.shape == shape
    np.testing.assert_allclose(out, image, atol=1e-6)


def _coverage(axis) -> tuple[np.ndarray, np.ndarray]:
    """Per px of the extended axis: the sum of the weights, and how many patches keep it."""
    total, count = np.zeros(axis.extended), np.zeros(axis.extended, dtype=int)
    for (lo, hi), weights in zip(axis.spans, axis.weights):
        total[lo:hi] += weights
        count[lo:hi] += 1
    return total, count


@pytest.mark.parametrize("mode", FIT_PIXELS)
@pytest.mark.parametrize("window", WINDOWS)
def test_every_pixel_is_covered_and_blended_only_where_patches_overlap(window, mode):
    tiler = Tiler(96, 20, window=window, fit_pixels=FIT_PIXELS[mode])
    for shape in ((301, 77), (1000, 130), (9, 400)):
        plan = tiler.plan(shape)
        for axis, length in ((plan.rows, shape[0]), (plan.cols, shape[1])):
            total, count = _coverage(axis)
            assert count.min() >= 1
            np.testing.assert_allclose(total, 1.0, atol=1e-6)
            for (lo, hi), weights in zip(axis.spans, axis.weights):
                assert np.all(weights[count[lo:hi] == 1] == 1.0)
            assert axis.patch % 4 == 0 and all(start % 4 == 0 for start in axis.starts)
            assert axis.extended % 4 == 0 and axis.extended >= length
            assert axis.starts[0] == 0 and axis.starts[-1] + axis.patch == axis.extended
            last = len(axis.starts) - 1
            for i, ((lo, hi), start) in enumerate(zip(axis.spans, axis.starts)):
                assert lo == (0 if i == 0 else start + tiler.overlap)
                assert hi == (axis.extended if i == last else start + axis.patch - tiler.overlap)


def _executed(extended: int, patch: int, context: int) -> int | None:
    """Pixels that patches of this length execute along an axis (None: they keep nothing)."""
    if patch < extended and patch - 2 * context < 4:
        return None
    return patches_needed(extended, patch, context) * patch


@pytest.mark.parametrize("shape, bound", [((1000, 130), 2**14), ((600, 600), 2**17),
                                          ((300, 1000), 3 * 2**14)])
def test_fit_executes_no_more_than_any_grid_of_equal_patches_under_the_bound(shape, bound):
    tiler = Tiler(128, 28, fit_pixels=bound)
    assert tiler.plan((100, 120)).patch_shape == (100, 120)  # the whole image: one patch
    plan = tiler.plan(shape)
    assert plan.patch_shape[0] * plan.patch_shape[1] <= bound and plan.n_patches > 1
    extended = [-(-side // 4) * 4 for side in shape]
    best = None
    for py in range(8, extended[0] + 1, 4):
        for px in range(8, extended[1] + 1, 4):
            ey, ex = _executed(extended[0], py, 28), _executed(extended[1], px, 28)
            if py * px <= bound and ey and ex and (best is None or ey * ex < best):
                best = ey * ex
    assert plan.rows.executed * plan.cols.executed == best


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
    with pytest.raises(UserError, match="more pixels per patch"):
        Tiler(128, 28, fit_pixels=56 * 56).plan((500, 500))


@pytest.fixture(scope="module")
def shipped_converter():
    with Converter.from_bundle(SHIPPED, ConverterSettings(threads=1)) as converter:
        yield converter


@pytest.mark.parametrize("shape, target", [((512, 512), 1.3), ((2048, 2048), 1.15)])
def test_the_shipped_bundle_executes_few_pixels_more_than_the_image(shipped_converter, shape,
                                                                     target):
    io = load_bundle(SHIPPED).io
    tiler = shipped_converter.tiler
    assert tiler.mode == "fit" and tiler.overlap == -(-int(io["receptive_margin"]) // 4) * 4
    assert tiler.plan(shape).executed_ratio <= target
    assert tiler.plan((512, 512)).n_patches == 1  # a rig tile: one patch of the tile itself


def test_several_patches_of_a_2048_image_stay_within_the_target(shipped_converter):
    margin = int(load_bundle(SHIPPED).io["receptive_margin"])
    tiler = Tiler(512, margin, fit_pixels=5 * 2**19)  # 2048 x 2048 does not fit one patch
    plan = tiler.plan((2048, 2048))
    assert plan.n_patches == 2 and plan.executed_ratio <= 1.15
    fixed = Tiler(512, margin).plan((512, 512))  # TensorRT's fixed patch: a tile is one patch
    assert fixed.n_patches == 1 and fixed.executed_ratio == 1.0


def test_the_context_is_the_receptive_margin_the_bundle_measured(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest["io"]["receptive_margin"] = 37
    (tiny_bundle / "manifest.json").write_text(json.dumps(manifest))
    with Converter.from_bundle(tiny_bundle, ConverterSettings(threads=1)) as converter:
        assert converter.tiler.overlap == 40 and converter.tiler.mode == "fit"
    for settings, patch in ((ConverterSettings(threads=1, patching="fixed"), 128),
                            (ConverterSettings(threads=1, patch_size=96), 96)):
        with Converter.from_bundle(tiny_bundle, settings) as converter:
            assert converter.tiler.mode == "fixed" and converter.tiler.patch_size == patch


def _whole_image(bundle, image: np.ndarray) -> np.ndarray:
    """One ONNX Runtime call on the whole image: the network's own border handling (extended
    to the stride multiple by reflection, as the network requires)."""
    session = ort.InferenceSession(str(bundle.model().path), providers=["CPUExecutionProvider"])
    h, w = image.shape
    padded = np.pad(image, ((0, -h % 4), (0, -w % 4)), mode="reflect")
    (out,) = session.run(None, {"osr": padded[None, None]})
    return out[0, 0, :h, :w]


def _border(shape: tuple[int, int], margin: int) -> np.ndarray:
    mask = np.ones(shape, dtype=bool)
    mask[margin:-margin, margin:-margin] = False
    return mask


@pytest.fixture(scope="module")
def chip_2048():
    from trainer.sim.pairs import make_pair

    return make_pair(11, size=2050)[0][:2047, :2050]  # neither side a multiple of 4


@pytest.fixture(scope="module")
def whole_2048(bundle, chip_2048):
    return _whole_image(bundle, chip_2048)


@pytest.mark.parametrize("mode, window", [("fixed", "hann"), ("fixed", "crop"), ("fit", "hann"),
                                          ("fit", "crop")])
def test_tiled_conversion_equals_whole_image_inference_borders_included(bundle, chip_2048,
                                                                        whole_2048, mode, window):
    margin = int(bundle.io["receptive_margin"])
    tiler = Tiler(256, margin, window=window, fit_pixels={"fixed": 0, "fit": 2**18}[mode])
    assert tiler.plan(chip_2048.shape).n_patches >= 9  # seams inside and patches at every edge
    tiled = convert_image(chip_2048, load_backend(bundle, threads=2), tiler, batch_size=8)
    border = _border(chip_2048.shape, margin)
    assert psnr(tiled, whole_2048) >= EXACT_DB
    assert psnr(tiled[~border][None], whole_2048[~border][None]) >= EXACT_DB
    assert psnr(tiled[border][None], whole_2048[border][None]) >= EXACT_DB


def test_fixed_patches_larger_than_the_image_differ_only_near_its_far_edges(bundle):
    """The one case the border rule cannot hold: a fixed patch larger than the image is padded
    beyond the image (reflect), where whole-image inference has the network's own padding."""
    image = np.random.default_rng(5).random((100, 90), dtype=np.float32)
    margin = int(bundle.io["receptive_margin"])
    tiled = convert_image(image, load_backend(bundle), Tiler(128, margin))
    whole = _whole_image(bundle, image)
    near = (slice(0, 100 - margin), slice(0, 90 - margin))
    assert psnr(tiled[near], whole[near]) >= EXACT_DB
    assert psnr(tiled, whole) < EXACT_DB


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


def test_fit_patches_of_equal_tiles_batch_together_and_merge_back_per_tile(bundle):
    """The daemon batches patches of several tiles: tiles of one shape give patches of one
    shape (tiles of different shapes do not: docs/conversion.md)."""
    backend = load_backend(bundle)
    tiler = Tiler(128, int(bundle.io["overlap"]), fit_pixels=2**14)
    images = list(np.random.default_rng(4).random((3, 300, 170), dtype=np.float32))
    splits = [tiler.split(im) for im in images]
    assert len({p.shape[1:] for p, _ in splits}) == 1 and len(splits[0][0]) > 1
    outputs = backend.infer(np.concatenate([p for p, _ in splits]))
    n = len(splits[0][0])
    for k, (image, (_, plan)) in enumerate(zip(images, splits)):
        np.testing.assert_allclose(tiler.merge(outputs[k * n : (k + 1) * n], plan),
                                   convert_image(image, backend, tiler), atol=1e-5)
    assert tiler.plan((300, 190)).patch_shape != tiler.plan((300, 170)).patch_shape


def test_a_bounded_backend_splits_calls_by_pixels_and_keeps_the_order():
    inner = Identity()
    bounded = BoundedBackend(inner, max_pixels=3 * 64 * 64)
    batch = np.random.default_rng(1).random((8, 1, 64, 64), dtype=np.float32)
    np.testing.assert_array_equal(bounded.infer(batch), batch)
    bounded.infer(np.zeros((2, 1, 128, 128), np.float32))  # a patch above the bound runs alone
    assert inner.sizes == [3, 3, 2, 1, 1]
    assert (bounded.name, bounded.precision, bounded.device) == ("identity", "fp32", "cpu")
