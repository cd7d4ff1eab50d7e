"""Writes the store refused (a full or read-only SD card, an I/O error), held in memory
until it takes writes again.

Three kinds of item are held, each knowing how it is written once the store is back:
a new local alert (:class:`HeldAlert`: it gets its id then), an event of our own
(:class:`HeldEvent`) and an event heard from another hub (:class:`HeldHeard`).  They are
written oldest first, with their own times, so the log keeps the order things happened.

The queue has its own lock (status readers may look at any time) and a cap it never
passes: when full, the oldest routine item makes room; held alerts go last, oldest first.
Holding and writing are done under the hub's lock, which keeps them in order with
every other write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from hubd.clock import Clock
from hubd.eventlog import Committed
from hubd.model import TRANSITION_EVENT, Alert, AlertState

log = logging.getLogger("hubd.unsaved")

#: Items kept in memory at most; beyond it the oldest routine events are dropped.
MAX_UNSAVED = 5000


class Writer(Protocol):
    """The writes a held item needs (``hubd.eventlog.EventLog``)."""

    def write_alert(self, alert: Alert, actor: str, data: dict[str, Any], *, when: float | None = None,
                    clock_synced: bool | None = None) -> tuple[Alert, Committed]: ...

    def write_event(self, type: str, actor: str, alert_id: str | None, data: dict[str, Any], *,
                    when: float | None = None, clock_synced: bool | None = None) -> Committed: ...

    def write_heard(self, envelope: dict[str, Any], via: str, trust: str,
                    relay_to: tuple[str, ...] = ()) -> Committed | None: ...


@dataclass(frozen=True)
class Written:
    """What writing a held item gave: the event to announce (None for a duplicate heard
    again) and, for a held alert, the alert as stored and when it was raised (monotonic)."""

    committed: Committed | None
    alert: Alert | None = None
    raised_mono: float = 0.0


@dataclass
class HeldAlert:
    """A new local alert; its id is ``<hub>:unsaved-<number>`` until it is written."""

    alert: Alert
    actor: str
    data: dict[str, Any]
    clock_synced: bool
    raised_mono: float  # when it was raised, on the monotonic clock
    number: int = 0
    droppable: ClassVar[bool] = False

    @property
    def type(self) -> str:
        return TRANSITION_EVENT[AlertState.RAISED]

    @property
    def time(self) -> float:
        return self.alert.raised_at

    def take_number(self, number: int) -> None:
        self.number = number
        self.alert.id = f"{self.alert.hub}:unsaved-{number}"

    def write(self, writer: Writer, now_mono: float) -> Written:
        late = max(now_mono - self.raised_mono, 0.0)
        data = {**self.data, "stored_late": round(late, 1)}
        stored, committed = writer.write_alert(self.alert, self.actor, data, when=self.time,
                                               clock_synced=self.clock_synced)
        log.warning("ALERT %s (was %s) written to the store %.0f s late", stored.id, self.alert.id, late)
        return Written(committed, stored, self.raised_mono)

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "time": self.time, "actor": self.actor, "alert": self.alert.to_dict()}


@dataclass
class HeldEvent:
    """An event of our own (about a stored alert, or about none)."""

    type: str
    actor: str
    time: float
    clock_synced: bool
    data: dict[str, Any] = field(default_factory=dict)
    alert_id: str | None = None
    number: int = 0
    droppable: ClassVar[bool] = True

    def take_number(self, number: int) -> None:
        self.number = number

    def write(self, writer: Writer, now_mono: float) -> Written:
        return Written(writer.write_event(self.type, self.actor, self.alert_id, self.data, when=self.time,
                                          clock_synced=self.clock_synced))

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "time": self.time, "actor": self.actor}
        if self.alert_id:
            d["alert_id"] = self.alert_id
        return d


@dataclass
class HeldHeard:
    """An event heard from another hub, with the destinations it is relayed to."""

    envelope: dict[str, Any]
    via: str
    trust: str
    relay_to: tuple[str, ...] = ()
    number: int = 0
    droppable: ClassVar[bool] = True

    @property
    def id(self) -> str:
        return self.envelope["id"]

    @property
    def type(self) -> str:
        return self.envelope["type"]

    def take_number(self, number: int) -> None:
        self.number = number

    def write(self, writer: Writer, now_mono: float) -> Written:
        return Written(writer.write_heard(self.envelope, self.via, self.trust, self.relay_to))

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "time": self.envelope["time"],
                "actor": self.envelope.get("actor", "?")}


HeldItem = HeldAlert | HeldEvent | HeldHeard


class UnsavedQueue:
    """Held items, oldest first, never more than ``cap``."""

    def __init__(self, clock: Clock, cap: int = MAX_UNSAVED):
        if cap < 1:
            raise ValueError("the unsaved queue needs room for at least one item")
        self.cap = cap
        self._clock = clock
        self._lock = threading.Lock()
        self._items: list[HeldItem] = []
        self._numbered = 0

    def hold(self, item: HeldItem) -> int:
        """Keep an item (numbering it) and return its number; if that makes one too many,
        drop the oldest routine item (this one, if all the others are alerts), or else
        the oldest alert."""
        with self._lock:
            self._numbered += 1
            item.take_number(self._numbered)
            self._items.append(item)
            if len(self._items) <= self.cap:
                return item.number
            drop = next((i for i in self._items if i.droppable), self._items[0])
            self._items = [i for i in self._items if i is not drop]
        if drop.droppable:
            log.error("store: dropped unsaved %s event from %s: more than %d items waiting",
                      drop.type, drop.describe()["actor"], self.cap)
        else:
            log.critical("store: dropped unsaved ALERT %s: %d alerts waiting, the most kept in memory",
                         drop.describe()["alert"]["id"], self.cap)
        return item.number

    def flush(self, writer: Writer, on_written: Callable[[Written], None]) -> None:
        """Write the held items, oldest first (the caller holds the hub's lock).

        ``on_written`` is called for each item as it commits, so the caller knows what
        was written even when a later item fails.  Raises the store's
        ``OperationalError`` if it still refuses (the rest stay held); an item refused for
        itself (any other ``sqlite3.Error``, or a heard event ``hubd.ingest`` refuses:
        retrying cannot help) is logged and dropped."""
        while True:
            with self._lock:
                if not self._items:
                    return
                item = self._items[0]
            try:
                result = item.write(writer, self._clock.monotonic())
            except sqlite3.OperationalError:
                raise
            except (sqlite3.Error, ValueError):
                log.exception("store: could not write unsaved %s from %s; dropped", item.type,
                              item.describe()["actor"])
                self._remove(item)
                continue
            self._remove(item)
            on_written(result)

    def _remove(self, item: HeldItem) -> None:
        with self._lock:
            self._items = [i for i in self._items if i is not item]

    # --- reading (any thread) ---------------------------------------------------------------

    def held_alert(self, source: str, kind: str) -> HeldAlert | None:
        """The held alert of this source and kind, if any (a second press holds no second one)."""
        with self._lock:
            return next((i for i in self._items if isinstance(i, HeldAlert) and i.alert.source == source
                         and i.alert.kind == kind), None)

    def holds_heard(self, event_id: str) -> bool:
        with self._lock:
            return any(isinstance(i, HeldHeard) and i.id == event_id for i in self._items)

    def counts(self) -> tuple[int, int]:
        """How many alerts, and how many other items, are held."""
        with self._lock:
            alerts = sum(1 for i in self._items if isinstance(i, HeldAlert))
            return alerts, len(self._items) - alerts

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [i.describe() for i in self._items]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
