"""MQTT link benchmarks against bare paho-mqtt, measured in the same run on a broker of our own.

1. press -> PUBACK: ``Hub.raise_alert`` (siren, SQLite commit with fsync, listener) until the
   broker's PUBACK for that alert's outbox row, against a bare paho QoS 1 publish -> PUBACK.
   Target: p50 ratio <= 3.
2. outbox drain: 10,000 queued events published and marked delivered, against bare paho
   publishing 10,000 messages of the same size at QoS 1 with the same in-flight window.
   Target: >= 0.3x the bare rate.

Run: ``python bench/bench_mqtt.py``; the last line is JSON for ``bench/run``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
from benchlib import pct, report  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from support import Mosquitto, hub_config  # noqa: E402

from hubd.commands import CommandProcessor  # noqa: E402
from hubd.config import load_config  # noqa: E402
from hubd.lifecycle import Hub  # noqa: E402
from hubd.radio.mqtt import MqttLink  # noqa: E402
from hubd.store import Store  # noqa: E402

PRESSES = 200
DRAIN = 10_000
INFLIGHT = 20  # the [mqtt] max_inflight default


def bare_client(port: int, inflight: int = INFLIGHT) -> tuple[mqtt.Client, list[int]]:
    count = [0]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(inflight)

    def on_publish(client, userdata, mid, reason, props):  # noqa: ANN001
        count[0] += 1

    c.on_publish = on_publish
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c, count


def bare_latency(port: int, payload: bytes) -> list[float]:
    c, _ = bare_client(port)
    time.sleep(0.3)
    out = []
    for _ in range(PRESSES):
        t0 = time.perf_counter()
        c.publish("bench/bare", payload, qos=1).wait_for_publish(5)
        out.append(time.perf_counter() - t0)
        time.sleep(0.005)
    c.disconnect()
    c.loop_stop()
    return out


def bare_throughput(port: int, payload: bytes) -> float:
    c, count = bare_client(port)
    time.sleep(0.3)
    t0 = time.perf_counter()
    for _ in range(DRAIN):
        c.publish("bench/bare", payload, qos=1)
    while count[0] < DRAIN:
        time.sleep(0.001)
    rate = DRAIN / (time.perf_counter() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


def make_hub(tmp: Path, port: int) -> tuple[Hub, Store, MqttLink]:
    cfg = load_config(hub_config(tmp, web=False, extra=f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                                                         f"max_inflight = {INFLIGHT}\n"))
    store = Store(cfg.store_path)
    hub = Hub(cfg, store)
    return hub, store, MqttLink(cfg, hub, CommandProcessor(hub))


def hub_latency(tmp: Path, port: int) -> tuple[list[float], list[float], int]:
    hub, store, link = make_hub(tmp, port)
    delivered = threading.Event()
    orig = link.client.on_publish

    def on_publish(*args):  # noqa: ANN002
        orig(*args)
        if link._done:  # the row's PUBACK has been counted (the store write follows)
            delivered.set()

    link.client.on_publish = on_publish
    commits: list[float] = []
    # Subscribed before the link: called right after the alert's transaction commits.
    hub.subscribe(lambda event, env: event.type == "alert.raised" and commits.append(time.perf_counter()))
    link.start()
    while not link.status()["connected"]:
        time.sleep(0.01)
    time.sleep(0.5)
    out: list[float] = []
    after_commit: list[float] = []
    for _ in range(PRESSES):
        while link.status()["inflight"] or link._done:
            time.sleep(0.001)
        delivered.clear()
        t0 = time.perf_counter()
        alert = hub.raise_alert("gate", "panic", "Market gate")
        delivered.wait(5)
        t1 = time.perf_counter()
        out.append(t1 - t0)
        after_commit.append(t1 - commits[-1])
        time.sleep(0.005)
    size = len(json.dumps(store.events(alert_id=alert.id)[0]["envelope"], separators=(",", ":")))
    link.stop()
    store.close()
    return out, after_commit, size


def hub_drain(tmp: Path, port: int) -> float:
    hub, store, link = make_hub(tmp, port)
    with store.transaction():
        for i in range(DRAIN):
            hub.record("bench.backlog", actor="bench", data={"n": i, "pad": "x" * 100}, announce=False)
    assert store.outbox_stats()["mqtt"]["depth"] == DRAIN
    t0 = time.perf_counter()
    link.start()
    while store.outbox_stats().get("mqtt", {}).get("depth", 0) > 0:
        time.sleep(0.005)
    rate = DRAIN / (time.perf_counter() - t0)
    link.stop()
    store.close()
    return rate


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as d:
        tmp = Path(d)
        broker = Mosquitto(tmp / "broker", persistence=False).start()
        try:
            hub_lat, link_lat, size = hub_latency(tmp / "lat", broker.port)
            payload = b"x" * size
            bare_lat = bare_latency(broker.port, payload)
            drain_rate = hub_drain(tmp / "drain", broker.port)
            bare_rate = bare_throughput(broker.port, payload)
        finally:
            broker.stop()
    h50, b50 = statistics.median(hub_lat), statistics.median(bare_lat)
    rows = [
        {"figure": "press->PUBACK p50", "value": round(h50 * 1000, 3), "unit": "ms", "target": "ratio <= 3",
         "ratio": round(h50 / b50, 2), "baseline": round(b50 * 1000, 3)},
        {"figure": "press->PUBACK p95", "value": round(pct(hub_lat, 95) * 1000, 3), "unit": "ms",
         "target": "-", "ratio": round(pct(hub_lat, 95) / pct(bare_lat, 95), 2),
         "baseline": round(pct(bare_lat, 95) * 1000, 3)},
        {"figure": "commit->PUBACK p50 (link only)", "value": round(statistics.median(link_lat) * 1000, 3),
         "unit": "ms", "target": "-", "ratio": round(statistics.median(link_lat) / b50, 2),
         "baseline": round(b50 * 1000, 3)},
        {"figure": f"outbox drain of {DRAIN} events", "value": round(drain_rate), "unit": "events/s",
         "target": "ratio >= 0.3", "ratio": round(drain_rate / bare_rate, 2), "baseline": round(bare_rate)},
    ]
    report("mqtt", rows)


if __name__ == "__main__":
    main()
