"""Z-stacks in the daemon: the planes of one scan position held until the stack is complete.

A tile is a plane of a stack when its header has `z_nm` and a stack size of 2 or more (its
`stack_size`, else `[stacks] size`). Planes are grouped per (scan, row, col); a stack closes when
it has its size of planes, or incomplete: when no plane came for `timeout_s` ("timeout"), when
its scan ended ("scan_end"), when the open stacks hold more than `max_planes` planes (the
oldest, "evicted": this bounds the memory they hold) or when the daemon stops ("shutdown"). Used by the receive thread only (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.imaging.focus import FocusSettings, FusedStack, fuse_stack
from edge.imaging.imageio import to_float01
from edge.protocol import Tile

INCOMPLETE_REASONS = ("timeout", "scan_end", "evicted", "shutdown")


@dataclass(frozen=True)
class StackSettings:
    """size 0: only headers say which tiles are planes (`stack_size`)."""

    size: int = 0
    timeout_s: float = 10.0
    max_planes: int = 256
    height_map: bool = True
    focus: FocusSettings = field(default_factory=FocusSettings)


@dataclass(eq=False)
class Stack:
    """The planes received for one position; `incomplete` says why it closed early ("" when
    it did not); times are the receive clock's (monotonic seconds)."""

    key: tuple[str, int, int]
    size: int
    planes: list[Tile]
    opened: float
    last: float
    incomplete: str = ""

    def fuse(self, settings: FocusSettings) -> FusedStack:
        images = [to_float01(np.asarray(plane.image)) for plane in self.planes]
        return fuse_stack(images, [float(p.header["z_nm"]) for p in self.planes], settings)

    def header(self) -> dict[str, Any]:
        """The fused tile's header: the first plane's, without its z fields, plus `stack`."""
        first = self.planes[0].header
        record: dict[str, Any] = {
            "planes": len(self.planes), "size": self.size, "complete": not self.incomplete,
            "z_nm": [p.header["z_nm"] for p in self.planes], "seq": [p.seq for p in self.planes],
            "collect_ms": round((self.last - self.opened) * 1e3, 3)}
        if self.incomplete:
            record["incomplete"] = self.incomplete
        base = {k: v for k, v in first.items() if k not in ("z_nm", "stack_size")}
        return {**base, "stack": record}


class StackBook:
    """The open stacks, oldest first."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self._open: dict[tuple[str, int, int], Stack] = {}
        self.held = 0  # planes in open stacks

    def __len__(self) -> int:
        return len(self._open)

    def size_of(self, tile: Tile) -> int:
        """The planes of the tile's stack; below 2: the tile is not a plane of a stack."""
        if "z_nm" not in tile.header:
            return 0
        return int(tile.header.get("stack_size", self.settings.size))

    def add(self, tile: Tile, now: float) -> list[Stack]:
        """Hold a plane; returns the stacks this closes (its own, when complete; the oldest
        while the open stacks hold too many planes)."""
        key = (tile.scan_id, int(tile.header["row"]), int(tile.header["col"]))
        stack = self._open.get(key)
        if stack is None:
            stack = self._open[key] = Stack(key, self.size_of(tile), [], now, now)
        stack.planes.append(tile)
        stack.last = now
        self.held += 1
        closed = [self._close(key, "")] if len(stack.planes) >= stack.size else []
        while self.held > self.settings.max_planes:
            closed.append(self._close(next(iter(self._open)), "evicted"))
        return closed

    def expire(self, now: float) -> list[Stack]:
        """The stacks no plane came to for `timeout_s`."""
        late = [k for k, s in self._open.items() if now - s.last >= self.settings.timeout_s]
        return [self._close(key, "timeout") for key in late]

    def close_scan(self, scan_id: str) -> list[Stack]:
        return [self._close(key, "scan_end") for key in list(self._open) if key[0] == scan_id]

    def close_all(self) -> list[Stack]:
        return [self._close(key, "shutdown") for key in list(self._open)]

    def _close(self, key: tuple[str, int, int], reason: str) -> Stack:
        stack = self._open.pop(key)
        stack.incomplete = reason
        self.held -= len(stack.planes)
        return stack
