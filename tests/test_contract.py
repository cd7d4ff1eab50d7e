"""The wire contract (hubd.contract): topics of any ward and hub, id formats, the canonical
byte form, every builder against its schema, one alert schema, and the package's layering."""

from __future__ import annotations

import ast
import json
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd import contract
from hubd.contract import (
    AlertId,
    RoutineEventId,
    TopicRef,
    Topics,
    TransitionEventId,
    canonical,
    origin_of,
    parse_alert_id,
    parse_event_id,
    parse_topic,
    problems,
    topic_filter,
)
from hubd.model import Alert, AlertKind, AlertState, Event, Outcome

hubs = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)
wards = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
roots = st.lists(st.from_regex(r"[A-Za-z0-9_.$-]{1,12}", fullmatch=True), min_size=1, max_size=3)\
    .map("/".join)
seqs = st.integers(1, 2**40)
levels = st.integers(0, 2**16)
transitions = st.sampled_from(sorted(contract.TRANSITION_EVENT_TYPES))

# --- topics ---------------------------------------------------------------------------------


def _leaves(t: Topics, alert: str) -> dict[str, str]:
    return {"status": t.status, "events": t.events, "cmd": t.cmd, "reply": t.reply, "cap": t.cap,
            "ha/state": t.ha_state, "cmd/siren": t.ha_siren_set, f"snapshots/{alert}": t.snapshot(alert)}


@given(roots, wards, hubs, hubs, seqs)
def test_every_topic_of_any_hub_parses_back(root: str, ward: str, hub: str, other: str, seq: int) -> None:
    t = Topics(root, ward, hub)
    assert t.base == f"{root}/{ward}/{hub}"
    for leaf, topic in _leaves(t, contract.alert_id(other, seq)).items():
        assert parse_topic(root, topic) == TopicRef(ward, hub, leaf)


@given(roots, wards, wards, hubs, hubs)
def test_of_addresses_a_hub_of_this_ward_or_another(root: str, ward: str, ward2: str, hub: str,
                                                    other: str) -> None:
    t = Topics(root, ward, hub)
    assert t.of(other) == Topics(root, ward, other)
    assert parse_topic(root, t.of(other).events) == TopicRef(ward, other, "events")
    assert parse_topic(root, t.of(other, ward2).status) == TopicRef(ward2, other, "status")


@pytest.mark.parametrize("topic", [
    "other/v1/ward-7/hub-1/events",      # a foreign root
    "safercom/v10/ward-7/hub-1/events",  # the root as a mere prefix
    "safercom/ward-7/hub-1/events",
    "safercom/v1",
    "safercom/v1/",
    "safercom/v1/ward-7",
    "safercom/v1/ward-7/hub-1",          # no leaf
    "safercom/v1/ward-7/hub-1/",         # empty leaf
    "safercom/v1/ward-7/hub-1/cmd/",
    "safercom/v1/ward-7/hub-1//events",
    "safercom/v1//hub-1/events",
    "safercom/v1/ward-7/hub:1/events",   # not a hub id
    "safercom/v1/ward 7/hub-1/events",   # not a ward id
    "safercom/v1/ward-7/" + "h" * 25 + "/events",
    "safercom/v1/+/hub-1/events",        # filters are not topics
    "safercom/v1/ward-7/+/events",
    "safercom/v1/ward-7/hub-1/#",
    "safercom/v1/ward-7/hub-1/snapshots/+",
])
def test_parse_topic_refuses(topic: str) -> None:
    assert parse_topic("safercom/v1", topic) is None


def test_topic_filters_span_wards_and_hubs() -> None:
    assert topic_filter("safercom/v1", "events") == "safercom/v1/+/+/events"
    assert topic_filter("safercom/v1", "status", ward="ward-7") == "safercom/v1/ward-7/+/status"
    assert topic_filter("safercom/v1", "#", ward="ward-7", hub="hub-1") == "safercom/v1/ward-7/hub-1/#"
    with pytest.raises(ValueError):
        topic_filter("safercom/v1", "events", ward="ward/7")
    with pytest.raises(ValueError):
        topic_filter("safercom/v1", "events", hub="#")


# --- ids ------------------------------------------------------------------------------------


@given(hubs, seqs, transitions, levels, st.integers(1, 2**40))
def test_ids_build_parse_and_name_their_origin(hub: str, seq: int, event_type: str, level: int,
                                               n: int) -> None:
    alert = contract.alert_id(hub, seq)
    assert parse_alert_id(alert) == AlertId(hub, seq) and str(AlertId(hub, seq)) == alert
    transition = contract.transition_event_id(alert, event_type, level)
    parsed = parse_event_id(transition)
    assert parsed == TransitionEventId(AlertId(hub, seq), event_type.split(".", 1)[1], level)
    assert isinstance(parsed, TransitionEventId) and parsed.event_type == event_type
    assert str(parsed) == transition
    routine = contract.routine_event_id(hub, n)
    assert parse_event_id(routine) == RoutineEventId(hub, n) and str(RoutineEventId(hub, n)) == routine
    assert origin_of(alert) == origin_of(transition) == origin_of(routine) == hub
    # Each form is only itself.
    assert parse_event_id(alert) is None
    assert parse_alert_id(transition) is None and parse_alert_id(routine) is None


def test_ids_are_those_of_the_documented_examples() -> None:
    assert contract.alert_id("hub-1", 7) == "hub-1:7"
    assert contract.transition_event_id("hub-1:7", "alert.raised", 0) == "hub-1:7:raised:0"
    assert contract.routine_event_id("hub-1", 42) == "hub-1:e42"


@pytest.mark.parametrize("text", [
    "", ":", "hub-1", "hub-1:", ":7", "hub-1:0", "hub-1:07", "hub-1:-7", "hub-1:7.0", "hub 1:7",
    "h:u:7", "h" * 25 + ":7", "hub-1:7:", "hub-1:7:raised", "hub-1:7:raised:", "hub-1:7:raised:00",
    "hub-1:7:raised:01", "hub-1:7:pressed_again:0", "hub-1:7:Raised:0", "hub-1:7:raised:0:x",
    "hub-1:e0", "hub-1:e07", "hub-1:e", "hub-1:E4", "hub-1:unsaved-3", "hub-1:7\n",
])
def test_malformed_ids_are_refused(text: str) -> None:
    assert parse_alert_id(text) is None and parse_event_id(text) is None
    with pytest.raises(ValueError):
        origin_of(text)


def test_only_transitions_get_derived_ids() -> None:
    with pytest.raises(ValueError):
        contract.transition_event_id("hub-1:7", "alert.snapshot", 0)
    with pytest.raises(ValueError):
        contract.transition_event_id("hub-1:7", "raised", 0)


def test_mesh_event_ids_are_the_contracts() -> None:
    from hubd.radio.frames import EVENT_TYPE, Frame, FrameType
    from hubd.radio.mesh import event_id

    for ftype, event_type in EVENT_TYPE.items():
        frame = Frame(ftype, "hub-3", 1_763_712_000, seq=12, kind="panic", level=2,
                      outcome="genuine" if ftype == FrameType.RESOLVED else None)
        parsed = parse_event_id(event_id(frame))
        assert isinstance(parsed, TransitionEventId)
        assert (parsed.hub, parsed.alert.seq, parsed.event_type, parsed.level) == ("hub-3", 12, event_type, 2)


# --- canonical form -------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8))
def test_canonical_is_independent_of_key_order_and_reads_back(payload: dict[str, object]) -> None:
    reordered = dict(reversed(list(payload.items())))
    assert canonical(payload) == canonical(reordered) == canonical(payload)
    assert canonical(json.loads(canonical(payload))) == canonical(payload)
    # The same JSON value, as every reader sees it: numbers are doubles (RFC 8785).
    assert json.loads(canonical(payload), parse_int=float) == json.loads(json.dumps(payload), parse_int=float)


@given(json_values, st.floats(allow_nan=False, allow_infinity=False))
def test_canonical_fast_path_writes_what_rfc_8785_does(value: object, x: float) -> None:
    from hubd.contract.canonical import _write

    for payload in ({"k": value, "x": [x, -x, x / 7]}, [value], value):
        slow: list[str] = []
        _write(payload, slow)
        assert canonical(payload) == "".join(slow).encode("utf-8")


def test_canonical_form() -> None:
    assert canonical({"b": 1, "a": [1.0, "é", None, True], "c": {"z": 0.1, "y": 1e16}}) == \
        '{"a":[1,"é",null,true],"b":1,"c":{"y":10000000000000000,"z":0.1}}'.encode()
    envelope = Event("hub-1:e1", "siren.test", 1.5, "hub-1", "system").envelope("ward-7", None)
    assert canonical(envelope) == canonical(dict(sorted(envelope.items())))


@pytest.mark.parametrize("bad", [
    math.nan, {"t": math.inf}, [-math.inf], {"a": {"b": [math.nan]}}, {1: "x"}, {"a": {None: 1}},
    "\ud800", {"\udfff": 1}, 10**400,
])
def test_canonical_refuses_what_json_cannot_say_once(bad: object) -> None:
    with pytest.raises(ValueError):
        canonical(bad)


def test_canonical_is_rfc_8785() -> None:
    # The example of RFC 8785, section 3.2.2 (its input as Python values).
    value = {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/", "literals": [None, True, False]}
    assert canonical(value) == ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                                '1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
    # Its number vectors (appendix B), by IEEE 754 bit pattern.
    vectors = {
        0x0000000000000000: "0", 0x8000000000000000: "0", 0x0000000000000001: "5e-324",
        0x8000000000000001: "-5e-324", 0x7FEFFFFFFFFFFFFF: "1.7976931348623157e+308",
        0xFFEFFFFFFFFFFFFF: "-1.7976931348623157e+308", 0x4340000000000000: "9007199254740992",
        0xC340000000000000: "-9007199254740992", 0x4430000000000000: "295147905179352830000",
        0x44B52D02C7E14AF5: "9.999999999999997e+22", 0x44B52D02C7E14AF6: "1e+23",
        0x44B52D02C7E14AF7: "1.0000000000000001e+23", 0x444B1AE4D6E2EF4E: "999999999999999700000",
        0x444B1AE4D6E2EF4F: "999999999999999900000", 0x444B1AE4D6E2EF50: "1e+21",
        0x3EB0C6F7A0B5ED8C: "9.999999999999997e-7", 0x3EB0C6F7A0B5ED8D: "0.000001",
        0x41B3DE4355555553: "333333333.3333332", 0x41B3DE4355555554: "333333333.33333325",
        0x41B3DE4355555555: "333333333.3333333", 0x41B3DE4355555556: "333333333.3333334",
        0x41B3DE4355555557: "333333333.33333343", 0xBECBF647612F3696: "-0.0000033333333333333333",
        0x43143FF3C1CB0959: "1424953923781206.2",
    }
    for bits, text in vectors.items():
        (x,) = struct.unpack(">d", bits.to_bytes(8, "big"))
        assert canonical(x) == text.encode(), hex(bits)
    # Keys sort by UTF-16 code units: U+FB33 (one unit) after U+1F600 (a surrogate pair, D83D...).
    assert canonical({"\ufb33": 1, "\U0001f600": 2, "a": 3}) == '{"a":3,"\U0001f600":2,"\ufb33":1}'.encode()
    # Numbers are doubles, so a whole float and an integer are one number.
    assert canonical({"t": 1763712000.0}) == canonical({"t": 1763712000}) == b'{"t":1763712000}'


# --- builders against their schemas ---------------------------------------------------------


def _alert(**changes: object) -> Alert:
    fields = {"id": "hub-1:7", "hub": "hub-1", "seq": 7, "kind": AlertKind.PANIC, "source": "gate",
              "zone": "Market gate", "raised_at": 1763712000.12, "updated_at": 1763712000.12}
    return Alert(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_envelope_is_the_documented_wire_form() -> None:
    event = Event("hub-1:7:raised:0", "alert.raised", 1763712000.12, "hub-1", "button:gate")
    env = event.envelope("ward-7", _alert())
    # Contract version 2, as hubs send it (before the hub signs it): the wire alert, what the
    # origin knows, without a receiver's bookkeeping (remote, relayed_by, extra).
    assert contract.dumps(env) == (
        b'{"v":2,"id":"hub-1:7:raised:0","type":"alert.raised","time":1763712000.12,"ward":"ward-7",'
        b'"hub":"hub-1","actor":"button:gate","data":{},'
        b'"alert":{"id":"hub-1:7","hub":"hub-1","seq":7,"kind":"panic","source":"gate","zone":"Market gate",'
        b'"state":"raised","outcome":null,"level":0,"silent":false,"raised_at":1763712000.12,'
        b'"updated_at":1763712000.12,"severity":1}}')
    assert not problems("event-v2", env)
    assert "alert" not in Event("hub-1:e3", "siren.test", 1.0, "hub-1", "system").envelope("ward-7", None)


def test_every_builder_conforms_to_its_schema() -> None:
    resolved = _alert(state=AlertState.RESOLVED, outcome=Outcome.FALSE_ALARM, level=2)
    envelopes = [
        contract.event_envelope(id="hub-1:e3", type="siren.test", time=2.0, ward="ward-7", hub="hub-1",
                                actor="system", data={"seconds": 1}),
        contract.event_envelope(id="hub-1:7:resolved:2", type="alert.resolved", time=3.0, ward="ward-7",
                                hub="hub-1", actor="centre", data={"outcome": "false_alarm"},
                                alert=resolved.to_dict()),
    ]
    for env in envelopes:
        assert not problems("event", env), env
        relayed = contract.outgoing_envelope(env, "hub-2")
        assert relayed["relayed_by"] == "hub-2" and not problems("event", relayed)
        assert contract.outgoing_envelope(env, "hub-1") is env
    assert not problems("alert", resolved.to_dict())
    status = contract.status_payload(
        hub="hub-1", ward="ward-7", time=1763712000.0, name="Market", version="0.1.0", uptime=-0.5,
        clock_synced=True, components={"siren:yard": {"status": "ok", "reason": "", "since": 1.0}},
        outbox={"mqtt": {"depth": 0, "oldest_age": None}}, open_alerts=1)
    assert status["uptime"] == 0.0 and status["time"] == 1763712000.0 and status["online"] is True
    will = contract.offline_payload("ward-7", "hub-1", "connection lost")
    stopped = contract.offline_payload("ward-7", "hub-1", "stopped", 1763712001.0)
    assert "time" not in will and stopped["time"] == 1763712001.0
    for payload in (status, will, stopped):
        assert not problems("status", payload), payload
    replies = [
        contract.reply_payload("hub-1", "c-1", {"ok": True, "result": resolved.to_dict()}),
        contract.reply_payload("hub-1", "c-1", {"ok": True, "result": None}, repeated=True),
        contract.reply_payload("hub-1", "c-2", {"ok": False}),
        contract.error_reply("hub-1", None, "too_large", "command of 9000 bytes refused"),
    ]
    assert replies[1]["repeated"] is True and replies[2]["error"]["code"] == "internal"
    for reply in replies:
        assert not problems("reply", reply), reply
    for cmd in contract.MQTT_COMMANDS:
        command = {"cmd": cmd, "id": "c-3"}
        if cmd in ("ack", "resolve", "cancel"):
            command["alert"] = "hub-1:7"
        if cmd == "resolve":
            command["outcome"] = "genuine"
        assert not problems("command", command), command


def test_schemas_are_versioned_and_follow_the_model() -> None:
    for name in ("event", "status", "reply"):
        assert contract.schema(name)["properties"]["v"]["const"] == contract.CONTRACT_VERSION
    alert = contract.schema("alert")
    assert alert == contract.schema("event")["$defs"]["alert"]
    assert alert["properties"]["kind"]["enum"] == [k.value for k in AlertKind]
    assert alert["properties"]["state"]["enum"] == [s.value for s in AlertState]
    assert alert["properties"]["outcome"]["enum"] == [o.value for o in Outcome] + [None]
    assert set(alert["properties"]) == set(_alert().to_dict())
    contract.schema("alert")["properties"].clear()  # a copy: the contract's own stays whole
    assert contract.schema("alert") == alert


def test_the_openapi_alert_schema_is_the_contracts(tmp_path: Path) -> None:
    from test_web_helpers import make_web_hub

    w = make_web_hub(tmp_path)
    try:
        doc = w.app.test_client().get("/api/openapi.json").get_json()
    finally:
        w.hub.stop()
    assert doc["components"]["schemas"]["Alert"] == contract.schema("alert")


# --- layering -------------------------------------------------------------------------------


def test_the_contract_imports_nothing_of_the_hub() -> None:
    package = Path(contract.__file__).parent
    allowed_hubd = {"hubd", "hubd.contract"}
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "hubd":
                    names = [f"hubd.{a.name}" for a in node.names if a.name != "__version__"]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "hubd":
                    assert name.startswith("hubd.contract") or name in allowed_hubd, (module.name, name)
                else:
                    assert top in {"__future__", "base64", "binascii", "collections", "contextlib", "copy",
                                   "dataclasses", "enum", "functools", "json", "math", "os", "pathlib", "re",
                                   "stat", "struct", "typing", "jsonschema", "cryptography"}, \
                        (module.name, name)
