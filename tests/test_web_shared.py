"""The shared web plumbing (``hubd.web``) under a second app that is not the hub: its own
roles, accounts and messages, kept in memory.  Logins, CSRF, roles, the throttle, error
pages and live streams work for it as for the hub's page, and the plumbing loads
nothing of the hub."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask, current_app, jsonify
from flask.testing import FlaskClient
from support import REPO

from hubd.web import site
from hubd.web.auth import Account, LoginSettings, current_user
from hubd.web.body import json_body
from hubd.web.live import LiveHub, Message, sse_response
from hubd.web.metrics import Exposition
from hubd.web.openapi import Paths, document, login_operations, ok
from hubd.web.policy import Policy
from hubd.web.server import WebServer

OPERATOR = ("olga", "operator password")
WATCHER = ("walt", "watcher password")


@dataclass
class Entry:
    password: str
    role: str
    epoch: int = 0


class MemoryAccounts:
    """Accounts in a dict; ``end_sessions`` moves an account's epoch (a logout everywhere)."""

    def __init__(self) -> None:
        self._accounts = {OPERATOR[0]: Entry(OPERATOR[1], "operator"),
                          WATCHER[0]: Entry(WATCHER[1], "watcher")}

    def verify(self, name: str, password: str) -> str | None:
        found = self._accounts.get(name)
        return found.role if found and secrets.compare_digest(found.password, password) else None

    def account(self, name: str) -> Account | None:
        found = self._accounts.get(name)
        return Account(role=found.role, epoch=str(found.epoch)) if found else None

    def end_sessions(self, name: str) -> None:
        self._accounts[name].epoch += 1


class MemoryBacklog:
    """Notes in a list; each is published to the live streams as it is added."""

    def __init__(self) -> None:
        self.notes: list[Message] = []
        self._lock = threading.Lock()
        self.live: LiveHub | None = None

    def add(self, text: str) -> Message:
        with self._lock:
            note = {"seq": len(self.notes) + 1, "text": text}
            self.notes.append(note)
        if self.live is not None:
            self.live.publish(note)
        return note

    def latest_seq(self) -> int:
        return len(self.notes)

    def after(self, seq: int, limit: int) -> list[Message]:
        return self.notes[seq:seq + limit]


POLICY = Policy(home="home", roles=("operator", "watcher"), change_roles=frozenset({"operator"}),
                realm="centre", cookie_name="centre_session", app_name="centre", brand="Ward 7 centre")


def make_app() -> Flask:
    app = Flask(__name__)
    accounts = MemoryAccounts()
    backlog = MemoryBacklog()
    site.init_app(app, policy=POLICY, accounts=accounts, secret_key=secrets.token_bytes(32),
                  login=LoginSettings(max_failures=2, lockout=60))
    live = LiveHub(backlog, max_streams=2, heartbeat=0.3, max_age=60)
    backlog.live = live
    app.extensions.update({"test.accounts": accounts, "test.backlog": backlog, "hubd.live": live})

    @app.get("/")
    def home() -> Any:
        user = current_user()
        assert user is not None
        return f"hello {user.name}"

    @app.post("/api/notes")
    def add_note() -> Any:
        body = json_body(allow_empty=False)
        return jsonify(current_app.extensions["test.backlog"].add(str(body.get("text"))))

    @app.get("/api/stream")
    def stream() -> Any:
        return sse_response(live)

    @app.get("/api/openapi.json")
    def openapi() -> Any:
        paths = Paths()
        login_operations(paths)
        paths.add("/api/notes", "post", "Add a note", responses={"200": ok()}, errors=("401", "403"))
        return jsonify(document(policy=POLICY, title="centre", version="0", description="test", paths=paths))

    return app


def api_login(client: FlaskClient, who: tuple[str, str]) -> str:
    r = client.post("/api/login", json={"user": who[0], "password": who[1]})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["role"] in POLICY.roles
    return r.get_json()["csrf_token"]


@pytest.fixture
def app() -> Flask:
    a = make_app()
    a.config["TESTING"] = True
    return a


def test_every_page_needs_a_login_in_the_apps_own_frame(app: Flask) -> None:
    c = app.test_client()
    r = c.get("/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    page = c.get("/login").get_data(as_text=True)
    assert "<title>Log in · centre</title>" in page and "Ward 7 centre" in page
    r = c.post("/api/notes", json={"text": "x"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthenticated"
    r = c.get("/api/stream")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="centre"'
    # A person gets the shared error page, with the way back to the app's home.
    r = c.get("/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and 'href="/"' in r.get_data(as_text=True)
    assert r.headers["X-Frame-Options"] == "DENY" and "Content-Security-Policy" in r.headers


def test_the_login_form_starts_a_session_in_the_apps_cookie(app: Flask) -> None:
    c = app.test_client()
    form = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    r = c.post("/login", data={"username": OPERATOR[0], "password": OPERATOR[1],
                               "csrf_token": token.group(1)})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("centre_session=") and "SameSite=Strict" in cookie
    assert c.get("/").get_data(as_text=True) == "hello olga"


def test_changes_need_the_csrf_token_and_a_role_that_may_change(app: Flask) -> None:
    c = app.test_client()
    token = api_login(c, OPERATOR)
    r = c.post("/api/notes", json={"text": "gate open"})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "csrf"
    r = c.post("/api/notes", json={"text": "gate open"}, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "csrf"
    r = c.post("/api/notes", json={"text": "gate open"}, headers={"X-CSRF-Token": token,
                                                                  "Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.get_json()["error"]["message"]
    r = c.post("/api/notes", json={"text": "gate open"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.get_json() == {"seq": 1, "text": "gate open"}
    w = app.test_client()
    token = api_login(w, WATCHER)
    r = w.post("/api/notes", json={"text": "no"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 403
    assert r.get_json()["error"]["message"] == "user walt is a watcher: only operators can change state"
    # Logging out is open to every role.
    assert w.post("/api/logout", json={}, headers={"X-CSRF-Token": token}).status_code == 200
    assert w.get("/api/me").status_code == 401
    assert app.extensions["test.backlog"].notes == [{"seq": 1, "text": "gate open"}]


def test_moving_an_accounts_epoch_ends_its_sessions(app: Flask) -> None:
    c = app.test_client()
    api_login(c, OPERATOR)
    assert c.get("/api/me").get_json()["user"] == OPERATOR[0]
    app.extensions["test.accounts"].end_sessions(OPERATOR[0])
    assert c.get("/api/me").status_code == 401


def test_failed_logins_are_throttled(app: Flask) -> None:
    c = app.test_client()
    for _ in range(2):
        assert c.post("/api/login", json={"user": OPERATOR[0], "password": "wrong"}).status_code == 401
    r = c.post("/api/login", json={"user": OPERATOR[0], "password": OPERATOR[1]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_guessing_from_many_addresses_slows_an_account_but_never_locks_its_owner_out(app: Flask) -> None:
    c = app.test_client()

    def login(password: str, addr: str) -> Any:
        return c.post("/api/login", json={"user": OPERATOR[0], "password": password},
                      environ_base={"REMOTE_ADDR": addr})

    for n in range(4):  # four times the per-address limit (2), from four addresses
        for _ in range(2):
            assert login("wrong", f"10.0.0.{n}").status_code == 401
    assert login(OPERATOR[1], "10.0.0.0").status_code == 429  # an address that guessed waits
    auth = app.extensions["hubd.auth"]
    now = [time.monotonic()]
    auth.throttle.clock = lambda: now[0]
    assert login(OPERATOR[1], "10.0.0.9").status_code == 200  # the owner, elsewhere, gets in
    r = login("wrong", "10.0.0.10")
    assert r.status_code in (401, 429)
    r = login(OPERATOR[1], "10.0.0.11")  # paced: one try every LoginSettings.pace seconds
    if r.status_code == 429:
        assert int(r.headers["Retry-After"]) <= 3
        now[0] += 2.5
        r = login(OPERATOR[1], "10.0.0.11")
    assert r.status_code == 200


def test_logout_ends_every_session_of_the_account(app: Flask) -> None:
    laptop, phone = app.test_client(), app.test_client()
    token = api_login(laptop, OPERATOR)
    api_login(phone, OPERATOR)
    assert laptop.post("/api/logout", headers={"X-CSRF-Token": token}).status_code == 200
    assert phone.get("/api/me").status_code == 401


def test_the_openapi_document_has_the_apps_roles_and_cookie(app: Flask) -> None:
    c = app.test_client()
    api_login(c, WATCHER)
    doc = c.get("/api/openapi.json").get_json()
    assert set(doc["paths"]) == {"/api/login", "/api/logout", "/api/me", "/api/notes"}
    assert doc["components"]["schemas"]["Me"]["properties"]["role"]["enum"] == ["operator", "watcher"]
    assert doc["components"]["securitySchemes"]["session"]["name"] == "centre_session"
    assert doc["paths"]["/api/notes"]["post"]["security"] == [{"session": [], "csrf": []}]


def test_metrics_exposition() -> None:
    out = Exposition()
    out.family("centre_hubs", "gauge", "Hubs heard", [({"ward": 'w"7'}, 3), ({}, None)])
    out.family("centre_up", "gauge", "Up", [({}, True)])
    assert out.text().splitlines() == ["# HELP centre_hubs Hubs heard", "# TYPE centre_hubs gauge",
                                       'centre_hubs{ward="w\\"7"} 3', "# HELP centre_up Up",
                                       "# TYPE centre_up gauge", "centre_up 1"]


@pytest.fixture
def served() -> Iterator[tuple[Flask, str]]:
    app = make_app()
    server = WebServer(app, "127.0.0.1", 0, threads=6)
    server.start()
    yield app, f"http://127.0.0.1:{server.port}"
    server.stop()


def _events(resp: requests.Response, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``n`` events of an SSE response (comments skipped)."""
    got: list[tuple[str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    for raw in resp.iter_lines(chunk_size=1, decode_unicode=True):
        line = str(raw)
        if line == "":
            if "data" in fields:
                got.append((fields["id"], json.loads(fields["data"])))
                if len(got) == n:
                    return got
            fields = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(":")
            fields[k] = v.lstrip(" ")
    raise AssertionError(f"stream ended after {got}")


def test_live_streams_deliver_and_resume(served: tuple[Flask, str]) -> None:
    app, url = served
    s = requests.Session()
    r = s.post(url + "/api/login", json={"user": WATCHER[0], "password": WATCHER[1]}, timeout=10)
    assert r.status_code == 200
    backlog = app.extensions["test.backlog"]
    backlog.add("before")
    with s.get(url + "/api/stream", stream=True, timeout=(5, 15)) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        threading.Timer(0.3, backlog.add, ("live one",)).start()
        assert _events(resp, 1) == [("2", {"seq": 2, "text": "live one"})]
    backlog.add("missed")
    with s.get(url + "/api/stream", stream=True, timeout=(5, 15), headers={"Last-Event-ID": "1"}) as resp:
        assert [m["text"] for _, m in _events(resp, 2)] == ["live one", "missed"]
    assert s.get(url + "/api/stream?after=x", timeout=10).status_code == 400


def test_the_shared_plumbing_loads_nothing_of_the_hub() -> None:
    code = ("import sys, hubd.web.site, hubd.web.live, hubd.web.openapi, hubd.web.metrics, hubd.web.server, "
            "hubd.web.body, json; print(json.dumps(sorted(m for m in sys.modules if m.startswith('hubd'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                         check=True).stdout
    loaded = set(json.loads(out))
    assert {m for m in loaded if not m.startswith("hubd.web") and m != "hubd"} == set(), loaded
    assert not any(m.startswith("hubd.web.page") for m in loaded), loaded
