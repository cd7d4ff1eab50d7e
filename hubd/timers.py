"""Deadlines on one named thread: the core's (escalation, store retry, housekeeping)
and the sensor rules' (debounce, hold, cancel, stuck, siren patterns).

One :class:`Timers` runs its due callbacks on one named thread, in time order.  Its
clock is a monotonic one (a wall-clock jump never moves a deadline); it is injectable
and :meth:`Timers.run_due` can be called by hand, so tests drive the deadlines with a
manual clock instead of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("hubd.timers")

#: The thread wakes at least this often, so a stop request never waits longer.
MAX_WAIT = 1.0
#: Cancelled calls stay in the queue until they come due; once they are more than half of it
#: (and at least this many), they are taken out.  Every alert resolved at once leaves one
#: (its escalation timer), and a busy hub would otherwise keep them for a whole step.
COMPACT_AFTER = 64


class Handle:
    """A scheduled call; :meth:`cancel` stops it if it has not run yet."""

    __slots__ = ("when", "fn", "cancelled", "_timers")

    def __init__(self, when: float, fn: Callable[[], None], timers: Timers | None = None):
        self.when = when
        self.fn = fn
        self.cancelled = False
        self._timers = timers

    def cancel(self) -> None:
        if self._timers is None:
            self.cancelled = True
        else:
            self._timers._cancel(self)


class Timers:
    """Call functions at given times of ``clock`` on the thread ``hubd-<name>``."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.clock = clock
        self._heap: list[tuple[float, int, Handle]] = []
        self._cancelled = 0  # cancelled handles still in the heap
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopping = False

    def call_at(self, when: float, fn: Callable[[], None]) -> Handle:
        """Run ``fn`` once ``clock()`` has reached ``when``."""
        handle = Handle(when, fn, self)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def call_later(self, delay: float, fn: Callable[[], None]) -> Handle:
        return self.call_at(self.clock() + delay, fn)

    def every(self, interval: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` every ``interval`` seconds, the first time one interval from now.

        The next call is due ``interval`` after the previous one ended, whether it failed
        or not (a slow call is not run twice at once)."""
        def tick() -> None:
            try:
                fn()
            finally:
                self.call_later(interval, tick)

        self.call_later(interval, tick)

    def next_due(self) -> float | None:
        """When the earliest live call is due (None if there is none)."""
        with self._cond:
            self._drop_cancelled()
            return self._heap[0][0] if self._heap else None

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
            self._cancelled -= 1

    def _cancel(self, handle: Handle) -> None:
        with self._cond:
            if handle.cancelled:
                return  # cancelled before, or already run
            handle.cancelled = True
            self._cancelled += 1
            if self._cancelled > COMPACT_AFTER and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def run_due(self) -> int:
        """Run every call that is due now, in time order; return how many ran.

        A callback that raises is logged and does not stop the others."""
        ran = 0
        while True:
            with self._cond:
                self._drop_cancelled()
                if not self._heap or self._heap[0][0] > self.clock():
                    return ran
                handle = heapq.heappop(self._heap)[2]
                handle.cancelled = True  # run: cancelling it now does nothing
            try:
                handle.fn()
            except Exception:
                log.exception("timer callback %r failed", handle.fn)
            ran += 1

    # --- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"hubd-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._drop_cancelled()
                wait = MAX_WAIT if not self._heap else min(MAX_WAIT, self._heap[0][0] - self.clock())
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            self.run_due()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
