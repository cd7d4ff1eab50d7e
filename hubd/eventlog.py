"""How the hub writes what happened: alert rows, events with their ids and envelopes,
and one outbox row per destination that should hear of each.

:class:`EventLog` only writes, inside the store's transactions; it never announces
and takes no lock of its own: ``Hub`` calls it holding the hub's lock, inside one
transaction per change, and announces after the commit.

Every envelope of this hub's own is contract version 2, signed with the hub's key when it is
written: the store keeps, and every link sends, exactly what was signed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hubd import contract
from hubd.clock import Clock
from hubd.config import Config
from hubd.identity import Signer
from hubd.ingest import RemoteIngest
from hubd.model import ALERT_EVENT_TYPES, TRANSITION_EVENT, Alert, AlertState, Event
from hubd.store import Store

log = logging.getLogger("hubd.eventlog")

#: Event types that travel over the mesh (airtime is scarce; routine traffic stays off it).
MESH_EVENT_TYPES = contract.TRANSITION_EVENT_TYPES

PRIORITY_ALERT = 0
PRIORITY_ROUTINE = 1

#: An event as committed, with the envelope its listeners are given.
Committed = tuple[Event, dict[str, Any]]


class EventLog:
    """Writes the hub's own alerts and events, and those heard from other hubs."""

    def __init__(self, config: Config, store: Store, clock: Clock, clock_synced: Callable[[], bool],
                 signer: Signer):
        self.store = store
        self.hub_id = config.hub.id
        self._ward = config.hub.ward
        self._destinations = config.destinations()
        self._clock = clock
        self._clock_synced = clock_synced
        self._signer = signer
        self._ingest = RemoteIngest(store, self.hub_id)

    def append(self, type: str, actor: str, alert: Alert | None, data: dict[str, Any], *,
               alert_id: str | None = None, when: float | None = None,
               clock_synced: bool | None = None) -> Committed:
        """Append one of our own events (now, unless ``when`` says otherwise) and its outbox rows."""
        priority = PRIORITY_ALERT if (type in ALERT_EVENT_TYPES or type.startswith("siren.")) \
            else PRIORITY_ROUTINE
        routes = tuple((d, priority) for d in self._destinations if d != "mesh" or type in MESH_EVENT_TYPES)
        synced = self._clock_synced() if clock_synced is None else clock_synced
        when = self._clock.time() if when is None else when
        with self.store.transaction():
            while True:
                if alert is not None and type in MESH_EVENT_TYPES:
                    # Each transition happens once per alert (escalation once per level), so its id
                    # can be derived: the same event heard over MQTT and over the mesh dedupes.
                    event_id = contract.transition_event_id(alert.id, type, alert.level)
                else:
                    event_id = contract.routine_event_id(self.hub_id, self.store.next_value("event_seq"))
                event = Event(id=event_id, type=type, time=when, hub=self.hub_id, actor=actor,
                              alert_id=alert.id if alert else alert_id, data=data)
                envelope = self._signed(event.envelope(self._ward, alert))
                committed = self.store.append_event(event, envelope, routes, clock_synced=synced)
                if committed is not None:
                    return committed, envelope
                # The id is stored already: only a row heard before hubd refused other hubs'
                # claims to our ids can hold it (new alerts skip such ids, see write_alert).
                # Never fail on it: the event is recorded under the next routine id instead.
                log.error("event id %s is taken by a stored row (heard from another hub?); recorded under "
                          "the next free id", event_id)
                if alert is not None and type in MESH_EVENT_TYPES:
                    data = {**data, "id_taken": event_id}
                    alert_id = alert.id
                    alert = None

    def _signed(self, envelope: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._signer.sign("event", envelope)
        except (ValueError, TypeError) as e:
            # Data with no canonical form (a float beyond JSON's range, say): the event is
            # still recorded, and the links send it unsigned (receivers refuse it, and say so).
            log.error("event %s cannot be signed (%s); stored unsigned", envelope.get("id"), e)
            return envelope

    # --- the writes a held item (hubd.unsaved) may need, too ------------------------------

    def write_alert(self, alert: Alert, actor: str, data: dict[str, Any], *, when: float | None = None,
                    clock_synced: bool | None = None) -> tuple[Alert, Committed]:
        """Store a new local alert under its next id, with its ``alert.raised`` event."""
        with self.store.transaction():
            seq = self.store.next_value("alert_seq")
            while self.store.ids_taken(contract.alert_id(self.hub_id, seq)):
                # A row heard before hubd refused other hubs' claims to our ids: never reuse it.
                log.error("alert id %s is taken by a stored row (heard from another hub?); skipping it",
                          contract.alert_id(self.hub_id, seq))
                seq = self.store.next_value("alert_seq")
            stored = replace(alert, id=contract.alert_id(self.hub_id, seq), seq=seq)
            self.store.save_alert(stored)
            committed = self.append(TRANSITION_EVENT[AlertState.RAISED], actor, stored, data, when=when,
                                    clock_synced=clock_synced)
        return stored, committed

    def write_event(self, type: str, actor: str, alert_id: str | None, data: dict[str, Any], *,
                    when: float | None = None, clock_synced: bool | None = None) -> Committed:
        """Store an event that changes no alert (pressed again, snapshot, fault, siren...)."""
        with self.store.transaction():
            alert = self.store.get_alert(alert_id) if alert_id else None
            return self.append(type, actor, alert, data, alert_id=alert_id, when=when,
                               clock_synced=clock_synced)

    def write_heard(self, envelope: dict[str, Any], via: str, trust: str,
                    relay_to: tuple[str, ...] = ()) -> Committed | None:
        """Store an event heard from another hub (None if already stored); see hubd.ingest."""
        event = self._ingest.write(envelope, via, trust, tuple((d, PRIORITY_ALERT) for d in relay_to))
        return None if event is None else (event, envelope)
