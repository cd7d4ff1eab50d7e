"""Server-Sent Events: every message an app publishes, pushed to the open pages.

A message is a JSON object with an integer ``seq``, increasing; the app's ``Backlog``
gives the messages after a ``seq`` (the hub: its event log).  The app calls ``publish``
in the thread that made the message (the hub: the committing thread), so it only drops
the message into each stream's bounded queue and returns.  A stream whose queue
overflows (a stalled client) is not fed further; it catches up from the backlog by
``seq`` instead, so nothing is lost.  Each message's SSE id is its ``seq``: a browser
that reconnects sends ``Last-Event-ID`` and gets what it missed from the backlog.  A
heartbeat comment keeps proxies and dead-client detection going; the number of open
streams is capped because each holds one waitress worker thread, and one owner (a login
session) may hold at most half of them, so it cannot take every slot from the others.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any, Protocol

from flask import Response, request

from hubd.web.errors import ApiError

log = logging.getLogger("hubd.web.live")

#: Messages a stream may fall behind before it switches to catching up from the backlog.
QUEUE_SIZE = 256
#: Messages sent from the backlog on one resume (older ones: reload the page).
RESUME_LIMIT = 1000
#: The app's extension key of its ``LiveHub`` (the server ends its streams on stop).
EXTENSION = "hubd.live"
_CLOSE = object()

#: One message: a JSON object with an integer ``seq``.
Message = dict[str, Any]


class Backlog(Protocol):
    """The messages already published, by ``seq``."""

    def latest_seq(self) -> int:
        """The newest message's ``seq`` (0 when there is none)."""
        ...

    def after(self, seq: int, limit: int) -> list[Message]:
        """At most ``limit`` messages with a ``seq`` above this one, oldest first."""
        ...


def format_sse(msg: Message) -> str:
    return f"id: {msg['seq']}\ndata: {json.dumps(msg, separators=(',', ':'))}\n\n"


class Stream:
    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_SIZE)
        self.overflowed = False


class LiveHub:
    """Fans published messages out to the open SSE streams."""

    def __init__(self, backlog: Backlog, *, max_streams: int, heartbeat: float, max_age: float):
        self.backlog = backlog
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

    def publish(self, msg: Message) -> None:
        """Never blocks the publishing thread."""
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

    @property
    def max_per_owner(self) -> int:
        """Streams one owner may hold at once: half of them (at least one)."""
        return max(1, (self.max_streams + 1) // 2)

    def open(self, owner: str | None = None) -> Stream | None:
        """Claim a stream slot for ``owner`` (a login session), or None when all are taken, or
        ``owner`` holds its share already."""
        with self._lock:
            if self._closed or len(self._streams) >= self.max_streams:
                return None
            if owner is not None and sum(1 for s in self._streams if s.owner == owner) >= self.max_per_owner:
                return None
            s = Stream(owner)
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

    def run(self, s: Stream, last_seq: int | None) -> Generator[str, None, None]:
        """The body of one SSE response; releases its slot however it ends."""
        resume = last_seq is not None
        if last_seq is None:
            # Read now, not at the first step: the stream's queue already gets everything
            # published after this point, so nothing falls between the two.
            last_seq = self.backlog.latest_seq()
        return self._body(s, last_seq, resume)

    def _body(self, s: Stream, last_seq: int, resume: bool) -> Generator[str, None, None]:
        try:
            yield f"retry: 3000\n: hubd live, heartbeat every {self.heartbeat:g} s\n\n"
            if resume:
                for msg in self.backlog.after(last_seq, RESUME_LIMIT):
                    last_seq = msg["seq"]
                    yield format_sse(msg)
            deadline = time.monotonic() + self.max_age
            while time.monotonic() < deadline:
                if s.overflowed:
                    s.overflowed = False
                    while not s.queue.empty():
                        s.queue.get_nowait()
                    for msg in self.backlog.after(last_seq, RESUME_LIMIT):
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
                    continue  # already sent from the backlog while resuming
                last_seq = item["seq"]
                yield format_sse(item)
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


def sse_response(live: LiveHub, owner: str | None = None) -> Response:
    """The live stream for this request, resumed after its ``Last-Event-ID`` header or
    ``after`` query parameter; ApiError 400 for a bad one, 503 when every slot is taken or
    ``owner`` (the login session, ``hubd.web.auth.session_owner()``) holds its share."""
    last = request.headers.get("Last-Event-ID") or request.args.get("after")
    last_seq = None
    if last:
        try:
            last_seq = int(last)
        except ValueError:
            raise ApiError("bad_request", f"Last-Event-ID/after {last!r} is not an event sequence number") \
                from None
        if last_seq < 0:
            raise ApiError("bad_request", "Last-Event-ID/after must not be negative")
    s = live.open(owner)
    if s is None:
        raise ApiError("unavailable", f"too many live streams open ({live.max_streams}, at most "
                                      f"{live.max_per_owner} for one login); the page still works by "
                                      "reloading", headers={"Retry-After": "30"})
    resp = Response(StreamBody(live, s, last_seq), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
