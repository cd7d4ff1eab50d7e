"""Outbox rows on their way to the broker, for the MQTT link.

A row is published as one or more QoS 1 messages (the event, and its snapshot or CAP) and
is delivered when the broker has acknowledged every one of them.  :class:`InFlight` keeps
which paho message id (mid) belongs to which row, which rows still wait for PUBACKs,
which rows are settled (delivered, or refused by the broker) but not yet recorded in the
store, and how many rows may be in flight at once.

Three threads use it: the one publishing a row (the drain, or the thread that committed
a new alert), paho's network thread (PUBACKs) and the drain again when it records what
is settled.  One lock guards it all, and nothing is done under it but bookkeeping.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

log = logging.getLogger("hubd.mqtt")

_UNSEEN = object()


@dataclass
class _Row:
    """The messages of one row still waiting for their PUBACK."""

    mids: set[int] = field(default_factory=set)
    sealed: bool = False  # every message of the row has been handed to paho
    error: str | None = None


@dataclass(frozen=True)
class Settled:
    """Rows the broker has answered for, as the store must record them."""

    delivered: list[int]
    refused: list[tuple[int, str]]  # (row, why)

    def __bool__(self) -> bool:
        return bool(self.delivered or self.refused)


class InFlight:
    """The rows in flight to the broker and their messages' PUBACKs.

    A row's life: :meth:`open`, then :meth:`sent` (or :meth:`refused`) for each of its
    messages, then :meth:`seal`; it settles once sealed and every mid is acknowledged
    (:meth:`acked`).  It stays in :meth:`window`'s busy set until :meth:`recorded`, so
    that it is never read back from the store as pending and published twice.

    :param window: how many rows may be in flight at once
    """

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self._window = window
        self._rows: dict[int, _Row] = {}
        self._mid_row: dict[int, int | None] = {}  # mid -> row (None: a message of no row)
        self._early: dict[int, str | None] = {}  # PUBACKs that came before publish() returned
        self._delivered: list[int] = []
        self._refused: list[tuple[int, str]] = []

    def resize(self, window: int) -> None:
        """Change the window (the broker's Receive Maximum may be smaller than ours)."""
        with self._lock:
            self._window = window

    def window(self) -> tuple[int, set[int]]:
        """Room for more rows, and the rows the store's pending() must skip (in flight, or
        settled but not yet recorded)."""
        with self._lock:
            return (self._window - len(self._rows),
                    set(self._rows) | set(self._delivered) | {r for r, _ in self._refused})

    def in_flight(self) -> int:
        """Rows published and not yet settled."""
        with self._lock:
            return len(self._rows)

    def open(self, row: int) -> None:
        """``row``'s messages are about to be handed to paho."""
        with self._lock:
            self._rows[row] = _Row()

    def sent(self, mid: int, row: int | None = None) -> None:
        """paho took a message (of ``row``, if any) as ``mid``."""
        with self._lock:
            early = self._early.pop(mid, _UNSEEN)
            if early is _UNSEEN:
                self._mid_row[mid] = row
                if row is not None:
                    self._rows[row].mids.add(mid)
            elif row is not None and early is not None:
                self._rows[row].error = f"broker refused: {early}"

    def refused(self, row: int, error: str) -> None:
        """A message of ``row`` could not be handed to paho: the row will be retried."""
        with self._lock:
            self._rows[row].error = error

    def seal(self, row: int) -> None:
        """Every message of ``row`` has been handed to paho."""
        with self._lock:
            state = self._rows[row]
            state.sealed = True
            self._settle_if_done(row, state)

    def acked(self, mid: int, refusal: str | None = None) -> bool:
        """The broker's PUBACK for ``mid`` (``refusal``: its failure reason code).  True if
        the message belonged to a row (the drain may have a row to record, or room)."""
        with self._lock:
            if mid not in self._mid_row:
                self._early[mid] = refusal
                return False
            row = self._mid_row.pop(mid)
            if row is None:
                if refusal is not None:
                    log.warning("broker refused message %d: %s", mid, refusal)
                return False
            state = self._rows.get(row)
            if state is None:
                return False
            state.mids.discard(mid)
            if refusal is not None:
                state.error = f"broker refused: {refusal}"
            self._settle_if_done(row, state)
            return True

    def _settle_if_done(self, row: int, state: _Row) -> None:
        # Caller holds the lock.
        if state.sealed and not state.mids:
            del self._rows[row]
            if state.error:
                self._refused.append((row, state.error))
            else:
                self._delivered.append(row)

    def settled(self) -> Settled:
        """The rows settled so far (they stay busy until :meth:`recorded`)."""
        with self._lock:
            return Settled(list(self._delivered), list(self._refused))

    def settled_count(self) -> int:
        with self._lock:
            return len(self._delivered) + len(self._refused)

    def recorded(self, settled: Settled) -> None:
        """The store has recorded ``settled`` (as returned by :meth:`settled`): those rows
        may leave the busy set.  Rows settled since stay."""
        with self._lock:
            del self._delivered[:len(settled.delivered)]
            del self._refused[:len(settled.refused)]
