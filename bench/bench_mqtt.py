"""MQTT link benchmarks against bare paho-mqtt, measured in the same run on a broker of our own.

1. press -> PUBACK: ``Hub.raise_alert`` (siren, SQLite commit, listener) until the broker's
   PUBACK for that alert's outbox row, against a bare paho QoS 1 publish -> PUBACK of a
   payload of the same size.  Both are timed from the call to the PUBACK callback, and
   alternate press by press (these machines drift; alternation keeps the ratio fair).
   Target: p50 ratio <= 3.  Also shown: press -> alert on disk (fsync done), which runs
   alongside the publish (see hubd.store).
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

PRESSES = 400
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


def latency(tmp: Path, port: int) -> tuple[dict[str, list[float]], int]:
    """Alternate a press on the hub and a bare publish of the same size, PRESSES times each."""
    hub, store, link = make_hub(tmp, port)
    acked = threading.Event()
    stamp = [0.0]
    link_on_publish = link.client.on_publish

    def on_link_publish(*args):  # noqa: ANN002
        link_on_publish(*args)
        # The row's PUBACK is counted (the store write follows).
        if link.inflight.settled_count() and not acked.is_set():
            stamp[0] = time.perf_counter()
            acked.set()

    link.client.on_publish = on_link_publish
    link.start()
    while not link.status()["connected"]:
        time.sleep(0.01)
    alert = hub.raise_alert("gate", "panic", "Market gate")  # the first one, to size the bare payload
    size = len(json.dumps(store.events(alert_id=alert.id)[0]["envelope"], separators=(",", ":")))
    payload = b"x" * size
    bare, _ = bare_client(port)
    bare_on_publish = bare.on_publish

    def on_bare_publish(*args):  # noqa: ANN002
        stamp[0] = time.perf_counter()
        bare_on_publish(*args)
        acked.set()

    bare.on_publish = on_bare_publish
    time.sleep(0.5)
    out: dict[str, list[float]] = {"press": [], "on_disk": [], "bare": []}
    for _ in range(PRESSES):
        while link.status()["inflight"] or link.inflight.settled_count():
            time.sleep(0.001)
        acked.clear()
        t0 = time.perf_counter()
        hub.raise_alert("gate", "panic", "Market gate")
        returned = time.perf_counter()  # siren on, alert fsync'd, escalation scheduled
        acked.wait(5)
        out["press"].append(stamp[0] - t0)
        out["on_disk"].append(returned - t0)
        time.sleep(0.003)
        acked.clear()
        t0 = time.perf_counter()
        bare.publish("bench/bare", payload, qos=1)
        acked.wait(5)
        out["bare"].append(stamp[0] - t0)
        time.sleep(0.003)
    bare.disconnect()
    bare.loop_stop()
    link.stop()
    store.close()
    return out, size


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
            lat, size = latency(tmp / "lat", broker.port)
            drain_rate = hub_drain(tmp / "drain", broker.port)
            bare_rate = bare_throughput(broker.port, b"x" * size)
        finally:
            broker.stop()
    h50, b50 = statistics.median(lat["press"]), statistics.median(lat["bare"])
    d50 = statistics.median(lat["on_disk"])
    rows = [
        {"figure": "press->PUBACK p50", "value": round(h50 * 1000, 3), "unit": "ms", "target": "ratio <= 3",
         "ratio": round(h50 / b50, 2), "baseline": round(b50 * 1000, 3)},
        {"figure": "press->PUBACK p95", "value": round(pct(lat["press"], 95) * 1000, 3), "unit": "ms",
         "target": "-", "ratio": round(pct(lat["press"], 95) / pct(lat["bare"], 95), 2),
         "baseline": round(pct(lat["bare"], 95) * 1000, 3)},
        {"figure": "press->alert on disk p50 (alongside)", "value": round(d50 * 1000, 3), "unit": "ms",
         "target": "-", "ratio": round(d50 / b50, 2), "baseline": round(b50 * 1000, 3)},
        {"figure": f"outbox drain of {DRAIN} events", "value": round(drain_rate), "unit": "events/s",
         "target": "ratio >= 0.3", "ratio": round(drain_rate / bare_rate, 2), "baseline": round(bare_rate)},
    ]
    report("mqtt", rows)


if __name__ == "__main__":
    main()
