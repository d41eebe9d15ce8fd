"""`ssum bundle info | sign | verify | rdf | stats | harm`: what a model bundle is; its
manifest signature; its BioImage Model Zoo description; the training data's trust statistics;
the trust score's harm model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.inference.bundle import load_bundle
from edge.inference.rdf import RDF, write_rdf
from edge.inference.signing import SIGNATURE, load_trusted_keys, sign_bundle, verify_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="name, models, I/O contract and evaluation of a bundle")
    info.add_argument("bundle", type=Path)
    sign = actions.add_parser(
        "sign", help="sign a bundle's manifest with an Ed25519 key (ssum keys generate --kind "
        "signing)", description="Checks every model file against the manifest first; the "
        f"signature goes to BUNDLE/{SIGNATURE}. Signing again with a new key rotates it.")
    sign.add_argument("bundle", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="NAME.sign.key_secret")
    rdf = actions.add_parser(
        "rdf", help="write the bundle's BioImage Model Zoo rdf.yaml (format 0.5) and test tensors",
        description="ssum export writes it for new bundles; this writes it for an existing one.")
    rdf.add_argument("bundle", type=Path)
    stats = actions.add_parser(
        "stats", help="record the training data's trust statistics in a bundle's manifest",
        description="Measures the OSR images of the pairs folder the model was trained on (its "
        "manifest's training.data_origin says how it was made) with the trust score's own "
        "statistics (and its cycle, when the bundle has a SEM->OSR generator) and records "
        "their ranges in manifest.json (`trust`, docs/trust.md). A signed bundle loses its "
        "signature: sign it again.")
    stats.add_argument("bundle", type=Path)
    stats.add_argument("--data", type=Path, required=True,
                       help="the training pairs folder (osr/ and sem/)")
    stats.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    harm = actions.add_parser(
        "harm", help="fit the trust score's harm model on pairs from other microscopes",
        description="Converts the OSR images of the pairs folders, labels each pair harmed "
        "(registered PSNR gain < 0 or FRC ratio > 1 against its SEM) or helped, and fits a "
        "logistic model of harm on the trust features (docs/trust.md); the score becomes "
        "P(the conversion helps). Give pairs the model was not trained on, from varied "
        "microscopes (ssum synth pairs --domain randomized) and your own. Needs the trust "
        "statistics (ssum bundle stats) first. A signed bundle loses its signature.")
    harm.add_argument("bundle", type=Path)
    harm.add_argument("--data", type=Path, action="append", required=True,
                      help="a pairs folder (osr/ and sem/); repeat for several")
    harm.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    verify = actions.add_parser("verify", help="check the files and the signature of a bundle")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--trusted", type=Path, required=True,
                        help="a NAME.sign.pub file or a directory of them")


def run(args: argparse.Namespace) -> int:
    if args.action == "sign":
        load_bundle(args.bundle)  # sign only what matches its hashes
        print(f"wrote {sign_bundle(args.bundle, args.key)}")
        return 0
    if args.action == "rdf":
        print(f"wrote {write_rdf(load_bundle(args.bundle))}")
        return 0
    if args.action == "stats":
        return _record_statistics(args.bundle, args.data, args.threads)
    if args.action == "harm":
        return _fit_harm(args.bundle, args.data, args.threads)
    if args.action == "verify":
        load_bundle(args.bundle)
        key = verify_bundle(args.bundle, load_trusted_keys(args.trusted))
        print(f"{args.bundle}: every file matches its sha256; manifest signed by key {key}")
        return 0
    bundle = load_bundle(args.bundle)
    signed = (bundle.path / SIGNATURE).is_file()
    rdf = ", with rdf.yaml" if (bundle.path / RDF).is_file() else ""
    print(f"{bundle.name} ({bundle.path}){', signed' if signed else ', not signed'}{rdf}")
    for model in bundle.models():
        print(f"  {model.kind:<13} {model.precision:<5} {model.path.name}  sha256 "
              f"{model.sha256[:16]}")
    print("  io: " + json.dumps(bundle.io))
    print(f"  pixel size {bundle.manifest.get('pixel_size_nm')} nm; preprocessing "
          f"{json.dumps(bundle.preprocessing)}")
    evaluation = bundle.manifest.get("evaluation") or {}
    if evaluation:
        print("  evaluation: " + json.dumps(evaluation)[:300])
    reverse = bundle.reverse
    if reverse is not None:
        print(f"  reverse (SEM->OSR, for the trust score) {reverse.path.name}  sha256 "
              f"{reverse.sha256[:16]}")
    trust = bundle.manifest.get("trust")
    print(f"  trust statistics: {trust.get('images')} images of "
          f"{(trust.get('source') or {}).get('data')}"
          f"{' with the cycle' if 'cycle' in trust else ''}" if trust else
          "  trust statistics: none (ssum bundle stats)")
    harm = (trust or {}).get("harm")
    if harm:
        source = harm.get("source") or {}
        print(f"  trust harm model: fitted on {source.get('pairs')} pairs "
              f"({source.get('harmful')} harmed) of {', '.join(source.get('data') or [])}, "
              f"cross-validated AUROC {source.get('cross_validated_auroc')}")
    return 0


def _record_statistics(bundle: Path, data: Path, threads: int) -> int:
    from edge.inference.converter import ConverterSettings
    from trainer.export import record_statistics

    signed = (bundle / SIGNATURE).is_file()
    had_harm = "harm" in (load_bundle(bundle).manifest.get("trust") or {})
    trust = record_statistics(bundle, data, ConverterSettings(threads=threads))
    cycle = " and the cycle" if "cycle" in trust else " (no SEM->OSR generator: no cycle)"
    print(f"{bundle}: trust statistics of {trust['images']} images ({trust['blocks']} blocks)"
          f"{cycle} recorded in manifest.json")
    if had_harm:
        print(f"{bundle}: its harm model was fitted against the old statistics and was removed: "
              "fit it again (ssum bundle harm)")
    _say_if_unsigned(bundle, signed)
    return 0


def _fit_harm(bundle: Path, data: list[Path], threads: int) -> int:
    from edge.inference.converter import ConverterSettings
    from trainer.evaluation.harm import fit_harm_model

    signed = (bundle / SIGNATURE).is_file()
    harm = fit_harm_model(bundle, data, ConverterSettings(threads=threads))
    source = harm["source"]
    print(f"{bundle}: harm model fitted on {source['pairs']} pairs, {source['harmful']} harmed "
          f"by the model; cross-validated AUROC {source['cross_validated_auroc']:.3f}; recorded "
          "in manifest.json")
    _say_if_unsigned(bundle, signed)
    return 0


def _say_if_unsigned(bundle: Path, signed: bool) -> None:
    if signed and not (bundle / SIGNATURE).is_file():
        print(f"{bundle}: the manifest changed, its signature was removed: sign it again "
              "(ssum bundle sign)")
