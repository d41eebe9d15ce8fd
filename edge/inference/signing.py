"""Signed bundles: an Ed25519 signature of manifest.json, which pins every model file by sha256.

The sha256 check alone guards against accidents: whoever can change a model file can change its
hash in the manifest too. With the manifest signed by a key the daemon trusts, neither can be
changed unnoticed. Keys are files like the CURVE keys: `NAME.sign.pub` (public, PEM) and
`NAME.sign.key_secret` (private, PEM, mode 0600). The signature lies beside the manifest in
`manifest.json.sig`: {"algorithm": "ed25519", "key_id": ..., "signature": base64}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import UserError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".sign.pub"
SECRET_SUFFIX = ".sign.key_secret"
SIGNATURE = "manifest.json.sig"
ALGORITHM = "ed25519"


def generate_signing_keypair(directory: Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write NAME.sign.pub (0644) and NAME.sign.key_secret (0600), never readable by others."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"key name must be a plain file name, got {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}"
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists (use --force to replace the key pair)")
    key = Ed25519PrivateKey.generate()
    _write(secret, key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()), 0o600)
    _write(public, _public_pem(key.public_key()), 0o644)
    log.info("wrote signing key pair %s, %s", public, secret)
    return public, secret


def _write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_secret_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a readable signing key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path}: not an Ed25519 signing key")
    return key


def load_trusted_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """key id -> public key, from one *.sign.pub file or a directory of them."""
    path = Path(path)
    files = sorted(path.glob(f"*{PUBLIC_SUFFIX}")) if path.is_dir() else [path]
    keys = {}
    for file in files:
        try:
            key = serialization.load_pem_public_key(file.read_bytes())
        except (OSError, ValueError) as exc:
            raise UserError(f"{file}: not a readable public signing key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise UserError(f"{file}: not an Ed25519 public key")
        keys[key_id(key)] = key
    if not keys:
        raise UserError(f"{path}: no trusted signing keys (*{PUBLIC_SUFFIX})")
    return keys


def sign_bundle(bundle_dir: Path, secret_key: Path) -> Path:
    """Sign the bundle's manifest.json as it is now; returns the signature file."""
    key = load_secret_key(secret_key)
    manifest = (Path(bundle_dir) / "manifest.json").read_bytes()
    record = {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
              "signature": base64.b64encode(key.sign(manifest)).decode()}
    target = Path(bundle_dir) / SIGNATURE
    target.write_text(json.dumps(record, indent=1) + "\n")
    log.info("signed %s with key %s", bundle_dir, record["key_id"])
    return target


def verify_bundle(bundle_dir: Path, trusted: dict[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed the manifest; UserError when none did."""
    bundle_dir = Path(bundle_dir)
    signature = bundle_dir / SIGNATURE
    if not signature.is_file():
        raise UserError(f"bundle {bundle_dir} is not signed ({SIGNATURE} is missing) and "
                        "[model] trusted_keys requires a signature")
    try:
        record = json.loads(signature.read_text())
        blob = base64.b64decode(record["signature"], validate=True)
        kid = str(record["key_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{signature}: not a signature record ({exc})") from exc
    key = trusted.get(kid)
    if key is None:
        raise UserError(f"bundle {bundle_dir} is signed by key {kid}, which is not trusted")
    try:
        key.verify(blob, (bundle_dir / "manifest.json").read_bytes())
    except InvalidSignature as exc:
        raise UserError(f"bundle {bundle_dir}: the manifest does not match its signature "
                        f"(key {kid}); refusing to load it") from exc
    return kid


def drop_signature(bundle_dir: Path) -> bool:
    """Remove a signature the manifest no longer matches; True when there was one."""
    signature = Path(bundle_dir) / SIGNATURE
    if not signature.is_file():
        return False
    signature.unlink()
    log.warning("the manifest of %s changed: its signature was removed; sign it again "
                "(ssum bundle sign) before serving it where signatures are required", bundle_dir)
    return True
