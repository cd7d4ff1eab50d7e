"""The hub's event log as the page's live ``Backlog``, and the hub listener that feeds
the live streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hubd.model import Event
from hubd.store import Store
from hubd.web.live import LiveHub, Message


def event_message(seq: int, envelope: dict[str, Any]) -> Message:
    """The JSON sent for one event (from a store row or a committed event's envelope)."""
    return {"seq": seq, "id": envelope.get("id"), "type": envelope.get("type"),
            "time": envelope.get("time"), "hub": envelope.get("hub"), "actor": envelope.get("actor"),
            "alert": envelope.get("alert"), "data": envelope.get("data") or {}}


class StoreBacklog:
    """``hubd.web.live.Backlog`` over the store's event log (``seq`` is the event's)."""

    def __init__(self, store: Store):
        self.store = store

    def latest_seq(self) -> int:
        latest = self.store.events(limit=1, newest_first=True)
        return latest[0]["seq"] if latest else 0

    def after(self, seq: int, limit: int) -> list[Message]:
        return [event_message(r["seq"], r["envelope"]) for r in self.store.events(after_seq=seq, limit=limit)]


def live_feed(live: LiveHub) -> Callable[[Event, dict[str, Any]], None]:
    """A hub listener that publishes each committed event to the open streams."""

    def publish(event: Event, envelope: dict[str, Any]) -> None:
        live.publish(event_message(event.seq, envelope))

    return publish
