"""Reading and writing images: float32 in [0, 1] in memory, uint8/uint16 on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


def open_rows(path: str | Path) -> tuple[tuple[int, int], Callable[[int, int], np.ndarray]]:
    """An image file's (H, W) and a reader of its rows as stored: `read(y0, y1)`. An
    uncompressed grayscale TIFF is read from disk a band at a time (memory: the band); any other
    file is read whole once, as stored (2 bytes a pixel at 16 bits)."""
    path = Path(path)
    layout = _contiguous_tiff(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if layout is None:
        array = read_raw(path)
        return (int(array.shape[0]), int(array.shape[1])), lambda y0, y1: array[y0:y1]
    offset, dtype, (height, width) = layout

    def read(y0: int, y1: int) -> np.ndarray:
        rows = np.fromfile(path, dtype=dtype, count=(y1 - y0) * width,
                           offset=offset + y0 * width * dtype.itemsize)
        return rows.reshape(y1 - y0, width).astype(dtype.newbyteorder("="), copy=False)

    return (height, width), read


def _contiguous_tiff(path: Path) -> tuple[int, np.dtype, tuple[int, int]] | None:
    """(data offset, stored dtype, shape) of a TIFF whose first page is one uncompressed
    grayscale array of a readable pixel type; None otherwise (or when unreadable)."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            if not page.is_contiguous or len(page.shape) != 2 or page.dtype is None:
                return None
            dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
            offset = int(page.dataoffsets[0])
    except (OSError, ValueError, tifffile.TiffFileError):  # read_raw reports it
        return None
    if dtype.kind not in "uf" or dtype.kind == "u" and dtype.itemsize > 2:
        return None
    return offset, dtype, (int(page.shape[0]), int(page.shape[1]))


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8/16-bit or float image file as float32 in [0, 1], 2-D."""
    return to_float01(read_raw(path))


def write_tiff16(path: str | Path, image: np.ndarray, metadata: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, to_uint16(image), metadata=metadata)
    return path


def write_tiff16_rows(path: str | Path, shape: tuple[int, int],
                     blocks: Iterable[np.ndarray]) -> Path:
    """Write a 16-bit TIFF from consecutive blocks of rows (float [0, 1]) as they come: the
    image is never whole in memory. Written beside the target, renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")

    def rows() -> Iterator[np.ndarray]:
        for block in blocks:
            yield from to_uint16(block)

    try:
        tifffile.imwrite(partial, data=rows(), shape=shape, dtype=np.uint16, rowsperstrip=64)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
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


def is_stack(path: str | Path) -> bool:
    """A z-stack on disk: a folder of plane images, or a TIFF of more than one page."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages) > 1
    except (OSError, ValueError, tifffile.TiffFileError):
        return False


def read_stack(path: str | Path) -> tuple[list[np.ndarray], list[float] | None]:
    """The planes of a z-stack as float32 [0, 1] and their heights in nm when the file records
    them (`write_stack`'s metadata); a folder's planes are its images in name order."""
    path = Path(path)
    if path.is_dir():
        planes = [read_image(p) for p in list_images(path)]
        z_nm = None
    else:
        try:
            with tifffile.TiffFile(path) as tif:
                planes = [to_float01(_as_gray(page.asarray(), path)) for page in tif.pages]
                recorded = (tif.shaped_metadata or [{}])[0].get("z_nm")
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise UserError(f"{path}: cannot read the stack ({exc})") from exc
        z_nm = [float(z) for z in recorded] if isinstance(recorded, list) else None
    if len(planes) < 1:
        raise UserError(f"{path}: the stack has no planes")
    if z_nm is not None and len(z_nm) != len(planes):
        raise UserError(f"{path}: {len(z_nm)} heights recorded for {len(planes)} planes")
    return planes, z_nm


def write_stack(path: str | Path, planes: Iterable[np.ndarray], z_nm: Iterable[float]) -> Path:
    """A z-stack as one 16-bit multi-page TIFF, the planes' heights (nm) in its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([to_uint16(p) for p in planes])
    tifffile.imwrite(path, data, photometric="minisblack",
                     metadata={"z_nm": [float(z) for z in z_nm]})
    return path
