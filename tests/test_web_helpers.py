"""Fixtures for the web suites: a real hub (SQLite file, core, command path) in-process,
its Flask app, and the same app served by waitress on a free port.

No tests here; the web test modules import these fixtures.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from support import ShiftedClock, hub_config

from hubd.commands import CommandProcessor
from hubd.config import load_config
from hubd.lifecycle import Hub
from hubd.store import Store
from hubd.users import Users
from hubd.web.page.app import create_app
from hubd.web.server import WebServer

MANAGER = ("alice", "correct horse battery")
VIEWER = ("victor", "viewer password 1")

# A real 16x16 JPEG (from CPython's test data), standing in for a camera frame.
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEAAQABAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDRENDg8Q"
    "EBEQCgwSExIQEw8QEBD/2wBDAQMDAwQDBAgEBAgQCwkLEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"
    "EBAQEBAQEBD/wAARCAAQABADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAABwQF/8QAJBAAAQQBBAICAwAAAAAAAAAAAQID"
    "BAYFBwgSExEiABQJMTL/xAAVAQEBAAAAAAAAAAAAAAAAAAAABv/EACMRAAECBQMFAAAAAAAAAAAAAAECEQMEBQYhABIxFRZhgeH/"
    "2gAMAwEAAhEDEQA/ABSm0mobc8HmExLUlRzzEWPkJWW+ulrsaUVAseUgslSlH9LKuPryIKuWPZdskzXmm3fX5m2nF4GlVxx/HOpx"
    "4ks51+MiU/Iaad7UcUo4tILoS4kqcWkezS0hO/HvuRp0rO6hWnWO1UisZVuFi4GFeyEpmGepa5S5SWVPuciFKRFLgSrwetnyPIB+"
    "Vb4N9mKhQMzo5po9XLdDs9d6ZVix2VEhiL9kuNPxw2gEKcDQ/rs8AuA8VAe0vdl7VOYn+27flGAUgmITjbhSmCg3BYlyeWDkMolv"
    "w4KOp1KM6iCNvngZHwetf//Z"
)


@dataclass
class WebHub:
    """One hub in this process: config, store, core, command path, app."""

    tmp: Path
    hub: Hub
    processor: CommandProcessor
    app: Flask
    store: Store
    clock: ShiftedClock

    def raise_alert(self, source: str = "gate", kind: str = "panic", zone: str = "Market gate") -> str:
        return self.hub.raise_alert(source, kind, zone, actor=f"button:{source}").id

    def add_snapshot(self, alert_id: str) -> int:
        snapdir = self.hub.config.state_dir / "snapshots"
        snapdir.mkdir(exist_ok=True)
        name = f"{alert_id.replace(':', '_')}-{secrets.token_hex(3)}.jpg"
        (snapdir / name).write_bytes(JPEG)
        return self.store.add_snapshot(alert_id, f"snapshots/{name}", self.clock.time(), len(JPEG))

    def state(self, alert_id: str) -> str:
        a = self.store.get_alert(alert_id)
        assert a is not None
        return str(a.state)

    def event_count(self) -> int:
        return self.store.query("SELECT count(*) AS n FROM events")[0]["n"]


def make_web_hub(tmp: Path, extra: str = "", **web: Any) -> WebHub:
    cfg = load_config(hub_config(tmp, protocol="cancel_window = 30\nescalation = [600, 1200]", extra=extra))
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, **web))
    store = Store(cfg.store_path)
    clock = ShiftedClock()
    hub = Hub(cfg, store, clock=clock)
    processor = CommandProcessor(hub)
    users = Users(store)
    users.add(*MANAGER, role="manager")
    users.add(*VIEWER, role="viewer")
    app = create_app(hub, processor, secret_key=secrets.token_bytes(32))
    app.config["TESTING"] = True
    hub.start()
    return WebHub(tmp, hub, processor, app, store, clock)


def running_web_hub(tmp_path: Path) -> Iterator[WebHub]:
    """Body of the ``wh`` fixture of the web test modules."""
    w = make_web_hub(tmp_path)
    yield w
    w.hub.stop()
    w.store.close()


def login(client: FlaskClient, who: tuple[str, str] = MANAGER) -> str:
    """Log a test client in through the JSON API; returns its CSRF token."""
    r = client.post("/api/login", json={"user": who[0], "password": who[1]})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["csrf_token"]


def form_token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the form"
    return m.group(1)


@dataclass
class Served:
    web: WebHub
    server: WebServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def session(self, who: tuple[str, str] = MANAGER) -> requests.Session:
        s = requests.Session()
        r = s.post(self.url + "/api/login", json={"user": who[0], "password": who[1]}, timeout=10)
        assert r.status_code == 200, r.text
        s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return s


def serve(w: WebHub) -> Served:
    server = WebServer(w.app, "127.0.0.1", 0, threads=w.hub.config.web.threads)
    server.start()
    return Served(w, server)


def served_web_hub(tmp_path: Path) -> Iterator[Served]:
    """The app served by waitress on a free port, small heartbeat and stream cap."""
    w = make_web_hub(tmp_path, heartbeat=0.3, max_streams=3, threads=8)
    s = serve(w)
    yield s
    s.server.stop()
    w.hub.stop()
    w.store.close()
