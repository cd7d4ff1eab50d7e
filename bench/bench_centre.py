"""The centre's ingest against a bare paho subscriber, measured in the same run, on SQLite and on
PostgreSQL.

1. Ingest throughput. A backlog of signed events (contract version 2, from 50 enrolled hubs)
   is queued by the broker for a subscriber's persistent session while it is away; then the
   subscriber connects and the clock runs until every event is in the database. The centre
   (``hubd.centre``: classify, verify the signature, store once, paths, alert by precedence,
   receipts pending, live feed, acknowledge after the commit, signed receipts out) against a
   bare paho subscriber that writes the same ``events`` row of each message to the same kind
   of database (a fresh one each) through the same SQLAlchemy engine, committing each message
   and letting paho acknowledge it on arrival (what a first subscriber does; it verifies
   nothing and loses what it holds when killed). Target: ratio >= 0.5.
2. Event -> receipt: one signed event at a time, from publish until the centre's signed
   receipt for it is back at the publisher (stored and confirmed), p50 and p99. The broker
   has ``set_tcp_nodelay true`` and both clients TCP_NODELAY: without them Nagle's algorithm
   and delayed ACKs add about 40 ms at each of two hops (measured here: 90 ms p50 without,
   15 ms with).

Run: ``python bench/bench_centre.py``; PostgreSQL is the local service
(``$HUBD_TEST_POSTGRES``, a database of its own made and dropped here), skipped if unreachable.
The last line is JSON for ``bench/run``.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
from benchlib import pct, report  # noqa: E402
from centre_support import (  # noqa: E402
    alert_event,
    centre_config,
    postgres_database,
    postgres_reachable,
    public_key,
    signed,
)
from mqtt_support import CENTRAL  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from support import Mosquitto  # noqa: E402

from hubd.centre import registry, tables  # noqa: E402
from hubd.centre.registry import HubRecord  # noqa: E402
from hubd.centre.service import Centre  # noqa: E402
from hubd.centre.store import Store  # noqa: E402

EVENTS = 5000
HUBS = 50
LATENCY_EVENTS = 200
ROOT = "safercom/v2"
#: A central broker as docs/mqtt-contract.md asks: no cap on the centre's queue, and
#: TCP_NODELAY on its sockets (without it a receipt waits ~40 ms behind a delayed ACK).
BROKER_CONF = CENTRAL + "set_tcp_nodelay true\n"


def client(port: int, client_id: str, clean: bool = False) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    return c


def no_delay(c: mqtt.Client) -> None:
    """TCP_NODELAY, as the centre sets it (a hub's publish and its next are small writes)."""
    sock = c.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(c: mqtt.Client, port: int) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, 30, clean_start=False, properties=props)


def open_session(port: int, client_id: str) -> None:
    """Make a persistent session subscribed to every hub's events, and leave it."""
    c = client(port, client_id)
    done = threading.Event()
    c.on_connect = lambda cl, *a: cl.subscribe(f"{ROOT}/+/+/events", 1)
    c.on_subscribe = lambda *a: done.set()
    connect(c, port)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def drop_session(port: int, client_id: str) -> None:
    """End a persistent session (so it queues nothing for later measurements)."""
    c = client(port, client_id)
    c.connect("127.0.0.1", port, 30, clean_start=True)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def backlog() -> list[tuple[str, bytes]]:
    out = []
    for i in range(EVENTS):
        hub = f"h{i % HUBS}"
        env = signed(alert_event(hub, i // HUBS + 1, time=time.time()))
        out.append((f"{ROOT}/ward-7/{hub}/events", json.dumps(env, separators=(",", ":")).encode()))
    return out


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = client(port, "bench-hubs")
    acked = [0]
    c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    for topic, payload in messages:
        c.publish(topic, payload, qos=1)
    while acked[0] < len(messages):
        time.sleep(0.005)
    c.disconnect()
    c.loop_stop()


def enrol_all(url: str) -> None:
    store = Store.open(url)
    for i in range(HUBS):
        record = HubRecord(id=f"h{i}", ward="ward-7", public_key=public_key(f"h{i}"))
        registry.enrol(store, record, by="bench")
    store.close()


def centre_rate(tmp: Path, port: int, url: str, messages: list[tuple[str, bytes]]) -> float:
    enrol_all(url)
    config = centre_config(tmp, port, url, mqtt={"client_id": "bench-centre", "root_v1": ""})
    open_session(port, "bench-centre")
    publish_all(port, messages)
    centre = Centre(config)
    stored = [0]
    done = threading.Event()

    def count(feed: list[dict[str, Any]]) -> None:
        stored[0] += sum(1 for f in feed if f["kind"] == "event")
        if stored[0] >= EVENTS:
            done.set()

    centre.listen(count)
    t0 = time.perf_counter()
    centre.start(web=False, control=False)
    assert done.wait(600), f"the centre stored {stored[0]} of {EVENTS}"
    rate = EVENTS / (time.perf_counter() - t0)
    centre.stop()
    drop_session(port, "bench-centre")
    return rate


def bare_rate(port: int, url: str, messages: list[tuple[str, bytes]]) -> float:
    store = Store.open(url)
    open_session(port, "bench-bare")
    publish_all(port, messages)
    stored = [0]
    done = threading.Event()
    insert = store.insert(tables.events).on_conflict_do_nothing(index_elements=["id"])

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        env = json.loads(msg.payload)
        with store.write() as conn:
            conn.execute(insert.values(id=env["id"], hub=env["hub"], ward=env["ward"], type=env["type"],
                                       alert_id=(env.get("alert") or {}).get("id"), time=env["time"],
                                       received_at=time.time(), trust="unchecked", envelope=env))
        stored[0] += 1
        if stored[0] >= EVENTS:
            done.set()

    c = client(port, "bench-bare")
    c.on_connect = lambda cl, *a: cl.subscribe(f"{ROOT}/+/+/events", 1)
    c.on_message = on_message
    t0 = time.perf_counter()
    connect(c, port)
    c.loop_start()
    assert done.wait(600), f"the bare subscriber stored {stored[0]} of {EVENTS}"
    rate = EVENTS / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    store.close()
    drop_session(port, "bench-bare")
    return rate


def receipt_latency(tmp: Path, port: int, url: str) -> list[float]:
    """Publish one signed event, wait for its receipt, LATENCY_EVENTS times."""
    enrol_all(url)
    centre = Centre(centre_config(tmp, port, url, mqtt={"client_id": "bench-latency", "root_v1": ""}))
    centre.start(web=False, control=False)
    while not centre.ingest.connected:
        time.sleep(0.01)
    got = threading.Event()
    waiting = [""]

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if waiting[0] in json.loads(msg.payload)["ids"]:
            got.set()

    hub = client(port, "bench-hub-latency")
    subscribed = threading.Event()
    def on_connect(cl: mqtt.Client, *a: Any) -> None:
        no_delay(cl)
        cl.subscribe(f"{ROOT}/ward-7/h0/receipt", 1)

    hub.on_connect = on_connect
    hub.on_subscribe = lambda *a: subscribed.set()
    hub.on_message = on_message
    hub.connect("127.0.0.1", port, 30)
    hub.loop_start()
    assert subscribed.wait(10)
    time.sleep(0.5)
    out = []
    for seq in range(1, LATENCY_EVENTS + 1):
        env = signed(alert_event("h0", 100_000 + seq, time=time.time()))
        waiting[0] = env["id"]
        got.clear()
        t0 = time.perf_counter()
        hub.publish(f"{ROOT}/ward-7/h0/events", json.dumps(env).encode(), qos=1)
        assert got.wait(10), "no receipt"
        out.append(time.perf_counter() - t0)
        time.sleep(0.01)
    hub.disconnect()
    hub.loop_stop()
    centre.stop()
    drop_session(port, "bench-latency")
    return out


Database = Callable[[Path], AbstractContextManager[str]]


@contextmanager
def sqlite_db(tmp: Path) -> Any:
    yield f"sqlite:///{tmp / 'bench.db'}"


def measure(name: str, database: Database, tmp: Path, port: int,
            messages: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    with database(tmp / "bare") as url:
        bare = bare_rate(port, url, messages)
    with database(tmp / "centre") as url:
        ours = centre_rate(tmp / "centre", port, url, messages)
    with database(tmp / "latency") as url:
        lat = receipt_latency(tmp / "latency", port, url)
    return [
        {"figure": f"ingest of {EVENTS} signed events, {name}", "value": round(ours), "unit": "events/s",
         "target": "ratio >= 0.5", "baseline": round(bare), "ratio": round(ours / bare, 2)},
        {"figure": f"event -> receipt back p50, {name}", "value": round(pct(lat, 50) * 1000, 2), "unit": "ms",
         "target": "-"},
        {"figure": f"event -> receipt back p99, {name}", "value": round(pct(lat, 99) * 1000, 2), "unit": "ms",
         "target": "-"},
    ]


def main() -> None:
    messages = backlog()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-centre-") as d:
        tmp = Path(d)
        broker = Mosquitto(tmp / "broker", extra_conf=BROKER_CONF, persistence=False).start()
        try:
            for sub in ("sqlite", "postgresql"):
                (tmp / sub / "bare").mkdir(parents=True)
            rows += measure("SQLite", sqlite_db, tmp / "sqlite", broker.port, messages)
            why = postgres_reachable()
            if why is None:
                rows += measure("PostgreSQL", lambda _: postgres_database(), tmp / "postgresql", broker.port,
                                messages)
            else:
                print(f"PostgreSQL skipped: {why}", file=sys.stderr)
        finally:
            broker.stop()
    report("centre", rows)


if __name__ == "__main__":
    main()
