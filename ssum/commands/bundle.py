"""`ssum bundle info | sign | verify | rdf`: what a model bundle is; its manifest signature;
its BioImage Model Zoo description."""

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
    return 0
