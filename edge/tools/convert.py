"""Offline conversion of image files of any size, with the daemon's own converter.

Files are converted one band of patch rows at a time (`Converter.convert_rows`), read from and
written to disk as they go: an image larger than memory converts (docs/conversion.md).
"""

from __future__ import annotations

from pathlib import Path

from edge.imaging.imageio import list_images, open_rows, write_tiff16_rows
from edge.inference.converter import Converter


def input_files(paths: list[Path]) -> list[Path]:
    """The files named, with folders replaced by the images directly inside them."""
    files: list[Path] = []
    for path in paths:
        files.extend(list_images(path) if path.is_dir() else [path])
    return files


def convert_file(converter: Converter, path: Path, out_dir: Path) -> tuple[Path, tuple[int, int]]:
    """Convert one image file into OUT/<stem>.tif (16-bit); returns the file and (H, W)."""
    shape, read = open_rows(path)
    blocks = converter.convert_rows(read, shape)
    return write_tiff16_rows(out_dir / f"{path.stem}.tif", shape, blocks), shape
