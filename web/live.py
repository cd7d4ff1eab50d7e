"""Server-Sent Events: every committed event pushed to the open pages.

The hub calls ``publish`` in the committing thread, so it only drops the event into
each stream's bounded queue and returns.  A stream whose queue overflows (a stalled
client) is not fed further; it catches up from the store by sequence number instead,
so nothing is lost.  Each event's SSE id is its store ``seq``: a browser that
reconnects sends ``Last-Event-ID`` and gets what it missed from the store.  A
heartbeat comment keeps proxies and dead-client detection going; the number of open
streams is capped because each holds one waitress worker thread.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from hubd.model import Event
from hubd.store import Store

log = logging.getLogger("hubd.web.live")

#: Events a stream may fall behind before it switches to catching up from the store.
QUEUE_SIZE = 256
#: Events sent from the store on one resume (older ones: reload the page).
RESUME_LIMIT = 1000
_CLOSE = object()


def event_message(row_or_event: dict[str, Any]) -> dict[str, Any]:
    """The JSON sent for one event (from a store row or a published envelope)."""
    env = row_or_event["envelope"]
    return {"seq": row_or_event["seq"], "id": env.get("id"), "type": env.get("type"),
            "time": env.get("time"), "hub": env.get("hub"), "actor": env.get("actor"),
            "alert": env.get("alert"), "data": env.get("data") or {}}


def format_sse(msg: dict[str, Any]) -> str:
    return f"id: {msg['seq']}\ndata: {json.dumps(msg, separators=(',', ':'))}\n\n"


class Stream:
    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_SIZE)
        self.overflowed = False


class LiveHub:
    """Fans committed events out to the open SSE streams."""

    def __init__(self, store: Store, *, max_streams: int, heartbeat: float, max_age: float):
        self.store = store
        self.max_streams = max_streams
        self.heartbeat = heartbeat
        self.max_age = max_age
        self._streams: set[Stream] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def publish(self, event: Event, envelope: dict[str, Any]) -> None:
        """Hub listener: never blocks the committing thread."""
        msg = {"seq": event.seq, "envelope": envelope}
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            if s.overflowed:
                continue
            try:
                s.queue.put_nowait(msg)
            except queue.Full:
                s.overflowed = True
                self.dropped += 1

    def open(self) -> Stream | None:
        """Claim a stream slot, or None when all are taken."""
        with self._lock:
            if self._closed or len(self._streams) >= self.max_streams:
                return None
            s = Stream()
            self._streams.add(s)
            return s

    def release(self, s: Stream) -> None:
        with self._lock:
            self._streams.discard(s)

    def close(self) -> None:
        """End every stream (on shutdown) so their worker threads return."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        for s in streams:
            try:
                s.queue.put_nowait(_CLOSE)
            except queue.Full:
                s.overflowed = True

    def _backlog(self, after: int) -> list[dict[str, Any]]:
        return [event_message(r) for r in self.store.events(after_seq=after, limit=RESUME_LIMIT)]

    def run(self, s: Stream, last_seq: int | None) -> Iterator[str]:
        """The body of one SSE response; releases its slot however it ends."""
        resume = last_seq is not None
        if last_seq is None:
            # Read now, not at the first step: the stream's queue already gets everything
            # committed after this point, so nothing falls between the two.
            latest = self.store.events(limit=1, newest_first=True)
            last_seq = latest[0]["seq"] if latest else 0
        return self._body(s, last_seq, resume)

    def _body(self, s: Stream, last_seq: int, resume: bool) -> Iterator[str]:
        try:
            yield f"retry: 3000\n: hubd live, heartbeat every {self.heartbeat:g} s\n\n"
            if resume:
                for msg in self._backlog(last_seq):
                    last_seq = msg["seq"]
                    yield format_sse(msg)
            deadline = time.monotonic() + self.max_age
            while time.monotonic() < deadline:
                if s.overflowed:
                    s.overflowed = False
                    while not s.queue.empty():
                        s.queue.get_nowait()
                    for msg in self._backlog(last_seq):
                        last_seq = msg["seq"]
                        yield format_sse(msg)
                    continue
                try:
                    item = s.queue.get(timeout=self.heartbeat)
                except queue.Empty:
                    yield ": heartbeat\n\n"
                    continue
                if item is _CLOSE:
                    return
                if item["seq"] <= last_seq:
                    continue  # already sent from the store while resuming
                last_seq = item["seq"]
                yield format_sse(event_message(item))
        finally:
            self.release(s)


class StreamBody:
    """The WSGI body of one stream: releases its slot on close even if never iterated
    (a generator closed before its first step would skip its ``finally``)."""

    def __init__(self, live: LiveHub, stream: Stream, last_seq: int | None):
        self._live = live
        self._stream = stream
        self._gen = live.run(stream, last_seq)

    def __iter__(self) -> Iterator[str]:
        return self._gen

    def close(self) -> None:
        self._gen.close()
        self._live.release(self._stream)
