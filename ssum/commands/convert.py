"""`ssum convert`: offline conversion of image files of any size, with the daemon's own code
(shared preprocessing, patch planning and blending, backends, trust score), streamed from and
to disk."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edge.errors import UserError
from edge.inference.backends import BACKENDS
from edge.inference.bundle import PRECISIONS, default_bundle_path
from edge.inference.converter import PATCHING, Converter, ConverterSettings
from edge.inference.tiling import WINDOWS
from edge.tools.convert import Converted, convert_file, convert_stack, input_files
from ssum.arguments import add_inputs_and_out

DEFAULTS = ConverterSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inputs_and_out(parser, "TIFF/PNG files (8- or 16-bit, any size) or folders of them "
                               "(with --stack: z-stacks)",
                       "output folder: OUT/<stem>.tif (16-bit); with a bundle that has trust "
                       "statistics also OUT/<stem>.trust.json and OUT/<stem>.trust.tif")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="model bundle (default: models/default)")
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULTS.backend)
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS.precision)
    parser.add_argument("--device", default=DEFAULTS.device,
                        help="e.g. cuda:0 (default: the backend's choice)")
    parser.add_argument("--window", choices=WINDOWS, default=DEFAULTS.window,
                        help=f"seam blending window (default {DEFAULTS.window})")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.max_batch,
                        help="patches per inference call (default 0: 1 on a CPU, 8 on a GPU)")
    parser.add_argument("--patching", choices=PATCHING, default=DEFAULTS.patching,
                        help="fit: the fewest, largest patches for each image; fixed: the "
                             "bundle's patch size; auto (default): fixed for tensorrt, else fit")
    parser.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels,
                        help="the most pixels of one patch and of one inference call (default "
                             f"{DEFAULTS.max_pixels}; ONNX Runtime's memory grows with it)")
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads,
                        help="CPU threads (0: all)")
    parser.add_argument("--invert-input", action="store_true",
                        help="the microscope shows the materials in the reverse order of "
                             "brightness to the model's training data: convert 1 - x "
                             "(docs/conversion.md#input-polarity)")
    trust = parser.add_argument_group("trust score (docs/trust.md)")
    trust.add_argument("--no-trust", action="store_true",
                       help="no trust score (and no SEM->OSR generator loaded)")
    trust.add_argument("--no-trust-map", action="store_true",
                       help="the score only, no OUT/<stem>.trust.tif block map")
    stack = parser.add_argument_group("z-stacks (docs/focus-stacks.md)")
    stack.add_argument("--stack", action="store_true",
                       help="each IMAGE is a z-stack (a multi-page TIFF or a folder of planes): "
                            "fused, then converted; also writes OUT/<stem>_fused.tif and "
                            "OUT/<stem>_height_nm.tif (float32, nm)")
    stack.add_argument("--z-step", type=float, default=None,
                       help="nm between planes, for stacks that do not record their heights")
    stack.add_argument("--z-start", type=float, default=0.0,
                       help="height of the first plane in nm (with --z-step; default 0)")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 0:
        raise UserError("--batch-size must be at least 1 (or 0: chosen for the device)")
    settings = ConverterSettings(backend=args.backend, precision=args.precision,
                                 device=args.device, threads=args.threads,
                                 max_batch=args.batch_size, window=args.window,
                                 patching=args.patching, max_pixels=args.max_pixels,
                                 trust=not args.no_trust, invert_input=args.invert_input)
    trust_map = not args.no_trust_map
    failures = 0
    with Converter.from_bundle(args.bundle or default_bundle_path(), settings) as converter:
        backend = converter.backend
        print(f"model {converter.label} on {backend.name}/{backend.precision} ({backend.device})")
        if converter.judge is not None:
            print(converter.judge.describe())
        for path in input_files(args.images, args.stack):
            start = time.perf_counter()
            try:
                if args.stack:
                    done = convert_stack(converter, path, args.out, args.z_step, args.z_start,
                                         trust_map)
                else:
                    done = convert_file(converter, path, args.out, trust_map)
            except UserError as exc:
                failures += 1
                print(f"error: {path}: {exc}")
                continue
            height, width = done.shape
            print(f"{path} -> {done.path} ({width}x{height} px, "
                  f"{time.perf_counter() - start:.2f} s{_trust_note(done)})")
    if failures:
        print(f"{failures} file(s) failed")
    return 1 if failures else 0


def _trust_note(done: Converted) -> str:
    if done.trust is not None:
        outlier = f", {done.trust.outlier} out of range" if done.trust.outlier else ""
        return f", trust {done.trust.score:.2f}{outlier}"
    return f", no trust: {done.untrusted}" if done.untrusted else ""
