"""CURVE encryption and client authentication for the daemon's ZeroMQ sockets.

A bound socket is a CURVE server: it holds the server's secret key and admits only clients
whose public key file (``*.key``) lies in the authorized-clients directory, checked by a ZAP
authenticator thread on the socket's context. A connecting socket is a CURVE client: it holds
its own secret key and the server's public key.

Key files are the ZeroMQ certificate format written by ``zmq.auth.create_certificates``:
``NAME.key`` (public, safe to copy) and ``NAME.key_secret`` (public + secret, mode 0600).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edge.errors import UserError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


def generate_keypair(directory: Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``name.key`` (public, 0644) and ``name.key_secret`` (0600) into ``directory``.

    The pair is created in a private temporary directory and moved into place, so the secret
    is never readable by others, not even briefly. Existing files are kept unless
    ``overwrite`` is set.
    """
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"key name must be a plain file name, got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{name}{SECRET_SUFFIX}"
    existing = [p for p in (public_path, secret_path) if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists (use --force to replace the key pair)")
    staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=directory))
    try:
        public_tmp, secret_tmp = (Path(p) for p in zmq.auth.create_certificates(staging, name))
        os.chmod(secret_tmp, 0o600)
        os.chmod(public_tmp, 0o644)
        os.replace(secret_tmp, secret_path)
        os.replace(public_tmp, public_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote CURVE key pair %s, %s", public_path, secret_path)
    return public_path, secret_path


def load_public_key(path: Path) -> bytes:
    """The z85 public key in a ``.key`` or ``.key_secret`` file."""
    public, _ = _load(path)
    return public


def load_secret_pair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a ``.key_secret`` file."""
    public, secret = _load(path)
    if not secret:
        raise UserError(f"{path} holds no secret key (give the {SECRET_SUFFIX} file)")
    return public, secret


def _load(path: Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CURVE key file not found: {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read CURVE key file {path}: {exc}") from exc
    if not public:
        raise UserError(f"{path} is not a CURVE key file (no public-key line)")
    return public, secret


def authorized_keys(directory: Path) -> dict[bytes, bool]:
    """Public keys of the ``*.key`` files in ``directory`` (the admitted clients)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"authorized clients directory not found: {directory}")
    return {load_public_key(p): True for p in sorted(directory.glob(f"*{PUBLIC_SUFFIX}"))}


def configure_client(
    socket: zmq.Socket, client_secret_file: Path, server_public_file: Path
) -> None:
    """Make a connecting socket a CURVE client (call before ``connect``)."""
    public, secret = load_secret_pair(client_secret_file)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public_key(server_public_file)


@dataclass
class _SharedAuth:
    authenticator: ThreadAuthenticator
    users: int


# One ZAP handler may bind per context; servers on the same context share it, each under
# its own ZAP domain so that each keeps its own list of clients.
_shared: dict[int, _SharedAuth] = {}
_shared_lock = threading.Lock()
_domain_ids = itertools.count(1)


class CurveServer:
    """CURVE server keys plus a ZAP authenticator admitting only the listed clients."""

    def __init__(
        self, context: zmq.Context, secret_key_file: Path, authorized_clients_dir: Path
    ) -> None:
        self._public, self._secret = load_secret_pair(secret_key_file)
        clients_dir = Path(authorized_clients_dir)
        clients = authorized_keys(clients_dir)
        if not clients:
            log.warning(
                "no *.key files in %s: every CURVE client will be refused", clients_dir
            )
        self._context = context
        self.domain = f"ssum-edge-{next(_domain_ids)}"
        with _shared_lock:
            shared = _shared.get(id(context))
            if shared is None:
                auth = ThreadAuthenticator(context)
                auth.start()
                shared = _shared[id(context)] = _SharedAuth(auth, 0)
            shared.users += 1
            shared.authenticator.certs[self.domain] = clients
        self._stopped = False
        log.info(
            "CURVE server: %d authorized client key(s) from %s", len(clients), clients_dir
        )

    def apply(self, socket: zmq.Socket) -> None:
        """Make a socket a CURVE server in this server's ZAP domain (call before ``bind``)."""
        socket.zap_domain = self.domain.encode()
        socket.curve_secretkey = self._secret
        socket.curve_publickey = self._public
        socket.curve_server = True

    def stop(self) -> None:
        """Stop authenticating; the shared ZAP thread stops with its last server."""
        if self._stopped:
            return
        self._stopped = True
        with _shared_lock:
            shared = _shared[id(self._context)]
            shared.authenticator.certs.pop(self.domain, None)
            shared.users -= 1
            if shared.users == 0:
                shared.authenticator.stop()
                del _shared[id(self._context)]
