"""Events heard from other hubs (over MQTT or the mesh), stored as remote alerts.

The link that heard an event has read it within the contract's bounds and checked its
signature (``hubd.contract.check_envelope``); it says how far the event is believed:
``signed`` by its origin, or ``ward-attested`` (rebuilt from a mesh frame, which has no room
for the origin's signature). Here it is stored, once, by these rules:

* **Ids carry their origin.** The event's id, its ``hub`` and its alert must name one hub, and
  never this one: no message can take an id of this hub's own (``RemoteRefused``).
* **Deduplicated by id**, whichever path brought it first; an origin's signed copy replaces a
  ward-attested copy of the same id.
* **The alert only moves forward** (:func:`progress`): paths deliver out of order, and an older
  event arriving late must never roll an alert back.
* **Ward-attested never overrides signed.** A signed event defines the alert (and replaces
  what was only ward-attested). An alert known only from the mesh follows its ward-attested
  events (shown as such: ``extra.trust``). Once its origin has signed anything of it, a
  ward-attested event may only make it more alarmed (``contract.ATTESTED_TRANSITIONS``: a
  higher level while raised); an attested acknowledgement, resolution or cancellation is
  stored and shown beside the alert (``extra.attested``) but changes nothing.
* **A bounded share of the store**: at most ``MAX_HEARD_EVENTS`` heard events are kept; the
  oldest delivered ones make room, and when none can, the event is refused.

Anything that cannot be stored is refused with ``RemoteRefused`` and nothing is written.
"""

from __future__ import annotations

from typing import Any

from hubd import contract
from hubd.model import Alert, AlertState, Event
from hubd.store import Store

#: How far an alert has come: its state only moves forward (and a raised alert's level only up).
_RANK = {AlertState.RAISED: 0, AlertState.ACKNOWLEDGED: 1, AlertState.RESOLVED: 2, AlertState.CANCELLED: 2}

SIGNED = str(contract.Trust.SIGNED)
ATTESTED = str(contract.Trust.ATTESTED)

#: Heard events kept at most (about 0.5 KiB each, 8 KiB at most by the contract's bounds: at
#: worst 80 MiB, typically 5 MiB); beyond it the oldest delivered ones make room.
MAX_HEARD_EVENTS = 10_000
#: How many make room at once.
EVICT_BATCH = 500


class RemoteRefused(ValueError):
    """A heard event that is not stored (nothing was written); the message says why."""


def progress(alert: Alert) -> tuple[int, int, float]:
    """An order of an alert's versions: the greater one has come further."""
    # Not by time alone: mesh frames carry whole seconds, so a resolve and the acknowledgement
    # before it can share a time, and the one heard last must not reopen the alert.
    return (_RANK[AlertState(alert.state)], alert.level, alert.updated_at)


class RemoteIngest:
    """Writes heard envelopes into the store (the caller holds the hub's lock)."""

    def __init__(self, store: Store, hub_id: str, max_events: int = MAX_HEARD_EVENTS):
        self.store = store
        self.hub_id = hub_id
        self.max_events = max_events
        self._count: int | None = None  # heard events stored, known lazily

    def write(self, envelope: dict[str, Any], via: str, trust: str,
              relay_to: tuple[tuple[str, int], ...] = ()) -> Event | None:
        """Store one heard event and apply its alert; None if it was already stored (and is not
        a signed copy of what was attested). ``relay_to`` adds outbox rows, (destination,
        priority) (a mesh event relayed to MQTT by this hub). RemoteRefused when it cannot be
        stored."""
        if trust not in (SIGNED, ATTESTED):
            raise ValueError(f"trust {trust!r}: expected {SIGNED!r} or {ATTESTED!r}")
        event, heard_alert = self._read(envelope)
        stored, stored_trust = self.store.heard_trust(event.id)
        upgrade = stored and stored_trust == ATTESTED and trust == SIGNED
        if stored and not upgrade:
            return None
        attested_by = envelope.get("attested", {}).get("by") if isinstance(envelope.get("attested"), dict) \
            else None
        with self.store.transaction():
            alert = self._apply(heard_alert, event.type, via, trust, attested_by or via)
            if alert is not None:
                self.store.save_alert(alert)
            if upgrade:
                seq = self.store.replace_heard(event, envelope, trust)
                return None if seq is None else Event(
                    id=event.id, type=event.type, time=event.time, hub=event.hub, actor=event.actor,
                    alert_id=event.alert_id, data=event.data, seq=seq)
            self._make_room()
            written = self.store.append_event(event, envelope, relay_to, trust=trust)
        if written is not None and self._count is not None:
            self._count += 1
        return written

    # --- reading ----------------------------------------------------------------------------

    def _read(self, envelope: Any) -> tuple[Event, Alert | None]:
        """The event and the alert it carries, once its ids name one hub that is not this one."""
        try:
            event_id, hub = envelope["id"], envelope["hub"]
            origin = contract.origin_of(event_id)
            if origin != hub:
                raise RemoteRefused(f"event {event_id} belongs to hub {origin}, not to {hub}")
            if origin == self.hub_id:
                raise RemoteRefused(f"event {event_id} claims an id of this hub's own")
            alert = None
            fields = envelope.get("alert")
            if fields is not None:
                alert = self._alert(fields, hub)
            data = envelope.get("data") or {}
            actor = envelope.get("actor", "?")
            if not isinstance(data, dict) or not isinstance(actor, str) \
                    or not isinstance(envelope["type"], str):
                raise RemoteRefused(f"event {event_id}: 'data' is not an object, or 'actor' or 'type' is "
                                    "not text")
            event = Event(id=event_id, type=envelope["type"], time=float(envelope["time"]), hub=hub,
                          actor=actor, alert_id=alert.id if alert else None, data=data)
        except RemoteRefused:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RemoteRefused(f"not an event this hub can store ({type(e).__name__}: {e})") from None
        return event, alert

    def _alert(self, fields: Any, hub: str) -> Alert:
        if not isinstance(fields, dict):
            raise RemoteRefused("'alert' is not an object")
        if contract.origin_of(str(fields["id"])) != hub or fields["hub"] != hub:
            raise RemoteRefused(f"alert {fields['id']!r} of hub {fields['hub']!r} in an event of hub {hub}")
        parsed = contract.parse_alert_id(fields["id"])
        if parsed is None or fields["seq"] != parsed.seq:
            raise RemoteRefused(f"alert {fields['id']!r} says seq {fields['seq']!r}")
        row = {k: fields[k] for k in ("id", "hub", "seq", "kind", "source", "zone", "state", "outcome",
                                      "level", "raised_at", "updated_at")}
        alert = Alert.from_row({**row, "silent": bool(fields.get("silent", False)), "remote": True,
                                "relayed_by": None, "extra": None})
        if not isinstance(alert.level, int) or not isinstance(alert.source, str) \
                or not isinstance(alert.zone, str):
            raise RemoteRefused(f"alert {alert.id}: level is not a number or source, zone not text")
        float(alert.raised_at), float(alert.updated_at)  # noqa: B018 - ValueError/TypeError if not numbers
        return alert

    # --- applying ---------------------------------------------------------------------------

    def _apply(self, heard: Alert | None, event_type: str, via: str, trust: str, by: str) -> Alert | None:
        """The alert row to save after this event, or None to leave it as it is."""
        if heard is None:
            return None
        current = self.store.get_alert(heard.id)
        if current is not None and not current.remote:
            raise RemoteRefused(f"alert {heard.id} is this hub's own")
        heard.extra = {"via": via, "trust": trust}
        if current is None:
            return heard
        current_trust = current.extra.get("trust", ATTESTED)  # rows from before version 2 proved nothing
        if trust == SIGNED:
            if current_trust != SIGNED or progress(heard) > progress(current):
                # A signed event defines the alert; ward-attested hearsay before it gives way
                # (noted, when it had come further: the origin's later events will follow).
                heard.extra = {**current.extra, **heard.extra}
                if current_trust != SIGNED and progress(current) > progress(heard):
                    heard.extra["attested"] = {"type": f"alert.{current.state}", "state": str(current.state),
                                               "level": current.level, "by": current.extra.get("via", "mesh"),
                                               "outcome": str(current.outcome) if current.outcome else None}
                return heard
            return None
        if current_trust != SIGNED:
            # Known only from the mesh: it follows the mesh, shown as ward-attested.
            return heard if progress(heard) > progress(current) else None
        # Its origin has signed it: ward-attested events never override that. They may only make
        # it more alarmed (ATTESTED_TRANSITIONS: a higher level while raised); the rest is noted.
        note = {"type": event_type, "state": str(heard.state), "level": heard.level,
                "outcome": str(heard.outcome) if heard.outcome else None, "by": by}
        if event_type in contract.ATTESTED_TRANSITIONS and current.state == AlertState.RAISED \
                and heard.level > current.level:
            current.level, current.updated_at = heard.level, max(current.updated_at, heard.updated_at)
        current.extra = {**current.extra, "attested": note}
        return current

    def _make_room(self) -> None:
        if self._count is None:
            self._count = self.store.count_heard()
        if self._count < self.max_events:
            return
        self.store.evict_heard(max(EVICT_BATCH, self._count - self.max_events + 1))
        self._count = self.store.count_heard()
        if self._count >= self.max_events:
            self._count = None  # the eviction is rolled back with the refused event
            raise RemoteRefused(f"{self._count} events heard from other hubs are stored, the most this hub "
                                "keeps, and none can make room (all wait to be relayed)")
