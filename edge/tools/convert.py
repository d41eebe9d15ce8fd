"""Offline conversion of image files of any size, with the daemon's own converter.

Files are converted one band of patch rows at a time (`Converter.convert_rows`), read from and
written to disk as they go: an image larger than memory converts (docs/conversion.md). A z-stack
is fused first (edge.imaging.focus), whole in memory.
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from edge.imaging.focus import fuse_file
from edge.imaging.imageio import list_images, open_rows, write_tiff16, write_tiff16_rows
from edge.inference.converter import Converter


def input_files(paths: list[Path], stacks: bool = False) -> list[Path]:
    """The files named, with folders replaced by the images directly inside them (with
    `stacks`, a folder is one stack)."""
    files: list[Path] = []
    for path in paths:
        files.extend(list_images(path) if path.is_dir() and not stacks else [path])
    return files


def convert_file(converter: Converter, path: Path, out_dir: Path) -> tuple[Path, tuple[int, int]]:
    """Convert one image file into OUT/<stem>.tif (16-bit); returns the file and (H, W)."""
    shape, read = open_rows(path)
    blocks = converter.convert_rows(read, shape)
    return write_tiff16_rows(out_dir / f"{path.stem}.tif", shape, blocks), shape


def convert_stack(converter: Converter, path: Path, out_dir: Path, z_step_nm: float | None = None,
                  z_start_nm: float = 0.0) -> tuple[Path, tuple[int, int]]:
    """Fuse a z-stack (a multi-page TIFF or a folder of planes) and convert the fused tile:
    OUT/<stem>.tif (converted), OUT/<stem>_fused.tif (the all-in-focus input, 16-bit) and
    OUT/<stem>_height_nm.tif (the height map, float32 nm); heights as `fuse_file`."""
    fused = fuse_file(path, z_step_nm, z_start_nm)
    name = path.name if path.is_dir() else path.stem
    write_tiff16(out_dir / f"{name}_fused.tif", fused.image)
    tifffile.imwrite(out_dir / f"{name}_height_nm.tif", fused.height_nm)
    converted = write_tiff16(out_dir / f"{name}.tif", converter.convert(fused.image))
    return converted, (int(fused.image.shape[0]), int(fused.image.shape[1]))
