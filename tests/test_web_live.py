"""The app served by waitress on a free port: logins over HTTP, live events by SSE
(heartbeat, resume with Last-Event-ID, the cap on open streams), and clean shutdown."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import wait_for
from test_web_helpers import MANAGER, VIEWER, Served, WebHub, make_web_hub, running_web_hub, served_web_hub

from hubd.web.live import QUEUE_SIZE, LiveHub
from hubd.web.page.backlog import StoreBacklog, live_feed


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from served_web_hub(tmp_path)


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[WebHub]:
    yield from running_web_hub(tmp_path)


class SSE:
    """A live stream read in a thread: events and comments land in a queue."""

    def __init__(self, session: requests.Session, url: str, headers: dict[str, str] | None = None):
        self.resp = session.get(url, stream=True, timeout=(5, 30), headers=headers or {})
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue()
        if self.resp.status_code == 200:
            threading.Thread(target=self._read, name="test-sse", daemon=True).start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for raw in self.resp.iter_lines(chunk_size=1, decode_unicode=True):
                if raw is None:
                    continue
                if raw == "":
                    if "data" in fields:
                        self.items.put(("event", (fields.get("id"), json.loads(fields["data"]))))
                    fields = {}
                elif raw.startswith(":"):
                    self.items.put(("comment", raw[1:].strip()))
                else:
                    k, _, v = raw.partition(":")
                    fields[k] = v.lstrip(" ")
        except (requests.RequestException, ValueError, AttributeError):
            pass
        self.items.put(("closed", None))

    def next(self, kind: str = "event", timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} on the stream within {timeout} s")
            k, v = self.items.get(timeout=left)
            if k == kind:
                return v
            if k == "closed":
                raise AssertionError("stream closed")

    def close(self) -> None:
        self.resp.close()


def test_login_and_act_over_http(served: Served) -> None:
    s = served.session()
    aid = served.web.raise_alert()
    r = s.post(f"{served.url}/api/alerts/{aid}/ack", json={}, timeout=10)
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert served.web.store.events(alert_id=aid)[-1]["actor"] == "web:alice"
    # No CSRF header: refused over the wire too.
    del s.headers["X-CSRF-Token"]
    r = s.post(f"{served.url}/api/alerts/{aid}/resolve", json={"outcome": "genuine"}, timeout=10)
    assert r.status_code == 403 and served.web.state(aid) == "acknowledged"
    assert requests.get(f"{served.url}/api/status", timeout=10).status_code == 401


def test_new_alert_reaches_an_open_stream_with_its_seq_as_id(served: Served) -> None:
    s = served.session(VIEWER)
    sse = SSE(s, f"{served.url}/api/stream")
    assert "heartbeat every" in sse.next("comment")
    aid = served.web.raise_alert()
    seq, msg = sse.next()
    assert msg["type"] == "alert.raised" and msg["alert"]["id"] == aid
    assert msg["alert"]["zone"] == "Market gate"
    stored = served.web.store.events(alert_id=aid)[0]
    assert int(seq) == stored["seq"] == msg["seq"]
    served.web.processor.execute({"cmd": "ack", "alert": aid}, actor="web:alice")
    _, msg = sse.next()
    assert msg["type"] == "alert.acknowledged" and msg["actor"] == "web:alice"
    sse.close()


def test_heartbeat_comments_keep_a_quiet_stream_alive(served: Served) -> None:
    sse = SSE(served.session(), f"{served.url}/api/stream")
    sse.next("comment")
    assert sse.next("comment", timeout=10) == "heartbeat"
    assert sse.next("comment", timeout=10) == "heartbeat"
    sse.close()


def test_resume_with_last_event_id_sends_what_was_missed(served: Served) -> None:
    s = served.session()
    first = served.web.raise_alert()
    mark = served.web.store.events(alert_id=first)[0]["seq"]
    missed = [served.web.raise_alert("clinic", "medical", "Clinic")]
    served.web.processor.execute({"cmd": "ack", "alert": missed[0]}, actor="web:alice")
    sse = SSE(s, f"{served.url}/api/stream", headers={"Last-Event-ID": str(mark)})
    got = [sse.next() for _ in range(2)]
    assert [m["type"] for _, m in got] == ["alert.raised", "alert.acknowledged"]
    assert all(int(i) > mark for i, _ in got)
    # And then it carries on live, without repeating anything.
    served.web.raise_alert("gate2", "fire", "Hall")
    _, msg = sse.next()
    assert msg["type"] == "alert.raised" and msg["alert"]["kind"] == "fire"
    sse.close()
    # ?after= does the same for a page that knows the last seq it rendered.
    sse = SSE(s, f"{served.url}/api/stream?after={mark}")
    assert sse.next()[1]["alert"]["id"] == missed[0]
    sse.close()


def test_open_streams_are_capped_and_slots_come_back(served: Served) -> None:
    s, other = served.session(), served.session()  # two logins
    live = served.web.app.extensions["hubd.live"]
    # One login cannot take every slot: it holds its share at most (issue 15).
    streams = [SSE(s, f"{served.url}/api/stream") for _ in range(live.max_per_owner)]
    for sse in streams:
        sse.next("comment")
    assert live.max_per_owner < live.max_streams
    r = s.get(f"{served.url}/api/stream", timeout=10)
    assert r.status_code == 503 and "for one login" in r.json()["error"]["message"]
    streams += [SSE(other, f"{served.url}/api/stream") for _ in range(live.max_streams - live.max_per_owner)]
    for sse in streams:
        sse.next("comment")
    r = other.get(f"{served.url}/api/stream", timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert "too many live streams" in r.json()["error"]["message"]
    # Ordinary requests still get a worker while every stream slot is taken.
    assert s.get(f"{served.url}/api/status", timeout=10).status_code == 200
    streams[0].close()
    # The server notices the gone client at the next heartbeat and frees its slot.
    wait_for(lambda: live.open_streams < live.max_streams, 15, message="a stream slot to come back")
    extra = SSE(s, f"{served.url}/api/stream")
    assert extra.resp.status_code == 200
    for sse in [*streams[1:], extra]:
        sse.close()


def test_stopping_the_server_ends_open_streams(tmp_path: Path) -> None:
    from test_web_helpers import serve

    w = make_web_hub(tmp_path, heartbeat=30, threads=6)
    served = serve(w)
    sse = SSE(served.session(), f"{served.url}/api/stream")
    sse.next("comment")
    live = w.app.extensions["hubd.live"]
    assert live.open_streams == 1
    served.server.stop()
    wait_for(lambda: live.open_streams == 0, 10, message="the stream to end on shutdown")
    assert not served.server.alive()
    w.hub.stop()


def test_a_stalled_stream_catches_up_from_the_store(wh: WebHub) -> None:
    live = LiveHub(StoreBacklog(wh.store), max_streams=2, heartbeat=5, max_age=60)
    wh.hub.subscribe(live_feed(live))
    s = live.open()
    assert s is not None
    body = live.run(s, None)
    assert next(body).startswith("retry:")
    ids = [wh.raise_alert(f"b{i}", "test", "") for i in range(QUEUE_SIZE + 20)]  # more than the queue holds
    assert s.overflowed
    seen = []
    while len(seen) < len(ids):
        chunk = next(body)
        if chunk.startswith("id:"):
            seen.append(json.loads(chunk.split("data: ", 1)[1])["alert"]["id"])
    assert seen == ids  # every one, in order, once
    body.close()
    assert live.open_streams == 0


def test_a_stream_refused_before_its_first_byte_frees_its_slot(wh: WebHub) -> None:
    from hubd.web.live import StreamBody

    live = LiveHub(StoreBacklog(wh.store), max_streams=1, heartbeat=5, max_age=60)
    s = live.open()
    assert live.open() is None
    StreamBody(live, s, None).close()  # the client went away before waitress iterated
    assert live.open() is not None


def test_bad_login_over_http_is_throttled(tmp_path: Path) -> None:
    from test_web_helpers import serve

    w = make_web_hub(tmp_path, login_max_failures=2)
    served = serve(w)
    try:
        for _ in range(2):
            r = requests.post(f"{served.url}/api/login", json={"user": "alice", "password": "nope nope"},
                              timeout=10)
            assert r.status_code == 401
        r = requests.post(f"{served.url}/api/login", json={"user": MANAGER[0], "password": MANAGER[1]},
                          timeout=10)
        assert r.status_code == 429
    finally:
        served.server.stop()
        w.hub.stop()
