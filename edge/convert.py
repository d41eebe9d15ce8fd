"""`ssum convert`: offline conversion of image files of any size, with the daemon's own code
(shared preprocessing, tiling with seam blending, backends)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                        help="TIFF/PNG files (8- or 16-bit, any size) or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder: OUT/<stem>.tif (16-bit)")
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: models/default)")
    parser.add_argument("--backend", choices=("onnxruntime", "torch", "tensorrt"), default="onnxruntime")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    parser.add_argument("--device", default=None, help="e.g. cuda:0 (default: the backend's choice)")
    parser.add_argument("--window", choices=("hann", "gaussian", "linear", "constant", "crop"),
                        default="hann", help="seam blending window (default hann)")
    parser.add_argument("--batch-size", type=int, default=8, help="patches per inference call")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")


def _inputs(paths: list[Path]) -> list[Path]:
    from edge.imageio import list_images

    files: list[Path] = []
    for path in paths:
        files.extend(list_images(path) if path.is_dir() else [path])
    return files


def run(args: argparse.Namespace) -> int:
    from edge.backends import load_backend
    from edge.bundle import default_bundle_path, load_bundle
    from edge.imageio import read_image, write_tiff16
    from edge.preprocess import PreprocessParams, preprocess
    from edge.tiling import Tiler, convert_image

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    bundle = load_bundle(args.bundle or default_bundle_path())
    backend = load_backend(bundle, args.backend, args.precision, args.device, args.threads or None)
    io = bundle.io
    tiler = Tiler(int(io["patch_size"]), int(io["overlap"]), int(io["spatial_multiple"]), args.window)
    params = PreprocessParams.from_dict(bundle.preprocessing)
    print(f"model {bundle.label()} on {backend.name}/{backend.precision} ({backend.device})")
    failures = 0
    for path in _inputs(args.images):
        start = time.perf_counter()
        try:
            image = preprocess(read_image(path), params)
            out = convert_image(image, backend, tiler, args.batch_size)
            target = write_tiff16(args.out / f"{path.stem}.tif", np.clip(out, 0, 1))
        except UserError as exc:
            failures += 1
            print(f"error: {path}: {exc}")
            continue
        print(f"{path} -> {target} ({image.shape[1]}x{image.shape[0]} px, "
              f"{time.perf_counter() - start:.2f} s)")
    backend.close()
    if failures:
        print(f"{failures} file(s) failed")
    return 1 if failures else 0
