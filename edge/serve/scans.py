"""Per-scan bookkeeping of the pipeline: counts for the scan-end, sequence gaps, idle expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

PRUNE_EVERY_S = 10.0


@dataclass
class ScanStats:
    converted: int = 0  # converted and published
    rejected: int = 0
    dropped: int = 0
    gaps: int = 0
    stacks: int = 0  # fused z-stacks published
    stacks_incomplete: int = 0
    next_seq: int = 0
    last_seen: float = 0.0

    def counts(self) -> dict[str, int]:
        """What the forwarded scan-end adds to the rig's header (the stack counts only for a
        scan that had stacks)."""
        counts = {"converted": self.converted, "rejected": self.rejected,
                  "dropped": self.dropped, "gaps": self.gaps}
        if self.stacks or self.stacks_incomplete:
            counts |= {"stacks": self.stacks, "stacks_incomplete": self.stacks_incomplete}
        return counts


class ScanBook:
    """Thread-safe ScanStats per scan id; a scan not heard of for `idle_s` is forgotten, so a
    scan whose scan-end never comes does not hold memory for ever."""

    def __init__(self, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._scans: dict[str, ScanStats] = {}
        self._lock = threading.Lock()
        self._pruned_at = clock()
        self.expired = 0

    def __len__(self) -> int:
        return len(self._scans)

    def count(self, scan_id: str, what: str, n: int = 1) -> None:
        """Add n to `what` (converted, rejected, dropped, stacks, stacks_incomplete)."""
        with self._lock:
            stats = self._touch(scan_id)
            setattr(stats, what, getattr(stats, what) + n)

    def sequence(self, scan_id: str, seq: int) -> int:
        """Record a tile's seq; returns how many numbers are missing before it (< 0: late)."""
        with self._lock:
            stats = self._touch(scan_id)
            missing = seq - stats.next_seq
            if missing > 0:
                stats.gaps += missing
            stats.next_seq = max(stats.next_seq, seq + 1)
            return missing

    def finish(self, scan_id: str) -> ScanStats:
        """The scan's stats, forgotten from now on."""
        with self._lock:
            return self._scans.pop(scan_id, ScanStats())

    def _touch(self, scan_id: str) -> ScanStats:
        now = self._clock()
        if now - self._pruned_at >= min(PRUNE_EVERY_S, self.idle_s):
            self._prune(now)
        stats = self._scans.get(scan_id)
        if stats is None:
            stats = self._scans[scan_id] = ScanStats()
        stats.last_seen = now
        return stats

    def _prune(self, now: float) -> None:
        idle = [k for k, s in self._scans.items() if now - s.last_seen > self.idle_s]
        for scan_id in idle:
            del self._scans[scan_id]
        self.expired += len(idle)
        self._pruned_at = now
