"""ZeroMQ sockets in one place: create, secure with CURVE, then bind or connect.

The daemon, the rig replay and the reference consumer all open their sockets with
`open_socket`. With CURVE a bound socket is a server (its secret key and the directory of
admitted client keys); a connecting one is a client (its secret key and the server's public key).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zmq

from edge.errors import UserError
from edge.security import CurveServer, configure_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurveOptions:
    """CURVE keys for one socket: a bound socket is a server, a connecting one a client."""

    secret_key: Path
    authorized_clients: Path | None = None
    server_key: Path | None = None


@dataclass(frozen=True)
class SocketOptions:
    """hwm: send or receive high-water mark (by the socket's direction), None: ZeroMQ's;
    timeout_ms: send timeout (zmq.Again after it), None: block; max_message_bytes: ZeroMQ
    disconnects a peer that sends a larger frame, before it is received (None: no limit)."""

    curve: CurveOptions | None = None
    hwm: int | None = None
    linger_ms: int = 0
    timeout_ms: int | None = None
    subscribe: tuple[str, ...] = ()
    xpub_verbose: bool = False
    max_message_bytes: int | None = None


class OpenSocket:
    """A socket with the CURVE server that authenticates its peers; close() stops both."""

    def __init__(self, socket: zmq.Socket, server: CurveServer | None) -> None:
        self.socket = socket
        self._server = server

    def close(self, linger_ms: int | None = None) -> None:
        self.socket.close(linger=linger_ms)
        if self._server is not None:
            self._server.stop()
            self._server = None


def open_socket(context: zmq.Context, kind: int, endpoint: str, bind: bool,
                options: SocketOptions = SocketOptions()) -> OpenSocket:
    """A socket of `kind` (zmq.PUB, zmq.PULL, ...) bound to or connected to `endpoint`.

    Endpoint and key errors are UserErrors; nothing is left open when one is raised."""
    socket = context.socket(kind)
    server = None
    try:
        _configure(socket, kind, options)
        server = _secure(context, socket, options.curve, bind)
        _attach(socket, endpoint, bind)
    except BaseException:
        socket.close(linger=0)
        if server is not None:
            server.stop()
        raise
    return OpenSocket(socket, server)


@contextmanager
def socket_in(context: zmq.Context | None, kind: int, endpoint: str, bind: bool,
              options: SocketOptions = SocketOptions()) -> Iterator[zmq.Socket]:
    """`open_socket` for a block: on `context`, or on a context of its own (terminated after)."""
    ctx = context or zmq.Context()
    try:
        opened = open_socket(ctx, kind, endpoint, bind, options)
        try:
            yield opened.socket
        finally:
            opened.close()
    finally:
        if context is None:
            ctx.term()


def _configure(socket: zmq.Socket, kind: int, options: SocketOptions) -> None:
    socket.linger = options.linger_ms
    if options.hwm is not None:
        if kind in (zmq.SUB, zmq.PULL, zmq.XSUB):
            socket.rcvhwm = options.hwm
        else:
            socket.sndhwm = options.hwm
    if options.timeout_ms is not None:
        socket.sndtimeo = options.timeout_ms
    if options.xpub_verbose:
        socket.setsockopt(zmq.XPUB_VERBOSE, 1)
    if options.max_message_bytes is not None:
        socket.maxmsgsize = options.max_message_bytes
    for topic in options.subscribe:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode())


def _secure(context: zmq.Context, socket: zmq.Socket, curve: CurveOptions | None,
            bind: bool) -> CurveServer | None:
    """Apply CURVE before bind/connect; returns the server to stop, if any."""
    if curve is None:
        return None
    if bind:
        if curve.authorized_clients is None:
            raise UserError("a bound CURVE socket needs the authorized clients directory")
        server = CurveServer(context, curve.secret_key, curve.authorized_clients)
        server.apply(socket)
        return server
    if curve.server_key is None:
        raise UserError("a connecting CURVE socket needs the server's public key")
    configure_client(socket, curve.secret_key, curve.server_key)
    return None


def _attach(socket: zmq.Socket, endpoint: str, bind: bool) -> None:
    """Bind or connect, turning ZeroMQ's endpoint errors into a one-line UserError."""
    try:
        if bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    except zmq.ZMQError as exc:
        verb = "bind" if bind else "connect"
        raise UserError(f"cannot {verb} {endpoint}: {exc}") from exc
