"""Offline conversion of image files of any size, with the daemon's own converter.

Files are converted one band of patch rows at a time (`Converter.convert_rows`), read from and
written to disk as they go: an image larger than memory converts (docs/conversion.md). A z-stack
is fused first (edge.imaging.focus), whole in memory. With a bundle that has trust statistics,
each output gets its trust score and map beside it (OUT/<stem>.trust.json, OUT/<stem>.trust.tif;
docs/trust.md): the image is then converted whole in memory, up to TRUST_MAX_PIXELS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from edge.imaging.focus import fuse_file
from edge.imaging.imageio import list_images, open_rows, write_tiff16, write_tiff16_rows
from edge.inference.converter import Converter
from edge.inference.trust import BLOCK_PX, MIN_SIDE, TrustResult

TRUST_MAX_PIXELS = 16 * 2**20  # larger images stream, without a trust score


@dataclass(frozen=True)
class Converted:
    """One converted file: the output, the image's (H, W), its trust (None: not judged, and
    why in `untrusted`)."""

    path: Path
    shape: tuple[int, int]
    trust: TrustResult | None = None
    untrusted: str = ""


def input_files(paths: list[Path], stacks: bool = False) -> list[Path]:
    """The files named, with folders replaced by the images directly inside them (with
    `stacks`, a folder is one stack)."""
    files: list[Path] = []
    for path in paths:
        files.extend(list_images(path) if path.is_dir() and not stacks else [path])
    return files


def judges(converter: Converter) -> bool:
    """Whether the converter gives trust scores (a bundle with trust statistics)."""
    return converter.judge is not None and converter.judge.statistics is not None


def convert_file(converter: Converter, path: Path, out_dir: Path,
                 trust_map: bool = True) -> Converted:
    """Convert one image file into OUT/<stem>.tif (16-bit), with its trust when the converter
    judges and the image has at most TRUST_MAX_PIXELS (streamed otherwise)."""
    shape, read = open_rows(path)
    target = out_dir / f"{path.stem}.tif"
    if judges(converter) and shape[0] * shape[1] <= TRUST_MAX_PIXELS:
        raw = read(0, shape[0])
        converted = converter.convert(raw)
        write_tiff16(target, converted)
        return _judged(converter, raw, converted, target, shape, trust_map)
    blocks = converter.convert_rows(read, shape)
    untrusted = f"larger than {TRUST_MAX_PIXELS} px" if judges(converter) else ""
    return Converted(write_tiff16_rows(target, shape, blocks), shape, untrusted=untrusted)


def convert_stack(converter: Converter, path: Path, out_dir: Path, z_step_nm: float | None = None,
                  z_start_nm: float = 0.0, trust_map: bool = True) -> Converted:
    """Fuse a z-stack (a multi-page TIFF or a folder of planes) and convert the fused tile:
    OUT/<stem>.tif (converted), OUT/<stem>_fused.tif (the all-in-focus input, 16-bit) and
    OUT/<stem>_height_nm.tif (the height map, float32 nm); heights as `fuse_file`. The trust is
    the fused tile's."""
    fused = fuse_file(path, z_step_nm, z_start_nm)
    name = path.name if path.is_dir() else path.stem
    write_tiff16(out_dir / f"{name}_fused.tif", fused.image)
    tifffile.imwrite(out_dir / f"{name}_height_nm.tif", fused.height_nm)
    converted = converter.convert(fused.image)
    target = write_tiff16(out_dir / f"{name}.tif", converted)
    shape = (int(fused.image.shape[0]), int(fused.image.shape[1]))
    return _judged(converter, fused.image, converted, target, shape, trust_map)


def _judged(converter: Converter, raw: np.ndarray, converted: np.ndarray, target: Path,
            shape: tuple[int, int], trust_map: bool) -> Converted:
    """The converted file with its trust written beside it: <stem>.trust.json (the header the
    daemon would send, the model, the block size) and <stem>.trust.tif (float32 block scores)."""
    trust = converter.trust(raw, converted, trust_map)
    if trust is None:
        return Converted(target, shape, untrusted=f"under {MIN_SIDE} px"
                         if judges(converter) else "")
    record = {**trust.header(), "model": converter.label, "image": [shape[0], shape[1]],
              "block_px": BLOCK_PX}
    stem = target.with_suffix("")
    Path(f"{stem}.trust.json").write_text(json.dumps(record, indent=1) + "\n")
    if trust.map is not None:
        tifffile.imwrite(f"{stem}.trust.tif", trust.map)
    return Converted(target, shape, trust)
