"""The centre's two clocks: wall time for what is stored and shown, monotonic time for every
deadline (supervision, command timeouts), so that a wall-clock jump moves only displayed
times. Tests pass their own clock. (The hub has its own ``hubd.clock``; the centre imports
nothing of the hub.)"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
