"""Hypothesis fuzz of every decoder that takes input from outside: mesh frames, MQTT commands
and neighbours' events, the configuration, and the page's API bodies.

The property is always the same: bad input gets a clear refusal (the decoder's own error
type, or an error reply saying what was wrong), never a crash, and never a change of state.
Examples are bounded for CI (``HUBD_FUZZ_EXAMPLES``, default 150); the atheris targets in
tests/fuzz_targets/ run the same decoders for as long as you like.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import hub_config

from hubd import contract
from hubd.commands import CommandProcessor
from hubd.config import Config, ConfigError, load_config, parse_config
from hubd.lifecycle import Hub
from hubd.radio import frames
from hubd.radio.frames import Frame, FrameError, FrameType
from hubd.store import Store

EXAMPLES = int(os.environ.get("HUBD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

KEY = bytes(range(32))
NODE = 0x1234ABCD

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | \
    st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5) |
                           st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=20)


# --- mesh frames ----------------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=260), node=st.integers(0, 2**32 - 1))
def test_random_bytes_are_refused_as_frames(data: bytes, node: int) -> None:
    try:
        frames.decode(data, KEY, node)
    except FrameError as e:
        assert e.reason and str(e)


@FUZZ
@given(body=st.binary(max_size=230))
def test_authentic_frames_with_any_body_decode_or_are_refused_cleanly(body: bytes) -> None:
    # Random bytes almost never pass the tag; these do, so the parser behind it is reached.
    data = body + frames._tag(KEY, NODE, body)
    try:
        frame = frames.decode(data, KEY, NODE)
    except FrameError as e:
        assert e.reason != "auth", e
        return
    # What decodes re-encodes to a frame that decodes the same.
    again = frames.decode(frames.encode(frame, KEY, NODE), KEY, NODE)
    assert again == frame


alert_frames = st.builds(
    Frame, st.sampled_from(sorted(frames.ALERT_TYPES)), st.from_regex(r"\A[A-Za-z0-9_-]{1,16}\Z"),
    st.integers(0xFFFF, 2**32 - 1), seq=st.integers(0, 2**24 - 1), age=st.integers(0, 0xFFFF),
    kind=st.sampled_from(frames.KINDS), level=st.integers(0, frames.MAX_LEVEL), silent=st.booleans(),
    uplink=st.booleans(), zone=st.text(max_size=30))


@FUZZ
@given(frame=alert_frames, flip=st.integers(0, 10_000))
def test_a_frame_round_trips_and_any_flipped_bit_is_refused(frame: Frame, flip: int) -> None:
    if frame.type == FrameType.RESOLVED:
        frame = Frame(frame.type, frame.origin, frame.time, seq=frame.seq, age=frame.age, kind=frame.kind,
                      level=frame.level, outcome="genuine", silent=frame.silent, uplink=frame.uplink,
                      zone=frame.zone)
    data = frames.encode(frame, KEY, NODE)
    got = frames.decode(data, KEY, NODE)
    assert (got.type, got.origin, got.seq, got.kind, got.level, got.silent, got.uplink) == (
        frame.type, frame.origin, frame.seq, frame.kind, frame.level, frame.silent, frame.uplink)
    bit = flip % (len(data) * 8)
    broken = bytearray(data)
    broken[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        frames.decode(bytes(broken), KEY, NODE)


@FUZZ
@given(text=st.text(max_size=120) | st.binary(max_size=120))
def test_network_keys_load_or_say_why_not(text: str | bytes) -> None:
    try:
        key = frames.load_key(text)
    except ValueError as e:
        assert str(e)
    else:
        assert isinstance(key, bytes) and len(key) >= 16


# --- MQTT: commands from the centre, events from neighbours (contract version 2) -----------------

@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A hub's MQTT link, never connected: its handlers are called as paho would call them. It
    believes the test centre and the test hub hub-2."""
    from mqtt_support import hub_key, mqtt_section, trust_section

    from hubd.radio.mqtt import MqttLink

    tmp = tmp_path_factory.mktemp("fuzz-mqtt")
    cfg = load_config(hub_config(tmp, web=False, extra=mqtt_section(1, neighbours=["hub-2"])
                                 + trust_section(["hub-2"])))
    store = Store(cfg.store_path)
    hub = Hub(cfg, store, key=hub_key("hub-1"))
    processor = CommandProcessor(hub)
    lk = MqttLink(cfg, hub, processor)
    lk.replies = []
    original = lk._publish

    def publish(topic: str, payload: bytes, **kw: Any) -> Any:
        lk.replies.append((topic, payload))
        return original(topic, payload, **kw)  # paho queues it: the link is not connected

    lk._publish = publish
    hub.raise_alert("gate", "panic", "Market gate")
    yield lk
    hub.stop()
    store.close()


def state_of(store: Store) -> tuple:
    alerts = store.query("SELECT id, state, outcome, level FROM alerts ORDER BY id")
    events = store.query("SELECT count(*) AS n FROM events WHERE type NOT LIKE 'siren.%'")[0]["n"]
    return tuple(tuple(a.values()) for a in alerts), events


def message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    return msg


def signer_key(name: str) -> Any:
    from mqtt_support import CENTRE_KEY, hub_key

    return CENTRE_KEY if name == "centre" else hub_key(name)


command_fields = st.fixed_dictionaries(
    {"v": st.sampled_from([2, 2, 2, 1, "2"]),
     "cmd": st.sampled_from(["ack", "resolve", "cancel", "silence", "status", "siren_test", "nope", "press"]),
     "hub": st.sampled_from(["hub-1", "hub-1", "hub-2", ""]),
     "time": st.sampled_from(["now", "now", "old", "future"]) | json_scalars,
     "by": st.sampled_from(["operator:alice", ""]) | json_scalars},
    optional={"id": st.text(max_size=140) | json_scalars,
              "alert": st.sampled_from(["hub-1:999", "", "hub-2:1", "hub-1:01"]) | json_values,
              "outcome": st.sampled_from(["genuine", "bogus"]) | json_values,
              "extra": json_values})


@st.composite
def command_bytes(draw: Any) -> bytes:
    """A command as the broker could deliver it: signed by the centre or by somebody else,
    unsigned, tampered with after signing, or any bytes at all."""
    import time

    how = draw(st.sampled_from(["centre", "centre", "hub-2", "unsigned", "tampered", "raw", "json"]))
    if how == "raw":
        return draw(st.binary(max_size=64))
    if how == "json":
        return json.dumps(draw(json_values)).encode()
    fields = dict(draw(command_fields))
    fields["time"] = {"now": time.time(), "old": time.time() - 3600, "future": time.time() + 3600}.get(
        fields["time"], fields["time"]) if isinstance(fields["time"], str) else fields["time"]
    if fields.get("cmd") in ("ack", "resolve", "cancel") and fields.get("alert") not in ("hub-1:999",):
        fields["alert"] = "hub-1:999"  # never the open alert: a valid command would change it
    if how == "unsigned":
        return json.dumps(fields).encode()
    try:
        signed = contract.sign("command", fields, signer_key("centre" if how != "hub-2" else "hub-2"))
    except (ValueError, TypeError):
        return json.dumps(fields, default=str).encode()
    if how == "tampered":
        signed = {**signed, "by": "mallory"}
    return json.dumps(signed).encode()


@FUZZ
@given(payload=command_bytes())
def test_mqtt_commands_get_a_signed_reply_and_bad_ones_change_nothing(link: Any, payload: bytes) -> None:
    from mqtt_support import hub_key

    before = state_of(link.store)
    link.replies.clear()
    link._on_message(link.client, None, message(link.topics.cmd, payload))
    assert len(link.replies) == 1, "every command gets exactly one reply"
    topic, body = link.replies[0]
    assert topic == link.topics.reply
    reply = json.loads(body)
    assert not contract.problems("reply-v2", reply), (reply, contract.problems("reply-v2", reply))
    contract.verify("reply", reply, hub_key("hub-1").public_key())
    if not reply["ok"]:
        assert reply["error"]["code"] != "internal", reply
        assert reply["error"]["message"]
        assert state_of(link.store) == before
    link.client._out_messages.clear()  # never connected: do not let paho's queue grow


envelope_fields = st.fixed_dictionaries(
    {"v": st.sampled_from([2, 2, 1]),
     "id": st.sampled_from(["hub-2:e1", "hub-2:4:raised:0", "hub-1:e9", "hub-1:4:raised:0", "hub-3:e1"])
     | st.text(max_size=30),
     "type": st.sampled_from(["alert.raised", "alert.resolved", "x.y"]),
     "time": st.floats(0, 2e9) | json_scalars, "hub": st.sampled_from(["hub-2", "hub-1", "hub-3"]),
     "ward": st.just("ward-7"), "actor": st.sampled_from(["gate"]) | json_scalars, "data": st.just({})},
    optional={"alert": st.fixed_dictionaries(
        {"id": st.sampled_from(["hub-2:4", "hub-1:4", "hub-3:4"]),
         "hub": st.sampled_from(["hub-2", "hub-1"]), "seq": st.just(4) | st.integers(),
         "kind": st.sampled_from(["panic", "meteor"]), "source": st.just("g"),
         "zone": st.text(max_size=10), "state": st.sampled_from(["raised", "resolved", "gone"]),
         "outcome": st.none(), "level": st.integers(0, 3), "silent": st.booleans(),
         "raised_at": st.floats(0, 2e9), "updated_at": st.floats(0, 2e9), "severity": st.just(1)})
        | json_values,
        "relayed_by": st.sampled_from(["hub-2", "hub-1"]), "extra": json_values})


@st.composite
def event_bytes(draw: Any) -> bytes:
    """An event on a neighbour's topic: signed by its origin, by another hub, attested, unsigned,
    tampered with, or any bytes."""
    how = draw(st.sampled_from(["origin", "origin", "hub-2", "attested", "unsigned", "tampered", "raw"]))
    if how == "raw":
        return draw(st.binary(max_size=64))
    env = dict(draw(envelope_fields))
    try:
        if how == "origin" and env["hub"] in ("hub-1", "hub-2", "hub-3"):
            env = contract.sign("event", env, signer_key(env["hub"]))
        elif how in ("hub-2", "tampered"):
            env = contract.sign("event", env, signer_key("hub-2"))
            if how == "tampered":
                env = {**env, "time": 12.0}
        elif how == "attested":
            env = contract.attest(env, "hub-2", signer_key("hub-2"))
    except (ValueError, TypeError):
        pass
    return json.dumps(env, default=str).encode()


@FUZZ
@given(payload=event_bytes())
def test_neighbour_events_are_believed_only_under_their_origins_signature(link: Any, payload: bytes) -> None:
    before = state_of(link.store)
    link._on_message(link.client, None, message(link.topics.of("hub-2").events, payload))
    try:
        env = contract.parse_untrusted(payload, "event-v2")
        verdict = contract.check_envelope(env, link.trusted.hub)
    except contract.ContractError:
        verdict = None
    if verdict is None or not verdict.accepted or verdict.origin == "hub-1":
        assert state_of(link.store) == before
    # Nothing ever takes an id of this hub's own, nor a third hub's without its key.
    assert not link.store.query("SELECT id FROM events WHERE trust IS NOT NULL AND (hub = 'hub-1' OR "
                                "hub = 'hub-3' OR id LIKE 'hub-1:%' OR id LIKE 'hub-3:%')")
    assert link.store.get_alert("hub-1:4") is None and link.store.get_alert("hub-3:4") is None


# --- the configuration ------------------------------------------------------------------------

VALID = {"hub": {"ward": "w", "id": "h1", "state_dir": "/tmp/hubd-fuzz"},
         "buttons": [{"name": "gate", "pin": 17}], "sirens": [{"name": "main", "pin": 27}],
         "mqtt": {"host": "broker", "insecure": True}, "protocol": {"escalation": [60, 180]}}


def mutate(doc: Any, path: list[Any], value: Any) -> Any:
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    if isinstance(doc, dict):
        key = path[0] if isinstance(path[0], str) else sorted(doc)[path[0] % len(doc)]
        return {**doc, key: mutate(doc.get(key), path[1:], value)}
    i = path[0] % len(doc) if isinstance(path[0], int) else 0
    return [*doc[:i], mutate(doc[i], path[1:], value), *doc[i + 1:]]


@FUZZ
@given(path=st.lists(st.integers(0, 20) | st.sampled_from(["hub", "buttons", "pin", "mesh", "camera",
                                                           "protocol", "escalation", "web", "store"]),
                     max_size=4), value=json_values)
def test_any_config_is_accepted_or_refused_with_its_key_path(path: list[Any], value: Any) -> None:
    doc = mutate(VALID, path, value)
    try:
        cfg = parse_config(doc, check_files=False)
    except ConfigError as e:
        assert e.errors and all(isinstance(m, str) and m for m in e.errors)
    else:
        assert isinstance(cfg, Config)


@FUZZ
@given(text=st.text(alphabet=string.printable + "é\x00", max_size=300) | st.binary(max_size=200))
def test_any_config_file_is_accepted_or_refused(tmp_path_factory: pytest.TempPathFactory,
                                                text: str | bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "hub.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        load_config(path, check_files=False)
    except ConfigError as e:
        assert e.errors


# --- the page's API bodies ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from test_web_helpers import login, make_web_hub

    w = make_web_hub(tmp_path_factory.mktemp("fuzz-web"))
    w.raise_alert("gate")
    client = w.app.test_client()
    token = login(client)
    yield w, client, token
    w.hub.stop()
    w.store.close()


PATHS = ["/api/alerts/{a}/ack", "/api/alerts/{a}/resolve", "/api/alerts/{a}/cancel", "/api/siren/silence",
         "/api/commands", "/api/login"]


@FUZZ
@given(path=st.sampled_from(PATHS), alert=st.sampled_from(["hub-1:999", "nope", "%00", "hub-1:1:x"]),
       body=json_values.map(json.dumps).map(str.encode) | st.binary(max_size=80),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
def test_api_bodies_are_refused_with_a_json_error_and_change_nothing(web: Any, path: str, alert: str,
                                                                     body: bytes, content_type: str) -> None:
    w, client, token = web
    before = (w.state("hub-1:1"), w.event_count())
    r = client.post(path.format(a=alert), data=body, content_type=content_type,
                    headers={"X-CSRF-Token": token})
    assert r.status_code < 500, r.get_data(as_text=True)[:300]
    if r.status_code >= 400:
        err = r.get_json()
        assert err["ok"] is False and err["error"]["message"], err
        assert (w.state("hub-1:1"), w.event_count()) == before
