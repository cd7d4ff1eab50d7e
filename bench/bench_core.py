"""Core benchmarks: press -> alert committed, daemon RSS, start -> READY.

Run: python bench/bench_core.py   (prints a table and a final JSON line for bench/run)
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from benchlib import pct, report  # noqa: E402
from support import HubProcess, hub_config  # noqa: E402


def press_to_commit(n: int = 500) -> dict:
    """Mock pin driven -> alert row, event and outbox row committed and fsync'd."""
    from gpiozero.pins.mock import MockFactory

    from hubd.config import parse_config
    from hubd.lifecycle import Hub
    from hubd.sensors.buttons import PanicButton
    from hubd.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"hub": {"ward": "w", "id": "b", "state_dir": tmp},
                            "hardware": {"pin_factory": "mock", "boot_grace": 0},
                            "buttons": [{"name": "gate", "pin": 17, "debounce": 0}],
                            "mqtt": {"host": "127.0.0.1"}}, check_files=False)
        store = Store(cfg.store_path)
        hub = Hub(cfg, store)
        factory = MockFactory()
        button = PanicButton(cfg.buttons[0], hub, factory)
        # Committed means on disk: the alert's fsync, which runs after the links have heard
        # of it (see hubd.store), has returned.
        synced: list[float] = []
        store_sync = store.sync

        def sync() -> None:
            store_sync()
            synced.append(time.perf_counter())

        store.sync = sync
        pin = factory.pin(17)
        lat = []
        for _ in range(n):
            pin.drive_high()
            for a in store.alerts(open_only=True, limit=5):  # close it so the next press raises anew
                hub.resolve(a.id, "test", "bench")
            first = len(synced)
            t0 = time.perf_counter()
            pin.drive_low()
            lat.append((synced[first] - t0) * 1000 if len(synced) > first else float("nan"))
        # baseline: the same transaction's cost floor, one fsync'd INSERT in WAL/FULL
        import sqlite3
        db = sqlite3.connect(os.path.join(tmp, "base.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t(x)")
        base = []
        for i in range(n):
            t0 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (i,))
            db.execute("COMMIT")
            base.append((time.perf_counter() - t0) * 1000)
        button.close()
        store.close()
    lat = [x for x in lat if x == x]
    return {"p50": statistics.median(lat), "p99": pct(lat, 99), "base_p50": statistics.median(base),
            "base_p99": pct(base, 99), "n": len(lat)}


def start_to_ready(runs: int = 5) -> dict:
    """`hubd run` exec -> READY=1 on a NOTIFY_SOCKET; baseline: a bare `python -c pass`."""
    times, bases, rss = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cfg = hub_config(tmp)
            sock_path = tmp / "notify.sock"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(str(sock_path))
            s.settimeout(20)
            hub = HubProcess(cfg, env={"NOTIFY_SOCKET": str(sock_path)})
            t0 = time.perf_counter()
            hub.start(wait=False)
            while True:
                msg = s.recv(4096).decode()
                if "READY=1" in msg:
                    break
            times.append(time.perf_counter() - t0)
            for i in range(5):
                hub.cli("press", "gate" if i % 2 == 0 else "clinic")
            rss.append(_rss_mb(hub.proc.pid))
            hub.stop()
            s.close()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bases.append(time.perf_counter() - t0)
    return {"ready": statistics.median(times), "base": statistics.median(bases), "rss": max(rss)}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    import logging

    logging.getLogger("hubd").setLevel(logging.ERROR)
    c = press_to_commit()
    r = start_to_ready()
    rows = [
        {"figure": "press -> alert committed p50", "value": round(c["p50"], 3), "unit": "ms",
         "target": "", "baseline": round(c["base_p50"], 3), "ratio": round(c["p50"] / c["base_p50"], 2)},
        {"figure": "press -> alert committed p99", "value": round(c["p99"], 3), "unit": "ms",
         "target": "<= 2 ms", "baseline": round(c["base_p99"], 3),
         "ratio": round(c["p99"] / c["base_p99"], 2)},
        {"figure": "start -> READY=1", "value": round(r["ready"], 3), "unit": "s", "target": "<= 1.5 s",
         "baseline": round(r["base"], 3), "ratio": round(r["ready"] / r["base"], 2)},
        {"figure": "daemon RSS (web on, 5 alerts)", "value": round(r["rss"], 1), "unit": "MB",
         "target": "<= 70 MB", "baseline": "", "ratio": ""},
    ]
    report("core", rows)


if __name__ == "__main__":
    main()
