"""What the centre makes of one MQTT message: every message gets a verdict, and anything a
sender can put on the wire that is not a good message of an enrolled hub is refused with a
reason, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from centre_support import (
    alert_event,
    attested,
    hub_key,
    public_key,
    routine_event,
    signed,
    signed_status,
    signed_will,
    status,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd import contract
from hubd.centre.messages import (
    EventMessage,
    Received,
    Refused,
    ReplyMessage,
    SnapshotMessage,
    StatusMessage,
    classify,
)
from hubd.centre.precedence import supersedes
from hubd.centre.registry import HubRecord, key_lookup
from hubd.centre.trust import SIGNED, UNSIGNED_V1, WARD_ATTESTED

ROOT = "safercom/v1"
ROOT_V2 = "safercom/v2"
ROOTS = {ROOT_V2: 2, ROOT: 1}
#: hub-1 and hub-2 have not migrated (no key enrolled); s-1, s-2 and s-3 sign.
HUBS = {**{h: HubRecord(id=h, ward="ward-7") for h in ("hub-1", "hub-2")},
        **{h: HubRecord(id=h, ward="ward-7", public_key=public_key(h)) for h in ("s-1", "s-2", "s-3")}}


def verdict(topic: str, payload: Any, **kw: Any) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return classify(Received(topic, raw, **kw), roots=ROOTS, hubs=HUBS, key_of=key_lookup(HUBS),
                    max_snapshot_bytes=100_000)


def t(hub: str, leaf: str, ward: str = "ward-7", root: str = ROOT) -> str:
    return f"{root}/{ward}/{hub}/{leaf}"


def t2(hub: str, leaf: str, ward: str = "ward-7") -> str:
    return t(hub, leaf, ward, ROOT_V2)


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
    (t("hub-1", "events"), b"[1, 2]", "bad_request"),
    (t("hub-1", "events"), {"v": 1, "id": "hub-1:e1"}, "bad_request"),
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "v": 2}, "unsupported_version"),
    # Another hub's event on hub-1's topic, without saying it was relayed.
    (t("hub-1", "events"), alert_event("hub-2", 1), "wrong_origin"),
    # Relayed, but not by the hub whose topic it came on.
    (t("hub-1", "events"), alert_event("hub-2", 1, relayed_by="hub-3"), "wrong_origin"),
    # An id that belongs to another hub (the attack of issue 15).
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "id": "hub-2:1:raised:0"}, "wrong_origin"),
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "id": "not an id"}, "bad_request"),
    (t("hub-1", "events"), {**alert_event("hub-1", 1), "type": "alert.resolved"}, "bad_request"),
    # Relayed from a hub that is not enrolled: listed under that hub, for enrolment.
    (t("hub-2", "events"), alert_event("hub-5", 1, relayed_by="hub-2"), "unknown_hub"),
    (t("hub-1", "status"), status("hub-2"), "wrong_origin"),
    (t("hub-1", "snapshots/hub-2:1"), b"jpeg", "wrong_origin"),
    (t("hub-1", "events"), b"x" * 9000, "too_large"),
    (t("hub-1", "events"), b'{"v": 1, "v": 1}', "bad_json"),
    # Version 2: signatures decide.
    (t2("s-1", "events"), alert_event("s-1", 1), "unsupported_version"),
    (t2("s-1", "events"), {**signed(alert_event("s-1", 1)), "time": 5.0}, "bad_signature"),
    (t2("s-1", "events"), signed(alert_event("s-1", 1), key=hub_key("s-2")), "bad_signature"),
    (t2("s-1", "events"), {k: v for k, v in signed(alert_event("s-1", 1)).items() if k != "sig"}, "unsigned"),
    (t2("hub-1", "events"), signed(alert_event("hub-1", 1)), "unknown_origin"),
    # s-2 relays s-1's event, forging it: only s-1's key can sign it.
    (t2("s-2", "events"), signed(alert_event("s-1", 1), relayed_by="s-2", key=hub_key("s-2")),
     "bad_signature"),
    (t2("s-1", "events"), attested(alert_event("s-1", 1), "s-1") | {"relayed_by": "s-1"}, "wrong_origin"),
    # A hub that signs: nothing unsigned in its name.
    (t("s-1", "events"), alert_event("s-1", 1), "unsigned"),
    (t("s-1", "status"), status("s-1"), "unsigned"),
    (t2("s-1", "status"), {**signed_status("s-1", seq=1), "open_alerts": 3}, "bad_signature"),
])
def test_refused_with_a_reason(topic: str, payload: Any, code: str) -> None:
    v = verdict(topic, payload)
    assert isinstance(v, Refused), v
    assert v.code == code, v.reason
    assert v.reason


def test_version_2_signed_relayed_attested_and_statuses() -> None:
    v = verdict(t2("s-1", "events"), signed(alert_event("s-1", 4)))
    assert isinstance(v, EventMessage)
    assert (v.trust, v.path, v.root, v.version) == (SIGNED, "direct", ROOT_V2, 2)
    v = verdict(t2("s-2", "events"), signed(alert_event("s-1", 4), relayed_by="s-2", path="mqtt"))
    assert isinstance(v, EventMessage) and (v.trust, v.path, v.via) == (SIGNED, "relayed", "s-2")
    v = verdict(t2("s-2", "events"), attested(alert_event("s-1", 4), "s-2"))
    assert isinstance(v, EventMessage) and (v.trust, v.path, v.via) == (WARD_ATTESTED, "mesh", "s-2")
    s = verdict(t2("s-1", "status"), signed_status("s-1", seq=9))
    assert isinstance(s, StatusMessage) and s.seq == 9 and s.trust == SIGNED and s.online
    w = verdict(t2("s-1", "status"), signed_will("s-1"))
    assert isinstance(w, StatusMessage) and not w.online and w.seq is None
    assert w.connected_at == 1_763_711_000.0


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

    def sup(new: dict[str, Any], trust: str, current: dict[str, Any] | None, current_trust: str | None,
            type: str = "alert.raised") -> bool:
        return supersedes(new, trust, type, current, current_trust)

    assert sup(a("acknowledged"), UNSIGNED_V1, a("raised", 2), UNSIGNED_V1)
    assert not sup(a("raised", 2), UNSIGNED_V1, a("acknowledged"), UNSIGNED_V1)
    assert sup(a("raised", 1), SIGNED, a("raised", 0), SIGNED)
    assert not sup(a("cancelled"), UNSIGNED_V1, a("resolved"), UNSIGNED_V1)
    assert not sup(a("raised"), UNSIGNED_V1, a("raised"), UNSIGNED_V1)
    # Believed beats ward-attested, whichever is further on.
    assert not sup(a("raised", 3), WARD_ATTESTED, a("raised"), SIGNED, "alert.escalated")
    assert sup(a("raised"), SIGNED, a("raised", 2), WARD_ATTESTED)
    assert sup(a("raised"), UNSIGNED_V1, None, None)
    # Ward-attested: may raise and escalate, never make the centre less alarmed.
    assert sup(a("raised"), WARD_ATTESTED, None, None)
    assert sup(a("raised", 1), WARD_ATTESTED, a("raised"), WARD_ATTESTED, "alert.escalated")
    assert not sup(a("resolved"), WARD_ATTESTED, None, None, "alert.resolved")
    assert not sup(a("acknowledged"), WARD_ATTESTED, a("raised"), WARD_ATTESTED, "alert.acknowledged")
