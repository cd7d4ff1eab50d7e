"""The centre's ingest against a real Mosquitto, on SQLite and on PostgreSQL: every event
stored once whatever the path and order, every one confirmed by a receipt after the commit,
bad messages quarantined with the reason and acknowledged, nothing acknowledged before it
is committed, commands matched to their replies."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from centre_support import (
    FakeHubs,
    alert_event,
    attested,
    centre_config,
    public_key,
    routine_event,
    signed,
    signed_status,
    signed_will,
    status,
    store_url,
)
from support import Mosquitto, wait_for

from hubd import contract
from hubd.centre import queries, registry, tables
from hubd.centre.registry import HubRecord
from hubd.centre.service import Centre

#: Hubs that sign (contract version 2): their keys are enrolled.
SIGNERS = ("s-1", "s-2")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as u:
        yield u


@pytest.fixture
def hubs(mosquitto: Mosquitto) -> Iterator[FakeHubs]:
    h = FakeHubs(mosquitto.port, answer=True)
    yield h
    h.close()


Make = Callable[..., Centre]


@pytest.fixture
def make_centre(tmp_path: Path, mosquitto: Mosquitto, url: str) -> Iterator[Make]:
    """Centres on the test's store and broker (the same client id, so one session)."""
    started: list[Centre] = []
    client_id = f"centre-{tmp_path.name[-12:]}"

    def make(enrol: tuple[str, ...] = ("hub-1", "hub-2"), **options: Any) -> Centre:
        options.setdefault("mqtt", {})["client_id"] = client_id
        c = Centre(centre_config(tmp_path / "centre", mosquitto.port, url, **options))
        for h in (*enrol, *SIGNERS):
            if registry.get(c.store, h) is None:
                key = public_key(h) if h in SIGNERS else None
                record = HubRecord(id=h, ward="ward-7", name=f"Hub {h}", public_key=key)
                registry.enrol(c.store, record, by="test")
        c.start(web=False, control=False)
        wait_for(lambda: c.ingest.connected, 10, message="centre connected")
        started.append(c)
        return c

    yield make
    for c in started:
        try:
            c.stop()
        except Exception:
            pass


def stored_ids(c: Centre) -> list[str]:
    with c.store.read() as conn:
        return list(conn.execute(sa.select(tables.events.c.id).order_by(tables.events.c.id)).scalars())


def test_events_are_stored_once_and_each_is_confirmed(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    raised = alert_event("hub-1", 7)
    hubs.publish("hub-1", "events", raised)
    hubs.publish("hub-1", "events", raised)  # a duplicate: the hub missed a PUBACK
    hubs.publish("hub-2", "events", alert_event("hub-1", 7, relayed_by="hub-2"))  # and relayed
    hubs.publish("hub-1", "events", routine_event("hub-1", 3))
    wait_for(lambda: {"hub-1:7:raised:0", "hub-1:e3"} <= hubs.receipted(), 10, message="receipts")
    assert stored_ids(c) == ["hub-1:7:raised:0", "hub-1:e3"]
    # Every copy heard was confirmed (the hub may still be waiting), and each path recorded.
    wait_for(lambda: queries.counts(c.store)["receipts_pending"] == 0, 10, message="receipts marked sent")
    def paths() -> list[tuple[str, str, int]]:
        ev = queries.events(c.store, alert_id="hub-1:7")
        return [(p["path"], p["via"], p["count"]) for p in ev[0]["paths"]]

    # The duplicate and the relayed copy may be processed after the first copy's receipt left.
    wait_for(lambda: paths() == [("direct", "", 2), ("relayed", "hub-2", 1)], 10,
             message=lambda: f"every copy's path recorded (so far {paths()})")
    assert stored_ids(c) == ["hub-1:7:raised:0", "hub-1:e3"]
    assert queries.events(c.store, alert_id="hub-1:7")[0]["trust"] == "unsigned-v1"
    a = queries.alert(c.store, "hub-1:7")
    assert a is not None and a["state"] == "raised" and a["zone"] == "Market gate"
    for r in hubs.receipts:
        assert r["type"] == "receipt" and r["hub"] == "hub-1" and r["ids"] == sorted(r["ids"])


def test_alert_state_by_precedence_whatever_the_order_and_path(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    # The resolution comes direct; the raise and the acknowledgement arrive later, relayed.
    hubs.publish("hub-1", "events", alert_event("hub-1", 2, "resolved", time=30.0))
    hubs.publish("hub-2", "events", alert_event("hub-1", 2, "acknowledged", time=20.0, relayed_by="hub-2"))
    hubs.publish("hub-2", "events", alert_event("hub-1", 2, "raised", time=10.0, relayed_by="hub-2"))
    hubs.publish("hub-1", "events", alert_event("hub-1", 2, "escalated", level=1, time=15.0))
    wait_for(lambda: len(stored_ids(c)) == 4, 10, message="four events")
    found = queries.alerts(c.store)
    assert len(found) == 1 and found[0]["state"] == "resolved" and found[0]["outcome"] == "genuine"
    timeline = queries.alert(c.store, "hub-1:2")
    assert timeline is not None
    assert [e["type"] for e in timeline["events"]] == ["alert.resolved", "alert.acknowledged", "alert.raised",
                                                       "alert.escalated"]
    # Filters.
    assert queries.alerts(c.store, states=["raised"]) == []
    assert len(queries.alerts(c.store, hub="hub-1", ward="ward-7", states=["resolved"])) == 1


def test_bad_messages_are_quarantined_with_the_reason_and_not_redelivered(make_centre: Make,
                                                                          hubs: FakeHubs) -> None:
    c = make_centre()
    hubs.publish("hub-1", "events", b"{not json")
    hubs.publish("hub-9", "events", alert_event("hub-9", 1))
    hubs.publish("hub-1", "events", b"x" * 10_000)
    hubs.publish("hub-1", "events", {**alert_event("hub-1", 1), "id": "hub-2:1:raised:0"})
    hubs.publish("hub-1", "events", alert_event("hub-1", 5))
    wait_for(lambda: "hub-1:5:raised:0" in hubs.receipted(), 10, message="the good one confirmed")
    wait_for(lambda: len(queries.quarantine(c.store)) == 4, 10, message="four quarantined")
    codes = sorted(q["code"] for q in queries.quarantine(c.store))
    assert codes == ["bad_json", "too_large", "unknown_hub", "wrong_origin"]
    assert registry.candidates(c.store)[0]["hub"] == "hub-9"
    assert sum(c.ingest.stats.quarantined.values()) == 4
    assert stored_ids(c) == ["hub-1:5:raised:0"]
    # Acknowledged after the quarantine commit: a restarted centre does not get them again.
    c.stop()
    c2 = make_centre()
    hubs.publish("hub-1", "events", alert_event("hub-1", 6))
    wait_for(lambda: "hub-1:6:raised:0" in stored_ids(c2), 10, message="the next event")
    assert len(queries.quarantine(c2.store)) == 4


def test_nothing_is_acknowledged_before_it_is_committed(make_centre: Make, hubs: FakeHubs,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    c = make_centre()

    def store_down(*a: Any, **k: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(c.ingest.ledger, "record", store_down)
    for seq in range(1, 6):
        hubs.publish("hub-1", "events", alert_event("hub-1", seq))
    wait_for(lambda: c.ingest.stats.store_failures > 0, 10, message="the store failing")
    wait_for(lambda: sum(c.ingest.stats.received.values()) >= 5, 10, message="all five received")
    assert c.supervisor.paused and hubs.receipted() == set()
    c.stop()  # the centre goes with five messages in hand, none acknowledged
    monkeypatch.undo()
    c2 = make_centre()
    wait_for(lambda: len(stored_ids(c2)) == 5, 15, message="all five stored after the restart")
    wait_for(lambda: len(hubs.receipted()) == 5, 10, message="and confirmed")


def test_status_updates_the_hubs_last_known_state_and_clock_skew(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    hubs.publish("hub-1", "status", status("hub-1", time=time.time() + 7.5), retain=True)
    row = wait_for(lambda: next((h for h in queries.hubs(c.store) if h["id"] == "hub-1" and h["status"]),
                                None), 10, message="status stored")
    assert row["online"] is True and 7.0 < row["clock_skew"] < 8.0 and row["last_heard_at"] is not None
    wait_for(lambda: c.supervisor.health()["hub-1"]["state"] == "online", 5, message="online")


def test_commands_are_matched_to_their_replies(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    hub = registry.get(c.store, "hub-1")
    assert hub is not None
    sent = c.commands.send(hub, "ack", {"alert": "hub-1:7"}, by="operator:olga")
    done = c.commands.wait(sent["id"], 10)
    assert done is not None and done["state"] == "replied" and done["by"] == "operator:olga"
    assert done["reply"]["result"] == {"done": "ack"} and done["replied_at"] >= done["sent_at"]
    topic, payload, props = hubs.commands[0]
    assert topic == "safercom/v1/ward-7/hub-1/cmd"
    assert payload == {"id": sent["id"], "cmd": "ack", "alert": "hub-1:7"}
    assert props.ResponseTopic == "safercom/v1/ward-7/hub-1/reply"


def test_commands_without_a_reply_time_out(make_centre: Make, hubs: FakeHubs) -> None:
    hubs.answer = False
    c = make_centre(commands={"timeout": 1})
    hub = registry.get(c.store, "hub-2")
    assert hub is not None
    sent = c.commands.send(hub, "siren_test", {}, by="cli:root")
    done = c.commands.wait(sent["id"], 5)
    assert done is not None and done["state"] == "timeout"


def test_version_2_signed_events_statuses_and_receipts(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    centre_key = contract.parse_public_key(contract.public_key_text(c.key))
    hubs.publish("s-1", "events", signed(alert_event("s-1", 3)))
    hubs.publish("s-1", "status", signed_status("s-1", seq=41))
    hubs.publish("s-1", "events", {**signed(alert_event("s-1", 4)), "time": 1.0})  # tampered with
    wait_for(lambda: {"s-1:3:raised:0", "s-1:s41"} <= hubs.receipted(), 10, message="receipts")
    receipts = [r for r in hubs.receipts if r["hub"] == "s-1"]
    for r in receipts:
        assert contract.check_receipt(r, hub="s-1", centre_key=centre_key)  # signed by the centre
    wait_for(lambda: queries.quarantine(c.store), 10, message="the forgery quarantined")
    assert queries.quarantine(c.store)[0]["code"] == "bad_signature"
    assert stored_ids(c) == ["s-1:3:raised:0"]
    assert queries.events(c.store)[0]["trust"] == "signed"
    hub = next(h for h in queries.hubs(c.store) if h["id"] == "s-1")
    assert hub["contract"] == 2 and hub["status"]["seq"] == 41


def test_ward_attested_raises_but_never_closes_and_the_signed_copy_replaces_it(make_centre: Make,
                                                                              hubs: FakeHubs) -> None:
    c = make_centre()
    # Heard only over the mesh, vouched for by s-2: an alarm at once, shown as attested.
    hubs.publish("s-2", "events", attested(alert_event("s-1", 8), "s-2"))
    hubs.publish("s-2", "events", attested(alert_event("s-1", 8, "resolved"), "s-2"))
    wait_for(lambda: len(stored_ids(c)) == 2, 10, message="both attested events stored")
    a = queries.alert(c.store, "s-1:8")
    assert a is not None and a["state"] == "raised" and a["trust"] == "ward-attested"
    assert [p["path"] for p in a["events"][0]["paths"]] == ["mesh"]
    # The origin's own signed copies arrive: they replace the attested ones and move the alert.
    hubs.publish("s-1", "events", signed(alert_event("s-1", 8)))
    hubs.publish("s-1", "events", signed(alert_event("s-1", 8, "resolved")))
    wait_for(lambda: (queries.alert(c.store, "s-1:8") or {}).get("state") == "resolved", 10,
             message="resolved by the signed copy")
    a = queries.alert(c.store, "s-1:8")
    assert a is not None and a["trust"] == "signed"
    assert {e["trust"] for e in a["events"]} == {"signed"} and len(a["events"]) == 2
    assert sorted(p["path"] for p in a["events"][0]["paths"]) == ["direct", "mesh"]


def test_a_replayed_last_will_is_refused(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    hubs.publish("s-1", "status", signed_status("s-1", seq=1, connected_at=2000.0))
    hubs.publish("s-1", "status", signed_will("s-1", connected_at=1000.0))  # of an older connection
    wait_for(lambda: queries.quarantine(c.store), 10, message="the replay quarantined")
    assert [q["code"] for q in queries.quarantine(c.store)] == ["replayed"], queries.quarantine(c.store)
    wait_for(lambda: c.supervisor.health()["s-1"]["state"] == "online", 10,
             message=lambda: f"s-1 online ({c.supervisor.health()['s-1']})")
    hubs.publish("s-1", "status", signed_will("s-1", connected_at=2000.0))  # its real Will
    wait_for(lambda: next(h for h in queries.hubs(c.store) if h["id"] == "s-1")["online"] is False, 10)


def test_commands_to_a_signing_hub_are_signed_by_the_centre(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    hub = registry.get(c.store, "s-1")
    assert hub is not None
    sent = c.commands.send(hub, "resolve", {"alert": "s-1:2", "outcome": "test"}, by="operator:olga")
    done = c.commands.wait(sent["id"], 10)
    assert done is not None and done["state"] == "replied"
    topic, payload, _ = hubs.commands[-1]
    assert topic == "safercom/v2/ward-7/s-1/cmd"
    accepted = contract.check_command(payload, hub="s-1", centre_key=c.key.public_key(), now=payload["time"],
                                      clock_synced=True, seen=lambda i: False)
    assert accepted.command["by"] == "operator:olga" and accepted.command["outcome"] == "test"


def test_snapshots_are_kept_on_disk_and_age_out(make_centre: Make, hubs: FakeHubs) -> None:
    c = make_centre()
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"
    hubs.publish("hub-1", "snapshots/hub-1:7", jpeg)
    hubs.publish("hub-1", "snapshots/hub-2:7", jpeg)  # not hub-1's alert: refused
    wait_for(lambda: queries.quarantine(c.store), 10, message="the wrong one quarantined")
    with c.store.read() as conn:
        row = conn.execute(sa.select(tables.snapshots)).one()
    assert row.alert_id == "hub-1:7" and row.size == len(jpeg)
    path = Path(row.path)
    assert path.read_bytes() == jpeg and path.is_relative_to(c.config.snapshot_dir)
    with c.store.write() as conn:
        conn.execute(tables.snapshots.update().values(received_at=1.0))
    c.retention()
    assert not path.exists()
    with c.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.snapshots)).scalar() == 0
