"""The alert lifecycle: raise, acknowledge, resolve, cancel, silence, escalate.

``Hub`` is the one place that changes alert state.  It applies the response protocol
and composes parts of one job each: the event log (``hubd.eventlog``), the sirens
(``hubd.sounders``), component health (``hubd.health``), the writes the store refused
(``hubd.unsaved``), escalation timers (``hubd.escalation``), events heard from other
hubs (``hubd.ingest``) and the status (``hubd.status``).

Every write takes one path, ``Hub._commit``, which keeps these guarantees:

- On raising, the sirens are sounded *before* any disk I/O.
- Items held since the store last refused a write are written first (oldest first,
  with their own times), so a new alert never overtakes an older one.
- Every change is one SQLite transaction holding the alert row, its audit event and
  one outbox row per destination.
- Listeners (links, the page's live stream) hear of it only after the commit, in the
  order things were committed.
- A new alert is announced before its fsync: it leaves for the centre while the disk
  works (see ``hubd.store`` for why its id survives a power cut in between).

Escalation timers are derived from stored state (raised_at and level), so a restart
resumes them exactly where they were: it never raises, repeats or forgets an alert.

When the store cannot be written (a full or read-only SD card, an I/O error) the hub
fails loudly but keeps protecting people: the sirens have already sounded, the
``store`` component turns to fault (status, page, log), alerts and events are kept in
memory (``status()["unsaved"]``) and a timer writes them, oldest first and with
their original times, as soon as the store takes writes again.  Manager actions that
need a write (acknowledge, resolve, cancel) are refused with a clear error instead.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hubd import __version__, contract
from hubd.clock import SYSTEM_CLOCK, Clock
from hubd.config import Config
from hubd.escalation import EscalationTimers, Raised, RaiseTimes
from hubd.eventlog import Committed, EventLog
from hubd.health import HealthChange, HealthRegistry
from hubd.identity import Signer
from hubd.ingest import RemoteRefused
from hubd.model import (
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
from hubd.sounders import SirenBank, Sounder
from hubd.status import StatusBoard, StatusProvider
from hubd.store import Store
from hubd.timers import Timers
from hubd.unsaved import HeldAlert, HeldEvent, HeldHeard, HeldItem, UnsavedQueue, Written

log = logging.getLogger("hubd.lifecycle")

#: Seconds between attempts to write what the store refused.
STORE_RETRY_SECONDS = 2.0
#: Seconds ``ping`` waits for the core's lock before saying the core does not answer.
PING_TIMEOUT = 5.0

Listener = Callable[[Event, dict[str, Any]], None]
T = TypeVar("T")


class Hub:
    """The core of a ward hub: the response protocol applied to the store."""

    def __init__(self, config: Config, store: Store, *, clock: Clock = SYSTEM_CLOCK,
                 clock_synced: Callable[[], bool] = lambda: True, key: Ed25519PrivateKey | None = None):
        self.config = config
        self.store = store
        self.clock = clock
        self.clock_synced = clock_synced
        self.hub_id = config.hub.id
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        #: The hub's timer thread (``hubd-timers``): escalation, store retries, housekeeping.
        self.timers = Timers("timers", clock.monotonic)
        #: Component health; read it from any thread (``hubd.health``).
        self.health = HealthRegistry(clock, on_change=self._health_changed)
        #: Signs as this hub (its key from the state dir, given by the daemon; without one, a
        #: key of this process's own: fine for a hub no other party has to believe).
        self.signer = Signer(self.hub_id, key or contract.generate_private_key())
        self._log = EventLog(config, store, clock, clock_synced, self.signer)
        self._sirens = SirenBank()
        self._unsaved = UnsavedQueue(clock)
        self._raised = RaiseTimes(clock)
        self._escalation = EscalationTimers(config.protocol.escalation, self.timers, self._raised,
                                            self._escalate_due, retry_after=STORE_RETRY_SECONDS)
        self._status = StatusBoard(config, store, self.health, self._unsaved, clock, clock_synced)

    # --- wiring ---------------------------------------------------------------------------

    def add_sounder(self, sounder: Sounder) -> None:
        self._sirens.add(sounder)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event, envelope)`` after each committed event (in the caller's thread)."""
        self._listeners.append(listener)

    def add_status_provider(self, name: str, provider: StatusProvider) -> None:
        self._status.add_provider(name, provider)

    def start(self) -> None:
        """Start the timers and resume the escalation (and siren) of every open alert."""
        self.timers.start()
        forged = self.store.drop_forged_alerts(self.hub_id)
        if forged:
            log.error("removed %d alert(s) heard from other hubs under this hub's ids (stored before hubd "
                      "refused such claims)", forged)
        for alert in self.store.alerts(open_only=True, remote=False, limit=10_000):
            self._escalation.schedule(alert)
            self._sirens.resume(alert, partial(self.store.events, since=alert.raised_at, limit=100_000))
        self.timers.every(STORE_RETRY_SECONDS, self._retry_store)
        self.record("hub.started", actor="system", data={"version": __version__})

    def stop(self) -> None:
        self.timers.stop()

    # --- the protocol ---------------------------------------------------------------------

    def raise_alert(self, source: str, kind: AlertKind | str, zone: str = "", *, actor: str | None = None,
                    silent: bool = False, extra: dict[str, Any] | None = None) -> Alert:
        """Raise a new local alert: sirens first, then one durable transaction, then listeners."""
        kind = AlertKind(kind)
        if not silent:
            self._sirens.sound(kind, 0)
        now, raised_mono = self.clock.time(), self.clock.monotonic()
        who = actor or source
        data = {"silent": silent} if silent else {}
        new = Alert(id="", hub=self.hub_id, seq=0, kind=kind, source=source, zone=zone, silent=silent,
                    raised_at=now, updated_at=now, extra=dict(extra or {}))

        def write() -> tuple[Alert, Committed]:
            alert, committed = self._log.write_alert(new, who, data)
            self._raised.note(alert.id, raised_mono)
            return alert, committed

        alert = self._commit(write, lambda e: self._hold_alert(new, who, data, raised_mono, e),
                             announce_before_sync=True)
        if not alert.seq:
            return alert  # held in memory: the store refused it (see hubd.unsaved)
        log.warning("ALERT %s %s zone=%r source=%s%s", alert.id, kind, zone, source,
                    " (silent)" if silent else "")
        # Scheduled after the lock is released, so an acknowledgement may come first; the
        # timer then finds the alert no longer raised and does nothing.
        self._escalation.schedule(alert)
        return alert

    def acknowledge(self, alert_id: str, actor: str) -> Alert:
        alert = self._transition(alert_id, AlertState.ACKNOWLEDGED, actor)
        self._stop_escalation(alert_id)
        return alert

    def resolve(self, alert_id: str, outcome: Outcome | str, actor: str) -> Alert:
        try:
            outcome = Outcome(outcome)
        except ValueError:
            raise TransitionError(f"unknown outcome {outcome!r}; expected one of "
                                  f"{', '.join(o.value for o in Outcome)}", code="bad_request") from None
        alert = self._transition(alert_id, AlertState.RESOLVED, actor, outcome=outcome)
        self._stop_escalation(alert_id)
        self._quiet_if_nothing_open()
        return alert

    def cancel(self, alert_id: str, actor: str) -> Alert:
        window = self.config.protocol.cancel_window

        def inside_the_window(alert: Alert) -> None:
            if alert.state == AlertState.RAISED and not alert.remote:
                age = self._raised.age(alert)
                if age > window:
                    raise TransitionError(
                        f"alert {alert_id} was raised {age:.0f} s ago; it can be cancelled only within "
                        f"{window:.0f} s. Resolve it as false_alarm instead.", code="cancel_window_passed")

        alert = self._transition(alert_id, AlertState.CANCELLED, actor, check=inside_the_window)
        self._stop_escalation(alert_id)
        self._quiet_if_nothing_open()
        return alert

    def within_cancel_window(self, alert: Raised) -> bool:
        """Whether this raised local alert is young enough to be cancelled."""
        return self._raised.age(alert) <= self.config.protocol.cancel_window

    def silence(self, actor: str, alert_id: str | None = None) -> None:
        """Stop the sirens without changing any alert's state."""
        if alert_id is not None:
            self._get(alert_id)  # refuse an unknown id before touching anything
        self._sirens.silence()
        self.record("siren.silenced", actor=actor, alert_id=alert_id)

    def siren_test(self, actor: str) -> None:
        self._sirens.chirp()
        self.record("siren.test", actor=actor)

    def chime(self, actor: str) -> None:
        """A short chirp on every siren (a neighbour's alert, by policy); no alert, no event."""
        log.info("chime for %s", actor)
        self._sirens.chirp()

    def escalate(self, alert_id: str, actor: str = "system", reason: str = "timer") -> Alert | None:
        """Raise an unacknowledged alert's level by one; a no-op for any other state.

        The store's error, if it refuses the write, is raised (the timer tries again)."""
        def write() -> tuple[Alert | None, Committed | None]:
            alert = self._get_local(alert_id)
            if alert.state != AlertState.RAISED:
                return None, None
            alert.level += 1
            alert.updated_at = self.clock.time()
            self.store.save_alert(alert)
            return alert, self._log.append("alert.escalated", actor, alert,
                                           {"level": alert.level, "reason": reason})

        alert = self._commit(write)
        if alert is None:
            self._stop_escalation(alert_id)
            return None
        self._escalation.schedule(alert)
        if not alert.silent:
            self._sirens.sound(alert.kind, alert.level)
        log.warning("ESCALATED %s to level %d (%s)", alert.id, alert.level, reason)
        return alert

    def record(self, type: str, *, actor: str, alert_id: str | None = None,
               data: dict[str, Any] | None = None, announce: bool = True) -> Event:
        """Append a non-transition event (pressed again, snapshot, fault, test...)."""
        def write() -> tuple[Event, Committed]:
            committed = self._log.write_event(type, actor, alert_id, data or {})
            return committed[0], committed

        def refused(error: sqlite3.Error) -> Event:
            held = HeldEvent(type, actor, self.clock.time(), self.clock_synced(), dict(data or {}), alert_id)
            number = self._hold(held, error)
            return Event(id=f"{self.hub_id}:unsaved-{number}", type=type, time=held.time, hub=self.hub_id,
                         actor=actor, alert_id=alert_id, data=held.data)

        return self._commit(write, refused, announce=announce)

    def set_health(self, component: str, status: str, reason: str = "") -> None:
        """Report a component's health; a change is recorded as an event."""
        self.health.set(component, status, reason)

    # --- neighbours -----------------------------------------------------------------------

    def ingest_remote(self, envelope: dict[str, Any], *, via: str, trust: str,
                      relay_to: tuple[str, ...] = ()) -> bool:
        """Store an event heard from another hub, deduplicated by its id (see hubd.ingest).

        ``trust`` says how far the link that heard it believes it: ``signed`` (its origin's
        signature verified) or ``ward-attested`` (rebuilt from a mesh frame). Returns True if
        it was new.  ``relay_to`` adds outbox rows (e.g. a mesh event to be relayed to MQTT by
        this hub).  Raises RemoteRefused (logged here, nothing written) for an event this hub
        will not store: an id of its own, ids of different hubs, fields it cannot store."""
        def write() -> tuple[bool, Committed | None]:
            committed = self._log.write_heard(envelope, via, trust, tuple(relay_to))
            return committed is not None, committed

        def refused(error: sqlite3.Error) -> bool:
            if not self._unsaved.holds_heard(envelope["id"]):
                self._hold(HeldHeard(dict(envelope), via, trust, tuple(relay_to)), error)
            return True

        try:
            return self._commit(write, refused)
        except RemoteRefused as e:
            log.warning("refused an event heard via %s: %s", via, e)
            raise

    # --- reading --------------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> Alert:
        return self._get(alert_id)

    def status(self) -> dict[str, Any]:
        return {**self._status.status(), "public_key": self.signer.public_key_text}

    def ping(self, timeout: float = PING_TIMEOUT) -> bool:
        """Whether the core answers: its lock taken and the store read, each within ``timeout``.

        The daemon's watchdog check: a store write stuck on a dying SD card holds the lock,
        and then every core operation would block."""
        if not self._lock.acquire(timeout=timeout):
            log.error("ping: the core's lock was not free within %.0f s", timeout)
            return False
        try:
            return self.store.ping(timeout)
        finally:
            self._lock.release()

    # --- the one write path -----------------------------------------------------------------

    def _commit(self, write: Callable[[], tuple[T, Committed | None]],
                refused: Callable[[sqlite3.Error], T] | None = None, *, announce: bool = True,
                announce_before_sync: bool = False) -> T:
        """Write held items, then ``write()`` in one transaction, then announce; return its result.

        ``write`` returns its result and the event to announce (or None).  If the store
        refuses, ``refused(error)`` gives the result instead (without it, the error is
        raised).  What was written is announced, oldest first, after the lock is released.
        ``announce_before_sync`` (a new alert) announces before the transaction's fsync."""
        late: list[Committed] = []
        try:
            with self._lock:
                try:
                    self._unsaved.flush(self._log, lambda w: self._written_late(w, late))
                    with self.store.transaction(sync=not announce_before_sync):
                        result, committed = write()
                except sqlite3.Error as e:
                    if refused is None:
                        raise
                    return refused(e)
        finally:
            for c in late:
                self._announce(*c)
        if committed is not None and announce:
            self._announce(*committed)
        if announce_before_sync:
            self.store.sync()
        self._store_ok_again()
        return result

    def _written_late(self, written: Written, late: list[Committed]) -> None:
        """A held item is written (the caller holds the lock): announce it, and start the
        escalation of a held alert."""
        if written.committed is not None:
            late.append(written.committed)
        if written.alert is not None:
            self._raised.note(written.alert.id, written.raised_mono)
            self._escalation.schedule(written.alert)

    def _transition(self, alert_id: str, target: AlertState, actor: str, *, outcome: Outcome | None = None,
                    check: Callable[[Alert], None] | None = None) -> Alert:
        def write() -> tuple[Alert, Committed]:
            alert = self._get(alert_id)
            if check is not None:
                check(alert)
            check_transition(alert, target)
            alert.state = target
            alert.outcome = outcome
            alert.updated_at = self.clock.time()
            self.store.save_alert(alert)
            data = {"outcome": str(outcome)} if outcome else {}
            return alert, self._log.append(TRANSITION_EVENT[target], actor, alert, data)

        def refused(error: sqlite3.Error) -> Alert:
            self._store_failed(error, f"{TRANSITION_EVENT[target]} {alert_id}")
            raise TransitionError(
                f"alert {alert_id} was NOT changed: the store cannot be written ({error}). The sirens and "
                f"the page still work; free space on the SD card (run `hubd doctor`) and try again.",
                code="store_unavailable") from error

        alert = self._commit(write, refused)
        log.warning("%s %s by %s", TRANSITION_EVENT[target], alert.id, actor)
        return alert

    def _announce(self, event: Event, envelope: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, envelope)
            except Exception:
                log.exception("listener %r failed on %s", listener, event.id)

    # --- when the store refuses writes ------------------------------------------------------

    def _hold_alert(self, alert: Alert, actor: str, data: dict[str, Any], raised_mono: float,
                    error: sqlite3.Error) -> Alert:
        """Hold a new alert in memory (caller holds the lock); it gets its id when written."""
        pending = self._unsaved.held_alert(alert.source, alert.kind)
        if pending is not None:  # pressed again while still unsaved: one alert, as when stored
            self._store_failed(error, f"raising a {alert.kind} alert from {alert.source} (again)")
            return pending.alert
        self._hold(HeldAlert(alert, actor, data, self.clock_synced(), raised_mono), error)
        log.critical("ALERT %s %s zone=%r source=%s NOT SAVED (%s): sirens on, kept in memory, "
                     "retrying every %.0f s", alert.id, alert.kind, alert.zone, alert.source, error,
                     STORE_RETRY_SECONDS)
        return alert

    def _hold(self, item: HeldItem, error: sqlite3.Error) -> int:
        """Hold an item the store refused (caller holds the lock) and report the fault."""
        self._store_failed(error, f"writing {item.type}")  # first, so the fault event comes first
        return self._unsaved.hold(item)

    def _store_failed(self, error: Exception, what: str) -> None:
        """Mark the store faulty (loudly on the change, quietly while it lasts); caller holds the lock."""
        alerts, others = self._unsaved.counts()
        reason = (f"cannot write {self.store.path}: {error}; {alerts} alert(s) and "
                  f"{others} event(s) kept in memory, retrying")
        change = self.health.set("store", "fault", reason, quiet=True)
        if change is not None and (change.old is None or change.old.status != "fault"):
            log.error("STORE FAULT while %s: %s. Alerts still sound the sirens and show on the page; "
                      "they are written as soon as the store takes writes again.", what, error)
            self._unsaved.hold(HeldEvent("component.fault", "store", self.clock.time(), self.clock_synced(),
                                         {"component": "store", "status": "fault", "reason": str(error)}))
        else:
            log.debug("store still refuses writes (%s): %s", what, error)

    def _retry_store(self) -> None:
        """Timer: write what the store refused (the store's fault clears once all is written)."""
        if len(self._unsaved):
            self._commit(lambda: (None, None), lambda e: self._store_failed(e, "retrying"))

    def _store_ok_again(self) -> None:
        """After a successful commit: the store's fault is over once nothing is held."""
        health = self.health.get("store")
        if health is not None and health.status == "fault" and not len(self._unsaved):
            log.warning("store writable again: everything kept in memory is written")
            self.set_health("store", "ok", "")

    def _health_changed(self, change: HealthChange) -> None:
        if change.old is None and change.new.status == "ok":
            return
        status, reason = change.new.status, change.new.reason
        event_type = "component.fault" if status == "fault" else "component.ok"
        try:
            self.record(event_type, actor=change.component, data={"component": change.component,
                                                                  "status": status, "reason": reason})
        except sqlite3.Error:
            log.exception("could not record health of %s", change.component)
        (log.error if status == "fault" else log.info)("%s: %s %s", change.component, status, reason)

    # --- internals ------------------------------------------------------------------------

    def _quiet_if_nothing_open(self) -> None:
        if not any(not a.silent for a in self.store.alerts(open_only=True, remote=False, limit=1000)):
            self._sirens.silence()

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

    def _escalate_due(self, alert_id: str, from_level: int) -> None:
        """Escalation timer: the step for ``from_level`` is due (see hubd.escalation)."""
        try:
            alert = self.store.get_alert(alert_id)
            if alert is not None and alert.level == from_level:
                self.escalate(alert_id)
        except sqlite3.Error as e:
            with self._lock:
                self._store_failed(e, f"escalating {alert_id}")
            raise  # the timer tries again: escalation is derived from stored state

    def _stop_escalation(self, alert_id: str) -> None:
        self._escalation.cancel(alert_id)
        self._raised.forget(alert_id)
