"""The alert lifecycle: raise, acknowledge, resolve, cancel, silence, escalate.

``Hub`` is the one place that changes alert state.  Every change is one SQLite
transaction holding the alert row, its audit event and one outbox row per
destination; listeners (links, the page's live stream) hear of it only after the
commit.  On raising, the sirens are sounded *before* any disk I/O.

Escalation timers are APScheduler jobs derived from stored state (raised_at and
level), so a restart resumes them exactly where they were: it never raises, repeats
or forgets an alert.

When the store cannot be written (a full or read-only SD card, an I/O error) the hub
fails loudly but keeps protecting people: the sirens have already sounded, the
``store`` component turns to fault (status, page, log), alerts and events are kept in
memory (``status()["unsaved"]``) and a timer job writes them, oldest first and with
their original times, as soon as the store takes writes again.  Manager actions that
need a write (acknowledge, resolve, cancel) are refused with a clear error instead.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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

#: Seconds between attempts to write what the store refused.
STORE_RETRY_SECONDS = 2.0
#: Unsaved items kept in memory at most; beyond it the oldest routine events are dropped.
MAX_UNSAVED = 5000


#: How far an alert has come: its state only moves forward (and a raised alert's level only up).
_RANK = {AlertState.RAISED: 0, AlertState.ACKNOWLEDGED: 1, AlertState.RESOLVED: 2, AlertState.CANCELLED: 2}


def _progress(alert: Alert) -> tuple[int, int, float]:
    # Not by time alone: mesh frames carry whole seconds, so a resolve and the acknowledgement
    # before it can share a time, and the one heard last must not reopen the alert.
    return (_RANK[AlertState(alert.state)], alert.level, alert.updated_at)


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


@dataclass
class _Unsaved:
    """An alert or event the store refused, kept in memory until it can be written."""

    number: int
    type: str
    actor: str
    time: float
    clock_synced: bool
    data: dict[str, Any] = field(default_factory=dict)
    alert: Alert | None = None  # a new local alert (its id and seq are given when written)
    alert_id: str | None = None  # the stored alert an event belongs to
    envelope: dict[str, Any] | None = None  # an event heard from another hub
    relay_to: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "time": self.time, "actor": self.actor}
        if self.alert is not None:
            d["alert"] = self.alert.to_dict()
        elif self.alert_id:
            d["alert_id"] = self.alert_id
        return d


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
        self._unsaved: list[_Unsaved] = []
        self._unsaved_count = 0

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
            self._resume_siren(alert)
        self._scheduler.add_job(self._retry_store, "interval", seconds=STORE_RETRY_SECONDS,
                                id="store-retry", coalesce=True, max_instances=1, replace_existing=True)
        self.record("hub.started", actor="system", data={"version": __version__})

    def _resume_siren(self, alert: Alert) -> None:
        """A hub restarted (power cut, watchdog) while an alert was sounding sounds it again.

        Only a raised, non-silent alert whose last siren-related event was a raise or an
        escalation (not a silence or a max-on timeout) resumes; nothing new is raised."""
        if alert.state != AlertState.RAISED or alert.silent:
            return
        last = None
        for e in self.store.events(alert_id=None, since=alert.raised_at, limit=100_000):
            if e["type"] in ("siren.silenced", "siren.timeout") or (
                    e["alert_id"] == alert.id and e["type"] in ("alert.raised", "alert.escalated")):
                last = e["type"]
        if last in ("alert.raised", "alert.escalated"):
            log.warning("resuming the siren for open alert %s after a restart", alert.id)
            self._sound(alert.kind, alert.level)

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
        data = {"silent": silent} if silent else {}
        with self._lock:
            try:
                # Anything refused earlier goes first, so this alert never overtakes an older one.
                late = self._flush_unsaved()
                with self.store.transaction(sync=False):
                    seq = self.store.next_value("alert_seq")
                    alert = Alert(id=f"{self.hub_id}:{seq}", hub=self.hub_id, seq=seq, kind=kind,
                                  source=source, zone=zone, silent=silent, raised_at=now, updated_at=now,
                                  extra=dict(extra or {}))
                    self.store.save_alert(alert)
                    committed = self._append(TRANSITION_EVENT[AlertState.RAISED], actor or source, alert,
                                             data)
            except sqlite3.Error as e:
                return self._keep_unsaved_alert(kind, source, zone, actor or source, silent, extra, now,
                                                 data, e)
        for c in late:
            self._announce(*c)
        # The links hear of the alert before anything slower happens here, even before its
        # fsync: the alert leaves for the centre while the disk works (a flash card's fsync
        # can take longer than the round trip to the broker).  The store's ids survive a
        # power cut in between (see hubd.store).
        self._announce(*committed)
        self.store.sync()
        log.warning("ALERT %s %s zone=%r source=%s%s", alert.id, kind, zone, source,
                    " (silent)" if silent else "")
        # Scheduled after the lock is released, so an acknowledgement may come first; the
        # job then finds the alert no longer raised and does nothing.
        self._schedule_escalation(alert)
        self._store_ok_again(bool(late))
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

    def chime(self, actor: str) -> None:
        """A short chirp on every siren (a neighbour's alert, by policy); no alert, no event."""
        log.info("chime for %s", actor)
        for s in self._sounders:
            self._safely(s.chirp, s)

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
        late: list[tuple[Event, dict[str, Any]]] = []
        with self._lock:
            try:
                late = self._flush_unsaved()
                alert = self.store.get_alert(alert_id) if alert_id else None
                committed = self._append(type, actor, alert, data or {}, alert_id=alert_id)
            except sqlite3.Error as e:
                u = self._keep_unsaved(_Unsaved(0, type, actor, self.clock(), self.clock_synced(),
                                                dict(data or {}), alert_id=alert_id), e)
                return Event(id=f"{self.hub_id}:unsaved-{u.number}", type=type, time=u.time,
                             hub=self.hub_id, actor=actor, alert_id=alert_id, data=u.data)
        for c in late:
            self._announce(*c)
        self._store_ok_again(bool(late))
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
        late: list[tuple[Event, dict[str, Any]]] = []
        with self._lock:
            try:
                late = self._flush_unsaved()
                committed = self._ingest(envelope, via, relay_to)
            except sqlite3.Error as e:
                if not any(u.envelope and u.envelope.get("id") == envelope["id"] for u in self._unsaved):
                    self._keep_unsaved(_Unsaved(0, envelope["type"], envelope.get("actor", "?"),
                                                envelope["time"], True, envelope=dict(envelope),
                                                data={"via": via}, relay_to=tuple(relay_to)), e)
                return True
        for c in late:
            self._announce(*c)
        self._store_ok_again(bool(late))
        if committed is not None:
            self._announce(committed, envelope)
        return committed is not None

    def _ingest(self, envelope: dict[str, Any], via: str, relay_to: tuple[str, ...]) -> Event | None:
        with self._lock:
            if self.store.has_event(envelope["id"]):
                return None
            alert = None
            if isinstance(envelope.get("alert"), dict):
                a = dict(envelope["alert"])
                a.pop("severity", None)
                current = self.store.get_alert(a["id"])
                alert = Alert.from_row({**a, "extra": None, "silent": a.get("silent", False),
                                        "remote": True, "relayed_by": a.get("relayed_by")})
                alert.extra = {"via": via}
                if current is not None and not current.remote:
                    return None  # our own alert echoed back
                if current is not None and _progress(current) > _progress(alert):
                    alert = None  # an older event arriving late must not roll the state back
            event = Event(id=envelope["id"], type=envelope["type"], time=envelope["time"],
                          hub=envelope["hub"], actor=envelope.get("actor", "?"),
                          alert_id=(envelope.get("alert") or {}).get("id"),
                          data=envelope.get("data") or {})
            with self.store.transaction():
                if alert is not None:
                    self.store.save_alert(alert)
                return self.store.append_event(event, envelope, tuple((d, PRIORITY_ALERT) for d in relay_to))

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
            "unsaved": [u.describe() for u in list(self._unsaved)],
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
            try:
                with self.store.transaction():
                    self.store.save_alert(alert)
                    data = {"outcome": str(outcome)} if outcome else {}
                    committed = self._append(TRANSITION_EVENT[target], actor, alert, data)
            except sqlite3.Error as e:
                self._store_failed(e, f"{TRANSITION_EVENT[target]} {alert_id}")
                raise TransitionError(
                    f"alert {alert_id} was NOT changed: the store cannot be written ({e}). The sirens and "
                    f"the page still work; free space on the SD card (run `hubd doctor`) and try again.",
                    code="store_unavailable") from e
        log.warning("%s %s by %s", TRANSITION_EVENT[target], alert.id, actor)
        self._announce(*committed)
        return alert

    def _append(self, type: str, actor: str, alert: Alert | None, data: dict[str, Any], *,
                alert_id: str | None = None, when: float | None = None,
                clock_synced: bool | None = None) -> tuple[Event, dict[str, Any]]:
        with self.store.transaction():
            if alert is not None and type in MESH_EVENT_TYPES:
                # Each transition happens once per alert (escalation once per level), so its id
                # can be derived: the same event heard over MQTT and over the mesh dedupes.
                event_id = f"{alert.id}:{type.split('.', 1)[1]}:{alert.level}"
            else:
                event_id = f"{self.hub_id}:e{self.store.next_value('event_seq')}"
            event = Event(id=event_id, type=type, time=self.clock() if when is None else when,
                          hub=self.hub_id, actor=actor, alert_id=alert.id if alert else alert_id, data=data)
            envelope = event.envelope(self.config.hub.ward, alert)
            priority = PRIORITY_ALERT if (type in ALERT_EVENT_TYPES or type.startswith("siren."))\
                else PRIORITY_ROUTINE
            routes = tuple((d, priority) for d in self._destinations
                           if d != "mesh" or type in MESH_EVENT_TYPES)
            committed = self.store.append_event(
                event, envelope, routes,
                clock_synced=self.clock_synced() if clock_synced is None else clock_synced)
        assert committed is not None  # our own ids are unique
        return committed, envelope

    # --- when the store refuses writes ------------------------------------------------------

    def _keep_unsaved_alert(self, kind: AlertKind, source: str, zone: str, actor: str, silent: bool,
                            extra: dict[str, Any] | None, now: float, data: dict[str, Any],
                            error: sqlite3.Error) -> Alert:
        """Hold a new alert in memory; it gets its id when the store takes it."""
        pending = next((u for u in self._unsaved if u.alert is not None and u.alert.source == source
                        and u.alert.kind == kind), None)
        if pending is not None:  # pressed again while still unsaved: one alert, as when stored
            self._store_failed(error, f"raising a {kind} alert from {source} (again)")
            assert pending.alert is not None
            return pending.alert
        alert = Alert(id="", hub=self.hub_id, seq=0, kind=kind, source=source, zone=zone, silent=silent,
                      raised_at=now, updated_at=now, extra=dict(extra or {}))
        u = self._keep_unsaved(_Unsaved(0, TRANSITION_EVENT[AlertState.RAISED], actor, now,
                                        self.clock_synced(), data, alert=alert), error)
        alert.id = f"{self.hub_id}:unsaved-{u.number}"
        log.critical("ALERT %s %s zone=%r source=%s NOT SAVED (%s): sirens on, kept in memory, "
                     "retrying every %.0f s", alert.id, kind, zone, source, error, STORE_RETRY_SECONDS)
        return alert

    def _keep_unsaved(self, item: _Unsaved, error: sqlite3.Error) -> _Unsaved:
        """Queue an item the store refused (caller holds the lock) and report the fault."""
        self._store_failed(error, f"writing {item.type}")  # first, so the fault event comes first
        self._unsaved_count += 1
        item.number = self._unsaved_count
        self._unsaved.append(item)
        if len(self._unsaved) > MAX_UNSAVED:
            drop = next((u for u in self._unsaved if u.alert is None), None)
            if drop is not None:
                self._unsaved.remove(drop)
                log.error("store: dropped unsaved %s event from %s: more than %d items waiting",
                          drop.type, drop.actor, MAX_UNSAVED)
        return item

    def _store_failed(self, error: Exception, what: str) -> None:
        """Mark the store faulty (loudly on the change, quietly while it lasts)."""
        n_alerts = sum(1 for u in self._unsaved if u.alert is not None)
        reason = (f"cannot write {self.store.path}: {error}; {n_alerts} alert(s) and "
                  f"{len(self._unsaved) - n_alerts} event(s) kept in memory, retrying")
        old = self.health.get("store")
        first = old is None or old.status != "fault"
        self.health["store"] = ComponentHealth("fault", reason, self.clock() if first else old.since)
        if first:
            log.error("STORE FAULT while %s: %s. Alerts still sound the sirens and show on the page; "
                      "they are written as soon as the store takes writes again.", what, error)
            self._unsaved_count += 1
            self._unsaved.append(_Unsaved(self._unsaved_count, "component.fault", "store", self.clock(),
                                          self.clock_synced(), {"component": "store", "status": "fault",
                                                                "reason": str(error)}))
        else:
            log.debug("store still refuses writes (%s): %s", what, error)

    def _flush_unsaved(self) -> list[tuple[Event, dict[str, Any]]]:
        """Write the held items, oldest first with their own times (caller holds the lock).

        Raises the store's error if it still refuses; what was written stays written."""
        done: list[tuple[Event, dict[str, Any]]] = []
        while self._unsaved:
            u = self._unsaved[0]
            alert: Alert | None = None
            try:
                with self.store.transaction():
                    if u.envelope is not None:
                        heard = self._ingest(u.envelope, u.data.get("via", "?"), u.relay_to)
                        self._unsaved.pop(0)
                        if heard is not None:
                            done.append((heard, u.envelope))
                        continue
                    if u.alert is not None:
                        seq = self.store.next_value("alert_seq")
                        alert = replace(u.alert, id=f"{self.hub_id}:{seq}", seq=seq)
                        self.store.save_alert(alert)
                        data = {**u.data, "stored_late": round(max(self.clock() - u.time, 0.0), 1)}
                    else:
                        alert = self.store.get_alert(u.alert_id) if u.alert_id else None
                        data = u.data
                    committed = self._append(u.type, u.actor, alert, data, alert_id=u.alert_id,
                                             when=u.time, clock_synced=u.clock_synced)
            except sqlite3.OperationalError:
                raise
            except sqlite3.Error:
                # Not a full or failing disk but a refusal of this item itself: retrying cannot help.
                log.exception("store: could not write unsaved %s from %s; dropped", u.type, u.actor)
                self._unsaved.pop(0)
                continue
            self._unsaved.pop(0)
            if u.alert is not None and alert is not None:
                self._schedule_escalation(alert)
                log.warning("ALERT %s (was %s:unsaved-%d) written to the store %.0f s late", alert.id,
                            self.hub_id, u.number, self.clock() - u.time)
            done.append(committed)
        return done

    def _retry_store(self) -> None:
        """Timer job: write what the store refused, and clear the fault once it takes writes."""
        if not self._unsaved:
            return
        with self._lock:
            try:
                done = self._flush_unsaved()
            except sqlite3.Error as e:
                self._store_failed(e, "retrying")
                return
        for c in done:
            self._announce(*c)
        self._store_ok_again(True)

    def _store_ok_again(self, wrote: bool) -> None:
        old = self.health.get("store")
        if wrote and old is not None and old.status == "fault" and not self._unsaved:
            log.warning("store writable again: everything kept in memory is written")
            self.set_health("store", "ok", "")

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
        except sqlite3.Error as e:
            with self._lock:
                self._store_failed(e, f"escalating {alert_id}")
            # Escalation is derived from stored state: try again once the store takes writes.
            self._scheduler.add_job(self._escalate_job, "date", args=[alert_id, from_level],
                                    run_date=datetime.fromtimestamp(time.time() + STORE_RETRY_SECONDS,
                                                                    tz=UTC),
                                    id=f"escalate:{alert_id}", replace_existing=True,
                                    misfire_grace_time=None, coalesce=True)
        except Exception:
            log.exception("escalation of %s failed", alert_id)

    def _unschedule(self, alert_id: str) -> None:
        try:
            self._scheduler.remove_job(f"escalate:{alert_id}")
        except Exception:  # JobLookupError: nothing scheduled
            pass
