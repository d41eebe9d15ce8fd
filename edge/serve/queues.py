"""The pipeline's intake queue and the sentinel that closes its stages."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

POLL_S = 0.1


class _Stop:
    """Sentinel that travels down the queues behind every item accepted before it."""


STOP = _Stop()


class DecodeQueue:
    """A bounded FIFO whose put either blocks or drops the oldest waiting item. An item taken
    stays `pending` until its taker calls `done()`: the batcher asks whether a tile is on its
    way without a gap between the queue and the stage that holds it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._taken = 0

    def qsize(self) -> int:
        return len(self._items)

    def pending(self) -> int:
        """Items waiting, plus those taken and not yet `done()`."""
        with self._cond:
            return len(self._items) + self._taken

    def done(self) -> None:
        with self._cond:
            self._taken -= 1

    def put_blocking(self, item: Any, give_up: Callable[[], bool]) -> bool:
        """Wait for room; False when `give_up()` became true first."""
        with self._cond:
            while len(self._items) >= self.capacity:
                if give_up():
                    return False
                self._cond.wait(POLL_S)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def put_drop_oldest(self, item: Any) -> Any | None:
        """Append; when full, remove and return the oldest waiting item (None when not full)."""
        with self._cond:
            dropped = self._items.popleft() if len(self._items) >= self.capacity else None
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def put_always(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float) -> Any:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                raise queue.Empty
            item = self._items.popleft()
            self._taken += 1
            self._cond.notify_all()
            return item
