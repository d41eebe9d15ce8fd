"""Reading and writing images: float32 in [0, 1] in memory, uint8/uint16 on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from edge.errors import UserError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def to_float01(array: np.ndarray) -> np.ndarray:
    """Scale an integer image by its dtype's full range; pass float images through as float32.

    Float input must already be in [0, 1] (values outside are clipped).
    """
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise UserError(f"unsupported pixel type {array.dtype} (use uint8, uint16 or float)")


def to_uint16(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _as_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float64)
        gray = rgb @ np.array([0.299, 0.587, 0.114])
        return gray.astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else gray
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    raise UserError(f"{path}: expected a 2-D grayscale image, got shape {array.shape}")


def read_raw(path: str | Path) -> np.ndarray:
    """Read an image file as stored (grayscale, original dtype)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = np.asarray(tifffile.imread(path))
        else:
            decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if decoded is None:
                raise ValueError("OpenCV could not decode it")
            array = decoded[..., ::-1] if decoded.ndim == 3 else decoded
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot read image ({exc})") from exc
    return _as_gray(np.asarray(array), path)


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8/16-bit or float image file as float32 in [0, 1], 2-D."""
    return to_float01(read_raw(path))


def write_tiff16(path: str | Path, image: np.ndarray, metadata: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, to_uint16(image), metadata=metadata)
    return path


def write_png8(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), to_uint8(image)):
        raise UserError(f"{path}: cannot write PNG")
    return path


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
