"""The trust score's parts through their public interfaces: the one statistics function (the
same at export and in serving), the excess rule, the cycle with known reverse renderings, the
bundle's reverse generator and statistics (sha256, signature), the trust/ message, `ssum
convert`'s trust files, `ssum consume`'s trust maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from tiny_bundle import TRUST_PAIRS, TRUST_SEED, TRUST_SIZE

from edge.errors import UserError
from edge.imaging.imageio import list_images, read_image, to_uint16
from edge.imaging.statistics import noise_std, radial_power_spectrum, spectrum_metrics
from edge.inference.bundle import load_bundle
from edge.inference.converter import Converter, ConverterSettings
from edge.inference.signing import SIGNATURE, generate_signing_keypair
from edge.inference.trust import (
    FEATURES,
    Envelope,
    TrainingStatistics,
    TrustJudge,
    TrustSettings,
    block_grid,
    cut_blocks,
    input_statistics,
)
from edge.protocol import decode_message, encode_result, encode_trust
from edge.tools.consume import Consumer
from ssum.cli import main
from trainer.sim.pairs import make_pair, write_pairs

SCENES = [make_pair(seed, 256)[0] for seed in (11, 12, 13, 14, 15, 16)]


def test_the_statistics_of_a_stack_are_those_of_each_image():
    stack = np.stack(SCENES[:3])
    freqs, power = radial_power_spectrum(stack)
    each = [radial_power_spectrum(image)[1] for image in stack]
    np.testing.assert_allclose(power, np.stack(each), rtol=1e-12)
    slopes = spectrum_metrics(freqs, power)["spectrum_slope"]
    assert slopes == pytest.approx([spectrum_metrics(freqs, p)["spectrum_slope"] for p in each])
    assert noise_std(stack) == pytest.approx([noise_std(image) for image in stack])
    np.testing.assert_allclose(input_statistics(stack),
                               np.stack([input_statistics(image) for image in stack]))
    assert input_statistics(stack).shape == (3, len(FEATURES))


def test_blocks_cover_the_image_in_equal_shares():
    assert block_grid((512, 512)) == (8, 8) and block_grid((100, 20)) == (2, 1)
    image = np.arange(130 * 97, dtype=np.float64).reshape(130, 97)
    blocks = cut_blocks(image, block_grid(image.shape))
    assert blocks.shape == (4, 65, 48)
    assert blocks[0, 0, 0] == image[0, 0] and blocks[-1, -1, -1] == image[-1, -1]


def test_the_excess_counts_half_ranges_beyond_the_training_range():
    envelope = Envelope.of(np.arange(101, dtype=np.float64)[:, None])  # p1 1, p50 50, p99 99
    values = np.array([[50.0], [99.0], [148.0], [-48.0]])
    assert envelope.excess(values)[:, 0] == pytest.approx([0, 0, 1, 1])
    assert envelope.excess(values, upper_only=True)[:, 0] == pytest.approx([0, 0, 1, 0])


def test_the_statistics_recorded_at_export_are_the_serving_ones(trusted_bundle_source,
                                                                tmp_path):
    """The manifest's envelope is that of input_statistics over the training images, and the
    converter measures a tile with the same function."""
    pairs = write_pairs(tmp_path / "pairs", TRUST_PAIRS, TRUST_SEED, TRUST_SIZE)
    images = [read_image(path) for path in list_images(pairs / "osr")]
    trust = load_bundle(trusted_bundle_source).manifest["trust"]
    recorded = TrainingStatistics.from_manifest(trust)
    assert recorded.tile == Envelope.of(np.stack([input_statistics(x) for x in images]))
    assert recorded.images == TRUST_PAIRS and trust["source"]["cycle"] is True
    settings = ConverterSettings(threads=1, trust=True)
    with Converter.from_bundle(trusted_bundle_source, settings) as converter:
        measured = converter.measure(to_uint16(images[0]))
    np.testing.assert_allclose(measured.features, input_statistics(images[0]), atol=1e-4)


def _rendering(gain: float = 1.0, wrong_block: bool = False):
    """A reverse generator: the negative of its input (times `gain`) with errors of its own that
    vary from tile to tile, as a real one renders; with wrong_block its top-left 64 px block (of
    16) is flat grey."""
    rng = np.random.default_rng(0)

    def render(sem: np.ndarray) -> np.ndarray:
        error = rng.normal(0.0, rng.uniform(0.005, 0.02), sem.shape)
        out = gain * (1.0 - sem + error)
        if wrong_block:
            out[:64, :64] = 0.5
        return out

    return render


def _judge(reverse) -> TrustJudge:
    """A judge trained on SCENES[:4], converted by negation and rendered back by `reverse`."""
    measuring = TrustJudge(None, reverse)
    training = [measuring.measure(x, x, 1.0 - x) for x in SCENES[:4]]
    return TrustJudge(TrainingStatistics.of(training), reverse)


def test_a_faithful_cycle_scores_1_and_a_wrong_block_shows_in_the_map():
    judge = _judge(_rendering())
    tile = SCENES[4]
    faithful = TrustJudge(judge.statistics, _rendering(gain=0.7)).judge(tile, tile, 1.0 - tile)
    assert faithful.components["cycle"] == pytest.approx(1.0, abs=0.05)  # the fit takes the gain
    assert faithful.map is not None and faithful.map.shape == (4, 4)
    wrong = TrustJudge(judge.statistics, _rendering(wrong_block=True)).judge(tile, tile,
                                                                            1.0 - tile)
    assert wrong.components["cycle"] < 0.1 and wrong.score < faithful.score / 5
    assert wrong.map is not None and wrong.map[0, 0] < 1e-3
    assert np.median(wrong.map) > 0.5 * np.median(faithful.map), wrong.map


def test_an_inverted_rendering_is_not_fitted_away():
    judge = _judge(_rendering())
    tile = SCENES[5]
    inverted = TrustJudge(judge.statistics, _rendering(gain=-1.0))
    assert inverted.judge(tile, tile, 1.0 - tile).components["cycle"] < 0.05
    assert judge.judge(tile, tile, 1.0 - tile, with_map=False).map is None


def test_trust_settings_are_checked_and_nth_judges_one_in_n():
    assert [TrustSettings("nth", 3).due(i) for i in range(7)] == [1, 0, 0, 1, 0, 0, 1]
    assert all(TrustSettings().due(i) for i in range(5))
    assert not any(TrustSettings("off").due(i) for i in range(5))
    with pytest.raises(UserError, match="trust mode must be one of every, nth, off"):
        TrustSettings("sometimes")
    with pytest.raises(UserError, match="every_n must be a positive integer"):
        TrustSettings("nth", 0)


def test_the_reverse_generator_is_pinned_by_its_sha256(trusted_bundle):
    bundle = load_bundle(trusted_bundle)
    assert bundle.reverse is not None and bundle.reverse.entry["direction"] == "sem->osr"
    assert bundle.reverse.path.name not in {m.path.name for m in bundle.models()}
    with bundle.reverse.path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match="reverse.onnx does not match its sha256"):
        load_bundle(trusted_bundle)


def test_recording_statistics_drops_a_signature_and_signing_again_restores_it(
        trusted_bundle, tmp_path, capsys):
    _, secret = generate_signing_keypair(tmp_path / "keys", "release")
    keys = str(tmp_path / "keys")
    assert main(["bundle", "sign", str(trusted_bundle), "--key", str(secret)]) == 0
    assert main(["bundle", "verify", str(trusted_bundle), "--trusted", keys]) == 0
    pairs = write_pairs(tmp_path / "other", 4, 77, 96)
    assert main(["bundle", "stats", str(trusted_bundle), "--data", str(pairs)]) == 0
    out = capsys.readouterr().out
    assert "trust statistics of 4 images" in out and "signature was removed" in out
    assert not (trusted_bundle / SIGNATURE).exists()
    assert main(["bundle", "verify", str(trusted_bundle), "--trusted", keys]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert main(["bundle", "sign", str(trusted_bundle), "--key", str(secret)]) == 0
    assert main(["bundle", "verify", str(trusted_bundle), "--trusted", keys]) == 0
    assert load_bundle(trusted_bundle).manifest["trust"]["images"] == 4


def test_a_stats_folder_without_pairs_is_a_one_line_error(trusted_bundle, tmp_path, capsys):
    assert main(["bundle", "stats", str(trusted_bundle), "--data", str(tmp_path)]) == 2
    assert "expected the folders osr/ and sem/" in capsys.readouterr().err


def test_the_trust_message_decodes_with_the_block_size_as_its_pixel_size():
    header = {"v": 1, "scan_id": "s1", "seq": 3, "row": 0, "col": 3, "x_nm": 1.0, "y_nm": 2.0,
              "pixel_size_nm": 10.0, "width": 512, "height": 256, "dtype": "uint16",
              "t_capture": 5.0}
    trust_map = np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8)
    message = decode_message(encode_trust(header, trust_map, 0.8123456))
    assert (message.kind, message.scan_id, message.header["seq"]) == ("trust", "s1", 3)
    np.testing.assert_array_equal(message.image, trust_map)
    assert message.header["pixel_size_nm"] == 640.0 and message.header["score"] == 0.8123
    assert (message.header["tile_width"], message.header["tile_height"]) == (512, 256)


def test_consume_saves_trust_maps_and_sums_up_the_scores(tmp_path):
    consumer = Consumer(tmp_path, mosaic=False, refine=False)
    for seq, score in enumerate((0.9, 0.2)):
        header = {"v": 1, "scan_id": "s1", "seq": seq, "row": 0, "col": seq, "x_nm": 0.0,
                  "y_nm": 0.0, "pixel_size_nm": 10.0, "width": 64, "height": 64,
                  "dtype": "uint16", "t_capture": 1.0}
        consumer.handle(encode_result(header, np.zeros((64, 64), np.float32),
                                      {"trust": {"score": score}}))
        consumer.handle(encode_trust(header, np.full((1, 1), score, np.float32), score))
    consumer.finish(consumer.collector("s1"), {"n_tiles": 2})
    saved = tifffile.imread(tmp_path / "s1" / "trust" / "r000_c001.tif")
    assert saved.dtype == np.float32 and saved[0, 0] == pytest.approx(0.2)
    summary = json.loads((tmp_path / "s1" / "summary.json").read_text())
    assert summary["trust_maps"] == 2
    assert summary["trust"] == {"n": 2, "mean": pytest.approx(0.55), "min": 0.2, "low": 1,
                                "low_below": 0.5}


def test_convert_writes_the_trust_beside_each_output(trusted_bundle_source, tiny_bundle_source,
                                                     tmp_path, capsys):
    tifffile.imwrite(tmp_path / "in.tif", to_uint16(SCENES[0]))
    out = tmp_path / "out"
    assert main(["convert", "--bundle", str(trusted_bundle_source), "--out", str(out),
                 "--threads", "1", str(tmp_path / "in.tif")]) == 0
    record = json.loads((out / "in.trust.json").read_text())
    assert 0 <= record["score"] <= 1 and set(record["components"]) == {"stats", "cycle"}
    assert record["map"] == [4, 4] and record["block_px"] == 64
    assert tifffile.imread(out / "in.trust.tif").shape == (4, 4)
    assert f"trust {record['score']:.2f}" in capsys.readouterr().out
    for bundle, flag, name in ((trusted_bundle_source, "--no-trust", "a"),
                               (tiny_bundle_source, "--no-trust-map", "b")):
        assert main(["convert", "--bundle", str(bundle), "--out", str(tmp_path / name),
                     flag, str(tmp_path / "in.tif")]) == 0
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["in.tif"]
    assert main(["convert", "--bundle", str(trusted_bundle_source), "--out",
                 str(tmp_path / "c"), "--no-trust-map", str(tmp_path / "in.tif")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["in.tif", "in.trust.json"]
