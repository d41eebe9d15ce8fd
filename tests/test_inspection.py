"""Inspection's parts through their public functions: the threshold rule, the tolerant
difference, the three references, classes, merging across tiles, KLARF and defect messages."""

from __future__ import annotations

import math

import cv2
import gdstk
import numpy as np
import pytest

from edge.inspection.classify import classify, patterns
from edge.inspection.components import Region
from edge.inspection.confirm import ConfirmedInspector
from edge.inspection.database import LayoutRaster, read_layout
from edge.inspection.detect import compare
from edge.inspection.features import missing_features
from edge.inspection.inspector import Inspector
from edge.inspection.klarf import KlarfSample, read_klarf, write_klarf
from edge.inspection.merge import covered_area, merge
from edge.inspection.records import Defect
from edge.inspection.reference import detect_pitch, golden, place
from edge.inspection.settings import InspectionSettings
from edge.inspection.threshold import tail_threshold
from edge.protocol import decode_message, encode_defect
from trainer.sim.inspection import make_case

PIXEL_NM = 10.0


def pattern(size: int = 192, pitch: int = 24, width: int = 10) -> np.ndarray:
    """Vertical lines, as a boolean mask."""
    mask = np.zeros((size, size), bool)
    for x in range(4, size, pitch):
        mask[:, x:x + width] = True
    return mask


def render(mask: np.ndarray, seed: int, noise: float = 0.02) -> np.ndarray:
    """A blurred, noisy bright-on-dark image of a mask."""
    image = cv2.GaussianBlur(0.2 + 0.5 * mask.astype(np.float32), (0, 0), 1.0)
    return np.clip(image + np.random.default_rng(seed).normal(0, noise, mask.shape), 0, 1
                   ).astype(np.float32)


def blob(mask: np.ndarray, x: int, y: int, r: int, value: bool = True) -> np.ndarray:
    out = mask.copy().astype(np.uint8)
    cv2.circle(out, (x, y), r, int(value), -1)
    return out.astype(bool)


def test_the_threshold_is_the_false_alarm_rate_of_an_exponential_tail():
    values = np.random.default_rng(0).exponential(2.0, 200_000)
    for rate in (1e-4, 1e-6):
        assert tail_threshold(values, rate) == pytest.approx(-2.0 * math.log(rate), rel=0.1)
    assert tail_threshold(np.zeros(1000), 1e-6) is None


def test_noise_and_a_sub_pixel_shift_give_no_detection_a_defect_does():
    mask = pattern()
    reference = render(mask, 1)
    shifted = cv2.warpAffine(render(mask, 2), np.float32([[1, 0, 0.6], [0, 1, -0.4]]),
                             mask.shape[::-1], borderMode=cv2.BORDER_REFLECT)
    valid = np.ones(mask.shape, bool)
    settings = InspectionSettings(border_px=4)
    assert compare(shifted, reference, valid, PIXEL_NM, settings).regions == []
    found = compare(render(blob(mask, 92, 90, 3), 2), reference, valid, PIXEL_NM, settings)
    assert len(found.regions) == 1 and found.regions[0].polarity == "extra"
    assert found.regions[0].x == pytest.approx(92, abs=1.0)


def test_scan_line_jitter_is_not_a_defect_and_a_long_wire_makes_no_streak():
    mask = pattern()
    valid = np.ones(mask.shape, bool)
    settings = InspectionSettings(border_px=4)
    jitter = np.random.default_rng(15).normal(0, 0.1, (mask.shape[0], 1)).astype(np.float32)
    spot = cv2.circle(np.zeros(mask.shape, np.float32), (92, 90), 3, 0.1, -1)
    image = render(mask, 16) + jitter + spot  # a faint spot under an SEM's scan-line streaks
    found = compare(image, render(mask, 17), valid, PIXEL_NM, settings).regions
    assert [(round(r.x), round(r.y)) for r in found] == [(92, 90)]
    wire = np.zeros(mask.shape, bool)
    wire[:120, 100:110] = True  # one line brighter over most of its columns' height
    image = render(mask, 18) + 0.3 * cv2.GaussianBlur(wire.astype(np.float32), (0, 0), 1.0)
    found = compare(image, render(mask, 19), valid, PIXEL_NM, settings).regions
    assert found and all(r.bbox[3] <= 124 and 96 <= r.x <= 114 for r in found)


def test_a_golden_reference_is_placed_by_stage_then_registered():
    mask = np.kron(np.random.default_rng(3).random((12, 12)) > 0.5, np.ones((16, 16))) > 0
    reference = render(mask, 4)
    big = np.pad(reference, 40, mode="reflect")
    image = render(blob(mask, 60, 130, 4, not mask[130, 60]), 5)
    inspector = Inspector("golden", InspectionSettings(border_px=4), reference=big,
                          origin_nm=(-400.0 + 53.0, -400.0 - 37.0))
    found = inspector.inspect(image, PIXEL_NM)
    assert found.reference.shift == pytest.approx((40, 40), abs=0.3)  # not the stage's
    assert [(d.x_px, d.y_px) for d in found.defects] == [pytest.approx((60, 130), abs=1.5)]
    assert found.defects[0].polarity == ("missing" if mask[130, 60] else "extra")
    assert found.defects[0].x_nm == pytest.approx(600, abs=15)


def test_a_placed_reference_keeps_every_row_and_column_it_covers():
    reference = render(pattern(), 14)
    placed, valid = place(reference, (0.0, 0.0), reference.shape)
    assert valid.all() and np.array_equal(placed, reference)
    expected = np.ones(reference.shape, bool)
    expected[:3, :] = expected[:, -2:] = False  # the reference starts 3 rows down, 2 px left
    assert np.array_equal(place(reference, (2.0, -3.0), reference.shape)[1], expected)
    expected = np.ones(reference.shape, bool)
    expected[:, -1] = False  # half a pixel beyond the reference's last column
    assert np.array_equal(place(reference, (0.5, 0.0), reference.shape)[1], expected)


def test_golden_registration_stays_within_its_search_range_on_a_repeating_pattern():
    case = make_case(3, size=192)  # its SEM pair's phase correlation locks 82 px off
    shift = golden(case.inspected["sem"], case.reference["sem"]).shift
    assert max(abs(shift[0]), abs(shift[1])) <= 192 / 4


def test_cell_to_cell_finds_the_pitch_and_a_defect_without_ghosts():
    cell = np.random.default_rng(6).random((4, 4)) > 0.4
    die = np.kron(cell, np.ones((9, 9)))
    mask = np.tile(die, (6, 6)) > 0
    image = render(blob(mask, 80, 70, 3, not mask[70, 80]), 7)
    assert detect_pitch(image, 1) == pytest.approx(36, abs=0.2)
    found = Inspector("cell", InspectionSettings(border_px=2)).inspect(image, PIXEL_NM)
    assert [(d.x_px, d.y_px) for d in found.defects] == [pytest.approx((80, 70), abs=1.5)]


def test_the_pitch_is_found_through_fall_off_and_noise_and_not_along_lines():
    cell = np.random.default_rng(8).random((4, 4)) > 0.4
    mask = np.tile(np.kron(cell, np.ones((9, 9))), (7, 7)) > 0
    y, x = np.mgrid[0:252, 0:252] / 252.0
    falloff = 1.0 - 0.6 * ((x - 0.3) ** 2 + (y - 0.6) ** 2)
    image = render(mask, 9, noise=0.08) * falloff.astype(np.float32)
    assert detect_pitch(image, 1) == pytest.approx(36, abs=0.1)
    assert detect_pitch(image, 0) == pytest.approx(36, abs=0.1)
    lines = render(pattern(), 10)
    assert detect_pitch(lines, 1) == pytest.approx(24, abs=0.1)
    assert detect_pitch(lines, 0) is None  # no change along the lines: no pitch to compare by
    assert detect_pitch(render(np.random.default_rng(11).random((192, 192)) > 0.5, 12), 1) is None


def test_cell_to_cell_judges_up_to_the_border_when_one_axis_repeats():
    mask = pattern()
    image = render(blob(mask, 9, 100, 3, not mask[100, 9]), 13)
    found = Inspector("cell", InspectionSettings(border_px=2)).inspect(image, PIXEL_NM)
    assert found.reference.pitch[1] is None and found.reference.valid[2:-2, 2:-2].all()
    assert [(d.x_px, d.y_px) for d in found.defects] == [pytest.approx((9, 100), abs=1.5)]


def test_a_converted_detection_is_kept_only_where_the_raw_image_differs_too():
    """Two defects in the 'converted' image; the raw optical one shows only the real one (the
    other is detail the model painted). A golden pair each, the raw one blurrier."""
    mask = pattern()
    real = blob(mask, 60, 90, 4, not mask[90, 60])
    converted_ref, converted = render(mask, 1), render(blob(real, 140, 100, 4, True), 2)

    def optical(m: np.ndarray, seed: int) -> np.ndarray:
        return cv2.GaussianBlur(render(m, seed, 0.01), (0, 0), 2.0)

    settings = InspectionSettings(border_px=4)
    alone = Inspector("golden", settings, reference=converted_ref)
    assert len(alone.inspect(converted, PIXEL_NM).defects) == 2
    both = ConfirmedInspector(alone, Inspector("golden", settings, reference=optical(mask, 3)))
    found = both.inspect(converted, optical(real, 4), PIXEL_NM)
    assert [(d.id, d.x_px, d.y_px) for d in found.defects] == [
        (1, pytest.approx(60, abs=1.5), pytest.approx(90, abs=1.5))]
    assert both.inspect(converted, optical(mask, 4), PIXEL_NM).defects == []


@pytest.mark.parametrize("source", ["raster", "gds"])
def test_die_to_database_from_a_raster_or_gdsii(tmp_path, source):
    mask = pattern(160)
    if source == "gds":
        library = gdstk.Library(unit=1e-9)
        top = library.new_cell("TOP")
        for x in range(4, 160, 24):  # lines of 10 px at 10 nm: 100 nm wide, in nm units
            top.add(gdstk.rectangle((x * 10, 0), (x * 10 + 100, 1600), layer=1))
        top.add(gdstk.rectangle((0, 0), (5, 5), layer=2))
        library.write_gds(tmp_path / "chip.gds")
        layout = read_layout(tmp_path / "chip.gds", PIXEL_NM, layer=1)
        assert layout.pattern.shape == (161, 155) and layout.origin_nm == (40.0, 0.0)
    else:
        cv2.imwrite(str(tmp_path / "chip.png"), mask.astype(np.uint8) * 255)
        layout = read_layout(tmp_path / "chip.png", PIXEL_NM)
    broken = mask.copy()
    broken[60:66, 28:38] = False  # an open in the second line
    found = Inspector("database", InspectionSettings(border_px=4), layout=layout).inspect(
        render(broken, 8), PIXEL_NM, (0.0, 0.0))
    assert [(d.defect_class, d.x_px, d.y_px) for d in found.defects] == \
        [("open", pytest.approx(32.5, abs=1), pytest.approx(62.5, abs=1))]


def test_die_to_database_renders_an_isolated_wire_unlike_a_dense_array():
    mask = np.zeros((256, 256), bool)
    for x in [*range(4, 100, 16), *range(160, 248, 16)]:
        mask[:, x:x + 8] = True  # dense arrays either side
    wire = np.zeros(mask.shape, bool)
    wire[:, 128:136] = True  # an isolated wire between them, drawn brighter
    image = render(blob(mask | wire, 40, 100, 3, not mask[100, 40]), 20) + \
        0.2 * cv2.GaussianBlur(wire.astype(np.float32), (0, 0), 1.0)
    found = Inspector("database", InspectionSettings(border_px=4),
                      layout=LayoutRaster(mask | wire, PIXEL_NM)).inspect(image, PIXEL_NM)
    assert [(d.x_px, d.y_px) for d in found.defects] == [pytest.approx((40, 100), abs=1.5)]


def _region(mask: np.ndarray, polarity: str) -> Region:
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Region(box, mask[box[1]:box[3], box[0]:box[2]], polarity, 5.0,
                  float(xs.mean()), float(ys.mean()))


@pytest.mark.parametrize(("name", "expected"), [
    ("bridge", "bridge"), ("cut", "open"), ("particle", "particle"),
    ("contact", "missing_contact"), ("new contact", "extra_contact"), ("bump", "particle")])
def test_rough_classes_and_polarity(name, expected):
    reference = pattern(120)
    reference[:, 50:90] = False
    for y in range(10, 110, 20):
        reference[y:y + 6, 60:66] = True  # a column of contacts
    image = reference.copy()
    if name == "bridge":
        image[40:44, 14:28] = True
    elif name == "cut":
        image[40:46, 28:38] = False
    elif name == "particle":
        image[60:70, 76:84] = True
    elif name == "contact":
        image[50:56, 60:66] = False
    elif name == "new contact":
        image[40:46, 74:80] = True
    else:
        image[60:64, 38:41] = True
    changed = image != reference
    found = patterns(render(image, 9, 0.0), render(reference, 9, 0.0),
                     np.ones(reference.shape, bool))
    polarity = "extra" if (image & changed).any() else "missing"
    assert classify(_region(changed, "extra"), found) == (expected, polarity)


def _detection(x0: int, y0: int, w: int, h: int, tile: int, origin: tuple[float, float]) -> Defect:
    mask = np.ones((h, w), bool)
    return Defect(x0 + w / 2, y0 + h / 2, (x0, y0, x0 + w, y0 + h), mask, "extra", "particle",
                  3.0, PIXEL_NM, origin, tiles=[tile], thumbnail=np.zeros((8, 8), np.uint8))


def test_defects_cut_by_a_tile_border_or_seen_twice_merge_once():
    parts = [_detection(120, 40, 8, 6, 0, (0.0, 0.0)),   # cut by tile 0's right border
             _detection(0, 41, 5, 6, 1, (1280.0, 0.0)),  # its other half in tile 1
             _detection(50, 50, 4, 4, 1, (1280.0, 0.0)),  # elsewhere
             _detection(70, 50, 4, 4, 0, (0.0, 0.0)),
             _detection(70, 50, 4, 4, 2, (1.5, 0.5))]    # the same one seen by tile 2
    merged = merge(parts, gap_nm=30.0)
    assert [(d.id, d.tiles, d.bbox_nm) for d in merged] == [
        (1, [0, 1], (1200.0, 400.0, 1330.0, 470.0)), (2, [0, 2], (700.0, 500.0, 740.0, 540.0)),
        (3, [1], (1780.0, 500.0, 1820.0, 540.0))]
    assert merged[0].area_px == 8 * 6 + 5 * 6
    assert covered_area([(0, 0, 10, 10), (5, 0, 15, 10)]) == 150


def test_klarf_round_trip_and_a_foreign_file(tmp_path):
    defects = merge([_detection(120, 40, 8, 6, 0, (0.0, 0.0)),
                     _detection(10, 10, 4, 4, 0, (5000.0, 0.0))], 30.0)
    sample = KlarfSample("scan-1", 2.5e7, (5000.0, 5000.0))
    files = write_klarf(tmp_path / "scan-1.klarf", defects, sample)
    assert [f.name for f in files] == ["scan-1.klarf", "scan-1.klarf.json", "scan-1.defects.tif"]
    klarf = read_klarf(files[0])
    assert klarf["records"]["TiffFileName"] == ["scan-1.defects.tif"]
    assert [(d["DEFECTID"], d["XINDEX"], d["IMAGELIST"]) for d in klarf["defects"]] == \
        [(1, 1, [(1, 0)]), (2, 0, [(2, 0)])]
    assert klarf["defects"][0]["XREL"] == pytest.approx(0.115, abs=1e-3)  # um
    assert klarf["defects"][1]["XREL"] == pytest.approx(1.235, abs=1e-3)
    assert klarf["summary"] == [{"TESTNO": 1, "NDEFECT": 2, "DEFDENSITY": pytest.approx(8e6),
                                 "NDIE": 1, "NDEFDIE": 2}]
    assert klarf["classes"][1] == "particle"
    foreign = tmp_path / "foreign.klarf"
    foreign.write_text('FileVersion 1 8;\nDefectRecordSpec 4 DEFECTID XREL IMAGECOUNT IMAGELIST;\n'
                       'DefectList\n 7 1.5 2 2\n 10 0\n 11 1\n 8 2.5 0 0;\nSummarySpec 2 TESTNO'
                       ' NDEFECT;\nSummaryList\n 1 2;\nEndOfFile;\n')
    assert read_klarf(foreign)["defects"] == [
        {"DEFECTID": 7, "XREL": 1.5, "IMAGECOUNT": 2, "IMAGELIST": [(10, 0), (11, 1)]},
        {"DEFECTID": 8, "XREL": 2.5, "IMAGECOUNT": 0, "IMAGELIST": []}]


def test_a_defect_message_round_trips_with_its_thumbnail():
    thumb = np.arange(64, dtype=np.uint8).reshape(8, 8)
    message = decode_message(encode_defect("s1", {"id": 1, "class": "open"}, thumb))
    assert message.kind == "defect" and message.header["class"] == "open"
    assert np.array_equal(message.image, thumb)
    assert decode_message(encode_defect("s1", {"id": 2}, None)).image is None


def test_layout_raster_resampling_keeps_coverage():
    layout = LayoutRaster(pattern(100), 5.0)
    assert layout.at_pixel_size(10.0).shape == (50, 50)
    assert layout.at_pixel_size(10.0).mean() == pytest.approx(layout.pattern.mean(), abs=0.01)


def _contact_array(gains: np.ndarray, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 12 x 12 array of 8 px contacts (layout mask) and its image, each contact drawn with
    its own gain (0 = missing)."""
    mask, canvas = np.zeros((256, 256), bool), np.zeros((256, 256), np.float32)
    corners = [(x, y) for y in range(22, 226, 18) for x in range(22, 226, 18)]
    for (x, y), gain in zip(corners, gains):
        mask[y:y + 8, x:x + 8] = True
        canvas[y:y + 8, x:x + 8] = gain
    image = cv2.GaussianBlur(0.2 + 0.5 * canvas, (0, 0), 1.0)
    image += np.random.default_rng(seed).normal(0, noise, image.shape)
    return mask, np.clip(image, 0, 1).astype(np.float32)


def test_a_missing_contact_is_found_against_its_neighbours_where_contacts_are_drawn_dim():
    xs = np.tile(np.arange(22, 226, 18), 12)
    gains = (0.3 + 0.7 * xs / 256) * np.random.default_rng(3).uniform(0.8, 1.2, xs.size)
    gains[[13, 130]] = 0  # one where the contacts are dim, one where they are bright
    mask, image = _contact_array(gains, 0.02, 4)
    found = Inspector("database", InspectionSettings(), layout=LayoutRaster(mask, PIXEL_NM)
                      ).inspect(image, PIXEL_NM)
    assert sorted((d.defect_class, d.x_px, d.y_px) for d in found.defects) == \
        [("missing_contact", pytest.approx(44.5, abs=1), pytest.approx(44.5, abs=1)),
         ("missing_contact", pytest.approx(205.5, abs=1), pytest.approx(205.5, abs=1))]


def test_contacts_that_noise_hides_are_not_reported_missing():
    gains = np.full(144, 0.06)  # a contrast of 0.03 under noise of 0.05
    mask, image = _contact_array(gains, 0.05, 5)
    judged = np.ones(mask.shape, bool)
    assert missing_features(image, mask, judged, 30, 1e-10) == []
    mask, image = _contact_array(np.where(np.arange(144) == 40, 0, 1.0), 0.02, 5)
    assert [(r.x, r.y) for r in missing_features(image, mask, judged, 30, 1e-10)] == \
        [(pytest.approx(97.5), pytest.approx(79.5))]


def test_a_missing_contact_is_judged_against_alike_neighbours_however_far_they_lie():
    mask, gain = np.zeros((512, 512), bool), np.zeros((512, 512), np.float32)
    for y in range(20, 490, 20):  # dense large pads on the right: the nearest shapes, unlike
        for x in range(270, 490, 20):
            mask[y:y + 10, x:x + 10] = True
            gain[y:y + 10, x:x + 10] = 1.0
    for number, (y, x) in enumerate((y, x) for y in range(30, 480, 120) for x in (30, 150)):
        mask[y:y + 4, x:x + 4] = True  # sparse small contacts on the left, 120 px apart
        gain[y:y + 4, x:x + 4] = 0.0 if number == 5 else 1.0
    image = cv2.GaussianBlur(0.2 + 0.5 * gain, (0, 0), 1.0)
    image += np.random.default_rng(8).normal(0, 0.01, image.shape).astype(np.float32)
    found = missing_features(image, mask, np.ones(mask.shape, bool), 30, 1e-10)
    assert [(r.x, r.y) for r in found] == [(pytest.approx(151.5), pytest.approx(271.5))]
