"""Web benchmarks: ``/api/status`` under 20 concurrent clients, and press -> SSE latency.

Baselines measured in the same run: a bare Flask route returning a constant JSON
served by waitress with the same threads, and a bare Flask SSE route fed from a
queue.  Run: ``python bench/bench_web.py``; the last line is JSON for ``bench/run``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")

import requests  # noqa: E402
from benchlib import pct, report
from flask import Flask, Response  # noqa: E402

from hubd.commands import CommandProcessor  # noqa: E402
from hubd.config import parse_config  # noqa: E402
from hubd.lifecycle import Hub  # noqa: E402
from hubd.store import Store  # noqa: E402
from hubd.users import Users  # noqa: E402
from hubd.web.page.app import create_app  # noqa: E402
from hubd.web.server import WebServer  # noqa: E402

CLIENTS = 20
SECONDS = 4.0
PRESSES = 30
PASSWORD = "bench password 1"


def hammer(url: str, make_session: Callable[[], requests.Session]) -> dict[str, float]:
    """CLIENTS threads GET url for SECONDS; latencies in ms and requests/s."""
    lat: list[float] = []
    lock = threading.Lock()
    errors = 0
    sessions = [make_session() for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS + 1)
    stop_at = [0.0]

    def client(s: requests.Session) -> None:
        nonlocal errors
        mine = []
        start.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            r = s.get(url, timeout=30)
            mine.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                errors += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(s,), name=f"bench-{i}") for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + SECONDS
    start.wait()
    for t in threads:
        t.join()
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "rps": len(lat) / SECONDS, "errors": errors,
            "n": len(lat)}


class SSEReader:
    """A raw-socket SSE client: records when each event's data line arrives."""

    def __init__(self, port: int, path: str, cookie: str = ""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                           + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n").encode())
        self.arrivals: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, name="bench-sse", daemon=True).start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                now = time.perf_counter()
                buf += chunk
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    for line in block.split(b"\n"):
                        if line.startswith(b"data:"):
                            self.arrivals.put((now, line[5:].strip().decode()))
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def make_hub(tmp: Path) -> tuple[Hub, Any]:
    cfg = parse_config({
        "hub": {"ward": "bench", "id": "hub-b", "state_dir": str(tmp / "state")},
        "hardware": {"pin_factory": "mock", "boot_grace": 0},
        "camera": {"backend": "none"},
        "web": {"bind": "127.0.0.1", "port": 0},
        "protocol": {"escalation": [3600]},
        "buttons": [{"name": "gate", "pin": 17, "zone": "Market gate", "kind": "panic"}],
    }, check_files=False)
    store = Store(cfg.store_path)
    hub = Hub(cfg, store)
    Users(store).add("bench", PASSWORD, "manager")
    return hub, cfg


def bare_json_app() -> Flask:
    app = Flask("baseline")

    @app.get("/status")
    def status() -> Any:
        return {"ok": True, "hub": "hub-b", "alerts": {"raised": 0}}

    return app


def bare_sse_app(q: queue.Queue[str]) -> Flask:
    app = Flask("baseline-sse")

    @app.get("/stream")
    def stream() -> Any:
        def gen() -> Any:
            yield ": hello\n\n"
            while True:
                try:
                    yield f"data: {q.get(timeout=15)}\n\n"
                except queue.Empty:
                    yield ": hb\n\n"

        return Response(gen(), mimetype="text/event-stream")

    return app


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    hub, cfg = make_hub(tmp)
    processor = CommandProcessor(hub)
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from hubd.sensors.buttons import PanicButton

    factory = MockFactory()
    Device.pin_factory = factory
    button = PanicButton(cfg.buttons[0], hub, factory)
    hub.start()
    app = create_app(hub, processor, secret_key=secrets.token_bytes(32))
    server = WebServer(app, "127.0.0.1", 0, threads=cfg.web.threads)
    server.start()
    base = WebServer(bare_json_app(), "127.0.0.1", 0, threads=cfg.web.threads)
    base.start()
    url = f"http://127.0.0.1:{server.port}"

    def logged_in() -> requests.Session:
        s = requests.Session()
        r = s.post(url + "/api/login", json={"user": "bench", "password": PASSWORD}, timeout=30)
        r.raise_for_status()
        return s

    for _ in range(5):  # a few alerts so /api/status has something to say
        hub.raise_alert("gate", "test", "Market gate", silent=True)
    hammer(url + "/api/status", logged_in)  # warm-up
    status = hammer(url + "/api/status", logged_in)
    baseline = hammer(f"http://127.0.0.1:{base.port}/status", requests.Session)

    # press -> SSE: drive the mock pin, time until the page's stream delivers the alert.
    cookie = "hubd_session=" + logged_in().cookies["hubd_session"]
    sse = SSEReader(server.port, "/api/stream", cookie)
    time.sleep(0.3)
    press_lat = []
    for _ in range(PRESSES):
        for a in hub.store.alerts(open_only=True, remote=False, limit=1000):
            hub.cancel(a.id, "bench")  # a press while its button's alert is open only re-presses
        while not sse.arrivals.empty():
            sse.arrivals.get()
        t0 = time.perf_counter()
        button.line.drive(True)
        while True:
            t, data = sse.arrivals.get(timeout=10)
            if json.loads(data)["type"] == "alert.raised":
                break
        press_lat.append((t - t0) * 1000)
        button.line.drive(False)
        time.sleep(0.05)
    sse.close()

    q: queue.Queue[str] = queue.Queue()
    bare = WebServer(bare_sse_app(q), "127.0.0.1", 0, threads=4)
    bare.start()
    bsse = SSEReader(bare.port, "/stream")
    time.sleep(0.3)
    bare_lat = []
    for i in range(PRESSES):
        t0 = time.perf_counter()
        q.put(json.dumps({"n": i}))
        t, _ = bsse.arrivals.get(timeout=10)
        bare_lat.append((t - t0) * 1000)
        time.sleep(0.05)
    bsse.close()

    for s in (server, base, bare):
        s.stop()
    hub.stop()
    button.close()

    rows = [
        {"figure": "/api/status p50, 20 clients", "value": round(status["p50"], 2), "unit": "ms",
         "target": "< 50", "baseline": round(baseline["p50"], 2),
         "ratio": round(status["p50"] / baseline["p50"], 2)},
        {"figure": "/api/status p99, 20 clients", "value": round(status["p99"], 2), "unit": "ms",
         "target": "< 250", "baseline": round(baseline["p99"], 2),
         "ratio": round(status["p99"] / baseline["p99"], 2)},
        {"figure": "/api/status throughput, 20 clients", "value": round(status["rps"]), "unit": "req/s",
         "target": "", "baseline": round(baseline["rps"]),
         "ratio": round(status["rps"] / baseline["rps"], 2)},
        {"figure": "press -> SSE event at the client, p50", "value": round(statistics.median(press_lat), 2),
         "unit": "ms", "target": "< 1000", "baseline": round(statistics.median(bare_lat), 2),
         "ratio": round(statistics.median(press_lat) / statistics.median(bare_lat), 2)},
        {"figure": "press -> SSE event at the client, max", "value": round(max(press_lat), 2), "unit": "ms",
         "target": "< 1000", "baseline": round(max(bare_lat), 2),
         "ratio": round(max(press_lat) / max(bare_lat), 2)},
    ]
    if status["errors"] or baseline["errors"]:
        print(f"errors: hubd {status['errors']}, baseline {baseline['errors']}", file=sys.stderr)
    report("web", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
