"""The page and the JSON API through Flask's test client, on a real hub and SQLite file:
every route, every permission, every kind of bad input (a clear 4xx, never a 500,
never a state change)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web_helpers import JPEG, MANAGER, VIEWER, WebHub, form_token, login, make_web_hub, running_web_hub

from hubd.config import hide_secrets
from hubd.model import Alert, AlertKind
from hubd.users import Users
from hubd.web.page.app import POLICY


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[WebHub]:
    yield from running_web_hub(tmp_path)


# --- who may do what ---------------------------------------------------------------------


def _rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        args = {a: ("hub-1:1" if a == "alert_id" else 1 if a == "snapshot_id" else "ack")
                for a in rule.arguments}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, rule.build(args, append_unknown=False)[1]


def test_every_route_needs_a_login(wh: WebHub) -> None:
    aid = wh.raise_alert()
    before = wh.event_count()
    c = wh.app.test_client()
    checked = 0
    for endpoint, method, url in _rules(wh.app):
        if endpoint in POLICY.public:
            continue
        r = c.open(url, method=method, json={} if method == "POST" else None)
        checked += 1
        if method == "GET" and not url.startswith("/api/") and url != "/metrics":
            assert r.status_code == 302 and "/login" in r.headers["Location"], (url, r.status_code)
        else:
            assert r.status_code == 401, (method, url, r.status_code)
            assert r.get_json()["error"]["code"] == "unauthenticated"
    assert checked >= 20
    assert wh.state(aid) == "raised" and wh.event_count() == before


def test_public_endpoints_are_only_login_static_and_the_api_document(wh: WebHub) -> None:
    assert {"auth.login", "auth.login_post", "auth.api_login", "static", "api.openapi"} == POLICY.public
    c = wh.app.test_client()
    assert c.get("/login").status_code == 200
    assert c.get("/static/style.css").status_code == 200
    assert c.get("/api/openapi.json").get_json()["openapi"].startswith("3.1")


def test_login_form_sets_a_strict_httponly_cookie_and_redirects_safely(wh: WebHub) -> None:
    c = wh.app.test_client()
    token = form_token(c.get("/login?next=/events").get_data(as_text=True))
    r = c.post("/login", data={"username": MANAGER[0], "password": MANAGER[1], "csrf_token": token,
                               "next": "/events"})
    assert r.status_code == 303 and r.headers["Location"] == "/events"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith("hubd_session=")
    assert c.get("/events").status_code == 200
    # An open redirect to another site is not followed.
    c2 = wh.app.test_client()
    token = form_token(c2.get("/login").get_data(as_text=True))
    r = c2.post("/login", data={"username": MANAGER[0], "password": MANAGER[1], "csrf_token": token,
                                "next": "//evil.example/x"})
    assert r.headers["Location"] == "/"


def test_login_form_refuses_wrong_password_and_missing_token(wh: WebHub) -> None:
    c = wh.app.test_client()
    token = form_token(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"username": MANAGER[0], "password": "wrong password", "csrf_token": token})
    assert r.status_code == 401 and "wrong user name or password" in r.get_data(as_text=True)
    r = c.post("/login", data={"username": MANAGER[0], "password": MANAGER[1]})
    assert r.status_code == 403 and "CSRF" in r.get_data(as_text=True)
    assert c.get("/api/me").status_code == 401


def test_api_login_bad_input(wh: WebHub) -> None:
    c = wh.app.test_client()
    assert c.post("/api/login", json={"user": "alice"}).status_code == 400
    assert c.post("/api/login", json=["alice"]).status_code == 400
    r = c.post("/api/login", data="user=alice", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415
    r = c.post("/api/login", data="{nope", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.get_json()["error"]["message"]
    r = c.post("/api/login", json={"user": "nobody", "password": "whatever123"})
    assert r.status_code == 401
    r = c.post("/api/login", json={"user": "alice", "password": MANAGER[1]},
               headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_login_throttling_after_repeated_failures(tmp_path: Path) -> None:
    w = make_web_hub(tmp_path, login_max_failures=3, login_lockout=60)
    c = w.app.test_client()
    for _ in range(3):
        assert c.post("/api/login", json={"user": "alice", "password": "guess guess"}).status_code == 401
    r = c.post("/api/login", json={"user": "alice", "password": MANAGER[1]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "too many failed logins" in r.get_json()["error"]["message"]
    # Another address is not blocked by this one's failures.
    r = c.post("/api/login", json={"user": "alice", "password": MANAGER[1]},
               environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert r.status_code == 200
    # The clock moves on: the window passes and the right password works again.
    auth = w.app.extensions["hubd.auth"]
    auth.throttle.clock = lambda: time.monotonic() + 61
    assert c.post("/api/login", json={"user": "alice", "password": MANAGER[1]}).status_code == 200
    w.hub.stop()


def test_csrf_is_required_for_every_change(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    token = login(c)
    before = wh.event_count()
    assert c.post(f"/api/alerts/{aid}/ack", json={}).status_code == 403
    r = c.post(f"/api/alerts/{aid}/ack", json={}, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "csrf"
    r = c.post(f"/api/alerts/{aid}/ack", json={}, headers={"X-CSRF-Token": token,
                                                            "Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.get_json()["error"]["message"]
    r = c.post(f"/alerts/{aid}/ack", data={"next": "/"})
    assert r.status_code == 403
    r = c.post("/api/siren/test", json={})
    assert r.status_code == 403
    assert wh.state(aid) == "raised" and wh.event_count() == before


def test_viewers_see_but_cannot_change(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    token = login(c, VIEWER)
    page = c.get("/").get_data(as_text=True)
    assert "Market gate" in page and "Acknowledge" not in page and "Test chirp" not in page
    assert c.get("/api/status").status_code == 200
    before = wh.event_count()
    for url, body in ((f"/api/alerts/{aid}/ack", {}), (f"/api/alerts/{aid}/resolve", {"outcome": "genuine"}),
                      ("/api/siren/test", {}), ("/api/siren/silence", {}), ("/api/commands", {"cmd": "ack",
                                                                                             "alert": aid})):
        r = c.post(url, json=body, headers={"X-CSRF-Token": token})
        assert r.status_code == 403, url
        assert "only managers" in r.get_json()["error"]["message"]
    r = c.post(f"/alerts/{aid}/ack", data={"csrf_token": token})
    assert r.status_code == 403
    # Commands that change nothing are open to viewers.
    r = c.post("/api/commands", json={"cmd": "alerts"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.get_json()[0]["id"] == aid
    assert wh.state(aid) == "raised" and wh.event_count() == before


def test_removed_user_or_changed_password_ends_the_session(wh: WebHub) -> None:
    c = wh.app.test_client()
    login(c)
    assert c.get("/api/me").get_json()["user"] == "alice"
    Users(wh.store).passwd("alice", "a brand new password")
    assert c.get("/api/me").status_code == 401
    c2 = wh.app.test_client()
    login(c2, VIEWER)
    Users(wh.store).remove(VIEWER[0])
    assert c2.get("/api/status").status_code == 401


def test_logout(wh: WebHub) -> None:
    c = wh.app.test_client()
    token = login(c)
    assert c.post("/api/logout", json={}, headers={"X-CSRF-Token": token}).status_code == 200
    assert c.get("/api/me").status_code == 401
    token = login(c)
    r = c.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and c.get("/api/me").status_code == 401


def test_basic_auth_reads_but_never_changes(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    auth = (MANAGER[0], MANAGER[1])
    assert c.get("/metrics", auth=auth).status_code == 200
    assert c.get("/api/status", auth=auth).status_code == 200
    assert c.get("/metrics", auth=(MANAGER[0], "wrong password")).status_code == 401
    r = c.post(f"/api/alerts/{aid}/ack", json={}, auth=auth)
    assert r.status_code == 401 and wh.state(aid) == "raised"


# --- acting on alerts ---------------------------------------------------------------------


def _actors(wh: WebHub, aid: str) -> list[tuple[str, str]]:
    return [(e["type"], e["actor"]) for e in wh.store.events(alert_id=aid)]


def test_acknowledge_and_resolve_through_the_api(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    h = {"X-CSRF-Token": login(c)}
    r = c.post(f"/api/alerts/{aid}/ack", headers=h)  # an empty body is fine
    assert r.status_code == 200 and r.get_json()["state"] == "acknowledged"
    r = c.post(f"/api/alerts/{aid}/resolve", json={"outcome": "genuine"}, headers=h)
    assert r.status_code == 200 and r.get_json()["outcome"] == "genuine"
    assert _actors(wh, aid)[1:] == [("alert.acknowledged", "web:alice"), ("alert.resolved", "web:alice")]
    detail = c.get(f"/api/alerts/{aid}").get_json()
    assert [e["type"] for e in detail["events"]] == ["alert.raised", "alert.acknowledged", "alert.resolved"]


def test_cancel_inside_and_outside_the_window(wh: WebHub) -> None:
    a1, a2 = wh.raise_alert(), wh.raise_alert("clinic", "medical", "Clinic")
    c = wh.app.test_client()
    h = {"X-CSRF-Token": login(c)}
    assert c.post(f"/api/alerts/{a1}/cancel", headers=h).get_json()["state"] == "cancelled"
    wh.clock.shift += 120
    r = c.post(f"/api/alerts/{a2}/cancel", headers=h)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "cancel_window_passed"
    assert wh.state(a2) == "raised"


@pytest.mark.parametrize("body,status,code,words", [
    ({}, 400, "bad_request", "outcome"),
    ({"outcome": "maybe"}, 400, "bad_request", "maybe"),
    ({"outcome": "genuine", "colour": "red"}, 400, "bad_request", "colour"),
    ({"outcome": "genuine", "alert": "hub-1:99"}, 400, "bad_request", "alert"),
    ({"outcome": 3}, 400, "bad_request", "3"),
])
def test_bad_resolve_bodies_are_refused(wh: WebHub, body: dict, status: int, code: str, words: str) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    before = wh.event_count()
    r = c.post(f"/api/alerts/{aid}/resolve", json=body, headers={"X-CSRF-Token": login(c)})
    assert r.status_code == status and r.get_json()["error"]["code"] == code
    assert words in r.get_json()["error"]["message"]
    assert wh.state(aid) == "raised" and wh.event_count() == before


def test_malformed_requests_are_clear_4xx(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    h = {"X-CSRF-Token": login(c)}
    before = wh.event_count()
    cases = [
        (c.post(f"/api/alerts/{aid}/ack", data="{", content_type="application/json", headers=h), 400),
        (c.post(f"/api/alerts/{aid}/ack", data="[1, 2]", content_type="application/json", headers=h), 400),
        (c.post(f"/api/alerts/{aid}/ack", data="x=1", content_type="text/plain", headers=h), 415),
        (c.post(f"/api/alerts/{aid}/ack", data="\xff\xfe", content_type="application/json", headers=h), 400),
        (c.post(f"/api/alerts/{aid}/ack", data="[" * 99999, content_type="application/json", headers=h), 413),
        (c.post(f"/api/alerts/{aid}/ack", data="[" * 5000, content_type="application/json", headers=h), 400),
        (c.post(f"/api/alerts/{aid}/explode", json={}, headers=h), 404),
        (c.post("/api/alerts/hub-1:999/ack", json={}, headers=h), 404),
        (c.post(f"/api/alerts/{'x' * 100}/ack", json={}, headers=h), 400),
        (c.post("/api/commands", json={"cmd": "reboot"}, headers=h), 400),
        (c.post("/api/commands", json={}, headers=h), 400),
        (c.post("/api/commands", headers=h), 400),
        (c.post("/api/siren/explode", json={}, headers=h), 404),
        (c.post("/api/siren/test", json={"cmd": "ack"}, headers=h), 400),
        (c.delete("/api/status", headers=h), 405),
        (c.get("/api/nothing-here"), 404),
        (c.get("/api/alerts?limit=lots"), 400),
        (c.get("/api/alerts?limit=0"), 400),
        (c.get("/api/alerts?kind=alien"), 400),
        (c.get("/api/alerts?open=perhaps"), 400),
        (c.get("/api/events?since=yesterday"), 400),
        (c.get("/api/events?since=1e300"), 400),
        (c.get("/api/events?since=200&until=100"), 400),
        (c.get("/api/alerts/hub-1:999"), 404),
        (c.get("/api/stream?after=abc"), 400),
    ]
    for i, (r, status) in enumerate(cases):
        assert r.status_code == status, (i, r.status_code, r.get_data(as_text=True)[:300])
        body = r.get_json()
        assert body["ok"] is False and body["error"]["message"], i
    assert wh.state(aid) == "raised" and wh.event_count() == before


def test_illegal_transitions_and_remote_alerts_are_409(wh: WebHub) -> None:
    aid = wh.raise_alert()
    remote = Alert(id="hub-2:4", hub="hub-2", seq=4, kind=AlertKind.FIRE, source="kitchen", zone="Hall",
                   raised_at=time.time(), updated_at=time.time())
    wh.hub.ingest_remote({"v": 1, "id": "hub-2:e9", "type": "alert.raised", "time": time.time(),
                          "ward": "ward-7", "hub": "hub-2", "actor": "button:kitchen", "data": {},
                          "alert": remote.to_dict()}, via="mqtt", trust="signed")
    c = wh.app.test_client()
    h = {"X-CSRF-Token": login(c)}
    assert c.post(f"/api/alerts/{aid}/resolve", json={"outcome": "test"}, headers=h).status_code == 200
    for action in ("ack", "cancel"):
        r = c.post(f"/api/alerts/{aid}/{action}", json={}, headers=h)
        assert r.status_code == 409 and r.get_json()["error"]["code"] == "illegal_transition"
    r = c.post("/api/alerts/hub-2:4/ack", json={}, headers=h)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "remote_alert"
    assert wh.store.get_alert("hub-2:4").state == "raised"
    page = c.get("/").get_data(as_text=True)
    assert "Neighbours' alerts" in page and "hub-2:4" in page and "heard via mqtt" in page


def test_a_neighbours_alert_known_only_from_the_mesh_is_shown_as_ward_attested(wh: WebHub) -> None:
    now = time.time()

    def heard(seq: int, event: str, state: str) -> dict:
        alert = {"id": f"hub-3:{seq}", "hub": "hub-3", "seq": seq, "kind": "panic", "source": "mesh",
                 "zone": "Mill", "state": state, "outcome": "genuine" if state == "resolved" else None,
                 "level": 0, "silent": False, "raised_at": now, "updated_at": now, "severity": 1}
        return {"v": 2, "id": f"hub-3:{seq}:{event}:0", "type": f"alert.{event}", "time": now,
                "ward": "ward-7", "hub": "hub-3", "actor": "mesh", "data": {}, "alert": alert,
                "attested": {"by": "hub-1", "sig": "x" * 86}}

    wh.hub.ingest_remote(heard(1, "raised", "raised"), via="mesh", trust="ward-attested")
    wh.hub.ingest_remote(heard(2, "raised", "raised"), via="mqtt", trust="signed")
    wh.hub.ingest_remote(heard(2, "resolved", "resolved"), via="mesh", trust="ward-attested")
    c = wh.app.test_client()
    login(c)
    page = c.get("/").get_data(as_text=True)
    def card(alert_id: str) -> str:
        start = page.index(f'data-alert="{alert_id}"')
        return page[start:page.index("</article>", start)]

    one, two = card("hub-3:1"), card("hub-3:2")
    assert ">ward-attested<" in one and ">ward-attested<" not in two
    assert "Ward-attested (not signed by hub hub-3): resolved (genuine), from hub-1." in two
    assert 'data-state="raised"' in two  # what hub-3 signed stands


def test_forms_work_without_javascript(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    login(c)
    token = form_token(c.get("/").get_data(as_text=True))
    r = c.post(f"/alerts/{aid}/ack", data={"csrf_token": token, "next": f"/alerts/{aid}"})
    assert r.status_code == 303 and r.headers["Location"] == f"/alerts/{aid}"
    assert wh.state(aid) == "acknowledged"
    assert f"{aid} acknowledged" in c.get(f"/alerts/{aid}").get_data(as_text=True)  # flashed
    r = c.post(f"/alerts/{aid}/resolve", data={"csrf_token": token, "outcome": ""},
               headers={"Accept": "text/html"})
    assert r.status_code == 400 and "outcome" in r.get_data(as_text=True) and r.mimetype == "text/html"
    r = c.post(f"/alerts/{aid}/ack", data={"csrf_token": token}, headers={"Accept": "text/html"})
    assert r.status_code == 409 and "cannot become acknowledged" in r.get_data(as_text=True)
    r = c.post(f"/alerts/{aid}/resolve", data={"csrf_token": token, "outcome": "false_alarm",
                                               "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    assert wh.store.get_alert(aid).outcome == "false_alarm"
    r = c.post("/siren/test", data={"csrf_token": token})
    assert r.status_code == 303
    assert c.post("/siren/boom", data={"csrf_token": token}).status_code == 404
    assert ("siren.test", "web:alice") in [(e["type"], e["actor"]) for e in wh.store.events()]


def test_siren_test_and_silence_through_the_api(wh: WebHub) -> None:
    aid = wh.raise_alert()
    c = wh.app.test_client()
    h = {"X-CSRF-Token": login(c)}
    assert c.post("/api/siren/test", headers=h).get_json() == {"tested": True}
    assert c.post("/api/siren/silence", json={"alert": aid}, headers=h).status_code == 200
    assert c.post(f"/api/alerts/{aid}/silence", headers=h).status_code == 200
    r = c.post("/api/siren/silence", json={"alert": "hub-1:404"}, headers=h)
    assert r.status_code == 404
    types = [(e["type"], e["actor"]) for e in wh.store.events(type_prefix="siren.")]
    assert types == [("siren.test", "web:alice"), ("siren.silenced", "web:alice"),
                     ("siren.silenced", "web:alice")]
    assert wh.state(aid) == "raised"


# --- reading --------------------------------------------------------------------------------


def test_dashboard_shows_what_a_manager_needs(wh: WebHub) -> None:
    aid = wh.raise_alert()
    sid = wh.add_snapshot(aid)
    wh.hub.set_health("button:gate", "ok")
    wh.hub.set_health("camera", "fault", "no frames for 30 s")
    wh.hub.add_status_provider("mqtt", lambda: {"connected": False, "broker": "10.0.0.2:1883"})
    wh.hub.add_status_provider("mesh", lambda: {"connected": True, "neighbours": {
        "hub-2": {"last_heard": 12.5}, "hub-3": {"last_heard": 640.0}}})
    c = wh.app.test_client()
    login(c)
    page = c.get("/").get_data(as_text=True)
    for text in ("PANIC", "Market gate", "raised", "Acknowledge", "Resolve", "Cancel (mistake)",
                 f"/api/alerts/{aid}/snapshots/{sid}", "no frames for 30 s", "DISCONNECTED", "hub-3",
                 "Silence all sirens", "Test chirp"):
        assert text in page, text
    assert re.search(r'data-seq="\d+"', page)
    # Every asset is local: no other host is named in a src or href.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    r = c.get("/")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"


def test_alert_page_has_timeline_with_actors_and_snapshots(wh: WebHub) -> None:
    aid = wh.raise_alert()
    sid = wh.add_snapshot(aid)
    wh.processor.execute({"cmd": "ack", "alert": aid}, actor="web:alice")
    c = wh.app.test_client()
    login(c)
    page = c.get(f"/alerts/{aid}").get_data(as_text=True)
    assert "alert.raised" in page and "button:gate" in page
    assert "alert.acknowledged" in page and "web:alice" in page
    assert f'src="/api/alerts/{aid}/snapshots/{sid}"' in page
    assert c.get("/alerts/hub-1:77").status_code == 404


def test_snapshots_are_served_only_from_the_state_dir_and_only_logged_in(wh: WebHub) -> None:
    aid = wh.raise_alert()
    sid = wh.add_snapshot(aid)
    evil = wh.store.add_snapshot(aid, "../../../../etc/passwd", time.time(), 10)
    c = wh.app.test_client()
    assert c.get(f"/api/alerts/{aid}/snapshots/{sid}").status_code == 401
    login(c)
    r = c.get(f"/api/alerts/{aid}/snapshots/{sid}")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.data == JPEG
    assert c.get(f"/api/alerts/{aid}/snapshots/{evil}").status_code == 404
    assert c.get(f"/api/alerts/{aid}/snapshots/9999").status_code == 404
    assert c.get(f"/api/alerts/hub-1:55/snapshots/{sid}").status_code == 404


def test_event_log_filters_and_csv(wh: WebHub) -> None:
    a1 = wh.raise_alert()
    a2 = wh.raise_alert("clinic", "medical", "Clinic")
    wh.processor.execute({"cmd": "ack", "alert": a2}, actor="web:alice")
    wh.hub.record("note", actor="=HYPERLINK(\"http://x\")")
    c = wh.app.test_client()
    login(c)
    ids = {e["alert_id"] for e in c.get("/api/events?kind=medical").get_json()}
    assert ids == {a2}
    rows = c.get("/api/events?state=acknowledged").get_json()
    assert [(e["type"], e["alert_id"], e["actor"]) for e in rows] == [("alert.acknowledged", a2, "web:alice")]
    assert {e["alert_id"] for e in c.get("/api/events?source=gate").get_json()} == {a1}
    assert all(e["type"].startswith("alert.") for e in c.get("/api/events?type=alert.").get_json())
    assert c.get(f"/api/events?since={time.time() + 60}").get_json() == []
    assert len(c.get("/api/events?limit=2").get_json()) == 2
    html = c.get("/events?kind=medical&since=2000-01-01T00:00").get_data(as_text=True)
    assert a2 in html and a1 not in html
    r = c.get("/events?since=soon")
    assert r.status_code == 400 and "parameter &#39;since&#39;" in r.get_data(as_text=True)
    r = c.get("/api/events.csv?kind=medical")
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    lines = r.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("seq,time_iso,time,type,alert_id,kind,state")
    assert len(lines) == 3 and all(a2 in line for line in lines[1:])
    everything = c.get("/api/events.csv").get_data(as_text=True)
    assert "'=HYPERLINK" in everything  # a formula is defused for spreadsheets


def test_config_view_hides_secrets_and_never_reads_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret-broker-password")
    secret.chmod(0o600)
    w = make_web_hub(tmp_path, extra=f'[mqtt]\nhost = "10.0.0.2"\ninsecure = true\nusername = "hub1"\n'
                                     f'password_file = "{secret}"\n')
    c = w.app.test_client()
    login(c)
    cfg = c.get("/api/config").get_json()
    assert cfg["mqtt"]["password_file"] == str(secret) and cfg["mqtt"]["username"] == "hub1"
    page = c.get("/config").get_data(as_text=True)
    assert str(secret) in page
    for body in (page, str(cfg)):
        assert "s3cret-broker-password" not in body
    assert hide_secrets({"a": {"password": "x", "token": "y", "key_file": "/k", "name": "n"}}) == \
        {"a": {"password": "(hidden)", "token": "(hidden)", "key_file": "/k", "name": "n"}}
    w.hub.stop()


_SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$')


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_metrics_in_prometheus_text_format(wh: WebHub) -> None:
    aid = wh.raise_alert()
    wh.raise_alert("clinic", "medical", "Clinic")
    wh.processor.execute({"cmd": "ack", "alert": aid}, actor="web:alice")
    wh.hub.set_health("siren:main", "fault", "no feedback")
    wh.hub.add_status_provider("mqtt", lambda: {"connected": True})
    wh.hub.add_status_provider("mesh", lambda: {"connected": False, "neighbours": {"hub-2": {}, "hub-3": {}}})
    c = wh.app.test_client()
    login(c)
    r = c.get("/metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = _metrics(r.get_data(as_text=True))
    assert m['hubd_alerts{state="raised"}'] == 1 and m['hubd_alerts{state="acknowledged"}'] == 1
    assert m['hubd_alerts{state="resolved"}'] == 0
    assert m['hubd_link_up{link="mqtt"}'] == 1 and m['hubd_link_up{link="mesh"}'] == 0
    assert m['hubd_neighbours_heard{link="mesh"}'] == 2
    assert m['hubd_component_ok{component="siren:main"}'] == 0
    assert abs(m['hubd_button_last_activity_timestamp_seconds{button="clinic"}'] - time.time()) < 60
    assert m["hubd_web_live_streams"] == 0
    assert m["hubd_unsaved_events"] == 0


def test_alerts_the_store_could_not_save_are_shown(wh: WebHub, monkeypatch: pytest.MonkeyPatch) -> None:
    real = wh.hub.status

    def disk_full() -> dict:
        s = real()
        s["components"]["store"] = {"status": "fault", "reason": "disk full", "since": time.time()}
        s["unsaved"] = [{"type": "alert.raised", "alert": {"kind": "panic", "zone": "Market gate",
                                                           "source": "gate", "raised_at": time.time()}}]
        return s

    monkeypatch.setattr(wh.hub, "status", disk_full)
    c = wh.app.test_client()
    login(c)
    page = c.get("/").get_data(as_text=True)
    assert "NOT SAVED YET: alert.raised · PANIC · Market gate" in page and "disk full" in page
    assert _metrics(c.get("/metrics").get_data(as_text=True))["hubd_unsaved_events"] == 1


def test_outbox_depth_and_age_per_link(tmp_path: Path) -> None:
    w = make_web_hub(tmp_path, extra='[mqtt]\nhost = "127.0.0.1"\nport = 1\n')
    w.raise_alert()
    c = w.app.test_client()
    login(c)
    m = _metrics(c.get("/metrics").get_data(as_text=True))
    assert m['hubd_outbox_depth{link="mqtt"}'] >= 1
    assert m['hubd_outbox_oldest_age_seconds{link="mqtt"}'] >= 0
    page = c.get("/").get_data(as_text=True)
    assert re.search(r"outbox [1-9]", page)
    w.hub.stop()


def test_openapi_request_bodies_come_from_the_command_schemas(wh: WebHub) -> None:
    doc = wh.app.test_client().get("/api/openapi.json").get_json()
    resolve = doc["paths"]["/api/alerts/{alert_id}/resolve"]["post"]["requestBody"]
    schema = resolve["content"]["application/json"]["schema"]
    assert schema["properties"]["outcome"] == wh.processor.commands["resolve"].properties["outcome"]
    assert schema["required"] == ["outcome"] and "alert" not in schema["properties"]
    one_of = doc["paths"]["/api/commands"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {s["properties"]["cmd"]["const"] for s in one_of["oneOf"]} == set(wh.processor.commands)
    # Every API route of the app is documented.
    documented = set(doc["paths"])
    for rule in wh.app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and "<action>" not in rule.rule and rule.rule != "/api/openapi.json":
            path = re.sub(r"<(?:int:)?([a-z_]+)>", r"{\1}", rule.rule)
            assert path in documented, path


def test_web_config_fields_are_validated(tmp_path: Path) -> None:
    from hubd.config import ConfigError, WebConfig

    w = make_web_hub(tmp_path)
    assert dataclasses.asdict(w.hub.config.web)["heartbeat"] == WebConfig().heartbeat
    from support import hub_config

    from hubd.config import load_config
    path = hub_config(tmp_path / "bad")
    path.write_text(path.read_text().replace('bind = "127.0.0.1"', 'bind = "127.0.0.1"\nheartbeat = 0'))
    with pytest.raises(ConfigError, match="heartbeat"):
        load_config(path)
    w.hub.stop()
