"""What the centre makes of one MQTT message: every message gets a verdict, and anything a
sender can put on the wire that is not a good message of an enrolled hub is refused with a
reason, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from centre_support import alert_event, routine_event, status
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd import contract
from hubd.centre.messages import (
    EventMessage,
    Limits,
    Received,
    Refused,
    ReplyMessage,
    SnapshotMessage,
    StatusMessage,
    classify,
)
from hubd.centre.precedence import supersedes
from hubd.centre.registry import HubRecord
from hubd.centre.trust import UNSIGNED_V1, WARD_ATTESTED

ROOT = "safercom/v1"
HUBS = {h: HubRecord(id=h, ward="ward-7") for h in ("hub-1", "hub-2")}
LIMITS = Limits(max_message_bytes=8192, max_snapshot_bytes=100_000)


def verdict(topic: str, payload: Any, **kw: Any) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return classify(Received(topic, raw, **kw), root=ROOT, hubs=HUBS, limits=LIMITS)


def t(hub: str, leaf: str, ward: str = "ward-7") -> str:
    return f"{ROOT}/{ward}/{hub}/{leaf}"


def test_a_direct_event_of_an_enrolled_hub() -> None:
    v = verdict(t("hub-1", "events"), alert_event("hub-1", 7))
    assert isinstance(v, EventMessage)
    assert (v.id, v.origin, v.carrier, v.path, v.via, v.trust) == ("hub-1:7:raised:0", "hub-1", "hub-1",
                                                                  "direct", "", UNSIGNED_V1)


def test_a_relayed_event_names_its_relay() -> None:
    v = verdict(t("hub-2", "events"), alert_event("hub-1", 7, relayed_by="hub-2"))
    assert isinstance(v, EventMessage)
    assert (v.origin, v.carrier, v.path, v.via) == ("hub-1", "hub-2", "relayed", "hub-2")


def test_status_reply_and_snapshot() -> None:
    assert isinstance(verdict(t("hub-1", "status"), status("hub-1")), StatusMessage)
    s = verdict(t("hub-1", "status"), status("hub-1", online=False))
    assert isinstance(s, StatusMessage) and not s.online
    reply = contract.reply_payload("hub-1", "c1", {"ok": True, "result": {}})
    assert isinstance(verdict(t("hub-1", "reply"), reply), ReplyMessage)
    snap = verdict(t("hub-1", "snapshots/hub-1:7"), b"\xff\xd8jpeg")
    assert isinstance(snap, SnapshotMessage) and snap.alert_id == "hub-1:7"


@pytest.mark.parametrize(("topic", "payload", "code"), [
    ("elsewhere/ward-7/hub-1/events", alert_event("hub-1", 1), "bad_topic"),
    (t("hub-1", "cmd"), {"id": "x", "cmd": "status"}, "bad_topic"),
    (t("hub-9", "events"), alert_event("hub-9", 1), "unknown_hub"),
    (t("hub-1", "events", ward="ward-8"), alert_event("hub-1", 1, ward="ward-8"), "wrong_ward"),
    (t("hub-1", "events"), b"\xff\xfe", "bad_json"),
    (t("hub-1", "events"), b"[1, 2]", "bad_json"),
    (t("hub-1", "events"), {"v": 1, "id": "hub-1:e1"}, "schema"),
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "v": 2}, "schema"),
    # Another hub's event on hub-1's topic, without saying it was relayed.
    (t("hub-1", "events"), alert_event("hub-2", 1), "wrong_origin"),
    # Relayed, but not by the hub whose topic it came on.
    (t("hub-1", "events"), alert_event("hub-2", 1, relayed_by="hub-3"), "wrong_origin"),
    # An id that belongs to another hub (the attack of issue 15).
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "id": "hub-2:1:raised:0"}, "wrong_origin"),
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "id": "not an id"}, "bad_id"),
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "type": "alert.resolved"}, "inconsistent"),
    # Relayed from a hub that is not enrolled: listed under that hub, for enrolment.
    (t("hub-2", "events"), alert_event("hub-5", 1, relayed_by="hub-2"), "unknown_hub"),
    (t("hub-1", "status"), status("hub-2"), "wrong_origin"),
    (t("hub-1", "snapshots/hub-2:1"), b"jpeg", "wrong_origin"),
    (t("hub-1", "events"), b"x" * 9000, "too_large"),
])
def test_refused_with_a_reason(topic: str, payload: Any, code: str) -> None:
    v = verdict(topic, payload)
    assert isinstance(v, Refused), v
    assert v.code == code, v.reason
    assert v.reason


def test_unknown_hubs_are_refused_under_their_own_name() -> None:
    v = verdict(t("hub-2", "events"), alert_event("hub-5", 1, relayed_by="hub-2"))
    assert isinstance(v, Refused) and v.hub == "hub-5"


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from([t("hub-1", "events"), t("hub-1", "status"), t("hub-1", "reply"),
                              t("hub-1", "snapshots/x"), "x", ROOT + "/+/#"]),
       payload=st.one_of(st.binary(max_size=200),
                         st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20),
                                      lambda c: st.lists(c, max_size=4)
                                      | st.dictionaries(st.text(max_size=8), c, max_size=4),
                                      max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_anything_on_the_wire_gets_a_verdict(topic: str, payload: bytes) -> None:
    verdict(topic, payload)


def test_routine_events_have_no_alert() -> None:
    v = verdict(t("hub-1", "events"), routine_event("hub-1", 3))
    assert isinstance(v, EventMessage) and v.alert is None


def test_precedence() -> None:
    def a(state: str, level: int = 0) -> dict[str, Any]:
        return {"state": state, "level": level}

    assert supersedes(a("acknowledged"), UNSIGNED_V1, a("raised", 2), UNSIGNED_V1)
    assert not supersedes(a("raised", 2), UNSIGNED_V1, a("acknowledged"), UNSIGNED_V1)
    assert supersedes(a("raised", 1), UNSIGNED_V1, a("raised", 0), UNSIGNED_V1)
    assert not supersedes(a("cancelled"), UNSIGNED_V1, a("resolved"), UNSIGNED_V1)
    assert not supersedes(a("raised"), UNSIGNED_V1, a("raised"), UNSIGNED_V1)
    # Believed beats ward-attested, whichever is further on.
    assert not supersedes(a("resolved"), WARD_ATTESTED, a("raised"), UNSIGNED_V1)
    assert supersedes(a("raised"), UNSIGNED_V1, a("resolved"), WARD_ATTESTED)
    assert supersedes(a("raised"), UNSIGNED_V1, None, None)
