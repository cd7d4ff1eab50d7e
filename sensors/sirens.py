"""Sirens: patterns per alert kind and level, a maximum on-time, and optional feedback.

A :class:`Siren` implements the core's ``Sounder`` protocol.  ``sound()`` switches
the output on in the caller's thread (the core calls it before any disk I/O) and
leaves the rest of the pattern, the max on-time and the feedback checks to a
:class:`~hubd.timers.Timers` thread, so no call ever blocks.

The siren reports to the hub through two callbacks given by the wiring, so the
core never imports this module: ``on_event(type, data)`` (``siren.timeout``) and
``on_health(status, reason)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from gpiozero import DigitalOutputDevice, Factory

from hubd.config import SirenConfig
from hubd.sensors.gpio import InputLine
from hubd.timers import Handle, Timers

log = logging.getLogger("hubd.sensors.siren")

INF = float("inf")

#: Each pattern is a cycle of (output on?, seconds) steps.
PATTERNS: dict[str, tuple[tuple[bool, float], ...]] = {
    "continuous": ((True, INF),),
    "pulsed": ((True, 0.5), (False, 0.5)),
    "fast": ((True, 0.2), (False, 0.2)),
    "slow": ((True, 1.0), (False, 1.0)),
    # The fire-alarm temporal-three pattern (ISO 8201 / NFPA 72).
    "temporal3": ((True, 0.5), (False, 0.5), (True, 0.5), (False, 0.5), (True, 0.5), (False, 1.5)),
    "off": (),
}

#: The test chirp: one short beep.
CHIRP_SECONDS = 0.15

#: While the output stays on, feedback is checked again this often (seconds).
FEEDBACK_RECHECK = 2.0

EventCallback = Callable[[str, dict[str, Any]], None]
HealthCallback = Callable[[str, str], None]


class Siren:
    """One siren on a relay or driver output; never blocks the caller."""

    def __init__(self, config: SirenConfig, pin_factory: Factory | None = None, *,
                 timers: Timers | None = None, clock: Callable[[], float] | None = None,
                 on_event: EventCallback | None = None, on_health: HealthCallback | None = None):
        self.config = config
        self.name = config.name
        self._own_timers = timers is None
        self.timers = timers or Timers(f"siren-{self.name}", clock or time.monotonic)
        self.clock = clock or self.timers.clock
        self.on_event = on_event
        self.on_health = on_health
        self._lock = threading.RLock()
        self._gen = 0                      # bumped by every sound/silence/chirp: stale timers do nothing
        self._steps: tuple[tuple[bool, float], ...] = ()
        self.pattern: str | None = None
        self.kind: str | None = None
        self.level = 0
        self.sounding_since: float | None = None
        self._timers: list[Handle] = []
        self._changed_at = self.clock()    # when the output last changed
        self._phases: deque[list[Any]] = deque(maxlen=8)  # [on at, feedback seen] per on-phase
        self.health = ("ok", "")
        self.timeouts = 0
        self.device = DigitalOutputDevice(config.pin, active_high=config.active_high, initial_value=False,
                                          pin_factory=pin_factory)
        self.feedback: InputLine | None = None
        if config.feedback_pin is not None:
            self.feedback = InputLine(config.feedback_pin, pull_up=config.feedback_pull_up,
                                      active_high=not config.feedback_pull_up,
                                      on_change=self._feedback_changed, pin_factory=pin_factory)
        if self._own_timers:
            self.timers.start()

    # --- the Sounder protocol -------------------------------------------------------------

    def sound(self, kind: str, level: int) -> None:
        """Sound the pattern configured for ``kind`` at escalation ``level``."""
        seq = getattr(self.config.patterns, kind, None) or ("continuous",)
        name = seq[min(level, len(seq) - 1)]
        steps = PATTERNS[name]
        with self._lock:
            if not steps:
                log.info("siren %s: pattern for %s level %d is off", self.name, kind, level)
                return
            self._restart()
            self._drive(steps[0][0])
            now = self.clock()
            self._steps, self.pattern, self.kind, self.level = steps, name, kind, level
            self.sounding_since = now
            gen = self._gen
            self._later(now + steps[0][1], partial(self._step, gen, 1))
            self._later(now + self.config.max_on, partial(self._timeout, gen))

    def silence(self) -> None:
        """Stop at once (the alert stays as it is)."""
        with self._lock:
            self._restart()
            self._drive(False)

    def chirp(self) -> None:
        """One short beep to test the siren; skipped while it sounds for an alert."""
        with self._lock:
            if self.sounding_since is not None:
                log.info("siren %s is sounding for an alert; test chirp skipped", self.name)
                return
            self._restart()
            self._drive(True)
            self._later(self.clock() + CHIRP_SECONDS, partial(self._chirp_end, self._gen))

    # --- state ----------------------------------------------------------------------------

    @property
    def is_on(self) -> bool:
        """The output is driven now (a pulsed pattern is off between pulses)."""
        return bool(self.device.value)

    @property
    def sounding(self) -> bool:
        """A pattern is running (sound() called, not yet silenced or timed out)."""
        return self.sounding_since is not None

    def status(self) -> dict[str, Any]:
        active = self.sounding
        return {"on": self.is_on, "sounding": active, "pattern": self.pattern if active else None,
                "kind": self.kind if active else None, "level": self.level if active else None,
                "feedback": self.feedback.is_active if self.feedback else None,
                "health": self.health[0], "reason": self.health[1], "timeouts": self.timeouts}

    def health_dict(self) -> dict[str, Any]:
        return {"status": self.health[0], "reason": self.health[1], "on": self.is_on}

    # --- internals ------------------------------------------------------------------------

    def _restart(self) -> None:
        self._gen += 1
        for h in self._timers:
            h.cancel()
        self._timers.clear()
        self.sounding_since = None

    def _later(self, when: float, fn: Callable[[], None]) -> None:
        if len(self._timers) > 16:
            self._timers = [h for h in self._timers if not h.cancelled]  # run handles are marked cancelled
        if when != INF:
            self._timers.append(self.timers.call_at(when, fn))

    def _drive(self, on: bool) -> None:
        if bool(self.device.value) == on:
            return
        self.device.value = on
        self._changed_at = self.clock()
        if self.feedback is not None:
            if on:
                self._phases.append([self._changed_at, self.feedback.is_active])
            self._later(self._changed_at + self.config.feedback_delay,
                        partial(self._check_feedback, self._changed_at, on, True))

    def _step(self, gen: int, i: int) -> None:
        with self._lock:
            if gen != self._gen:
                return
            i %= len(self._steps)
            on, seconds = self._steps[i]
            self._drive(on)
            self._later(self._changed_at + seconds, partial(self._step, gen, i + 1))

    def _chirp_end(self, gen: int) -> None:
        with self._lock:
            if gen == self._gen:
                self._drive(False)

    def _timeout(self, gen: int) -> None:
        with self._lock:
            if gen != self._gen:
                return
            kind, level = self.kind, self.level
            self._restart()
            self._drive(False)
            self.timeouts += 1
        log.warning("siren %s stopped by itself after %g s (max_on)", self.name, self.config.max_on)
        self._report("siren.timeout", {"siren": self.name, "max_on": self.config.max_on, "kind": kind,
                                       "level": level})

    # --- feedback -------------------------------------------------------------------------

    def _feedback_changed(self, active: bool) -> None:
        with self._lock:
            if active and self.is_on and self._phases:
                self._phases[-1][1] = True
            self._later(self.clock() + self.config.feedback_delay,
                        partial(self._check_feedback, self._changed_at, self.is_on, False))

    def _check_feedback(self, changed_at: float, on: bool, recheck: bool) -> None:
        """Judge the feedback ``feedback_delay`` after the output (or the feedback) changed."""
        assert self.feedback is not None
        with self._lock:
            steady = changed_at == self._changed_at
            if steady:
                driven, sensed = self.is_on, self.feedback.is_active
            elif on:
                # A pulse shorter than the delay: feedback seen at any moment of it is enough.
                phase = next((p for p in self._phases if p[0] == changed_at), None)
                if phase is None:
                    return
                driven, sensed = True, phase[1]
            else:
                return
            if driven and not sensed:
                verdict = ("fault", "driven on but feedback reads off (relay, wiring or siren broken?)")
            elif sensed and not driven:
                verdict = ("fault", "feedback reads on while not driven (relay stuck or wired wrong?)")
            else:
                verdict = ("ok", "")
            if steady and driven and recheck:
                self._later(self.clock() + FEEDBACK_RECHECK,
                            partial(self._check_feedback, changed_at, True, True))
        self._set_health(*verdict)

    def _set_health(self, status: str, reason: str) -> None:
        if (status, reason) == self.health:
            return
        self.health = (status, reason)
        (log.error if status == "fault" else log.info)("siren %s: %s %s", self.name, status, reason)
        if self.on_health is not None:
            try:
                self.on_health(status, reason)
            except Exception:
                log.exception("siren %s: health report failed", self.name)

    def _report(self, type: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(type, data)
            except Exception:
                log.exception("siren %s: could not report %s", self.name, type)

    def close(self) -> None:
        if self.device.closed:
            return
        with self._lock:
            self._restart()
        if self._own_timers:
            self.timers.stop()
        try:
            self.device.off()
        finally:
            self.device.close()
            if self.feedback is not None:
                self.feedback.close()
