"""`ssum synth`: simulated OSR/SEM pairs, simulated scans, and the comparison with real SEM."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import UserError
from trainer.sim.compare import DEFAULT_REAL_DIR, MATCHED_PIXEL_SIZE_NM, compare_real, format_table
from trainer.sim.defects import DefectParams
from trainer.sim.domain import DOMAINS
from trainer.sim.pairs import write_degraded_pairs, write_pairs
from trainer.sim.scan import simulate_scan
from trainer.sim.zstack import StackParams, write_stack_pairs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    pairs = sub.add_parser("pairs", help="write OSR/SEM training pairs (16-bit TIFF) and meta.json")
    pairs.add_argument("--out", type=Path, required=True, help="output directory")
    pairs.add_argument("--n", type=int, default=32, help="number of pairs (default 32)")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    pairs.add_argument("--pixel-size", type=float, default=10.0, help="nm per pixel (default 10)")
    pairs.add_argument("--no-misalign", action="store_true", help="perfectly registered pairs")
    pairs.add_argument("--domain", choices=DOMAINS, default="narrow",
                       help="narrow: every pair with the default microscope (the shipped model's "
                            "data); randomized: each pair draws its optics, illumination, noise, "
                            "contrast, pixel size and SEM; holdout: one fixed microscope and chip "
                            "outside every randomized range, for fine-tuning studies "
                            "(docs/simulator.md; default narrow)")
    pairs.add_argument("--planes", type=int, default=1,
                       help="with 2 or more: multilayer chips (layers at their own heights), each "
                            "OSR input a z-stack of that many planes (a multi-page TIFF that "
                            "`ssum train` fuses), the SEM in the first plane's frame (default 1)")
    pairs.add_argument("--split-planes", action="store_true",
                       help="with --planes: write every plane as a pair of its own instead of a "
                            "stack (the single-plane control of the same scenes)")

    scan = sub.add_parser("scan", help="write a simulated scan recording (tiles + ground truth)")
    scan.add_argument("--out", type=Path, required=True, help="output scan directory")
    scan.add_argument("--rows", type=int, default=3)
    scan.add_argument("--cols", type=int, default=3)
    scan.add_argument("--tile", type=int, default=512, help="tile side in pixels (default 512)")
    scan.add_argument("--overlap", type=int, default=64, help="overlap in pixels (default 64)")
    scan.add_argument("--seed", type=int, default=0)
    scan.add_argument("--pixel-size", type=float, default=10.0, help="nm per pixel (default 10)")
    scan.add_argument("--stage-error", type=float, default=20.0, help="stage error std, nm (default 20)")
    scan.add_argument("--defects", type=int, default=0,
                      help="inject N defects (truth in scan.json; ground truth adds sem_reference "
                           "and layout, the references of inspection; default 0)")
    scan.add_argument("--defect-sizes", type=float, nargs=2, default=(20.0, 300.0),
                      metavar=("MIN", "MAX"), help="defect sizes in nm (default 20 300)")
    scan.add_argument("--sem-tiles", action="store_true",
                      help="record SEM tiles instead of the SSUM camera's (inspection tests)")
    scan.add_argument("--planes", type=int, default=1,
                      help="frames per position: with 2 or more, each position is a z-stack of "
                           "planes spanning the layout's heights (default 1)")
    scan.add_argument("--array", type=int, nargs=2, metavar=("NX", "NY"),
                      help="an array chip: one unit of NX x NY design-grid cells (90 nm each at "
                           "10 nm/px) repeated, for cell-to-cell inspection")
    scan.add_argument("--multilayer", action="store_true",
                      help="layers at their own heights (steps of 50-1000 nm, up to 2 um)")

    degrade = sub.add_parser(
        "degrade", help="test pairs from real SEM images: the SEM as reference, its optical rendering as input")
    degrade.add_argument("--sem", type=Path, default=None, help="folder of SEM images (default: the real-SEM test set)")
    degrade.add_argument("--out", type=Path, required=True, help="output directory")
    degrade.add_argument("--source-pixel-size", type=float, default=None,
                         help="nm per pixel of the SEM images (default: 7.3, the real set's estimate)")
    degrade.add_argument("--pixel-size", type=float, default=10.0, help="nm per pixel to render at (default 10)")
    degrade.add_argument("--seed", type=int, default=0)

    compare = sub.add_parser("compare-real", help="compare simulated SEM statistics with real SEM images")
    compare.add_argument("--real-dir", type=Path, default=None, help="folder of real SEM images")
    compare.add_argument("--n-sim", type=int, default=6, help="simulated images (default 6)")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--out", type=Path, default=None, help="also write the full report as JSON")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, not {value}")


def _write_stack_pairs(args: argparse.Namespace) -> int:
    if args.domain != "narrow" or args.no_misalign:
        raise UserError("--planes draws multilayer scenes with the default microscope: it takes "
                        "neither --domain nor --no-misalign (the planes drift instead)")
    out = write_stack_pairs(args.out, args.n, args.seed, args.size, args.pixel_size,
                            StackParams(planes=args.planes), args.split_planes)
    kind = f"{args.planes} single planes each" if args.split_planes else f"stacks of {args.planes} planes"
    print(f"wrote {args.n} multilayer scenes ({kind}) to {out}/osr, {out}/sem and {out}/meta.json")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "pairs":
        _check_positive(n=args.n, size=args.size, pixel_size=args.pixel_size, planes=args.planes)
        if args.planes > 1:
            return _write_stack_pairs(args)
        if args.split_planes:
            raise UserError("--split-planes needs --planes 2 or more")
        out = write_pairs(args.out, args.n, args.seed, args.size, args.pixel_size,
                          not args.no_misalign, args.domain)
        print(f"wrote {args.n} pairs ({args.domain} domain) to {out}/osr, {out}/sem and {out}/meta.json")
    elif args.action == "scan":
        _check_positive(rows=args.rows, cols=args.cols, tile=args.tile, pixel_size=args.pixel_size,
                        planes=args.planes)
        if not 0 <= args.overlap < args.tile:
            raise UserError(f"--overlap must be in [0, --tile), not {args.overlap}")
        if args.stage_error < 0:
            raise UserError("--stage-error must not be negative")
        if args.defects < 0 or not 0 < args.defect_sizes[0] <= args.defect_sizes[1]:
            raise UserError("--defects must be >= 0 and --defect-sizes 0 < MIN <= MAX")
        if args.array and (min(args.array) < 1 or args.multilayer):
            raise UserError("--array needs NX, NY >= 1 and no --multilayer")
        defects = DefectParams(count=args.defects, min_size_nm=args.defect_sizes[0],
                               max_size_nm=args.defect_sizes[1]) if args.defects else None
        out = simulate_scan(args.out, args.rows, args.cols, args.tile, args.overlap, args.seed,
                            args.pixel_size, args.stage_error, args.planes, args.multilayer,
                            defects, "sem" if args.sem_tiles else "osr",
                            tuple(args.array) if args.array else None)
        planes = f" of {args.planes} planes" if args.planes > 1 else ""
        print(f"wrote {args.rows}x{args.cols} tiles{planes} to {out}/tiles, ground truth to "
              f"{out}/ground_truth, manifest {out}/scan.json")
    elif args.action == "degrade":
        source_nm = args.source_pixel_size or MATCHED_PIXEL_SIZE_NM
        _check_positive(source_pixel_size=source_nm, pixel_size=args.pixel_size)
        out = write_degraded_pairs(args.sem or DEFAULT_REAL_DIR, args.out, source_nm, args.pixel_size, args.seed)
        print(f"wrote degraded pairs to {out}/osr, {out}/sem and {out}/meta.json")
    else:
        _check_positive(n_sim=args.n_sim)
        report = compare_real(args.real_dir or DEFAULT_REAL_DIR, n_sim=args.n_sim, seed=args.seed)
        print(f"real: {len(report['real'])} images from {report['real_dir']}; simulated: {args.n_sim} "
              f"images {report['size_sim']} px at {report['pixel_size_nm_sim']} nm/px")
        print(format_table(report))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
            print(f"wrote {args.out}")
    return 0
