"""Escalation timers: an unacknowledged alert's level goes up after each step of
``protocol.escalation`` (seconds after it was raised).

The timers are derived from stored state (raised_at and level), so a restart resumes
them exactly where they were: it never raises, repeats or forgets an alert.

Each alert's raise is placed on the monotonic clock once (:class:`RaiseTimes`): at its
raise, or, for one raised before this start, from its stored ``raised_at`` when the hub
first sees it.  Every step is then waited for on the monotonic clock, so a wall-clock
jump (NTP's first answer on a Pi without a real-time clock) moves no step; the cancel
window is measured the same way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Protocol

from hubd.clock import Clock
from hubd.model import Alert, AlertState
from hubd.timers import Handle, Timers

log = logging.getLogger("hubd.escalation")


class Raised(Protocol):
    """An alert as far as its age goes (``hubd.model.Alert``, or a sensor's note of one)."""

    @property
    def id(self) -> str: ...

    @property
    def raised_at(self) -> float: ...


class RaiseTimes:
    """When each open local alert was raised, on the monotonic clock."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._raised: dict[str, float] = {}

    def note(self, alert_id: str, raised_mono: float) -> None:
        """Say when an alert was raised (its raise is known here: this start raised it)."""
        with self._lock:
            self._raised[alert_id] = raised_mono

    def of(self, alert: Raised) -> float:
        """The monotonic time of the alert's raise (from its wall time if not noted)."""
        with self._lock:
            mono = self._raised.get(alert.id)
            if mono is None:
                ago = max(self._clock.time() - alert.raised_at, 0.0)
                mono = self._raised[alert.id] = self._clock.monotonic() - ago
            return mono

    def age(self, alert: Raised) -> float:
        """Seconds since the alert was raised."""
        return self._clock.monotonic() - self.of(alert)

    def forget(self, alert_id: str) -> None:
        with self._lock:
            self._raised.pop(alert_id, None)


class EscalationTimers:
    """One timer per raised alert, for its next step, on the hub's timer thread.

    ``on_due(alert_id, level)`` runs when the step for ``level`` falls due; if it raises
    ``sqlite3.Error`` (the store refuses the write) it runs again ``retry_after`` seconds
    later, for escalation is derived from stored state and must not be lost."""

    def __init__(self, steps: tuple[float, ...], timers: Timers, raised: RaiseTimes,
                 on_due: Callable[[str, int], None], *, retry_after: float):
        self._steps = steps
        self._timers = timers
        self._raised = raised
        self._on_due = on_due
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, Handle]] = {}  # alert id -> (generation, its timer)
        self._generation = 0

    def schedule(self, alert: Alert) -> None:
        """Wait for the alert's next step (or for nothing, if it is not raised or has no step left)."""
        if alert.state != AlertState.RAISED or alert.level >= len(self._steps):
            self.cancel(alert.id)
            return
        self._set(alert.id, alert.level, self._raised.of(alert) + self._steps[alert.level])

    def cancel(self, alert_id: str) -> None:
        with self._lock:
            pending = self._pending.pop(alert_id, None)
        if pending is not None:
            pending[1].cancel()

    def pending(self) -> dict[str, float]:
        """Alert id -> monotonic time its next step is due."""
        with self._lock:
            return {alert_id: handle.when for alert_id, (_, handle) in self._pending.items()}

    def _set(self, alert_id: str, level: int, due: float) -> None:
        with self._lock:
            self._generation += 1
            handle = self._timers.call_at(due, partial(self._due, alert_id, level, self._generation))
            old = self._pending.get(alert_id)
            self._pending[alert_id] = (self._generation, handle)
        if old is not None:
            old[1].cancel()

    def _due(self, alert_id: str, level: int, generation: int) -> None:
        with self._lock:
            current = self._pending.get(alert_id)
            if current is None or current[0] != generation:
                return  # cancelled or scheduled again meanwhile
            del self._pending[alert_id]
        try:
            self._on_due(alert_id, level)
        except sqlite3.Error:
            with self._lock:
                if alert_id in self._pending:
                    return  # scheduled again meanwhile
            log.info("escalation of %s refused by the store; again in %.0f s", alert_id, self._retry_after)
            self._set(alert_id, level, self._timers.clock() + self._retry_after)
        except Exception:
            log.exception("escalation of %s failed", alert_id)
