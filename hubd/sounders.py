"""The hub's sirens as one bank: sound, silence and chirp them all, each safely.

A siren that fails (a driver error, a dead pin) is logged and skipped: it never stops
the others, nor the alert that sounded them.  The real sounders are
``hubd.sensors.sirens.Siren``; the core knows them only as :class:`Sounder`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from hubd.model import Alert, AlertKind, AlertState

log = logging.getLogger("hubd.sounders")

#: Events that turn a sounding siren off; what sounds it is the alert's raise or escalation.
_SILENCING = ("siren.silenced", "siren.timeout")
_SOUNDING = ("alert.raised", "alert.escalated")


class Sounder(Protocol):
    """What the core needs of a siren (``hubd.sensors`` provides the real ones)."""

    name: str

    def sound(self, kind: str, level: int) -> None: ...

    def silence(self) -> None: ...

    def chirp(self) -> None: ...


class SirenBank:
    """Every sounder of the hub, driven together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sounders: list[Sounder] = []

    def add(self, sounder: Sounder) -> None:
        with self._lock:
            self._sounders.append(sounder)

    def sound(self, kind: AlertKind, level: int) -> None:
        self._each(lambda s: s.sound(str(kind), level))

    def silence(self) -> None:
        self._each(lambda s: s.silence())

    def chirp(self) -> None:
        self._each(lambda s: s.chirp())

    def resume(self, alert: Alert, history: Callable[[], Iterable[dict[str, Any]]]) -> bool:
        """Sound again for an alert that was sounding when the hub stopped (power cut, watchdog).

        Only a raised, non-silent alert whose last siren-related event (``history()``: the
        events since it was raised, oldest first) was its raise or an escalation resumes;
        not one silenced or timed out since.  Returns whether it sounded."""
        if alert.state != AlertState.RAISED or alert.silent:
            return False
        last = None
        for e in history():
            if e["type"] in _SILENCING or (e["alert_id"] == alert.id and e["type"] in _SOUNDING):
                last = e["type"]
        if last not in _SOUNDING:
            return False
        log.warning("resuming the siren for open alert %s after a restart", alert.id)
        self.sound(alert.kind, alert.level)
        return True

    def _each(self, action: Callable[[Sounder], None]) -> None:
        with self._lock:
            sounders = list(self._sounders)
        for s in sounders:
            try:
                action(s)
            except Exception:
                log.exception("siren %s failed", getattr(s, "name", s))
