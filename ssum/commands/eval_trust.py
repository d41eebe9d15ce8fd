"""`ssum eval --trust --data D`: the bundle's trust score on a user's own pairs, against whether
the bundle helped or harmed each (trainer/evaluation/trust.py); also the writer of the grid's
trust for `ssum eval --robustness --trust`. Argument parsing lives with `ssum eval`'s."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path, load_bundle
from trainer.evaluation.trust import TrustEvaluation, evaluate_trust


def run_trust(args: argparse.Namespace) -> int:
    """Convert the pairs of --data with --bundle, judge each tile and score it registered."""
    from trainer.data import load_pairs

    if args.data is None:
        raise UserError("--trust needs pairs with their SEM: give --data D (D/osr and D/sem), "
                        "or --robustness for the simulated grid")
    bundle = load_bundle(args.bundle or default_bundle_path())
    pairs = load_pairs(args.data)
    result = evaluate_trust(bundle, zip(pairs.osr, pairs.sem, strict=True),
                            pixel_size_nm=args.pixel_size, register=True, names=pairs.names)
    write_trust(result, Path(args.out), f"{args.data}")
    return 0


def write_trust(result: TrustEvaluation, out_dir: Path, what: str) -> Path:
    """OUT/trust.json and the one-line summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "trust.json"
    path.write_text(json.dumps(result.to_dict(), indent=1))
    print(f"trust over {what}: {len(result.tiles)} tiles, {result.harmful} harmed by the model "
          f"(registered); AUROC {result.auroc:.3f} (harmed vs helped), Spearman with the PSNR "
          f"gain {result.spearman:.3f}; wrote {path}")
    return path
