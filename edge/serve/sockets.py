"""The daemon's two sockets: the input (read by the receive thread) and the output sink (used by
the publish thread only)."""

from __future__ import annotations

import logging
import threading

import zmq
from zmq.utils.monitor import recv_monitor_message

from edge.protocol import MAX_HEADER_BYTES, MAX_TOPIC_BYTES, Kind, topic
from edge.serve.config import EdgeConfig
from edge.serve.pipeline import SinkClosed
from edge.transport import OpenSocket, SocketOptions, open_socket

log = logging.getLogger(__name__)

POLL_MS = 100
OUTPUT_LINGER_MS = 5000


def subscriptions(topics: tuple[str, ...]) -> list[str]:
    """SUB prefixes: the configured ones plus the scan-end prefix of every tile/ prefix."""
    out = list(topics)
    tile, scan_end = topic(Kind.TILE), topic(Kind.SCAN_END)
    out += [scan_end + t[len(tile):] for t in topics if t.startswith(tile)]
    return list(dict.fromkeys(out))


def open_input(context: zmq.Context, config: EdgeConfig) -> OpenSocket:
    """SUB or PULL per [input]; ZeroMQ itself refuses frames larger than [limits] allow."""
    cfg = config.input
    topics = tuple(subscriptions(cfg.topics)) if cfg.socket == "sub" else ()
    largest = max(config.limits.max_bytes, MAX_HEADER_BYTES, MAX_TOPIC_BYTES)
    options = SocketOptions(curve=config.security.curve_options(cfg.bind), hwm=cfg.hwm,
                            subscribe=topics, max_message_bytes=largest)
    opened = open_socket(context, zmq.SUB if cfg.socket == "sub" else zmq.PULL, cfg.endpoint,
                         cfg.bind, options)
    log.info("input: %s %s %s", cfg.socket, "bound to" if cfg.bind else "connected to",
             cfg.endpoint)
    return opened


class InputPeers:
    """Peers of the input socket, from its ZeroMQ monitor (read by the receive thread)."""

    EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED

    def __init__(self, socket: zmq.Socket, bound: bool) -> None:
        self.bound = bound
        self.count = 0
        self.monitor = socket.get_monitor_socket(self.EVENTS)

    def update(self) -> None:
        """Take every pending monitor event."""
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            self.count += 1 if event in (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED) else -1
            self.count = max(self.count, 0)

    @property
    def connected(self) -> bool:
        """A bound input is ready when listening; a connecting one once connected."""
        return self.bound or self.count > 0

    def close(self) -> None:
        self.monitor.close(linger=0)


class ZmqSink:
    """The output socket. PUSH waits for a consumer; it gives up (SinkClosed) once `give_up` is
    set, and then closes without lingering."""

    def __init__(self, context: zmq.Context, config: EdgeConfig, give_up: threading.Event) -> None:
        out = config.output
        self.push = out.socket == "push"
        options = SocketOptions(curve=config.security.curve_options(out.bind), hwm=out.hwm,
                                linger_ms=OUTPUT_LINGER_MS)
        self._open = open_socket(context, zmq.PUSH if self.push else zmq.PUB, out.endpoint,
                                 out.bind, options)
        self.socket = self._open.socket
        self._give_up = give_up
        log.info("output: %s %s %s", out.socket, "bound to" if out.bind else "connected to",
                 out.endpoint)

    def send(self, frames: list[bytes]) -> None:
        if self.push:
            while not self.socket.poll(POLL_MS, zmq.POLLOUT):
                if self._give_up.is_set():
                    raise SinkClosed("shutting down with no consumer for the PUSH output")
        self.socket.send_multipart(frames, copy=False)

    def close(self) -> None:
        self._open.close(0 if self._give_up.is_set() else None)
