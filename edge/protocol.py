"""Wire protocol v1: multipart ZeroMQ messages `[topic, header JSON, pixels]`.

Decoding validates every header field and the size limits before any pixel is touched, then
wraps the pixels frame without copying (np.frombuffer). See docs/protocol.md.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
DTYPES = {"uint8": "|u1", "uint16": "<u2", "float32": "<f4"}
MAX_HEADER_BYTES = 1 << 20
MAX_SCAN_ID_CHARS = 256
MAX_TOPIC_BYTES = 16 + 4 * MAX_SCAN_ID_CHARS  # the longest kind, "/", a scan id in UTF-8
MAX_INT = 2**31 - 1  # integer fields (seq, row, col, width, height, n_tiles)
MAX_NUMBER = 2.0**53  # magnitude of the number fields (x_nm, y_nm, pixel_size_nm, t_capture)
MAX_MESSAGE_CHARS = 1000  # of an error answer's message
MAX_STACK_SIZE = 1024  # planes of one z-stack
UNKNOWN_SCAN = "unknown"

INT_FIELDS = ("seq", "row", "col", "width", "height")
NUMBER_FIELDS = ("x_nm", "y_nm", "pixel_size_nm", "t_capture")
REQUIRED_FIELDS = ("v", "scan_id", *INT_FIELDS, *NUMBER_FIELDS, "dtype")
ERROR_CONTEXT_FIELDS = ("seq", "row", "col", "x_nm", "y_nm", "t_capture")
_BAD_SCAN_ID = re.compile(r"[/\\\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # C0, C1, surrogates


class Kind(enum.StrEnum):
    """What a message is; its topic is `<kind>/<scan_id>`."""

    TILE = "tile"
    SEM = "sem"
    ERROR = "error"
    SCAN_END = "scan-end"
    DEFECT = "defect"
    HEIGHT = "height"
    TRUST = "trust"


def topic(kind: Kind, scan_id: str = "") -> str:
    """The topic of a message of `kind` for `scan_id`; without a scan id, the SUB prefix."""
    return f"{kind}/{scan_id}"


class ErrorCode(str, enum.Enum):
    BAD_FRAMES = "bad_frames"
    BAD_TOPIC = "bad_topic"
    BAD_JSON = "bad_json"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_DTYPE = "unknown_dtype"
    BYTE_COUNT = "byte_count"
    NON_FINITE = "non_finite"
    OVERSIZE = "oversize"
    CONVERSION_FAILED = "conversion_failed"


class ProtocolError(Exception):
    """A message that breaks protocol v1; `scan_id` is "unknown" when it could not be read."""

    def __init__(
        self, code: ErrorCode, message: str, scan_id: str = UNKNOWN_SCAN, header: dict | None = None
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.scan_id = scan_id
        self.header = header


@dataclass(frozen=True)
class Limits:
    max_width: int = 8192
    max_height: int = 8192
    max_bytes: int = 256 * 2**20


@dataclass
class Tile:
    topic: str
    header: dict
    image: np.ndarray
    scan_id: str
    seq: int


@dataclass
class Message:
    kind: str
    scan_id: str
    header: dict
    image: np.ndarray | None


@dataclass
class ScanEnd:
    scan_id: str
    header: dict


def is_valid_scan_id(value: Any) -> bool:
    """Non-empty string usable in a topic and as a directory name (no separators, whitespace,
    control characters or lone surrogates)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SCAN_ID_CHARS
        and value not in (".", "..")
        and not _BAD_SCAN_ID.search(value)
    )


def _buffer(frame: Any) -> memoryview:
    """The frame's bytes without copying (bytes, bytearray, memoryview or zmq.Frame)."""
    buffer = getattr(frame, "buffer", frame)
    return memoryview(buffer).cast("B")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _parse_header(raw: memoryview, scan_id: str) -> dict:
    """The header as a dict in which every number is finite (so every answer can be encoded)."""
    if raw.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(
            ErrorCode.OVERSIZE, f"header is {raw.nbytes} bytes (max {MAX_HEADER_BYTES})", scan_id
        )
    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant,
                            parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"header is not valid JSON: {exc}", scan_id
        ) from exc
    if not isinstance(header, dict):
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"header must be a JSON object, got {type(header).__name__}",
            scan_id,
        )
    return header


def _topic_parts(raw: memoryview) -> tuple[str, str] | None:
    """(kind, scan_id) from a topic `kind/scan_id`, or None when it has no such form."""
    if raw.nbytes > MAX_TOPIC_BYTES:
        return None
    try:
        topic = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    kind, sep, scan_id = topic.partition("/")
    return (kind, scan_id) if sep and kind else None


def _split_topic(raw: memoryview) -> tuple[str, str]:
    """(kind, scan_id) from a topic `kind/scan_id`; raises BAD_TOPIC."""
    parts = _topic_parts(raw)
    if parts is None:
        topic = bytes(raw[:80]).decode("utf-8", errors="replace")
        raise ProtocolError(ErrorCode.BAD_TOPIC, f"topic {topic!r} is not '<kind>/<scan_id>' "
                                                 f"(at most {MAX_TOPIC_BYTES} bytes of UTF-8)")
    return parts


def _check_frames(frames: Sequence[Any]) -> list[memoryview]:
    if len(frames) != 3:
        raise ProtocolError(
            ErrorCode.BAD_FRAMES, f"expected 3 frames [topic, header, pixels], got {len(frames)}"
        )
    return [_buffer(frame) for frame in frames]


def _shown(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A JSON number of sane magnitude (huge integers are not rejected by json.loads)."""
    return (_is_int(value) or isinstance(value, float)) and abs(value) <= MAX_NUMBER


def _validate_tile_header(header: dict, scan_id: str) -> None:
    """Check version, presence and type of every required field (not the pixels)."""

    def fail(code: ErrorCode, message: str) -> ProtocolError:
        return ProtocolError(code, message, scan_id, header)

    if "v" not in header:
        raise fail(ErrorCode.MISSING_FIELD, "header has no 'v' (protocol version)")
    if not _is_int(header["v"]) or header["v"] != PROTOCOL_VERSION:
        raise fail(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {header['v']!r} is not supported (this side speaks {PROTOCOL_VERSION})",
        )
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        raise fail(ErrorCode.MISSING_FIELD, f"header lacks required field(s): {', '.join(missing)}")
    if not is_valid_scan_id(header["scan_id"]):
        raise fail(
            ErrorCode.BAD_FIELD,
            "scan_id must be a non-empty string of at most 256 characters without '/', '\\', "
            f"whitespace or control characters, got {_shown(header['scan_id'])}",
        )
    for name in INT_FIELDS:
        _require_int(fail, name, header[name], 1 if name in ("width", "height") else 0, MAX_INT)
    for name in NUMBER_FIELDS:
        if not _is_number(header[name]):
            raise fail(ErrorCode.BAD_FIELD, f"{name} must be a number of magnitude <= 2**53, "
                                            f"got {_shown(header[name])}")
    if header["pixel_size_nm"] <= 0:
        raise fail(
            ErrorCode.BAD_FIELD, f"pixel_size_nm must be > 0, got {_shown(header['pixel_size_nm'])}"
        )
    if not isinstance(header["dtype"], str) or header["dtype"] not in DTYPES:
        raise fail(
            ErrorCode.UNKNOWN_DTYPE,
            f"dtype {_shown(header['dtype'])} is not one of {', '.join(DTYPES)}",
        )
    _validate_stack_fields(header, fail)


def _validate_stack_fields(header: dict, fail: Callable[[ErrorCode, str], ProtocolError]) -> None:
    """The optional z-stack fields: `z_nm` a number, `stack_size` an integer of planes."""
    if "z_nm" in header and not _is_number(header["z_nm"]):
        raise fail(ErrorCode.BAD_FIELD,
                   f"z_nm must be a number of magnitude <= 2**53, got {_shown(header['z_nm'])}")
    _require_int(fail, "stack_size", header.get("stack_size", 1), 1, MAX_STACK_SIZE)


def _require_int(fail: Callable[[ErrorCode, str], ProtocolError], name: str, value: Any,
                 low: int, high: int) -> None:
    """An integer field within [low, high], else a bad_field error naming it."""
    if not _is_int(value) or not low <= value <= high:
        raise fail(ErrorCode.BAD_FIELD,
                   f"{name} must be an integer in [{low}, {high}], got {_shown(value)}")


def _check_limits(header: dict, pixels: memoryview, limits: Limits, scan_id: str) -> int:
    """Reject oversize tiles before touching pixels; return the expected byte count."""
    width, height = header["width"], header["height"]
    expected = width * height * np.dtype(DTYPES[header["dtype"]]).itemsize
    if width > limits.max_width or height > limits.max_height:
        raise ProtocolError(
            ErrorCode.OVERSIZE,
            f"tile {width}x{height} exceeds the limit {limits.max_width}x{limits.max_height}",
            scan_id,
            header,
        )
    if expected > limits.max_bytes or pixels.nbytes > limits.max_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZE,
            f"tile of {max(expected, pixels.nbytes)} bytes exceeds the limit {limits.max_bytes}",
            scan_id,
            header,
        )
    return expected


def _pixels(header: dict, pixels: memoryview, expected: int, scan_id: str) -> np.ndarray:
    if pixels.nbytes != expected:
        raise ProtocolError(
            ErrorCode.BYTE_COUNT,
            f"pixels frame has {pixels.nbytes} bytes, expected {expected} "
            f"({header['width']}x{header['height']} {header['dtype']})",
            scan_id,
            header,
        )
    image = np.frombuffer(pixels, dtype=DTYPES[header["dtype"]])
    image = image.reshape(header["height"], header["width"])
    image.flags.writeable = False
    if header["dtype"] == "float32" and not np.isfinite(image).all():
        raise ProtocolError(
            ErrorCode.NON_FINITE, "float32 pixels contain NaN or Inf", scan_id, header
        )
    return image


def decode_tile(frames: Sequence[Any], limits: Limits = Limits()) -> Tile:
    """Validate and decode a rig tile message; raises ProtocolError with a stable code."""
    topic_raw, header_raw, pixels = _check_frames(frames)
    kind, topic_scan = _topic_parts(topic_raw) or ("", "")
    topic_scan_id = topic_scan if is_valid_scan_id(topic_scan) else UNKNOWN_SCAN
    header = _parse_header(header_raw, topic_scan_id)
    header_scan = header.get("scan_id")
    scan_id = (
        header_scan
        if isinstance(header_scan, str) and is_valid_scan_id(header_scan)
        else topic_scan_id
    )
    if kind != Kind.TILE:
        raise ProtocolError(
            ErrorCode.BAD_TOPIC,
            f"expected topic 'tile/<scan_id>', got {bytes(topic_raw[:80])!r}",
            scan_id,
            header,
        )
    _validate_tile_header(header, scan_id)
    if topic_scan != header["scan_id"]:
        raise ProtocolError(
            ErrorCode.BAD_TOPIC,
            f"topic scan id {_shown(topic_scan)} does not match header scan_id "
            f"{_shown(header['scan_id'])}",
            scan_id,
            header,
        )
    expected = _check_limits(header, pixels, limits, scan_id)
    image = _pixels(header, pixels, expected, scan_id)
    return Tile(topic(Kind.TILE, scan_id), header, image, scan_id, header["seq"])


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dump(header: dict) -> bytes:
    return json.dumps(
        header, default=_json_default, allow_nan=False, separators=(",", ":")
    ).encode()


def _dtype_name(image: np.ndarray) -> str:
    for name in DTYPES:
        if image.dtype == np.dtype(name):
            return name
    raise ValueError(f"pixel dtype {image.dtype} is not one of {', '.join(DTYPES)}")


def _pixel_bytes(image: np.ndarray, dtype_name: str) -> bytes:
    return np.ascontiguousarray(image, dtype=DTYPES[dtype_name]).tobytes()


def encode_tile(header: dict, image: np.ndarray) -> list[bytes]:
    """A rig tile message; width, height and dtype are taken from the image (v defaults to 1)."""
    if image.ndim != 2:
        raise ValueError(f"tile image must be 2-D, got shape {image.shape}")
    geometry = {"width": image.shape[1], "height": image.shape[0], "dtype": _dtype_name(image)}
    conflicts = {k: header[k] for k in geometry if k in header and header[k] != geometry[k]}
    if conflicts:
        raise ValueError(f"header {conflicts} disagrees with the image {geometry}")
    scan_id = header.get("scan_id")
    if not isinstance(scan_id, str) or not is_valid_scan_id(scan_id):
        raise ValueError(f"invalid scan_id {scan_id!r}")
    out = {"v": PROTOCOL_VERSION, **header, **geometry}
    return [topic(Kind.TILE, scan_id).encode(), _dump(out), _pixel_bytes(image, geometry["dtype"])]


def to_wire_dtype(image: np.ndarray, dtype_name: str) -> np.ndarray:
    """Float [0, 1] -> the wire dtype: round(clip(x, 0, 1) * max) for integers, as is for float32."""
    target = np.dtype(dtype_name)
    if image.dtype == target:
        return image
    if target.kind == "f":
        return image.astype(target)
    if image.dtype.kind != "f":
        raise ValueError(f"cannot convert {image.dtype} pixels to {dtype_name}")
    scaled = np.clip(image, 0.0, 1.0)
    scaled *= np.iinfo(target).max
    return np.rint(scaled, out=scaled).astype(target)


def encode_result(input_header: dict, image: np.ndarray, extra: dict) -> list[bytes]:
    """A converted tile: the input header plus `extra`, pixels in the input's dtype and geometry."""
    shape = (input_header["height"], input_header["width"])
    if image.shape != shape:
        raise ValueError(f"result shape {image.shape} differs from the input tile {shape}")
    dtype_name = input_header["dtype"]
    header = {**input_header, "status": "ok", **extra}
    pixels = _pixel_bytes(to_wire_dtype(image, dtype_name), dtype_name)
    return [topic(Kind.SEM, input_header["scan_id"]).encode(), _dump(header), pixels]


def encode_height(result_header: dict, height_nm: np.ndarray) -> list[bytes]:
    """The height map of a fused z-stack, published after its converted tile: the tile's
    identifying fields, float32 pixels in nm (`unit`), the same geometry."""
    shape = (result_header["height"], result_header["width"])
    if height_nm.shape != shape:
        raise ValueError(f"height map shape {height_nm.shape} differs from the tile {shape}")
    keep = ("scan_id", "seq", "row", "col", "x_nm", "y_nm", "pixel_size_nm", "t_capture")
    header = {"v": PROTOCOL_VERSION, **{k: result_header[k] for k in keep},
              "width": shape[1], "height": shape[0], "dtype": "float32", "unit": "nm"}
    pixels = _pixel_bytes(np.asarray(height_nm, np.float32), "float32")
    return [topic(Kind.HEIGHT, result_header["scan_id"]).encode(), _dump(header), pixels]


def encode_trust(result_header: dict, trust_map: np.ndarray, score: float) -> list[bytes]:
    """The trust map of a converted tile, published after it: the tile's identifying fields,
    float32 pixels of block scores in [0, 1] (rows x cols blocks covering the tile, so
    `pixel_size_nm` is one block's width in nm), the tile's `score`, its size in pixels."""
    rows, cols = trust_map.shape
    keep = ("scan_id", "seq", "row", "col", "x_nm", "y_nm", "t_capture")
    tile_width, tile_height = result_header["width"], result_header["height"]
    header = {"v": PROTOCOL_VERSION, **{k: result_header[k] for k in keep},
              "pixel_size_nm": result_header["pixel_size_nm"] * tile_width / cols,
              "width": cols, "height": rows, "dtype": "float32", "score": round(score, 4),
              "tile_width": tile_width, "tile_height": tile_height}
    pixels = _pixel_bytes(np.asarray(trust_map, np.float32), "float32")
    return [topic(Kind.TRUST, result_header["scan_id"]).encode(), _dump(header), pixels]


def encode_error(
    scan_id: str, code: ErrorCode, message: str, header: dict | None = None
) -> list[bytes]:
    """An error message; the identifying fields (seq, row, col, ...) of the input header are
    copied when they are numbers of sane magnitude (the input may be anything)."""
    scan_id = scan_id if is_valid_scan_id(scan_id) else UNKNOWN_SCAN
    out: dict[str, Any] = {"v": PROTOCOL_VERSION, "scan_id": scan_id}
    for name in ERROR_CONTEXT_FIELDS:
        if header and _is_number(header.get(name)):
            out[name] = header[name]
    out.update(error=ErrorCode(code).value, message=message[:MAX_MESSAGE_CHARS])
    return [topic(Kind.ERROR, scan_id).encode(), _dump(out), b""]


def encode_scan_end(scan_id: str, fields: dict) -> list[bytes]:
    """End of a scan: {"v", "scan_id", "n_tiles", ...}; the daemon adds its counts."""
    if not is_valid_scan_id(scan_id):
        raise ValueError(f"invalid scan_id {scan_id!r}")
    out = {"v": PROTOCOL_VERSION, **fields, "scan_id": scan_id}
    return [topic(Kind.SCAN_END, scan_id).encode(), _dump(out), b""]


def encode_defect(scan_id: str, fields: dict, thumbnail: np.ndarray | None) -> list[bytes]:
    """A defect found by the daemon's inspection: `fields` (the record), and a uint8 thumbnail
    crop as pixels (`width`, `height`, `dtype` in the header; an empty frame without one)."""
    if not is_valid_scan_id(scan_id):
        raise ValueError(f"invalid scan_id {scan_id!r}")
    header = {"v": PROTOCOL_VERSION, **fields, "scan_id": scan_id}
    pixels = b""
    if thumbnail is not None:
        crop = np.ascontiguousarray(thumbnail, dtype=np.uint8)
        header.update(width=crop.shape[1], height=crop.shape[0], dtype="uint8")
        pixels = crop.tobytes()
    return [topic(Kind.DEFECT, scan_id).encode(), _dump(header), pixels]


def _defect_thumbnail(header: dict, pixels: memoryview, scan_id: str) -> np.ndarray | None:
    if pixels.nbytes == 0:
        return None
    width, height = header.get("width"), header.get("height")
    sizes_ok = isinstance(width, int) and isinstance(height, int) and _is_int(width) \
        and _is_int(height) and 0 < width <= MAX_INT and 0 < height <= MAX_INT
    if header.get("dtype") not in DTYPES or not sizes_ok:
        raise ProtocolError(ErrorCode.BAD_FIELD, "a defect thumbnail needs width, height and "
                            "dtype", scan_id, header)
    return _pixels(header, pixels, _check_limits(header, pixels, Limits(), scan_id), scan_id)


def decode_scan_end(frames: Sequence[Any]) -> ScanEnd:
    """Validate a scan-end message like a tile: topic, header, version, n_tiles, no pixels."""
    topic_raw, header_raw, pixels = _check_frames(frames)
    kind, topic_scan = _topic_parts(topic_raw) or ("", "")
    if kind != Kind.SCAN_END or not is_valid_scan_id(topic_scan):
        raise ProtocolError(ErrorCode.BAD_TOPIC, f"expected topic 'scan-end/<scan_id>' with a "
                            f"valid scan id, got {_shown(bytes(topic_raw[:80]))}")
    header = _parse_header(header_raw, topic_scan)

    def fail(code: ErrorCode, message: str) -> ProtocolError:
        return ProtocolError(code, message, topic_scan, header)

    if header.get("scan_id") != topic_scan:
        raise fail(ErrorCode.BAD_TOPIC, f"topic scan id {topic_scan!r} does not match header "
                                        f"scan_id {_shown(header.get('scan_id'))}")
    if "v" not in header:
        raise fail(ErrorCode.MISSING_FIELD, "header has no 'v' (protocol version)")
    if not _is_int(header["v"]) or header["v"] != PROTOCOL_VERSION:
        raise fail(ErrorCode.UNSUPPORTED_VERSION,
                   f"protocol version {_shown(header['v'])} is not supported")
    _require_int(fail, "n_tiles", header.get("n_tiles", 0), 0, MAX_INT)
    if pixels.nbytes:
        raise fail(ErrorCode.BYTE_COUNT, f"a scan-end carries no pixels, got {pixels.nbytes} bytes")
    return ScanEnd(topic_scan, header)


def decode_message(frames: Sequence[Any]) -> Message:
    """Decode any v1 message (for clients and tests): strict framing, lenient about kinds.

    Pixels are decoded for tile, sem, height and trust messages and a defect's thumbnail; other
    kinds carry none (image is None).
    """
    topic_raw, header_raw, pixels = _check_frames(frames)
    kind, topic_scan = _split_topic(topic_raw)
    if kind == Kind.TILE:
        tile = decode_tile(frames)
        return Message(kind, tile.scan_id, tile.header, tile.image)
    if kind == Kind.SCAN_END:
        end = decode_scan_end(frames)
        return Message(kind, end.scan_id, end.header, None)
    scan_id = topic_scan if is_valid_scan_id(topic_scan) else UNKNOWN_SCAN
    header = _parse_header(header_raw, scan_id)
    if header.get("scan_id") != topic_scan:
        raise ProtocolError(
            ErrorCode.BAD_TOPIC,
            f"topic scan id {_shown(topic_scan)} does not match header scan_id "
            f"{_shown(header.get('scan_id'))}",
            scan_id,
            header,
        )
    image = None
    if kind in (Kind.SEM, Kind.HEIGHT, Kind.TRUST):
        _validate_tile_header(header, topic_scan)
        expected = _check_limits(header, pixels, Limits(), topic_scan)
        image = _pixels(header, pixels, expected, topic_scan)
    elif kind == Kind.DEFECT:
        image = _defect_thumbnail(header, pixels, topic_scan)
    return Message(kind, topic_scan, header, image)
