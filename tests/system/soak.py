"""Soaks of one hub, each run as its own process so that its memory is measured alone.

``python tests/system/soak.py BROKER_PORT OUT.json [HOURS] [SECONDS]``: an accelerated day
in the life of one hub.  The real core, store, MQTT link (to the broker on BROKER_PORT) and
mesh link (through the real meshtastic TCPInterface to a simulated radio with one silent
neighbour) run with every interval divided by the same factor F = HOURS * 3600 / SECONDS:
mesh beacons (300 s), the MQTT status heartbeat (60 s), escalation steps (60, 180, 600 s),
store pruning (every 6 h, keeping RETENTION_HOURS), alerts at ALERTS_PER_DAY and neighbours'
events heard over MQTT at NEIGHBOUR_EVENTS_PER_DAY.  Every simulated hour it writes a
sample: RSS, rows in the store, the database's size on disk, pending deliveries.

``python tests/system/soak.py presses BROKER_PORT OUT.json [PRESSES] [WARM_UP]``: a busy
hub.  The whole daemon (simulated buttons and siren, MQTT to BROKER_PORT, the page on) takes
WARM_UP then PRESSES presses of a button, each alert resolved at once, as fast as it can.
Before and after the PRESSES it measures RSS, the Python heap (``sys.getallocatedblocks``),
and ``/api/status``: its p50 and its work in SQLite (virtual machine steps, which do not
depend on the machine's load), with samples in between.  Whatever each press leaves
behind shows there, where a day of ALERTS_PER_DAY is too few alerts to show it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import paho.mqtt.client as mqtt  # noqa: E402
import requests  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from hubd import contract  # noqa: E402
from hubd.commands import CommandProcessor  # noqa: E402
from hubd.config import parse_config  # noqa: E402
from hubd.daemon import Daemon  # noqa: E402
from hubd.lifecycle import Hub  # noqa: E402
from hubd.radio.frames import write_key  # noqa: E402
from hubd.radio.mesh import MeshLink  # noqa: E402
from hubd.radio.meshsim import SimAir  # noqa: E402
from hubd.radio.mqtt import MqttLink  # noqa: E402
from hubd.store import Store  # noqa: E402
from hubd.users import Users  # noqa: E402

BEACON = 300.0
HEARTBEAT = 60.0
ESCALATION = (60.0, 180.0, 600.0)
PRUNE_EVERY = 6 * 3600.0
RETENTION_HOURS = 4.0
ALERTS_PER_DAY = 96
NEIGHBOUR_EVENTS_PER_DAY = 2000
#: The neighbour's signing key (its public half is in the soaked hub's [trust] hubs).
HUB_2 = contract.generate_private_key()


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(port: int, out: Path, hours: float, seconds: float) -> int:
    f = hours * 3600.0 / seconds  # simulated seconds per real second
    base = out.parent / "soak-hub"
    key_file = base / "network.key"
    write_key(key_file)
    # The air compressed by the same factor as every interval: airtime, propagation delay and
    # contention.  (At a fixed 1/100 of real airtime, each frame stayed on the air for simulated
    # tens of seconds, and the beacons that wait for frames on the air were lost by the dozen,
    # more of them the more loaded the machine.)
    air = SimAir(seed=1, time_scale=1 / f, delay=0.01 / f, contention=0.02 / f)
    mine, other = air.add_node(hop_limit=1, name="hub-1"), air.add_node(hop_limit=1, name="silent")
    air.link(mine, other)
    air.start()
    cfg = parse_config({
        "hub": {"ward": "ward-7", "id": "hub-1", "state_dir": str(base), "runtime_dir": str(base / "run")},
        "camera": {"backend": "none"}, "web": {"enabled": False},
        "protocol": {"cancel_window": 30, "escalation": [s / f for s in ESCALATION]},
        # Time runs F times faster: so may the neighbour (2000 events a day are ~30 a second here).
        "mqtt": {"host": "127.0.0.1", "port": port, "neighbours": ["hub-2"], "keepalive": 30,
                 "neighbour_rate": 10000, "neighbour_burst": 10000},
        "trust": {"hubs": {"hub-2": contract.public_key_text(HUB_2)}},
        "mesh": {"connection": f"tcp:127.0.0.1:{mine.port}", "key_file": str(key_file), "duty_cycle": 1.0,
                 "beacon_interval": 1.0, "ack_timeout": 2.0, "retry_initial": 0.5, "retry_max": 4.0},
    })
    # The schema keeps real deployments from beacons more often than every second; the soak
    # compresses time, so it sets the interval after validation.
    cfg = dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, beacon_interval=BEACON / f))
    store = Store(cfg.store_path)
    hub = Hub(cfg, store)
    processor = CommandProcessor(hub)
    mqtt_link = MqttLink(cfg, hub, processor)
    mqtt_link.STATUS_INTERVAL = HEARTBEAT / f
    heartbeats = [0]
    publish_status = mqtt_link._publish_status

    def counted_status() -> None:
        heartbeats[0] += 1
        publish_status()

    mqtt_link._publish_status = counted_status
    mesh_link = MeshLink(cfg, hub, processor)
    escalations = [0]

    def count_escalations(event: Any, env: Any) -> None:
        escalations[0] += event.type == "alert.escalated"

    hub.subscribe(count_escalations)
    hub.start()
    mqtt_link.start()
    mesh_link.start()

    neighbour = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-hub-2", protocol=mqtt.MQTTv5)
    neighbour.connect("127.0.0.1", port, 30)
    neighbour.loop_start()

    rng = random.Random(1)
    stop = threading.Event()
    counts = {"alerts": 0, "neighbour_events": 0, "prunes": 0, "pruned": 0}

    def every(sim_interval: float, fn: Any) -> threading.Thread:
        def loop() -> None:
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += rng.expovariate(f / sim_interval)
                stop.wait(max(0.0, next_at - time.monotonic()))
                if not stop.is_set():
                    fn()
        t = threading.Thread(target=loop, name=f"soak-{fn.__name__}", daemon=True)
        t.start()
        return t

    open_alerts: list[tuple[str, float, str]] = []  # id, real time to act, action

    def raise_one() -> None:
        alert = hub.raise_alert("gate", rng.choice(["panic", "medical", "fire"]), "Market gate")
        counts["alerts"] += 1
        # Most are acknowledged within minutes, some only after the last escalation.
        delay = rng.choice([30.0, 120.0, 400.0, 900.0]) / f
        open_alerts.append((alert.id, time.monotonic() + delay, "ack"))

    def manage() -> None:
        now = time.monotonic()
        for item in [i for i in open_alerts if i[1] <= now]:
            open_alerts.remove(item)
            alert_id, _, action = item
            if action == "ack":
                hub.acknowledge(alert_id, "manager")
                open_alerts.append((alert_id, now + 600.0 / f, "resolve"))
            else:
                hub.resolve(alert_id, rng.choice(["genuine", "false_alarm"]), "manager")

    seq = [0]

    def neighbour_event() -> None:
        seq[0] += 1
        t = time.time()
        env = contract.event_envelope_v2(id=f"hub-2:e{seq[0]}", type="component.ok", time=t, ward="ward-7",
                                         hub="hub-2", actor="soak", data={"n": seq[0], "pad": "x" * 200})
        neighbour.publish("safercom/v2/ward-7/hub-2/events",
                          contract.dumps(contract.sign("event", env, HUB_2)), qos=1)
        counts["neighbour_events"] += 1

    def prune() -> None:
        counts["pruned"] += store.prune(time.time() - RETENTION_HOURS * 3600.0 / f)
        counts["prunes"] += 1

    samples: list[dict[str, Any]] = []

    def sample() -> None:
        gc.collect()
        db = cfg.store_path
        size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
        rows = store.query("SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM alerts) "
                           "AS alerts, (SELECT count(*) FROM outbox) AS outbox")[0]
        samples.append({"hour": len(samples), "rss_kb": rss_kb(), "db_bytes": size, **rows,
                        "pending": {k: v["depth"] for k, v in store.outbox_stats().items()},
                        "threads": threading.active_count()})

    sample()
    threads = [every(86400.0 / ALERTS_PER_DAY, raise_one),
               every(86400.0 / NEIGHBOUR_EVENTS_PER_DAY, neighbour_event)]
    ticker_start = time.monotonic()

    def fixed(interval: float, fn: Any) -> threading.Thread:
        def loop() -> None:
            n = 1
            while not stop.wait(max(0.0, ticker_start + n * interval / f - time.monotonic())):
                fn()
                n += 1
        t = threading.Thread(target=loop, name=f"soak-{fn.__name__}", daemon=True)
        t.start()
        return t

    # The link looks at its heartbeat timer when its drain loop wakes (at least every second);
    # with time compressed, wake it as often as the compressed heartbeat is due.
    threads += [fixed(PRUNE_EVERY, prune), fixed(3600.0, sample), fixed(5.0, manage),
                fixed(HEARTBEAT, mqtt_link._wake.set)]
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(10)
    # The day ends with the managers closing what is still open: an open alert's escalation
    # timers would otherwise keep adding events (up to 600 s / F after its raise), and the
    # outbox, seen empty between two of them, hold one again at the last sample.
    for alert in store.alerts(open_only=True, remote=False, limit=1000):
        hub.resolve(alert.id, "genuine", "manager")
    # Let what is queued reach the broker before the last sample.
    deadline = time.monotonic() + 30
    while store.outbox_stats().get("mqtt") and time.monotonic() < deadline:
        time.sleep(0.1)
    sample()
    result = {"hours": hours, "seconds": seconds, "factor": f, "samples": samples, "counts": counts,
              "heartbeats": heartbeats[0], "beacons": mesh_link.counters["beacons_sent"],
              "escalations": escalations[0], "retention_hours": RETENTION_HOURS,
              "prune_every_hours": PRUNE_EVERY / 3600, "mesh": dict(mesh_link.counters),
              "mqtt_published": mqtt_link.published}
    neighbour.disconnect()
    neighbour.loop_stop()
    mesh_link.stop()
    mqtt_link.stop()
    hub.stop()
    store.close()
    air.stop()
    out.write_text(json.dumps(result))
    return 0


# --- a busy hub: presses, each resolved at once ---------------------------------------------

PASSWORD = "soak password 1"


@contextmanager
def sqlite_steps(store: Store) -> Iterator[Callable[[], int]]:
    """Count the SQLite virtual machine instructions run on the store's connection."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn = store._conn
    conn.set_progress_handler(count, 1)
    try:
        yield lambda: steps[0]
    finally:
        conn.set_progress_handler(None, 1)


def presses(port: int, n: int, warm_up: int, *, trace: bool = False, samples: int = 10) -> dict[str, Any]:
    """Press and resolve ``warm_up`` then ``n`` times; measure before and after the ``n``."""
    with tempfile.TemporaryDirectory(prefix="hubd-soak-") as d:  # short: the control socket's path
        cfg = parse_config({
            "hub": {"ward": "ward-7", "id": "hub-1", "state_dir": f"{d}/state", "runtime_dir": f"{d}/run"},
            "hardware": {"pin_factory": "mock", "boot_grace": 0},
            "buttons": [{"name": "gate", "pin": 17, "zone": "Market gate", "debounce": 0}],
            "sirens": [{"name": "main", "pin": 27}],
            "camera": {"backend": "none"},
            "web": {"bind": "127.0.0.1", "port": 0},
            "mqtt": {"host": "127.0.0.1", "port": port},
        })
        daemon = Daemon(cfg)
        daemon.start()
        try:
            return _press_and_measure(daemon, n, warm_up, trace, samples)
        finally:
            daemon.stop()


def _press_and_measure(daemon: Daemon, n: int, warm_up: int, trace: bool, samples: int) -> dict[str, Any]:
    store = daemon.store
    Users(store).add("viewer", PASSWORD, "viewer")
    page = f"http://127.0.0.1:{daemon.web_port}"
    session = requests.Session()  # logged in: basic auth would time the password hash
    session.post(f"{page}/api/login", json={"user": "viewer", "password": PASSWORD},
                 timeout=30).raise_for_status()
    line = daemon.buttons["gate"].line

    def press(count: int, every: int = 0, sampled: list[dict[str, Any]] | None = None) -> None:
        for i in range(1, count + 1):
            line.drive(True)
            line.drive(False)
            for alert in store.alerts(open_only=True, remote=False, limit=5):
                daemon.processor.execute({"cmd": "resolve", "alert": alert.id, "outcome": "test"}, "soak")
            if sampled is not None and every and i % every == 0:
                sampled.append({"presses": i, "rss_kb": rss_kb(), "blocks": sys.getallocatedblocks(),
                                "timers": len(daemon.hub.timers._heap)})

    def settled() -> None:
        """Everything delivered to the broker, the garbage collected."""
        deadline = time.monotonic() + 60
        while store.outbox_stats() and time.monotonic() < deadline:
            time.sleep(0.05)
        gc.collect()

    def status(requests_: int = 200) -> dict[str, float]:
        """/api/status: p50 in ms, and SQLite's work for one (VM instructions)."""
        times = []
        for _ in range(requests_):
            t0 = time.perf_counter()
            session.get(f"{page}/api/status", timeout=30).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        with sqlite_steps(store) as steps:
            daemon.hub.status()
        return {"p50_ms": round(statistics.median(times), 2), "sqlite_steps": steps()}

    def measure() -> dict[str, Any]:
        settled()
        at = {"status": status()}  # first: the page's first requests warm up its worker threads
        gc.collect()
        at.update(rss_kb=rss_kb(), blocks=sys.getallocatedblocks(), alerts=len(store.query(
            "SELECT id FROM alerts")), timers=len(daemon.hub.timers._heap))
        return at

    press(warm_up)
    if trace:
        tracemalloc.start(8)
    before = measure()
    first = tracemalloc.take_snapshot() if trace else None
    sampled: list[dict[str, Any]] = []
    t0 = time.monotonic()
    press(n, max(1, n // samples), sampled)
    seconds = time.monotonic() - t0
    after = measure()
    grew = []
    if first is not None:
        for stat in tracemalloc.take_snapshot().compare_to(first, "traceback")[:15]:
            grew.append({"kib": round(stat.size_diff / 1024, 1), "blocks": stat.count_diff,
                         "where": stat.traceback.format()[-8:]})
    return {"presses": n, "warm_up": warm_up, "seconds": round(seconds, 1), "before": before,
            "after": after, "samples": sampled, "grew": grew}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "presses":
        result = presses(int(args[1]), int(args[3]) if len(args) > 3 else 4000,
                         int(args[4]) if len(args) > 4 else 1000)
        Path(args[2]).write_text(json.dumps(result))
        sys.exit(0)
    sys.exit(main(int(args[0]), Path(args[1]), float(args[2]) if len(args) > 2 else 24.0,
                  float(args[3]) if len(args) > 3 else 60.0))
