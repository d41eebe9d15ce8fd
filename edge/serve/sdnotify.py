"""systemd's notify protocol (sd_notify) without libsystemd: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes:
    """'@name' is an abstract socket (leading NUL byte); anything else a filesystem path."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(message: str) -> bool:
    """Send e.g. "READY=1" or "STATUS=..."; False when not run under systemd (or on failure).

    Never blocks: a receiver that does not read (a full datagram queue) loses the message
    rather than stopping the daemon's main loop, and with it SIGTERM handling."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(_address(target))
            sock.send(message.encode())
    except OSError as exc:  # BlockingIOError included
        log.debug("sd_notify to %s failed: %s", target, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between required WATCHDOG=1 pings (half of WatchdogSec), or None when off.

    WATCHDOG_PID, when set, must be this process: a child must not ping for its parent.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
