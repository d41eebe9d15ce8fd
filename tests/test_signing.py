"""Signed bundles: with trusted keys configured, a bundle whose files and manifest hashes were
both changed, an unsigned bundle or one signed by another key is refused; a manifest that
changes loses its signature."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from edge.errors import UserError
from edge.inference.bundle import add_model, load_bundle, model_entry
from edge.inference.signing import SIGNATURE, generate_signing_keypair, sign_bundle
from ssum.cli import main


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    release_pub, release_secret = generate_signing_keypair(tmp_path / "keys", "release")
    other_pub, other_secret = generate_signing_keypair(tmp_path / "other", "other")
    return {"pub": release_pub, "secret": release_secret, "other_pub": other_pub,
            "other_secret": other_secret, "dir": tmp_path / "keys"}


def tamper_and_rehash(bundle: Path) -> None:
    """Change the ONNX file and write its new sha256 into the manifest, as an attacker would."""
    onnx_file = bundle / "generator.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    manifest_path = bundle / "manifest.json"
    text = manifest_path.read_text()
    manifest = json.loads(text)
    for entry in manifest["models"]:
        if entry["file"] == "generator.onnx":
            entry["sha256"] = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def test_key_files_and_modes(keys):
    assert stat.S_IMODE(keys["secret"].stat().st_mode) == 0o600
    assert keys["pub"].read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(UserError, match="already exists"):
        generate_signing_keypair(keys["dir"], "release")


def test_a_signed_bundle_loads_with_its_key_trusted(tiny_bundle, keys):
    sign_bundle(tiny_bundle, keys["secret"])
    assert load_bundle(tiny_bundle, trusted_keys=keys["pub"]).name
    assert load_bundle(tiny_bundle, trusted_keys=keys["dir"]).name  # a directory of keys


def test_a_tampered_and_rehashed_bundle_is_refused_with_a_key_configured(tiny_bundle, keys):
    sign_bundle(tiny_bundle, keys["secret"])
    tamper_and_rehash(tiny_bundle)
    load_bundle(tiny_bundle)  # the hashes agree: without a key nothing can tell
    with pytest.raises(UserError, match="does not match its signature"):
        load_bundle(tiny_bundle, trusted_keys=keys["pub"])


def test_unsigned_and_foreign_bundles_are_refused(tiny_bundle, keys):
    with pytest.raises(UserError, match="not signed"):
        load_bundle(tiny_bundle, trusted_keys=keys["pub"])
    sign_bundle(tiny_bundle, keys["other_secret"])
    with pytest.raises(UserError, match="not trusted"):
        load_bundle(tiny_bundle, trusted_keys=keys["pub"])


def test_changing_the_manifest_removes_its_signature(tiny_bundle, keys):
    sign_bundle(tiny_bundle, keys["secret"])
    entry = model_entry(tiny_bundle / "generator.onnx", "fp16", "onnx")
    add_model(tiny_bundle, entry)  # as ssum calibrate does
    assert not (tiny_bundle / SIGNATURE).exists()


def test_the_daemon_refuses_a_tampered_bundle_in_one_line(tmp_path, tiny_bundle, keys, capsys):
    sign_bundle(tiny_bundle, keys["secret"])
    tamper_and_rehash(tiny_bundle)
    config = tmp_path / "edge.toml"
    config.write_text(f'[model]\nbundle = "{tiny_bundle}"\ntrusted_keys = "{keys["pub"]}"\n'
                      "[metrics]\nenabled = false\n")
    assert main(["edge", "run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match its signature" in err and "\n" not in err


def test_bundle_and_keys_commands(tmp_path, tiny_bundle, capsys):
    assert main(["keys", "generate", "--kind", "signing", "--out", str(tmp_path / "k"),
                 "--name", "ops"]) == 0
    assert main(["bundle", "sign", str(tiny_bundle), "--key",
                 str(tmp_path / "k" / "ops.sign.key_secret")]) == 0
    assert main(["bundle", "verify", str(tiny_bundle), "--trusted", str(tmp_path / "k")]) == 0
    assert main(["bundle", "info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "manifest signed by key" in out and ", signed" in out and "onnx" in out
    tamper_and_rehash(tiny_bundle)
    assert main(["bundle", "verify", str(tiny_bundle), "--trusted", str(tmp_path / "k")]) == 2
