"""The centre's API and page on the shared web plumbing: its own accounts and roles (no
default password), CSRF, filters, hubs with health, commands recorded with who asked, the
OpenAPI document, Prometheus metrics and the live stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from centre_support import FakeHubs, alert_event, centre_config, routine_event
from flask import Flask
from flask.testing import FlaskClient
from support import Mosquitto, wait_for

from hubd import contract
from hubd.centre import queries, registry
from hubd.centre.accounts import Accounts
from hubd.centre.api import create_app
from hubd.centre.registry import HubRecord
from hubd.centre.service import Centre
from hubd.web.server import WebServer

SUPERVISOR = ("sam", "supervisor password")
OPERATOR = ("olga", "operator password")
VIEWER = ("vic", "viewer password!")


@pytest.fixture
def hubs(mosquitto: Mosquitto) -> Iterator[FakeHubs]:
    h = FakeHubs(mosquitto.port, answer=True)
    yield h
    h.close()


@pytest.fixture
def centre(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Centre]:
    c = Centre(centre_config(tmp_path / "centre", mosquitto.port, f"sqlite:///{tmp_path / 'centre.db'}"))
    for hub_id, ward in (("hub-1", "ward-7"), ("hub-2", "ward-7"), ("hub-3", "ward-9")):
        registry.enrol(c.store, HubRecord(id=hub_id, ward=ward, name=f"Hub {hub_id}", lat=9.05, lon=7.49),
                       by="test")
    accounts = Accounts(c.store)
    accounts.add(*SUPERVISOR, "supervisor")
    accounts.add(*OPERATOR, "operator")
    accounts.add(*VIEWER, "viewer")
    c.start(web=False, control=False)
    wait_for(lambda: c.ingest.connected, 10, message="centre connected")
    yield c
    c.stop()


@pytest.fixture
def app(centre: Centre) -> Flask:
    a = create_app(centre)
    a.config["TESTING"] = True
    return a


def login(app: Flask, who: tuple[str, str]) -> tuple[FlaskClient, dict[str, str]]:
    c = app.test_client()
    r = c.post("/api/login", json={"user": who[0], "password": who[1]})
    assert r.status_code == 200, r.get_data(as_text=True)
    return c, {"X-CSRF-Token": r.get_json()["csrf_token"]}


def publish_some(hubs: FakeHubs, centre: Centre) -> None:
    hubs.publish("hub-1", "events", alert_event("hub-1", 1, time=1000.0))
    hubs.publish("hub-1", "events", alert_event("hub-1", 1, "acknowledged", time=1010.0))
    hubs.publish("hub-2", "events", alert_event("hub-2", 4, time=2000.0))
    hubs.publish("hub-3", "events", alert_event("hub-3", 2, time=3000.0, ward="ward-9"), ward="ward-9")
    hubs.publish("hub-3", "events", alert_event("hub-3", 2, "resolved", time=3100.0, ward="ward-9"),
                 ward="ward-9")
    hubs.publish("hub-2", "events", routine_event("hub-2", 9, time=2500.0))
    wait_for(lambda: centre.ingest.stats.stored == 6, 10, message="six events stored")


def test_there_is_no_default_account_and_everything_needs_a_login(app: Flask) -> None:
    c = app.test_client()
    assert c.get("/api/alerts").status_code == 401
    assert c.get("/").status_code == 302
    assert c.post("/api/login", json={"user": "admin", "password": "admin"}).status_code == 401
    assert c.get("/api/openapi.json").status_code == 200  # the document is public
    c, csrf = login(app, VIEWER)
    assert c.get("/api/me").get_json()["role"] == "viewer"


def test_alerts_filter_by_ward_hub_state_and_time(app: Flask, hubs: FakeHubs, centre: Centre) -> None:
    publish_some(hubs, centre)
    c, _ = login(app, VIEWER)

    def ids(query: str) -> list[str]:
        r = c.get("/api/alerts" + query)
        assert r.status_code == 200, r.get_data(as_text=True)
        return [a["id"] for a in r.get_json()]

    assert ids("") == ["hub-3:2", "hub-2:4", "hub-1:1"]
    assert ids("?ward=ward-9") == ["hub-3:2"]
    assert ids("?hub=hub-1") == ["hub-1:1"]
    assert ids("?state=open") == ["hub-2:4", "hub-1:1"]
    assert ids("?state=acknowledged,resolved") == ["hub-3:2", "hub-1:1"]
    assert ids("?since=1500&until=2500") == ["hub-2:4"]
    assert ids("?since=1970-01-01T00:30:00%2B00:00&limit=1") == ["hub-3:2"]
    assert c.get("/api/alerts?state=lost").status_code == 400
    assert c.get("/api/alerts?since=yesterday").status_code == 400
    one = c.get("/api/alerts/hub-1:1").get_json()
    assert one["state"] == "acknowledged" and [e["type"] for e in one["events"]] == ["alert.raised",
                                                                                     "alert.acknowledged"]
    assert one["events"][0]["paths"][0]["path"] == "direct"
    assert c.get("/api/alerts/hub-1:99").status_code == 404
    events = c.get("/api/events?hub=hub-2").get_json()
    assert [e["id"] for e in events] == ["hub-2:e9", "hub-2:4:raised:0"]


def test_hubs_with_health_and_enrolment_by_supervisors_only(app: Flask, hubs: FakeHubs,
                                                             centre: Centre) -> None:
    publish_some(hubs, centre)
    hubs.publish("hub-9", "events", alert_event("hub-9", 1))
    c, csrf = login(app, OPERATOR)
    listed = c.get("/api/hubs").get_json()
    assert [h["id"] for h in listed] == ["hub-1", "hub-2", "hub-3"]
    assert listed[0]["health"]["state"] == "online" and listed[0]["lat"] == 9.05
    assert wait_for(lambda: c.get("/api/enrolment").get_json(), 5)[0]["hub"] == "hub-9"
    new = {"id": "hub-9", "ward": "ward-7", "name": "Clinic", "lat": 9.1, "lon": 7.4}
    r = c.post("/api/hubs", json=new, headers=csrf)
    assert r.status_code == 403 and "supervisors" in r.get_json()["error"]["message"]
    s, scsrf = login(app, SUPERVISOR)
    assert s.post("/api/hubs", json=new).status_code == 403  # no CSRF token
    r = s.post("/api/hubs", json=new, headers=scsrf)
    assert r.status_code == 201 and r.get_json()["enrolled_by"] == "supervisor:sam"
    assert s.post("/api/hubs", json=new, headers=scsrf).status_code == 400  # already enrolled
    assert s.post("/api/hubs", json={**new, "id": "bad id!"}, headers=scsrf).status_code == 400
    assert "hub-9" in centre.ingest.hubs  # the running ingest knows at once
    assert c.get("/api/hubs/hub-9").get_json()["name"] == "Clinic"
    assert s.delete("/api/hubs/hub-9", headers=scsrf).status_code == 200
    assert s.delete("/api/hubs/hub-9", headers=scsrf).status_code == 404
    assert "hub-9" not in centre.ingest.hubs


def test_commands_go_to_the_alerts_hub_and_record_who_asked(app: Flask, hubs: FakeHubs,
                                                            centre: Centre) -> None:
    publish_some(hubs, centre)
    v, vcsrf = login(app, VIEWER)
    r = v.post("/api/alerts/hub-2:4/ack", json={}, headers=vcsrf)
    assert r.status_code == 403
    c, csrf = login(app, OPERATOR)
    r = c.post("/api/alerts/hub-2:4/ack", json={"wait": 10}, headers=csrf)
    assert r.status_code == 200, r.get_data(as_text=True)
    done = r.get_json()
    assert done["state"] == "replied" and done["hub"] == "hub-2" and done["by"] == "operator:olga"
    assert hubs.commands[-1][1] == {"id": done["id"], "cmd": "ack", "alert": "hub-2:4"}
    r = c.post("/api/alerts/hub-2:4/resolve", json={"outcome": "lost"}, headers=csrf)
    assert r.status_code == 400
    r = c.post("/api/commands", json={"hub": "hub-1", "cmd": "siren_test"}, headers=csrf)
    assert r.status_code == 202 and r.get_json()["state"] == "sent"
    assert c.post("/api/commands", json={"hub": "hub-7", "cmd": "status"}, headers=csrf).status_code == 404
    assert c.post("/api/commands", json={"hub": "hub-1", "cmd": "press"}, headers=csrf).status_code == 400
    wait_for(lambda: c.get(f"/api/commands/{r.get_json()['id']}").get_json()["state"] == "replied", 10)
    assert len(c.get("/api/commands?hub=hub-1").get_json()) == 1


def test_the_openapi_document_covers_every_api_route(app: Flask) -> None:
    doc = app.test_client().get("/api/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    roles = doc["components"]["schemas"]["Me"]["properties"]["role"]["enum"]
    assert roles == ["operator", "supervisor", "viewer"]
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path} is not documented"


def test_metrics_and_the_page(app: Flask, hubs: FakeHubs, centre: Centre) -> None:
    publish_some(hubs, centre)
    hubs.publish("hub-1", "events", b"garbage")
    wait_for(lambda: sum(centre.ingest.stats.quarantined.values()) == 1, 10)
    c = app.test_client()
    r = c.get("/metrics", headers={"Authorization": "Basic " + _basic(VIEWER)})
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    for line in ('centre_hubs{state="online"} 3', "centre_receipts_pending 0",
                 'centre_quarantine_messages{code="bad_json"} 1', 'centre_alerts{state="raised"} 1',
                 "centre_mqtt_connected 1", 'centre_ingest_lag_seconds{quantile="0.99"}'):
        assert line in text, line
    c, _ = login(app, VIEWER)
    page = c.get("/").get_data(as_text=True)
    assert "hub-2:4" in page and "Hub hub-3" in page and "Test centre" in page


def _basic(who: tuple[str, str]) -> str:
    import base64

    return base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()


def test_the_live_stream_carries_stored_events_and_alarms(centre: Centre, hubs: FakeHubs) -> None:
    server = WebServer(create_app(centre), "127.0.0.1", 0, threads=6)
    server.start()
    try:
        s = requests.Session()
        base = f"http://127.0.0.1:{server.port}"
        r = s.post(f"{base}/api/login", json={"user": VIEWER[0], "password": VIEWER[1]}, timeout=10)
        assert r.status_code == 200
        got: list[dict[str, Any]] = []
        with s.get(f"http://127.0.0.1:{server.port}/api/stream", stream=True, timeout=(5, 15)) as resp:
            threading.Timer(0.3, hubs.publish, ("hub-1", "events", alert_event("hub-1", 5))).start()
            for raw in resp.iter_lines(chunk_size=1, decode_unicode=True):
                if str(raw).startswith("data:"):
                    got.append(json.loads(str(raw)[5:]))
                    if {m["kind"] for m in got} >= {"event", "alert"}:
                        break
        alert = next(m for m in got if m["kind"] == "alert")
        assert alert["new"] is True and alert["alert"]["id"] == "hub-1:5"
    finally:
        server.stop()


def test_a_logout_ends_every_session_of_the_account(app: Flask) -> None:
    phone, _ = login(app, OPERATOR)
    desk, csrf = login(app, OPERATOR)
    assert phone.get("/api/alerts").status_code == 200
    assert desk.post("/api/logout", headers=csrf).status_code in (200, 204)
    assert phone.get("/api/alerts").status_code == 401, "the other session outlived the logout"


def test_the_page_shows_each_hubs_power_and_enclosure(app: Flask, hubs: FakeHubs, centre: Centre) -> None:
    """Issue 20 at the centre: a hub on battery with its box open is shown so, beside its alert."""
    on_battery = contract.status_payload(
        hub="hub-1", ward="ward-7", time=time.time(), name="Hub hub-1", version="0.1.0", uptime=10.0,
        clock_synced=True, components={}, outbox={}, open_alerts=1,
        power={"state": "on_battery", "since": time.time() - 600, "mains": False, "battery": 62.0,
               "voltage": 3.9, "current": -1.2, "time_left": 4800.0, "undervoltage": False, "throttled": [],
               "low_at": 25.0, "critical_at": 8.0},
        tamper={"open": True, "alert": "hub-1:1"})
    hubs.publish("hub-1", "status", on_battery, retain=True)
    hubs.publish("hub-1", "events", alert_event("hub-1", 1, time=time.time()))
    wait_for(lambda: any(h["id"] == "hub-1" and (h.get("status") or {}).get("power")
                         for h in queries.hubs(centre.store)), 10, message="hub-1's status stored")
    wait_for(lambda: centre.ingest.stats.stored >= 1, 10, message="hub-1's alert stored")
    c, _ = login(app, VIEWER)
    page = c.get("/").get_data(as_text=True)
    assert "ON BATTERY · 62 % · 1 h 20 min left" in page
    assert "ENCLOSURE OPEN" in page
    assert page.count("ON BATTERY") == 2, "in the hubs table and beside hub-1's open alert"
