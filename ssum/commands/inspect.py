"""`ssum inspect`: find defects in image files by comparison with a reference (a golden image,
the image's own repeating cells, or the layout), offline, with the daemon's code."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path
from edge.inference.converter import Converter, ConverterSettings
from edge.inspection.settings import MODES, InspectionSettings
from edge.tools.convert import input_files
from edge.tools.inspect import InspectOptions, build_inspector, inspect_file
from ssum.arguments import add_inputs_and_out

DEFAULTS = InspectionSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inputs_and_out(parser, "images to inspect (TIFF/PNG), or folders of them",
                       "output folder: <stem>.defects.json, <stem>.klarf, <stem>.overlay.png")
    parser.add_argument("--reference", type=Path,
                        help="golden: the reference image; database: a layout raster or GDSII file")
    parser.add_argument("--mode", choices=MODES, default="golden",
                        help="golden (default), cell (repeating cells) or database (layout)")
    parser.add_argument("--convert", action="store_true",
                        help="convert the images (and a golden reference) with the bundle first; "
                             "each detection is kept only where the raw images differ too")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false",
                        help="with --convert: keep every detection on the converted images, "
                             "unconfirmed by the raw ones")
    parser.add_argument("--bundle", type=Path, help="model bundle for --convert (default: models/default)")
    parser.add_argument("--pixel-size", type=float, default=10.0, help="nm per pixel (default 10)")
    parser.add_argument("--reference-pixel-size", type=float,
                        help="nm per reference or layout pixel (default: the images')")
    parser.add_argument("--pitch", type=float, nargs=2, metavar=("X", "Y"),
                        help="cell mode: the repeat in nm (0 = detect; default: both detected)")
    parser.add_argument("--gds-layer", type=int, help="database mode: the GDSII layer (default all)")
    parser.add_argument("--false-alarm-rate", type=float, default=DEFAULTS.false_alarm_rate,
                        help=f"per defect-free pixel (default {DEFAULTS.false_alarm_rate:g})")
    parser.add_argument("--min-defect", type=float, default=DEFAULTS.min_defect_nm,
                        help=f"smallest defect of interest, nm (default {DEFAULTS.min_defect_nm:g})")
    parser.add_argument("--border", type=int, default=DEFAULTS.border_px,
                        help=f"pixels at the border not judged (default {DEFAULTS.border_px})")


def options_from_args(args: argparse.Namespace) -> InspectOptions:
    if args.mode != "cell" and args.reference is None:
        raise UserError(f"--mode {args.mode} needs --reference")
    if args.pixel_size <= 0:
        raise UserError("--pixel-size must be positive")
    pitch = tuple(p or None for p in args.pitch) if args.pitch else (None, None)
    settings = InspectionSettings(false_alarm_rate=args.false_alarm_rate,
                                  min_defect_nm=args.min_defect, border_px=args.border)
    return InspectOptions(args.mode, args.reference, args.pixel_size, args.reference_pixel_size,
                          (pitch[0], pitch[1]), args.gds_layer, settings, args.confirm)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    converter = Converter.from_bundle(args.bundle or default_bundle_path(),
                                      ConverterSettings()) if args.convert else None
    try:
        inspector = build_inspector(options, converter)
        for path in input_files(args.images):
            result = inspect_file(path, inspector, args.out, options.pixel_size_nm, converter)
            x0, y0, x1, y1 = result["inspected_region_px"]
            print(f"{path}: {len(result['defects'])} defect(s) in [{x0}, {y0}, {x1}, {y1}] px "
                  f"-> {args.out / path.stem}.defects.json")
    finally:
        if converter is not None:
            converter.close()
    return 0
