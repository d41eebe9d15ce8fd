"""A log line per kind of event and interval, however many events there are."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs the first event of each key at once, then at most one line per `interval_s` that
    says how many events of that key it stands for."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log (True) or count (False) one event of `key`."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            held = self._held.pop(key, 0)
            self._last[key] = now
        since = now - last if last is not None else 0.0
        suffix = f" (and {held} more of {key} in the last {since:.0f} s)" if held else ""
        self._log.warning(message + suffix, *args)
        return True
