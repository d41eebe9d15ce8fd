"""Offline conversion of image files of any size, with the daemon's own converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.imaging.imageio import list_images, read_image, write_tiff16
from edge.inference.converter import Converter


def input_files(paths: list[Path]) -> list[Path]:
    """The files named, with folders replaced by the images directly inside them."""
    files: list[Path] = []
    for path in paths:
        files.extend(list_images(path) if path.is_dir() else [path])
    return files


def convert_file(converter: Converter, path: Path, out_dir: Path) -> tuple[Path, tuple[int, int]]:
    """Convert one image file into OUT/<stem>.tif (16-bit); returns the file and (H, W)."""
    image = read_image(path)
    out = converter.convert(image)
    return write_tiff16(out_dir / f"{path.stem}.tif", np.clip(out, 0, 1)), image.shape
