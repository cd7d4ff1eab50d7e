"""Events heard from other hubs (over MQTT or the mesh), stored as remote alerts.

An event is stored once, deduplicated by its id, whichever path brought it first.  The
alert it carries replaces the stored copy only if it has come further (:func:`progress`):
paths deliver out of order, and an older event arriving late must never roll an alert
back.  Our own alerts echoed back by a neighbour are ignored.
"""

from __future__ import annotations

from typing import Any

from hubd.model import Alert, AlertState, Event
from hubd.store import Store

#: How far an alert has come: its state only moves forward (and a raised alert's level only up).
_RANK = {AlertState.RAISED: 0, AlertState.ACKNOWLEDGED: 1, AlertState.RESOLVED: 2, AlertState.CANCELLED: 2}


def progress(alert: Alert) -> tuple[int, int, float]:
    """An order of an alert's versions: the greater one has come further."""
    # Not by time alone: mesh frames carry whole seconds, so a resolve and the acknowledgement
    # before it can share a time, and the one heard last must not reopen the alert.
    return (_RANK[AlertState(alert.state)], alert.level, alert.updated_at)


class RemoteIngest:
    """Writes heard envelopes into the store (the caller holds the hub's lock)."""

    def __init__(self, store: Store):
        self.store = store

    def write(self, envelope: dict[str, Any], via: str,
              relay_to: tuple[tuple[str, int], ...] = ()) -> Event | None:
        """Store one heard event and its alert; None if it was already stored (or is our own).

        ``relay_to`` adds outbox rows, (destination, priority) (e.g. a mesh event relayed to
        MQTT by this hub)."""
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
            if current is not None and progress(current) > progress(alert):
                alert = None  # an older event arriving late must not roll the state back
        event = Event(id=envelope["id"], type=envelope["type"], time=envelope["time"],
                      hub=envelope["hub"], actor=envelope.get("actor", "?"),
                      alert_id=(envelope.get("alert") or {}).get("id"),
                      data=envelope.get("data") or {})
        with self.store.transaction():
            if alert is not None:
                self.store.save_alert(alert)
            return self.store.append_event(event, envelope, relay_to)
