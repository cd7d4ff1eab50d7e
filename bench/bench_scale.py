"""How many hubs one Mosquitto on this machine carries, seen from the centre.

Simulated lightweight hubs (paho clients driven from one thread, as hubd's link behaves on
the wire: MQTT v5, a retained status with a Last Will, a subscription to its ``cmd`` topic,
QoS 1 events) connect to one broker; a central consumer subscribes to every hub's events
and status and measures each event's latency (publish -> arrival at the centre).

1. ramp: 250, 500, 1000, 2000, 4000, 8000 hubs (``HUBD_SCALE_MAX``) at a realistic rate: a status
   heartbeat every 60 s and, for a busy ward, one alert event per hub per 10 minutes, for
   ``HUBD_SCALE_STEP`` (6) seconds each; a step is carried when every hub is connected,
   every event arrives and the centre's p99 latency is under 1 s.
2. storm: every hub of the largest carried step raises an alert within one second (a
   city-wide emergency): events per second at the centre and their p99 latency.
Baseline, same run: one bare paho client publishing QoS 1 as fast as it can to the same
centre (msgs/s and p99 latency).  The load generator shares the machine's cores with the
broker, so the figures are a floor for the broker, not its ceiling.

Run: ``python bench/bench_scale.py``; the last line is JSON for ``bench/run``.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import resource
import selectors
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
from support import Mosquitto  # noqa: E402

ROOT = "safercom/v1"
HEARTBEAT = 60.0
ALERT_EVERY = 600.0
STEP = float(os.environ.get("HUBD_SCALE_STEP", "6"))
MAX_HUBS = int(os.environ.get("HUBD_SCALE_MAX", "8000"))
TARGET_P99 = 1.0


class CentreProbe:
    """The central consumer: every event's latency, and how many statuses it heard."""

    def __init__(self, port: int):
        self.lat: list[float] = []
        self.seen: set[str] = set()
        self.statuses = 0
        self.storm: list[float] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-centre", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self.on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", port, 60)
        self.client.subscribe([(f"{ROOT}/+/+/events", 1), (f"{ROOT}/+/+/status", 1)])
        self.client.loop_start()
        assert ready.wait(10)

    def on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        now = time.time()
        if msg.topic.endswith("/status"):
            with self.lock:
                self.statuses += 1
            return
        body = json.loads(msg.payload)
        with self.lock:
            if body["id"] not in self.seen:
                self.seen.add(body["id"])
                self.lat.append(now - body["t"])
                if body.get("storm"):
                    self.storm.append(now - body["t"])

    def take(self) -> tuple[list[float], set[str]]:
        with self.lock:
            lat, seen = self.lat, self.seen
            self.lat, self.seen = [], set()
            return lat, seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Swarm:
    """N simulated hubs on one thread (paho's external-loop API over a selector)."""

    def __init__(self, port: int):
        self.port = port
        self.clients: list[mqtt.Client] = []
        self.sel = selectors.DefaultSelector()
        self.connected = 0
        self.sent: set[str] = set()
        self.heap: list[tuple[float, int, int, str]] = []
        self.seq = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, n: int, rng: random.Random) -> None:
        for _ in range(n):
            i = len(self.clients)
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hubd-sim-{i}", protocol=mqtt.MQTTv5)
            c.will_set(f"{ROOT}/ward-{i // 20}/hub-{i}/status", b'{"online":false}', qos=1, retain=True)

            def on_connect(client, userdata, flags, reason, props, i=i) -> None:  # noqa: ANN001
                if not reason.is_failure:
                    self.connected += 1
                    client.subscribe(f"{ROOT}/ward-{i // 20}/hub-{i}/cmd", 1)
                    client.publish(f"{ROOT}/ward-{i // 20}/hub-{i}/status", b'{"online":true}', qos=1,
                                   retain=True)

            c.on_connect = on_connect
            c.connect("127.0.0.1", self.port, 120)
            c.socket().setblocking(False)
            self.sel.register(c.socket(), selectors.EVENT_READ, c)
            self.clients.append(c)
            now = time.monotonic()
            with self.lock:
                heapq.heappush(self.heap, (now + rng.uniform(0, HEARTBEAT), i, 0, "status"))
                heapq.heappush(self.heap, (now + rng.expovariate(1 / ALERT_EVERY), i, 1, "alert"))
            if i % 50 == 0:
                self._pump(0)

    def publish(self, i: int, kind: str, storm: bool = False) -> None:
        c = self.clients[i]
        topic = f"{ROOT}/ward-{i // 20}/hub-{i}"
        if kind == "status":
            c.publish(f"{topic}/status", b'{"online":true}', qos=1, retain=True)
            return
        self.seq += 1
        event_id = f"hub-{i}:{self.seq}:raised:0"
        body = json.dumps({"v": 1, "id": event_id, "type": "alert.raised", "t": time.time(),
                           "hub": f"hub-{i}", "storm": storm,
                           "alert": {"id": f"hub-{i}:{self.seq}", "kind": "panic", "zone": "Market gate"}})
        c.publish(f"{topic}/events", body.encode(), qos=1)
        self.sent.add(event_id)

    def storm(self, rng: random.Random) -> None:
        now = time.monotonic()
        with self.lock:
            for i in range(len(self.clients)):
                heapq.heappush(self.heap, (now + rng.uniform(0, 1.0), i, 2, "alert"))

    def _pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            key.data.loop_read()
        for c in self.clients:
            if c.want_write():
                c.loop_write()

    def run(self) -> None:
        last_misc = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            with self.lock:
                due = []
                while self.heap and self.heap[0][0] <= now:
                    t, i, k, kind = heapq.heappop(self.heap)
                    due.append((i, kind, k))
                    if k < 2:
                        period = HEARTBEAT if kind == "status" else ALERT_EVERY
                        heapq.heappush(self.heap, (now + (period if kind == "status"
                                                          else random.expovariate(1 / period)), i, k, kind))
            for i, kind, k in due:
                self.publish(i, kind, storm=k == 2)
            self._pump(0.005)
            if now - last_misc > 1.0:
                for c in self.clients:
                    c.loop_misc()
                last_misc = now

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="bench-swarm", daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(10)
        for c in self.clients:
            try:
                c.disconnect()
                c.loop_write()
            except Exception:
                pass


def bare_baseline(port: int, centre: CentreProbe, n: int = 5000) -> tuple[float, float]:
    """One bare paho client: QoS 1 msgs/s at full speed, and p99 latency when paced."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(20)
    c.connect("127.0.0.1", port, 60)
    c.loop_start()

    def send(count: int, gap: float, tag: str) -> tuple[float, list[float]]:
        centre.take()
        t0 = time.monotonic()
        for k in range(count):
            body = json.dumps({"id": f"bare-{tag}:{k}", "t": time.time()}).encode()
            c.publish(f"{ROOT}/ward-x/bare/events", body, qos=1)
            if gap:
                time.sleep(gap)
        deadline = time.monotonic() + 60
        while len(centre.seen) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        lat, seen = centre.take()
        return len(seen) / elapsed, lat

    rate, _ = send(n, 0, "burst")
    _, lat = send(300, 0.005, "paced")
    c.disconnect()
    c.loop_stop()
    return rate, pct(lat, 99)


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker", persistence=False,
                           extra_conf="max_connections -1\nmax_inflight_messages 1000\n").start()
        centre = CentreProbe(broker.port)
        swarm = Swarm(broker.port)
        try:
            bare_rate, bare_p99 = bare_baseline(broker.port, centre)
            print(f"bare paho: {bare_rate:.0f} msgs/s, p99 {bare_p99 * 1000:.1f} ms", file=sys.stderr)
            swarm.start()
            carried, carried_p99, carried_rate = 0, float("nan"), 0.0
            steps = [s for s in (250, 500, 1000, 2000, 4000, 8000) if s <= MAX_HUBS]
            for target in steps:
                swarm.stop.set()
                swarm.thread.join(10)
                swarm.stop.clear()
                swarm.add(target - len(swarm.clients), rng)
                swarm.start()
                t_connect = time.monotonic()
                while swarm.connected < target and time.monotonic() - t_connect < 30:
                    time.sleep(0.05)
                centre.take()
                swarm.sent.clear()
                time.sleep(STEP)
                sent = set(swarm.sent)
                time.sleep(2.0)
                lat, seen = centre.take()
                lost = len(sent - seen)
                p99 = pct(lat, 99)
                ok = swarm.connected >= target and lost == 0 and p99 < TARGET_P99
                print(f"{target} hubs: connected {swarm.connected}, events {len(sent)} lost {lost}, "
                      f"p99 {p99 * 1000:.1f} ms -> {'carried' if ok else 'NOT carried'}", file=sys.stderr)
                if not ok:
                    break
                carried, carried_p99, carried_rate = target, p99, len(lat) / STEP + target / HEARTBEAT
            centre.take()
            swarm.sent.clear()
            t0 = time.monotonic()
            swarm.storm(rng)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.05)
                with centre.lock:
                    if len(centre.storm) >= len(swarm.clients):
                        break
            storm_time = time.monotonic() - t0
            with centre.lock:
                storm_lat = centre.storm
            centre.take()
            storm_rate = len(storm_lat) / max(storm_time, 1.0)
            print(f"storm: {len(storm_lat)} alerts from {len(swarm.clients)} hubs in {storm_time:.1f} s, "
                  f"p99 {pct(storm_lat, 99) * 1000:.0f} ms", file=sys.stderr)
        finally:
            swarm.halt()
            centre.close()
            broker.stop()
    storm_p99 = pct(storm_lat, 99)
    rows = [
        {"figure": "hubs carried by one Mosquitto (realistic rate, p99 < 1 s)", "value": carried,
         "unit": "hubs", "target": ">= 1000", "ratio": "", "baseline": ""},
        {"figure": "centre msgs/s at that load (heartbeat 60 s, alert / 10 min)",
         "value": round(carried_rate, 1), "unit": "msgs/s", "target": "",
         "ratio": round(carried_rate / bare_rate, 4), "baseline": round(bare_rate)},
        {"figure": "centre p99 event latency at that load", "value": round(carried_p99 * 1000, 1),
         "unit": "ms", "target": "< 1000 ms", "ratio": round(carried_p99 / bare_p99, 2),
         "baseline": round(bare_p99 * 1000, 1)},
        {"figure": f"storm: every hub alerts within 1 s ({len(storm_lat)} alerts)",
         "value": round(storm_rate), "unit": "alerts/s", "target": "",
         "ratio": round(storm_rate / bare_rate, 2), "baseline": round(bare_rate)},
        {"figure": "storm p99 latency at the centre", "value": round(storm_p99 * 1000),
         "unit": "ms", "target": "< 5000 ms", "ratio": round(storm_p99 / bare_p99, 1),
         "baseline": round(bare_p99 * 1000, 1)},
    ]
    report("scale", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
