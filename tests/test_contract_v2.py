"""Contract version 2 (hubd.contract): keys and their files, signatures and their domains, signed
envelopes and what a receiver believes of them, receipts and their compact mesh form,
centre-signed commands, signed replies, status and Last Will, and the v2 schemas."""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd import contract
from hubd.contract import (
    ContractError,
    Trust,
    attest,
    check_command,
    check_envelope,
    check_receipt,
    check_signed,
    decode_receipt,
    encode_receipt,
    problems,
    sign,
    verify,
)
from hubd.contract.errors import CODES
from hubd.contract.receipts import MESH_PAYLOAD_BYTES, RECEIPT_FRAME_OVERHEAD
from hubd.contract.signing import KINDS, signing_input
from hubd.model import Alert, AlertKind, AlertState, Event, Outcome

HUB1, HUB2, HUB3, CENTRE = (Ed25519PrivateKey.generate() for _ in range(4))
ENROLLED = {"hub-1": HUB1.public_key(), "hub-2": HUB2.public_key()}  # hub-3 is not enrolled


def key_of(hub: str) -> Ed25519PublicKey | None:
    return ENROLLED.get(hub)


@contextmanager
def refusal(code: str) -> Iterator[pytest.ExceptionInfo[ContractError]]:
    """The block must raise ContractError ``code`` (one of the contract's codes)."""
    with pytest.raises(ContractError) as info:
        yield info
    assert info.value.code == code, info.value
    assert code in CODES


def wire(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as a receiver gets it: published bytes, parsed."""
    return json.loads(contract.dumps(payload))


# --- builders -------------------------------------------------------------------------------


def _alert(**changes: object) -> Alert:
    fields = {"id": "hub-1:7", "hub": "hub-1", "seq": 7, "kind": AlertKind.PANIC, "source": "gate",
              "zone": "Market gate", "raised_at": 1763712000.12, "updated_at": 1763712000.12,
              "remote": False, "extra": {"via": "x"}}
    return Alert(**{**fields, **changes})  # type: ignore[arg-type]


def raised(hub: str = "hub-1", seq: int = 7) -> dict[str, Any]:
    alert = _alert(id=f"{hub}:{seq}", hub=hub, seq=seq)
    return contract.event_envelope_v2(id=f"{hub}:{seq}:raised:0", type="alert.raised", time=1763712000.12,
                                      ward="ward-7", hub=hub, actor="button:gate", data={},
                                      alert=alert.to_dict())


def resolved() -> dict[str, Any]:
    alert = _alert(state=AlertState.RESOLVED, outcome=Outcome.FALSE_ALARM, level=2, updated_at=1763712100.0)
    return contract.event_envelope_v2(id="hub-1:7:resolved:2", type="alert.resolved", time=1763712100.0,
                                      ward="ward-7", hub="hub-1", actor="centre:operator:alice",
                                      data={"outcome": "false_alarm"}, alert=alert.to_dict())


def routine() -> dict[str, Any]:
    event = Event("hub-1:e3", "siren.test", 1763712000.5, "hub-1", "system", data={"seconds": 1})
    return contract.event_envelope_v2(id=event.id, type=event.type, time=event.time, ward="ward-7",
                                      hub=event.hub, actor=event.actor, data=event.data)


def status() -> dict[str, Any]:
    return contract.status_payload_v2(
        hub="hub-1", ward="ward-7", seq=12, time=1763712000.0, report_every=30, connected_at=1763711000.0,
        name="Market", version="0.1.0", uptime=-0.5, clock_synced=True,
        components={"siren:yard": {"status": "ok", "reason": "", "since": 1.0}},
        outbox={"mqtt": {"depth": 0, "oldest_age": None}, "mesh": {"depth": 2, "oldest_age": 3.5}},
        open_alerts=1)


def command(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"id": "5b0c7e2a", "cmd": "ack", "hub": "hub-1", "time": 1763712005.0,
                              "by": "operator:alice", "alert": "hub-1:7"}
    return contract.command_payload_v2(**{**fields, **changes})


def signed_samples() -> Iterator[tuple[str, str, dict[str, Any], Ed25519PrivateKey]]:
    """(kind, schema, signed payload, signing key) for every v2 builder."""
    for env in (raised(), resolved(), routine()):
        yield "event", "event-v2", sign("event", env, HUB1), HUB1
    yield "status", "status-v2", sign("status", status(), HUB1), HUB1
    yield "status", "status-v2", sign("status", contract.stopped_payload_v2(
        hub="hub-1", ward="ward-7", seq=13, time=1763712050.0, connected_at=1763711000.0), HUB1), HUB1
    yield "status", "status-v2", sign("status", contract.will_payload_v2(
        hub="hub-1", ward="ward-7", connected_at=1763711000.0), HUB1), HUB1
    for cmd in contract.MQTT_COMMANDS:
        with_alert = cmd in ("ack", "resolve", "cancel", "silence")
        extra: dict[str, Any] = {"alert": "hub-1:7" if with_alert else None}
        if cmd == "resolve":
            extra["outcome"] = "genuine"
        yield "command", "command-v2", sign("command", command(cmd=cmd, **extra), CENTRE), CENTRE
    yield "command", "command-v2", sign("command", command(cmd="silence", alert=None), CENTRE), CENTRE
    for reply in (
        contract.reply_payload_v2(hub="hub-1", command_id="c-1", time=1.0, reply={"ok": True,
                                  "result": _alert().to_dict()}),
        contract.reply_payload_v2(hub="hub-1", command_id="c-1", time=1.0, reply={"ok": True, "result": None},
                                  repeated=True, note="clock not synchronised"),
        contract.reply_payload_v2(hub="hub-1", command_id="c-2", time=1.0, reply={"ok": False}),
        contract.error_reply_v2(hub="hub-1", command_id=None, time=1.0, code="stale", message="old"),
    ):
        yield "reply", "reply-v2", sign("reply", reply, HUB1), HUB1
    yield "receipt", "receipt-v2", sign("receipt", contract.receipt_payload(
        hub="hub-1", time=1763712001, ids=["hub-1:e12", "hub-1:7:raised:0", "hub-1:s4"]), CENTRE), CENTRE


def test_every_v2_builder_conforms_to_its_schema_signed() -> None:
    samples = list(signed_samples())
    assert {s[1] for s in samples} == {"event-v2", "status-v2", "command-v2", "reply-v2", "receipt-v2"}
    for kind, name, payload, key in samples:
        assert not problems(name, payload), (payload, problems(name, payload))
        assert not problems(name, wire(payload))
        verify(kind, wire(payload), key.public_key())


def test_the_wire_alert_carries_only_what_its_origin_knows() -> None:
    env = raised()
    assert env["v"] == 2 and set(env["alert"]) == set(contract.WIRE_ALERT_FIELDS)
    assert not {"remote", "relayed_by", "extra"} & set(env["alert"])
    assert env["alert"]["severity"] == 1 and env["alert"]["kind"] == "panic"
    assert "alert" not in routine()
    assert contract.schema("alert-v2") == contract.schema("event-v2")["$defs"]["alert"]
    alert = contract.schema("alert-v2")
    assert set(alert["properties"]) == set(alert["required"]) == set(contract.WIRE_ALERT_FIELDS)
    assert set(contract.WIRE_ALERT_FIELDS) == set(_alert().to_dict()) - {"remote", "relayed_by", "extra"}
    assert alert["properties"]["kind"]["enum"] == [k.value for k in AlertKind]
    assert alert["properties"]["state"]["enum"] == [s.value for s in AlertState]
    assert alert["properties"]["outcome"]["enum"] == [o.value for o in Outcome] + [None]


def test_v2_schemas_are_valid_2020_12_and_of_version_2() -> None:
    import jsonschema

    for name in ("event-v2", "status-v2", "command-v2", "reply-v2", "receipt-v2"):
        s = contract.schema(name)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(s)
        assert s["properties"]["v"]["const"] == contract.CONTRACT_V2 == 2
    for name in ("event", "status", "command", "reply"):
        assert contract.schema(name) != contract.schema(f"{name}-v2")  # version 1 stays as it was


def test_v2_schemas_refuse_what_the_contract_refuses() -> None:
    env = sign("event", raised(), HUB1)
    assert problems("event-v2", {**env, "extra": 1})  # nothing beyond the contract's fields
    assert problems("event-v2", {**env, "alert": {**env["alert"], "remote": True}})
    assert problems("event-v2", {**env, "sig": env["sig"][:-1]})
    assert problems("event-v2", {**env, "id": "hub-1:07:raised:0"})
    assert not problems("event-v2", {**env, "relayed_by": "hub-2", "path": "mesh"})
    will = contract.will_payload_v2(hub="hub-1", ward="ward-7", connected_at=1.0)
    assert problems("status-v2", {**will, "time": 2.0}) and problems("status-v2", {**will, "seq": 3})
    online = status()
    assert problems("status-v2", {k: v for k, v in online.items() if k != "seq"})
    assert problems("status-v2", {**online, "reason": "stopped"})
    assert problems("command-v2", {**command(cmd="siren_test", alert=None), "alert": "hub-1:7"})
    assert problems("command-v2", command(cmd="resolve"))  # no outcome
    assert problems("command-v2", {**command(), "hub": None})
    receipt = contract.receipt_payload(hub="hub-1", time=1, ids=["hub-1:e1"])
    assert problems("receipt-v2", {**receipt, "ids": ["hub-1:e1", "hub-1:e1"]})
    assert problems("receipt-v2", {**receipt, "ids": [f"hub-1:e{n}" for n in range(1, 18)]})
    assert problems("receipt-v2", {**receipt, "time": 1.5})
    reply = contract.reply_payload_v2(hub="hub-1", command_id="c", time=1.0, reply={"ok": True, "result": 1})
    assert problems("reply-v2", {**reply, "error": {"code": "internal", "message": ""}})


# --- keys -----------------------------------------------------------------------------------


def test_a_key_file_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys" / "signing.key"
    key = contract.generate_private_key()
    old = os.umask(0)  # even with a careless umask
    try:
        contract.save_private_key(key, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = contract.load_private_key(path)
    assert contract.public_key_text(loaded) == contract.public_key_text(key) \
        == contract.public_key_text(key.public_key())
    (tmp_path / "existing").mkdir(mode=0o755)
    contract.save_private_key(key, tmp_path / "existing" / "k")
    assert stat.S_IMODE((tmp_path / "existing").stat().st_mode) == 0o755  # not ours to change


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    contract.save_private_key(HUB1, path)
    before = path.read_bytes()
    with refusal("key_exists") as err:
        contract.save_private_key(HUB2, path)
    assert str(path) in err.value.message and path.read_bytes() == before
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "elsewhere.key")
    with refusal("key_exists"):
        contract.save_private_key(HUB2, link)
    assert not (tmp_path / "elsewhere.key").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o601])
def test_a_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "signing.key"
    contract.save_private_key(HUB1, path)
    path.chmod(mode)
    with refusal("key_exposed") as err:
        contract.load_private_key(path)
    message = err.value.message
    assert str(path) in message and f"{mode:04o}" in message and "chmod 600" in message


def test_unusable_key_files_say_what_is_wrong(tmp_path: Path) -> None:
    with refusal("key_missing"):
        contract.load_private_key(tmp_path / "none.key")
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with refusal("bad_key"):
        contract.load_private_key(fifo)  # refused, not waited on
    with refusal("bad_key"):
        contract.load_private_key(tmp_path)  # a directory

    def private(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    with refusal("bad_key"):
        contract.load_private_key(private("junk", b"not a key"))
    with refusal("bad_key"):
        contract.load_private_key(private("huge", b"x" * 5000))
    ed448 = Ed448PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with refusal("bad_key") as err:
        contract.load_private_key(private("ed448", ed448))
    assert "Ed448" in err.value.message
    encrypted = HUB1.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"pw"))
    with refusal("bad_key"):
        contract.load_private_key(private("enc", encrypted))


def test_public_key_text_form() -> None:
    text = contract.public_key_text(HUB1)
    assert text.startswith("ed25519:") and len(text) == 51 and "=" not in text
    parsed = contract.parse_public_key(text)
    assert contract.public_key_text(parsed) == text
    assert contract.parse_public_key(f"  {text}\n") is not None  # as read from a file
    body = text[len("ed25519:"):]
    bad = ["", body, "ed25519:", f"ED25519:{body}", f"ed25519:{body}=", f"ed25519:{body[:-1]}",
           f"ed25519:{body}A", f"ed25519:{body[:-1]}+", f"ed25519:{body[:-1]}/", f"ssh-ed25519 {body}"]
    # The last character carries 2 bits of padding: only one of each 4 texts is canonical.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(body[-1]) ^ 1]
    bad.append(f"ed25519:{body[:-1]}{sibling}")
    for b in bad:
        with refusal("bad_key"):
            contract.parse_public_key(b)
    with refusal("bad_key"):
        contract.parse_public_key(b"ed25519:" + body.encode())  # type: ignore[arg-type]


# --- signatures -----------------------------------------------------------------------------


def test_a_signature_verifies_after_the_wire_and_in_any_key_order() -> None:
    for kind, _, payload, key in signed_samples():
        verify(kind, payload, key.public_key())
        verify(kind, dict(reversed(list(payload.items()))), key.public_key())
        verify(kind, wire(payload), key.public_key())
        verify(kind, json.loads(json.dumps(payload, indent=2, ensure_ascii=False)), key.public_key())


def test_each_kind_is_its_own_signature_domain() -> None:
    payload = {"v": 2, "id": "hub-1:e1", "hub": "hub-1"}
    for signed_as, checked_as in itertools.permutations([k for k in KINDS if k != "attestation"], 2):
        with refusal("bad_signature"):
            verify(checked_as, sign(signed_as, payload, HUB1), HUB1.public_key())
    assert signing_input("event", payload).startswith(b"hubd-v2-event\n{")
    with pytest.raises(ValueError):
        sign("attestation", payload, HUB1)
    with pytest.raises(ValueError):
        signing_input("alert", payload)


def test_signatures_are_refused_with_a_code() -> None:
    env = raised()
    with refusal("unsigned"):
        verify("event", env, HUB1.public_key())
    signed = sign("event", env, HUB1)
    with refusal("bad_signature"):
        verify("event", signed, HUB2.public_key())
    for bad in (signed["sig"][:-1], signed["sig"] + "A", 7, "=" * 86, signed["sig"][:-2] + "+/"):
        with refusal("bad_signature"):
            verify("event", {**signed, "sig": bad}, HUB1.public_key())
    # Two texts decode to the same 64 bytes (unused low bits): only the canonical one is a signature.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(signed["sig"][-1]) ^ 1]
    with refusal("bad_signature"):
        verify("event", {**signed, "sig": signed["sig"][:-1] + sibling}, HUB1.public_key())
    with refusal("bad_request"):
        verify("event", [signed], HUB1.public_key())
    with refusal("bad_request"):
        verify("event", {**signed, "time": float("nan")}, HUB1.public_key())


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (objects and lists)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path + (k,)
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield path + (i,)
            yield from _leaves(v, path + (i,))


def _changed(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def _other(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 0
    return None


def test_tampering_with_any_signed_field_breaks_the_signature() -> None:
    for kind, _, payload, key in signed_samples():
        public = key.public_key()
        unsigned = contract.signing.UNSIGNED[kind]
        paths = [p for p in _leaves(payload) if p[0] not in unsigned]
        assert len(paths) >= 5
        for path in paths:
            tampered = _changed(payload, path, _other(_get(payload, path)))
            with refusal("unsupported_version" if path == ("v",) else "bad_signature"):
                verify(kind, tampered, public)
        # Adding or dropping a field is tampering too.
        with refusal("bad_signature"):
            verify(kind, {**payload, "new": 1}, public)
        for field in [f for f in payload if f not in unsigned]:
            less = {k: v for k, v in payload.items() if k != field}
            with refusal("unsupported_version" if field == "v" else "bad_signature"):
                verify(kind, less, public)


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def test_relay_fields_are_outside_the_origin_signature() -> None:
    env = sign("event", raised(), HUB1)
    for relayed in ({**env, "relayed_by": "hub-2", "path": "mesh"},
                    {**env, "relayed_by": "hub-3", "path": "mqtt"}):
        verify("event", relayed, HUB1.public_key())
        assert check_envelope(relayed, key_of).trust is Trust.SIGNED
    for kind in ("status", "command", "reply", "receipt"):
        assert contract.signing.UNSIGNED[kind] == {"sig"}  # nothing else relays these


# --- envelopes: what to believe -------------------------------------------------------------


def test_a_signed_envelope_is_believed() -> None:
    for env in (raised(), resolved(), routine()):
        verdict = check_envelope(wire(sign("event", env, HUB1)), key_of)
        assert (verdict.trust, verdict.origin, verdict.error) == (Trust.SIGNED, "hub-1", None)
        assert verdict.accepted


def _refusal(envelope: Any, code: str) -> None:
    verdict = check_envelope(envelope, key_of)
    assert verdict.trust is Trust.REFUSED and not verdict.accepted, verdict
    assert verdict.error is not None and verdict.error.code == code, verdict.error


def test_a_neighbour_cannot_take_the_ids_of_another_hub() -> None:
    # Issue 15, attack 1: hub-2 publishes, signed with its own key, events with hub-1's ids.
    for event_id in ("hub-1:2:raised:0", "hub-1:e5"):
        env = {**raised("hub-2", 2), "id": event_id}
        _refusal(sign("event", env, HUB2), "wrong_origin")
    env = raised("hub-2", 2)
    _refusal(sign("event", {**env, "alert": {**env["alert"], "hub": "hub-1"}}, HUB2), "wrong_origin")
    _refusal(sign("event", {**env, "alert": {**env["alert"], "id": "hub-1:2"}}, HUB2), "wrong_origin")


def test_a_neighbour_cannot_forge_a_third_hubs_alert() -> None:
    # Issue 15, attack 2: hub-2 forges hub-1's alert as if relaying it.
    forged = {**sign("event", resolved(), HUB2), "relayed_by": "hub-2"}
    _refusal(forged, "bad_signature")
    _refusal(sign("event", raised("hub-3", 1), HUB3), "unknown_origin")  # not enrolled
    _refusal(raised(), "unsigned")


def test_envelopes_must_agree_with_themselves() -> None:
    env = resolved()
    for bad in ({**env, "type": "alert.acknowledged"}, {**env, "alert": {**env["alert"], "level": 1}},
                {**env, "alert": {**env["alert"], "id": "hub-1:8", "seq": 8}},
                {**env, "alert": {**env["alert"], "seq": 8}}, {k: v for k, v in env.items() if k != "alert"},
                {**routine(), "type": "alert.raised"}, {**env, "id": "hub-1:7"}, {**env, "id": 7}):
        _refusal(sign("event", bad, HUB1), "bad_request")
    _refusal(sign("event", {**env, "v": 1}, HUB1), "unsupported_version")
    _refusal([env], "bad_request")
    # Version 1, as hubs sent before, is no signed envelope.
    v1 = contract.event_envelope(id="hub-1:e3", type="siren.test", time=1.0, ward="ward-7", hub="hub-1",
                                 actor="system", data={})
    _refusal(v1, "unsupported_version")


def test_a_ward_attested_envelope_names_who_vouches() -> None:
    env = {**attest(raised(), "hub-2", HUB2), "relayed_by": "hub-2", "path": "mesh"}
    assert "sig" not in env and set(env["attested"]) == {"by", "sig"}
    assert not problems("event-v2", env)
    verdict = check_envelope(wire(env), key_of)
    assert (verdict.trust, verdict.origin, verdict.attested_by) == (Trust.ATTESTED, "hub-1", "hub-2")
    assert verdict.trust == "ward-attested"
    verify("attestation", env, HUB2.public_key())
    # Moved to another attester, or changed, it no longer verifies.
    _refusal({**env, "attested": {**env["attested"], "by": "hub-1x"}}, "unknown_origin")
    ENROLLED["hub-3"] = HUB3.public_key()
    try:
        _refusal({**env, "attested": {**env["attested"], "by": "hub-3"}}, "bad_signature")
    finally:
        del ENROLLED["hub-3"]
    _refusal({**env, "alert": {**env["alert"], "zone": "elsewhere"}}, "bad_signature")
    _refusal({**env, "attested": {"by": "hub-2"}}, "unsigned")
    _refusal({**env, "attested": {"by": "hub 2", "sig": env["attested"]["sig"]}}, "bad_request")
    _refusal(attest(raised(), "hub-3", HUB3), "unknown_origin")


def test_an_attested_event_can_only_raise_the_alarm() -> None:
    assert {"alert.raised", "alert.escalated"} == contract.ATTESTED_TRANSITIONS
    assert contract.ATTESTED_TRANSITIONS < contract.TRANSITION_EVENT_TYPES


def test_only_what_a_mesh_frame_carries_can_be_attested() -> None:
    _refusal(attest(routine(), "hub-2", HUB2), "not_attestable")
    _refusal(attest(raised(), "hub-1", HUB1), "not_attestable")  # an origin signs its own


def test_an_origin_signature_decides_alone() -> None:
    env = attest(raised(), "hub-2", HUB2)
    _refusal({**env, "sig": sign("event", raised(), HUB2)["sig"]}, "bad_signature")
    both = {**sign("event", raised(), HUB1), "attested": env["attested"]}
    assert check_envelope(both, key_of).trust is Trust.SIGNED


# --- receipts -------------------------------------------------------------------------------

transition_ids = st.builds(
    lambda seq, t, level: contract.transition_event_id(contract.alert_id("hub-1", seq), t, level),
    st.integers(1, 2**40), st.sampled_from(sorted(contract.TRANSITION_EVENT_TYPES)), st.integers(0, 2**16))
numbered_ids = st.builds(lambda n, f: f("hub-1", n), st.integers(1, 2**40),
                         st.sampled_from([contract.routine_event_id, contract.status_id]))
small_ids = st.builds(
    lambda seq, t, level: contract.transition_event_id(contract.alert_id("hub-1", seq), t, level),
    st.integers(1, 16383), st.sampled_from(sorted(contract.TRANSITION_EVENT_TYPES)), st.integers(0, 30))


def test_a_receipt_confirms_its_hubs_ids() -> None:
    r = contract.receipt_payload(hub="hub-1", time=1763712001,
                                 ids=["hub-1:e12", "hub-1:7:raised:0", "hub-1:e12", "hub-1:s3"])
    assert r == {"v": 2, "type": "receipt", "hub": "hub-1", "time": 1763712001,
                 "ids": ["hub-1:7:raised:0", "hub-1:e12", "hub-1:s3"]}
    signed = wire(sign("receipt", r, CENTRE))
    assert check_receipt(signed, hub="hub-1", centre_key=CENTRE.public_key()) == tuple(r["ids"])
    with refusal("wrong_hub"):
        check_receipt(signed, hub="hub-2", centre_key=CENTRE.public_key())
    with refusal("bad_signature"):
        check_receipt(sign("receipt", r, HUB1), hub="hub-1", centre_key=CENTRE.public_key())
    with refusal("unsigned"):
        check_receipt(r, hub="hub-1", centre_key=CENTRE.public_key())
    other = sign("receipt", {**r, "ids": ["hub-1:e12", "hub-2:e1"]}, CENTRE)
    with refusal("wrong_origin"):
        check_receipt(other, hub="hub-1", centre_key=CENTRE.public_key())
    with refusal("unsupported_version"):
        check_receipt({**r, "v": 1}, hub="hub-1", centre_key=CENTRE.public_key())
    for bad in ([], ["hub-2:e1"], ["hub-1:7"], [f"hub-1:e{n}" for n in range(1, 18)]):
        with pytest.raises(ValueError):
            contract.receipt_payload(hub="hub-1", time=1, ids=bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(transition_ids | numbered_ids, min_size=1, max_size=16, unique=True),
       st.integers(0, 2**32 - 1))
def test_a_receipt_crosses_the_mesh_and_its_signature_still_verifies(ids: list[str], time: int) -> None:
    try:
        r = contract.receipt_payload(hub="hub-1", time=time, ids=ids)
    except ValueError:  # too large for one packet with such long numbers: split by receipts_for
        parts = contract.receipts_for(hub="hub-1", time=time, ids=ids)
        assert len(parts) > 1 and sorted(i for p in parts for i in p["ids"]) == sorted(ids)
        r = parts[0]
    signed = json.loads(contract.dumps(sign("receipt", r, CENTRE)))  # as heard over MQTT by a neighbour
    compact = encode_receipt(signed)
    assert len(compact) + RECEIPT_FRAME_OVERHEAD <= MESH_PAYLOAD_BYTES
    rebuilt = decode_receipt(compact)  # at the origin, from the mesh
    assert rebuilt == signed
    assert check_receipt(rebuilt, hub="hub-1", centre_key=CENTRE.public_key()) == tuple(signed["ids"])
    assert not problems("receipt-v2", rebuilt)


def test_receipt_frames_are_small() -> None:
    def sizes(first_seq: int) -> dict[int, int]:
        out = {}
        for n in (1, 4, 8, 16):
            ids = [contract.transition_event_id(f"hub-1:{first_seq + i}", "alert.raised", 0)
                   for i in range(n)]
            r = sign("receipt", contract.receipt_payload(hub="hub-1", time=1763712001, ids=ids), CENTRE)
            out[n] = contract.receipt_frame_size(r)
        return out

    # The figures of docs/mqtt-contract.md: 9 frame bytes + 1+5 hub + 4 time + 1 count + 64 signature,
    # and an id is a head byte and its alert's seq: one varint byte below 128, two below 16384.
    assert sizes(100) == {1: 86, 4: 92, 8: 100, 16: 116}
    assert sizes(1000) == {1: 87, 4: 96, 8: 108, 16: 132}
    worst = [contract.transition_event_id(f"hub-1:{2**24 - 1 - i}", "alert.escalated", 7) for i in range(16)]
    r = sign("receipt", contract.receipt_payload(hub="hub-1", time=1, ids=worst), CENTRE)
    assert contract.receipt_frame_size(r) <= MESH_PAYLOAD_BYTES


@settings(max_examples=50, deadline=None)
@given(st.lists(transition_ids | numbered_ids, min_size=1, max_size=80, unique=True))
def test_receipts_for_cuts_a_batch_into_mesh_sized_receipts(ids: list[str]) -> None:
    parts = contract.receipts_for(hub="hub-1", time=5, ids=ids + ids[:3])
    assert sorted(i for p in parts for i in p["ids"]) == sorted(ids)
    for p in parts:
        assert 1 <= len(p["ids"]) <= contract.MAX_RECEIPT_IDS
        assert contract.receipt_frame_size(sign("receipt", p, CENTRE)) <= MESH_PAYLOAD_BYTES


def test_every_altered_byte_of_a_compact_receipt_is_caught() -> None:
    r = sign("receipt", contract.receipt_payload(hub="hub-1", time=1763712001,
                                                 ids=["hub-1:7:raised:0", "hub-1:7:escalated:40", "hub-1:e9",
                                                      "hub-1:s300"]), CENTRE)
    compact = encode_receipt(r)
    assert decode_receipt(compact) == r
    for i in range(len(compact)):
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(compact)
            data[i] ^= flip
            try:
                rebuilt = decode_receipt(bytes(data))
            except ContractError as e:
                assert e.code == "bad_receipt"
                continue
            with refusal("bad_signature"):
                check_receipt(rebuilt, hub=rebuilt["hub"], centre_key=CENTRE.public_key())
    for n in range(len(compact)):
        with refusal("bad_receipt"):
            decode_receipt(compact[:n])
    with refusal("bad_receipt"):
        decode_receipt(compact + b"\x00")


def test_compact_receipts_are_strict() -> None:
    sig = bytes(64)
    head = bytes([5]) + b"hub-1" + (7).to_bytes(4, "big")
    assert decode_receipt(head + b"\x01" + bytes([1 << 5, 7]) + sig)["ids"] == ["hub-1:7:raised:0"]
    for body in (
        b"\x00",                                         # no ids
        b"\x11" + bytes([1 << 5, 7]) * 17,               # 17 ids
        b"\x02" + bytes([1 << 5, 7]) * 2,                # one id twice
        b"\x01" + bytes([1 << 5, 0]),                    # alert seq 0
        b"\x01" + bytes([6 << 5, 0]),                    # event number 0
        b"\x01" + bytes([6 << 5 | 1, 7]),                # a level on a routine id
        b"\x01" + bytes([0, 7]),                         # unknown id kind
        b"\x01" + bytes([1 << 5, 0x87, 0x00]),           # a needless zero byte
        b"\x01" + bytes([1 << 5 | 31, 3, 7]),            # a small level written long
        b"\x01" + bytes([1 << 5]) + b"\xff" * 9,         # a number of more than 8 bytes
    ):
        with refusal("bad_receipt"):
            decode_receipt(head + body + sig)
    with refusal("bad_receipt"):
        decode_receipt(bytes([5]) + b"hub:1" + bytes(4) + b"\x01\x20\x07" + sig)
    with refusal("bad_receipt"):
        decode_receipt(bytes(300))
    unsigned = contract.receipt_payload(hub="hub-1", time=1, ids=["hub-1:e1"])
    with pytest.raises(ValueError):
        encode_receipt(unsigned)
    signed = sign("receipt", unsigned, CENTRE)
    bad: dict[str, Any]
    for bad in ({"time": 2**32}, {"time": 1.5}, {"time": True}, {"hub": "hub:1"}, {"ids": "hub-1:e1"},
                {"ids": ["hub-2:e1"]}, {"ids": []}, {"ids": [f"hub-1:e{2**56}"]}):
        with pytest.raises(ValueError):
            encode_receipt({**signed, **bad})
    with pytest.raises(ValueError):
        encode_receipt({k: v for k, v in signed.items() if k != "ids"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=240))
def test_decode_receipt_raises_only_the_contracts_error(data: bytes) -> None:
    try:
        decode_receipt(data)
    except ContractError as e:
        assert e.code == "bad_receipt"


# --- commands and replies -------------------------------------------------------------------


def _check(cmd: dict[str, Any], *, now: float = 1763712010.0, synced: bool = True,
           seen: frozenset[str] = frozenset(), newest: float | None = None,
           hub: str = "hub-1") -> contract.AcceptedCommand:
    return check_command(wire(cmd), hub=hub, centre_key=CENTRE.public_key(), now=now, clock_synced=synced,
                         seen=seen.__contains__, newest=newest)


def test_a_signed_fresh_new_command_for_this_hub_is_accepted() -> None:
    accepted = _check(sign("command", command(), CENTRE))
    assert accepted.note is None and accepted.id == "5b0c7e2a" and accepted.command["cmd"] == "ack"
    assert accepted.time == 1763712005.0


def test_commands_are_the_centres_alone() -> None:
    cmd = command()
    with refusal("unsigned"):
        _check(cmd)
    with refusal("bad_signature"):
        _check(sign("command", cmd, HUB1))  # a hub's key is not the centre's
    with refusal("bad_signature"):
        _check({**sign("command", cmd, CENTRE), "cmd": "silence"})
    with refusal("wrong_hub"):
        _check(sign("command", cmd, CENTRE), hub="hub-2")
    with refusal("stale"):
        _check(sign("command", cmd, CENTRE), now=1763712005.0 + 301)
    with refusal("stale"):
        _check(sign("command", cmd, CENTRE), now=1763712005.0 - 301)
    _check(sign("command", cmd, CENTRE), now=1763712005.0 + 300)
    with refusal("replayed"):
        _check(sign("command", cmd, CENTRE), seen=frozenset({"5b0c7e2a"}))
    with refusal("unsupported_version"):
        _check({**sign("command", cmd, CENTRE), "v": 1})
    # Unauthenticated bytes get no say: a forged command is refused as forged whatever else is wrong.
    with refusal("bad_signature"):
        _check(sign("command", {**cmd, "hub": "hub-2", "time": 0}, HUB1), seen=frozenset({"5b0c7e2a"}))


def test_a_hub_without_a_synchronised_clock_judges_by_order_and_id() -> None:
    cmd = sign("command", command(), CENTRE)
    accepted = _check(cmd, now=0.0, synced=False)
    assert accepted.note and "not synchronised" in accepted.note
    _check(cmd, now=0.0, synced=False, newest=1763712005.0 + 300)
    with refusal("stale"):
        _check(cmd, now=0.0, synced=False, newest=1763712005.0 + 301)
    with refusal("replayed"):
        _check(cmd, now=0.0, synced=False, seen=frozenset({"5b0c7e2a"}))


@given(st.floats(0, 2e9), st.floats(0, 2e9), st.floats(0, 2e9), st.booleans(), st.floats(1, 3600))
def test_a_command_that_could_pass_again_is_still_remembered(sent: float, newest: float, now: float,
                                                             synced: bool, window: float) -> None:
    cmd = sign("command", command(time=sent), CENTRE)
    try:
        check_command(cmd, hub="hub-1", centre_key=CENTRE.public_key(), now=now, clock_synced=synced,
                      seen=lambda _: False, newest=newest, window=window)
    except ContractError as e:
        assert e.code == "stale"
        return
    # It passes the freshness check, so the hub must still hold its id.
    assert sent >= contract.command_horizon(newest, now, synced, window)


def test_replies_are_signed_by_the_hub_and_name_every_refusal() -> None:
    reply = sign("reply", contract.error_reply_v2(hub="hub-1", command_id="c", time=2.0, code="replayed",
                                                  message="seen"), HUB1)
    assert check_signed("reply", wire(reply), key_of) == "hub-1"
    with refusal("bad_signature"):
        check_signed("reply", {**reply, "ok": True}, key_of)
    with refusal("unknown_origin"):
        check_signed("reply", {**reply, "hub": "hub-3"}, key_of)
    with refusal("unsupported_version"):
        check_signed("reply", {**reply, "v": 1}, key_of)
    # Every code a hub can refuse a command with has its place in the reply schema.
    reply_codes = set(contract.schema("reply-v2")["properties"]["error"]["properties"]["code"]["enum"])
    command_codes = {"too_large", "bad_json", "too_deep", "too_many_keys", "bad_request",
                     "unsupported_version", "unsigned", "bad_signature", "wrong_hub", "stale", "replayed"}
    assert command_codes <= reply_codes and command_codes <= set(CODES)
    v1_codes = set(contract.schema("reply")["properties"]["error"]["properties"]["code"]["enum"])
    assert v1_codes <= reply_codes


# --- status and Last Will -------------------------------------------------------------------


def test_status_and_will_are_signed_and_supervisable() -> None:
    s = status()
    assert (s["seq"], s["report_every"], s["uptime"], s["online"]) == (12, 30, 0.0, True)
    assert contract.status_id("hub-1", s["seq"]) == "hub-1:s12"
    will = contract.will_payload_v2(hub="hub-1", ward="ward-7", connected_at=1763711000.0)
    assert "time" not in will and "seq" not in will and will["connected_at"] == s["connected_at"]
    for payload in (s, will):
        signed = wire(sign("status", payload, HUB1))
        assert check_signed("status", signed, key_of) == "hub-1"
        with refusal("bad_signature"):
            check_signed("status", {**signed, "online": not signed["online"]}, key_of)
    # A Will signed for one connection cannot stand for another.
    other = sign("status", will, HUB1)
    with refusal("bad_signature"):
        check_signed("status", {**other, "connected_at": 1763712000.0}, key_of)
    assert contract.DEFAULT_REPORT_EVERY == 30


# --- ids and topics -------------------------------------------------------------------------


@given(st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True), st.integers(1, 2**53))
def test_status_ids_build_parse_and_name_their_origin(hub: str, n: int) -> None:
    text = contract.status_id(hub, n)
    assert contract.parse_status_id(text) == contract.StatusId(hub, n)
    assert str(contract.StatusId(hub, n)) == text
    assert contract.origin_of(text) == hub
    assert contract.parse_event_id(text) is None and contract.parse_alert_id(text) is None


@pytest.mark.parametrize("text", ["hub-1:s0", "hub-1:s07", "hub-1:s", "hub-1:S4", "hub-1:s4:x", ":s4"])
def test_malformed_status_ids_are_refused(text: str) -> None:
    assert contract.parse_status_id(text) is None
    with pytest.raises(ValueError):
        contract.origin_of(text)


@settings(max_examples=200)
@given(small_ids | transition_ids | numbered_ids)
def test_schema_id_patterns_are_the_parsers(text: str) -> None:
    import re

    event_pattern = contract.schema("event-v2")["properties"]["id"]["pattern"]
    receipt_pattern = contract.schema("receipt-v2")["properties"]["ids"]["items"]["pattern"]
    assert re.search(receipt_pattern, text)
    assert bool(re.search(event_pattern, text)) == (contract.parse_event_id(text) is not None)


def test_the_receipt_topic() -> None:
    t = contract.Topics("safercom/v2", "ward-7", "hub-1")
    assert t.receipt == "safercom/v2/ward-7/hub-1/receipt"
    assert contract.parse_topic("safercom/v2", t.receipt) == contract.TopicRef("ward-7", "hub-1", "receipt")
    assert contract.topic_filter("safercom/v2", "receipt", ward="ward-7") == "safercom/v2/ward-7/+/receipt"
