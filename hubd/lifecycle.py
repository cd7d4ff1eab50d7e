"""The alert lifecycle: raise, acknowledge, resolve, cancel, silence, escalate.

``Hub`` is the one place that changes alert state.  Every change is one SQLite
transaction holding the alert row, its audit event and one outbox row per
destination; listeners (links, the page's live stream) hear of it only after the
commit.  On raising, the sirens are sounded *before* any disk I/O.

Escalation timers are APScheduler jobs derived from stored state (raised_at and
level), so a restart resumes them exactly where they were: it never raises, repeats
or forgets an alert.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from hubd import __version__
from hubd.config import Config
from hubd.model import (
    ALERT_EVENT_TYPES,
    TRANSITION_EVENT,
    Alert,
    AlertKind,
    AlertState,
    Event,
    NotFound,
    Outcome,
    TransitionError,
    check_transition,
)
from hubd.store import Store

log = logging.getLogger("hubd.lifecycle")

#: Event types that travel over the mesh (airtime is scarce; routine traffic stays off it).
MESH_EVENT_TYPES = frozenset({
    "alert.raised", "alert.acknowledged", "alert.resolved", "alert.cancelled", "alert.escalated",
})

PRIORITY_ALERT = 0
PRIORITY_ROUTINE = 1


class Sounder(Protocol):
    """What the core needs of a siren (``hubd.sensors`` provides the real ones)."""

    name: str

    def sound(self, kind: str, level: int) -> None: ...

    def silence(self) -> None: ...

    def chirp(self) -> None: ...


@dataclass
class ComponentHealth:
    status: str  # "ok" | "fault" | "unknown"
    reason: str = ""
    since: float = 0.0


Listener = Callable[[Event, dict[str, Any]], None]


class Hub:
    """The core of a ward hub: the response protocol applied to the store."""

    def __init__(self, config: Config, store: Store, *, scheduler: BackgroundScheduler | None = None,
                 clock: Callable[[], float] = time.time,
                 clock_synced: Callable[[], bool] = lambda: True):
        self.config = config
        self.store = store
        self.clock = clock
        self.clock_synced = clock_synced
        self.hub_id = config.hub.id
        self.started_at = clock()
        self._lock = threading.RLock()
        self._sounders: list[Sounder] = []
        self._listeners: list[Listener] = []
        self._status_providers: dict[str, Callable[[], dict[str, Any]]] = {}
        self.health: dict[str, ComponentHealth] = {}
        self._scheduler = scheduler or BackgroundScheduler(timezone=UTC, daemon=True)
        self._own_scheduler = scheduler is None
        self._destinations = config.destinations()

    # --- wiring ---------------------------------------------------------------------------

    def add_sounder(self, sounder: Sounder) -> None:
        self._sounders.append(sounder)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event, envelope)`` after each committed event (in the caller's thread)."""
        self._listeners.append(listener)

    def add_status_provider(self, name: str, provider: Callable[[], dict[str, Any]]) -> None:
        self._status_providers[name] = provider

    @property
    def scheduler(self) -> BackgroundScheduler:
        return self._scheduler

    def start(self) -> None:
        """Start the timers and resume the escalation of every open alert."""
        if self._own_scheduler:
            self._scheduler.start()
            # APScheduler's own thread is named after the daemon; rename it for `ps -L`.
            for t in threading.enumerate():
                if t.name.startswith("APScheduler"):
                    t.name = "hubd-timers"
        for alert in self.store.alerts(open_only=True, remote=False, limit=10_000):
            self._schedule_escalation(alert)
        self.record("hub.started", actor="system", data={"version": __version__})

    def stop(self) -> None:
        if self._own_scheduler and self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    # --- the protocol ---------------------------------------------------------------------

    def raise_alert(self, source: str, kind: AlertKind | str, zone: str = "", *, actor: str | None = None,
                    silent: bool = False, extra: dict[str, Any] | None = None) -> Alert:
        """Raise a new local alert: sirens first, then one durable transaction, then listeners."""
        kind = AlertKind(kind)
        if not silent:
            self._sound(kind, 0)
        now = self.clock()
        with self._lock:
            with self.store.transaction():
                seq = self.store.next_value("alert_seq")
                alert = Alert(id=f"{self.hub_id}:{seq}", hub=self.hub_id, seq=seq, kind=kind,
                              source=source, zone=zone, silent=silent, raised_at=now, updated_at=now,
                              extra=dict(extra or {}))
                self.store.save_alert(alert)
                committed = self._append(TRANSITION_EVENT[AlertState.RAISED], actor or source, alert,
                                         {"silent": silent} if silent else {})
            self._schedule_escalation(alert)
        log.warning("ALERT %s %s zone=%r source=%s%s", alert.id, kind, zone, source,
                    " (silent)" if silent else "")
        self._announce(*committed)
        return alert

    def acknowledge(self, alert_id: str, actor: str) -> Alert:
        alert = self._transition(alert_id, AlertState.ACKNOWLEDGED, actor)
        self._unschedule(alert_id)
        return alert

    def resolve(self, alert_id: str, outcome: Outcome | str, actor: str) -> Alert:
        try:
            outcome = Outcome(outcome)
        except ValueError:
            raise TransitionError(f"unknown outcome {outcome!r}; expected one of "
                                  f"{', '.join(o.value for o in Outcome)}", code="bad_request") from None
        alert = self._transition(alert_id, AlertState.RESOLVED, actor, outcome=outcome)
        self._unschedule(alert_id)
        self._quiet_if_nothing_open()
        return alert

    def cancel(self, alert_id: str, actor: str) -> Alert:
        with self._lock:
            alert = self._get_local(alert_id)
            window = self.config.protocol.cancel_window
            if alert.state == AlertState.RAISED and self.clock() - alert.raised_at > window:
                raise TransitionError(
                    f"alert {alert_id} was raised {self.clock() - alert.raised_at:.0f} s ago; it can be "
                    f"cancelled only within {window:.0f} s. Resolve it as false_alarm instead.",
                    code="cancel_window_passed")
            alert = self._transition(alert_id, AlertState.CANCELLED, actor)
        self._unschedule(alert_id)
        self._quiet_if_nothing_open()
        return alert

    def silence(self, actor: str, alert_id: str | None = None) -> None:
        """Stop the sirens without changing any alert's state."""
        if alert_id is not None:
            self._get(alert_id)  # refuse an unknown id before touching anything
        for s in self._sounders:
            self._safely(s.silence, s)
        self.record("siren.silenced", actor=actor, alert_id=alert_id)

    def siren_test(self, actor: str) -> None:
        for s in self._sounders:
            self._safely(s.chirp, s)
        self.record("siren.test", actor=actor)

    def escalate(self, alert_id: str, actor: str = "system", reason: str = "timer") -> Alert | None:
        """Raise an unacknowledged alert's level by one; a no-op for any other state."""
        with self._lock:
            alert = self._get_local(alert_id)
            if alert.state != AlertState.RAISED:
                return None
            alert.level += 1
            alert.updated_at = self.clock()
            with self.store.transaction():
                self.store.save_alert(alert)
                committed = self._append("alert.escalated", actor, alert,
                                         {"level": alert.level, "reason": reason})
            self._schedule_escalation(alert)
        if not alert.silent:
            self._sound(alert.kind, alert.level)
        log.warning("ESCALATED %s to level %d (%s)", alert.id, alert.level, reason)
        self._announce(*committed)
        return alert

    def record(self, type: str, *, actor: str, alert_id: str | None = None,
               data: dict[str, Any] | None = None, announce: bool = True) -> Event:
        """Append a non-transition event (pressed again, snapshot, fault, test...)."""
        with self._lock:
            alert = self.store.get_alert(alert_id) if alert_id else None
            committed = self._append(type, actor, alert, data or {}, alert_id=alert_id)
        if announce:
            self._announce(*committed)
        return committed[0]

    def set_health(self, component: str, status: str, reason: str = "") -> None:
        """Report a component's health; a change is recorded as an event."""
        old = self.health.get(component)
        if old is not None and old.status == status and old.reason == reason:
            return
        self.health[component] = ComponentHealth(status, reason, self.clock())
        if old is None and status == "ok":
            return
        event_type = "component.fault" if status == "fault" else "component.ok"
        try:
            self.record(event_type, actor=component, data={"component": component, "status": status,
                                                           "reason": reason})
        except sqlite3.Error:
            log.exception("could not record health of %s", component)
        (log.error if status == "fault" else log.info)("%s: %s %s", component, status, reason)

    # --- neighbours -----------------------------------------------------------------------

    def ingest_remote(self, envelope: dict[str, Any], *, via: str,
                      relay_to: tuple[str, ...] = ()) -> bool:
        """Store an event heard from another hub, deduplicated by its id.

        Returns True if it was new.  ``relay_to`` adds outbox rows (e.g. a mesh event to
        be relayed to MQTT by this hub)."""
        with self._lock:
            if self.store.has_event(envelope["id"]):
                return False
            alert = None
            if isinstance(envelope.get("alert"), dict):
                a = dict(envelope["alert"])
                a.pop("severity", None)
                current = self.store.get_alert(a["id"])
                alert = Alert.from_row({**a, "extra": None, "silent": a.get("silent", False),
                                        "remote": True, "relayed_by": a.get("relayed_by")})
                alert.extra = {"via": via}
                if current is not None and not current.remote:
                    return False  # our own alert echoed back
                if current is not None and current.updated_at > alert.updated_at:
                    alert = None  # an older event arriving late must not roll the state back
            event = Event(id=envelope["id"], type=envelope["type"], time=envelope["time"],
                          hub=envelope["hub"], actor=envelope.get("actor", "?"),
                          alert_id=(envelope.get("alert") or {}).get("id"),
                          data=envelope.get("data") or {})
            with self.store.transaction():
                if alert is not None:
                    self.store.save_alert(alert)
                committed = self.store.append_event(
                    event, envelope, tuple((d, PRIORITY_ALERT) for d in relay_to))
        if committed is not None:
            self._announce(committed, envelope)
        return committed is not None

    # --- reading --------------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> Alert:
        return self._get(alert_id)

    def status(self) -> dict[str, Any]:
        links = {}
        for name, provider in self._status_providers.items():
            try:
                links[name] = provider()
            except Exception as e:  # a broken provider must not break `hubd status`
                links[name] = {"error": str(e)}
        return {
            "hub": self.hub_id, "ward": self.config.hub.ward, "name": self.config.hub.name,
            "location": self.config.hub.location, "version": __version__,
            "uptime": round(self.clock() - self.started_at, 1),
            "clock_synced": self.clock_synced(),
            "components": {k: {"status": v.status, "reason": v.reason, "since": v.since}
                           for k, v in sorted(self.health.items())},
            "alerts": self.store.count_alerts_by_state(),
            "open_alerts": [a.to_dict() for a in self.store.alerts(open_only=True, limit=50)],
            "outbox": self.store.outbox_stats(),
            "links": links,
        }

    # --- internals ------------------------------------------------------------------------

    def _sound(self, kind: AlertKind, level: int) -> None:
        for s in self._sounders:
            self._safely(lambda s=s: s.sound(str(kind), level), s)

    @staticmethod
    def _safely(fn: Callable[[], None], sounder: Sounder) -> None:
        try:
            fn()
        except Exception:
            log.exception("siren %s failed", getattr(sounder, "name", sounder))

    def _quiet_if_nothing_open(self) -> None:
        if not any(not a.silent for a in self.store.alerts(open_only=True, remote=False, limit=1000)):
            for s in self._sounders:
                self._safely(s.silence, s)

    def _get(self, alert_id: str) -> Alert:
        alert = self.store.get_alert(alert_id)
        if alert is None:
            raise NotFound(alert_id)
        return alert

    def _get_local(self, alert_id: str) -> Alert:
        alert = self._get(alert_id)
        if alert.remote:
            raise TransitionError(f"alert {alert.id} belongs to hub {alert.hub}; act on it there",
                                  code="remote_alert")
        return alert

    def _transition(self, alert_id: str, target: AlertState, actor: str, *,
                    outcome: Outcome | None = None) -> Alert:
        with self._lock:
            alert = self._get(alert_id)
            check_transition(alert, target)
            alert.state = target
            alert.outcome = outcome
            alert.updated_at = self.clock()
            with self.store.transaction():
                self.store.save_alert(alert)
                data = {"outcome": str(outcome)} if outcome else {}
                committed = self._append(TRANSITION_EVENT[target], actor, alert, data)
        log.warning("%s %s by %s", TRANSITION_EVENT[target], alert.id, actor)
        self._announce(*committed)
        return alert

    def _append(self, type: str, actor: str, alert: Alert | None, data: dict[str, Any], *,
                alert_id: str | None = None) -> tuple[Event, dict[str, Any]]:
        with self.store.transaction():
            n = self.store.next_value("event_seq")
            event = Event(id=f"{self.hub_id}:e{n}", type=type, time=self.clock(), hub=self.hub_id,
                          actor=actor, alert_id=alert.id if alert else alert_id, data=data)
            envelope = event.envelope(self.config.hub.ward, alert)
            priority = PRIORITY_ALERT if (type in ALERT_EVENT_TYPES or type.startswith("siren."))\
                else PRIORITY_ROUTINE
            routes = tuple((d, priority) for d in self._destinations
                           if d != "mesh" or type in MESH_EVENT_TYPES)
            committed = self.store.append_event(event, envelope, routes, clock_synced=self.clock_synced())
        assert committed is not None  # our own ids are unique
        return committed, envelope

    def _announce(self, event: Event, envelope: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, envelope)
            except Exception:
                log.exception("listener %r failed on %s", listener, event.id)

    def _schedule_escalation(self, alert: Alert) -> None:
        steps = self.config.protocol.escalation
        if alert.state != AlertState.RAISED or alert.level >= len(steps):
            self._unschedule(alert.id)
            return
        run_at = datetime.fromtimestamp(alert.raised_at + steps[alert.level], tz=UTC)
        self._scheduler.add_job(self._escalate_job, "date", run_date=run_at, args=[alert.id, alert.level],
                                id=f"escalate:{alert.id}", replace_existing=True,
                                misfire_grace_time=None, coalesce=True)

    def _escalate_job(self, alert_id: str, from_level: int) -> None:
        try:
            alert = self.store.get_alert(alert_id)
            if alert is not None and alert.level == from_level:
                self.escalate(alert_id)
        except Exception:
            log.exception("escalation of %s failed", alert_id)

    def _unschedule(self, alert_id: str) -> None:
        try:
            self._scheduler.remove_job(f"escalate:{alert_id}")
        except Exception:  # JobLookupError: nothing scheduled
            pass
