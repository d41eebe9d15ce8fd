"""Wire protocol v1: round trips per dtype and one ErrorCode per kind of malformed message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.protocol import (
    DTYPES,
    ErrorCode,
    Limits,
    ProtocolError,
    decode_message,
    decode_tile,
    encode_error,
    encode_result,
    encode_scan_end,
    encode_tile,
)


def header(**overrides: object) -> dict:
    base = {
        "v": 1,
        "scan_id": "scan-42",
        "seq": 3,
        "row": 1,
        "col": 2,
        "x_nm": 1500.0,
        "y_nm": 750,
        "pixel_size_nm": 20.0,
        "t_capture": 1_750_000_000.5,
    }
    return base | overrides


def image(dtype: str, shape: tuple[int, int] = (6, 10), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def raw(topic: str, head: dict | str, pixels: bytes) -> list[bytes]:
    text = head if isinstance(head, str) else json.dumps(head)
    return [topic.encode(), text.encode(), pixels]


def valid_frames(dtype: str = "uint16") -> tuple[dict, bytes]:
    """A complete rig header and matching pixel bytes, built by hand (not by encode_tile)."""
    pixels = image(dtype)
    head = header(width=pixels.shape[1], height=pixels.shape[0], dtype=dtype)
    return head, pixels.astype(DTYPES[dtype]).tobytes()


def assert_code(frames: list, code: ErrorCode, limits: Limits | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_tile(frames, limits or Limits())
    assert info.value.code is code, info.value.message
    return info.value


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_tile_round_trip_keeps_pixels_and_header(dtype: str) -> None:
    pixels = image(dtype)
    frames = encode_tile(header(), pixels)
    assert frames[0] == b"tile/scan-42"
    tile = decode_tile(frames)
    assert tile.scan_id == "scan-42" and tile.seq == 3 and tile.topic == "tile/scan-42"
    assert tile.image.dtype == np.dtype(dtype) and tile.image.shape == (6, 10)
    np.testing.assert_array_equal(tile.image, pixels)
    assert tile.header["width"] == 10 and tile.header["height"] == 6
    assert tile.header["dtype"] == dtype


def test_decoding_a_hand_built_message_matches_the_documented_layout() -> None:
    head, pixels = valid_frames("uint16")
    tile = decode_tile(raw("tile/scan-42", head, pixels))
    expected = np.frombuffer(pixels, dtype="<u2").reshape(6, 10)
    np.testing.assert_array_equal(tile.image, expected)


def test_decode_is_zero_copy_and_read_only() -> None:
    head, pixels = valid_frames("uint8")
    tile = decode_tile(raw("tile/scan-42", head, pixels))
    assert not tile.image.flags.writeable
    assert np.shares_memory(tile.image, np.frombuffer(pixels, dtype=np.uint8))


def test_extra_header_fields_pass_through_untouched() -> None:
    extra = {"z_nm": 12.5, "exposure_ms": 20, "operator": {"name": "ana", "tags": [1, "x"]}}
    tile = decode_tile(encode_tile(header(**extra), image("uint8")))
    for key, value in extra.items():
        assert tile.header[key] == value
    result = decode_message(encode_result(tile.header, np.zeros((6, 10), np.float32), {}))
    assert result.header["operator"] == extra["operator"]


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_result_has_input_geometry_dtype_and_extra_fields(dtype: str) -> None:
    tile = decode_tile(encode_tile(header(), image(dtype)))
    output = np.linspace(-0.5, 1.5, 60, dtype=np.float32).reshape(6, 10)
    extra = {"model": "tiny@abc123", "backend": "onnxruntime", "precision": "fp32"}
    extra["latency_ms"] = {"infer": 1.5, "total": 2.0}
    message = decode_message(encode_result(tile.header, output, extra))
    assert message.kind == "sem" and message.scan_id == "scan-42"
    assert message.header["status"] == "ok" and message.header["latency_ms"]["total"] == 2.0
    assert message.header["seq"] == 3 and message.header["model"] == "tiny@abc123"
    assert message.image is not None
    assert message.image.dtype == np.dtype(dtype) and message.image.shape == (6, 10)
    if dtype == "float32":
        np.testing.assert_array_equal(message.image, output)
    else:
        top = np.iinfo(dtype).max
        expected = np.round(np.clip(output.astype(np.float64), 0, 1) * top)
        np.testing.assert_array_equal(message.image, expected.astype(dtype))
        assert message.image.min() == 0 and message.image.max() == top


def test_error_and_scan_end_messages() -> None:
    frames = encode_error("scan-42", ErrorCode.BYTE_COUNT, "too short", header(seq=7))
    assert frames[0] == b"error/scan-42" and frames[2] == b""
    message = decode_message(frames)
    assert message.kind == "error" and message.image is None
    assert message.header["error"] == "byte_count" and message.header["seq"] == 7
    assert message.header["message"] == "too short"
    unknown = decode_message(encode_error("", ErrorCode.BAD_JSON, "garbage"))
    assert unknown.scan_id == "unknown" and unknown.header["scan_id"] == "unknown"
    end = decode_message(encode_scan_end("scan-42", {"n_tiles": 9, "converted": 8}))
    assert end.kind == "scan-end" and end.header["n_tiles"] == 9 and end.header["v"] == 1


@pytest.mark.parametrize("count", [1, 2, 4])
def test_wrong_frame_count(count: int) -> None:
    head, pixels = valid_frames()
    frames = raw("tile/scan-42", head, pixels) + [b""]
    assert_code(frames[:count], ErrorCode.BAD_FRAMES)


@pytest.mark.parametrize("text", ["{not json", '"a string"', "[1, 2]", '{"v": NaN}', "\xff"])
def test_bad_json(text: str) -> None:
    _, pixels = valid_frames()
    frames = [b"tile/scan-42", text.encode("latin-1"), pixels]
    error = assert_code(frames, ErrorCode.BAD_JSON)
    assert error.scan_id == "scan-42" and error.header is None


@pytest.mark.parametrize("field", ["v", "scan_id", "seq", "row", "width", "dtype", "t_capture"])
def test_missing_field(field: str) -> None:
    head, pixels = valid_frames()
    del head[field]
    error = assert_code(raw("tile/scan-42", head, pixels), ErrorCode.MISSING_FIELD)
    assert field in error.message


@pytest.mark.parametrize(
    "field, value",
    [
        ("seq", -1),
        ("seq", 1.0),
        ("row", "1"),
        ("col", True),
        ("width", 0),
        ("x_nm", "0"),
        ("y_nm", None),
        ("pixel_size_nm", 0),
        ("t_capture", [1]),
        ("scan_id", "a b"),
        ("scan_id", 5),
    ],
)
def test_bad_field(field: str, value: object) -> None:
    head, pixels = valid_frames()
    head[field] = value
    assert_code(raw("tile/scan-42", head, pixels), ErrorCode.BAD_FIELD)


@pytest.mark.parametrize("version", [2, 0, "1", 1.5])
def test_unsupported_version(version: object) -> None:
    head, pixels = valid_frames()
    head["v"] = version
    assert_code(raw("tile/scan-42", head, pixels), ErrorCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("dtype", ["int16", "float64", "", 8])
def test_unknown_dtype(dtype: object) -> None:
    head, pixels = valid_frames()
    head["dtype"] = dtype
    assert_code(raw("tile/scan-42", head, pixels), ErrorCode.UNKNOWN_DTYPE)


@pytest.mark.parametrize("delta", [-1, 1, -120])
def test_wrong_byte_count(delta: int) -> None:
    head, pixels = valid_frames("uint16")
    pixels = pixels[:delta] if delta < 0 else pixels + b"\0" * delta
    error = assert_code(raw("tile/scan-42", head, pixels), ErrorCode.BYTE_COUNT)
    assert error.header is not None and error.header["seq"] == 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float32(bad: float) -> None:
    pixels = image("float32")
    pixels[4, 7] = bad
    head = header(width=10, height=6, dtype="float32")
    assert_code(raw("tile/scan-42", head, pixels.astype("<f4").tobytes()), ErrorCode.NON_FINITE)


def test_oversize_is_refused_before_looking_at_pixels() -> None:
    head, _ = valid_frames("uint16")
    head |= {"width": 100_000, "height": 4}
    assert_code(raw("tile/scan-42", head, b""), ErrorCode.OVERSIZE)
    head |= {"width": 64, "height": 64}
    small = Limits(max_width=64, max_height=64, max_bytes=64 * 64)
    assert_code(raw("tile/scan-42", head, b""), ErrorCode.OVERSIZE, small)
    ok, pixels = valid_frames("uint16")
    decode_tile(raw("tile/scan-42", ok, pixels), Limits(max_width=10, max_height=6, max_bytes=120))


@pytest.mark.parametrize(
    "topic", ["tile/other-scan", "sem/scan-42", "tile", "tile/", "scan-42", "tile/scan-42/x"]
)
def test_topic_must_be_tile_slash_header_scan_id(topic: str) -> None:
    head, pixels = valid_frames()
    error = assert_code(raw(topic, head, pixels), ErrorCode.BAD_TOPIC)
    assert error.scan_id == "scan-42"


def test_topic_that_is_not_utf8() -> None:
    head, pixels = valid_frames()
    frames = [b"tile/\xff", json.dumps(head).encode(), pixels]
    assert_code(frames, ErrorCode.BAD_TOPIC)


def test_scan_id_is_unknown_when_nothing_readable_names_it() -> None:
    error = assert_code([b"tile/a b", b"{", b""], ErrorCode.BAD_JSON)
    assert error.scan_id == "unknown"


def test_decode_message_is_strict_about_framing() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message([b"sem/scan-42", b"{}"])
    assert info.value.code is ErrorCode.BAD_FRAMES
    with pytest.raises(ProtocolError) as info:
        decode_message([b"scan-end/a", json.dumps({"v": 1, "scan_id": "b"}).encode(), b""])
    assert info.value.code is ErrorCode.BAD_TOPIC
