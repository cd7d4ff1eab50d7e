"""Reading untrusted bytes (hubd.contract.parse_untrusted): the documented bounds, I-JSON, the
schema, and, fuzzed with hypothesis, that nothing but the contract's own error ever comes out,
also of check_envelope, check_command and check_receipt on whatever it lets through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd import contract
from hubd.contract import BOUNDS, Bounds, ContractError, Trust, parse_untrusted, sign

HUB1, CENTRE = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def _envelope() -> dict[str, Any]:
    alert = {"id": "hub-1:7", "hub": "hub-1", "seq": 7, "kind": "panic", "source": "gate",
             "zone": "Market gate", "state": "raised", "outcome": None, "level": 0, "silent": False,
             "raised_at": 1763712000.12, "updated_at": 1763712000.12, "severity": 1}
    return sign("event", contract.event_envelope_v2(
        id="hub-1:7:raised:0", type="alert.raised", time=1763712000.12, ward="ward-7", hub="hub-1",
        actor="button:gate", data={}, alert=alert), HUB1)


ENVELOPE = _envelope()
RAW = contract.dumps(ENVELOPE)


def refused(code: str, raw: bytes, schema: str = "event-v2") -> ContractError:
    with pytest.raises(ContractError) as info:
        parse_untrusted(raw, schema)
    assert info.value.code == code, info.value
    return info.value


def test_the_bounds_are_the_documented_ones() -> None:
    assert BOUNDS["event-v2"] == Bounds(max_bytes=8192, max_depth=8, max_keys=32)
    assert BOUNDS["command-v2"] == Bounds(8192, 8, 32) and BOUNDS["receipt-v2"] == Bounds(4096, 8, 32)
    assert BOUNDS["status-v2"] == Bounds(8192, 8, 64) and BOUNDS["reply-v2"] == Bounds(16384, 8, 64)
    assert BOUNDS["command-v2"].max_bytes == contract.MAX_COMMAND_BYTES


def test_a_good_envelope_reads_back() -> None:
    assert parse_untrusted(RAW, "event-v2") == ENVELOPE
    assert parse_untrusted(bytearray(RAW), "event-v2") == ENVELOPE
    assert parse_untrusted(memoryview(RAW), "event-v2") == ENVELOPE
    pretty = json.dumps(ENVELOPE, indent=1, ensure_ascii=False).encode()
    assert parse_untrusted(pretty, "event-v2") == ENVELOPE


def test_size_is_checked_first() -> None:
    big = {**ENVELOPE, "data": {"note": "x" * 8200}}
    err = refused("too_large", contract.dumps(big))
    assert "8192" in err.message
    refused("too_large", b"\xff" * 8193)  # not even read


@pytest.mark.parametrize("raw", [
    b"\xff\xfe{}", b"\xef\xbb\xbf{}", '{"a":"é"}'.encode("utf-16"), b"", b"{", b"{}}", b"{'a':1}",
    b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}',
    b'{"a":1e400}', b'{"a":-1e999}', b'{"a":9007199254740993}', b'{"a":-9007199254740993}',
    b'{"a":' + b"1" * 5000 + b"}", b'{"a":"\\ud800"}', b'{"\\udfff":1}', b"\x00",
])
def test_json_that_i_json_refuses_is_bad_json(raw: bytes) -> None:
    refused("bad_json", raw)


def test_nesting_and_keys_are_bounded() -> None:
    def nested(depth: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for _ in range(depth - 2):  # the envelope is depth 1, data depth 2
            data = {"d": data}
        return {**ENVELOPE, "data": data}

    assert parse_untrusted(contract.dumps(nested(8)), "event-v2")["data"]
    refused("too_deep", contract.dumps(nested(9)))
    refused("too_deep", b"[" * 4000 + b"]" * 4000)  # deeper than json.loads recurses
    refused("too_deep", b"{\"a\":" * 1300 + b"1" + b"}" * 1300)
    parse_untrusted(contract.dumps({**ENVELOPE, "data": {f"k{i}": i for i in range(32)}}), "event-v2")
    refused("too_many_keys", contract.dumps({**ENVELOPE, "data": {f"k{i}": i for i in range(33)}}))


def test_the_schema_comes_last_and_the_version_first() -> None:
    err = refused("bad_request", contract.dumps({**ENVELOPE, "hub": "hub 1"}))
    assert err.message.startswith("hub:")
    refused("bad_request", b"[]")
    refused("bad_request", b'"text"')
    v1 = contract.event_envelope(id="hub-1:e1", type="siren.test", time=1.0, ward="w", hub="hub-1",
                                 actor="system", data={})
    refused("unsupported_version", contract.dumps(v1))
    assert parse_untrusted(contract.dumps(v1), "event") == v1  # a centre reading version 1 too
    refused("unsupported_version", contract.dumps({**ENVELOPE, "v": "2"}))


def test_each_payload_reads_by_its_own_schema() -> None:
    receipt = sign("receipt", contract.receipt_payload(hub="hub-1", time=5, ids=["hub-1:e1"]), CENTRE)
    assert parse_untrusted(contract.dumps(receipt), "receipt-v2") == receipt
    refused("bad_request", contract.dumps(receipt), "command-v2")
    command = sign("command", contract.command_payload_v2(id="c", cmd="status", hub="hub-1", time=1.0,
                                                          by="operator:alice"), CENTRE)
    assert parse_untrusted(contract.dumps(command), "command-v2") == command


# --- fuzzing --------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=6), max_leaves=40)


def _only_contract_errors(raw: bytes, schema: str) -> Any:
    try:
        return parse_untrusted(raw, schema)
    except ContractError as e:
        assert e.code in contract.errors.CODES
        return None


def _believe(value: Any) -> None:
    """What a receiver does next must not raise anything but ContractError either."""
    verdict = contract.check_envelope(value, lambda hub: HUB1.public_key() if hub == "hub-1" else None)
    assert isinstance(verdict.trust, Trust)
    for check in (
        lambda: contract.check_command(value, hub="hub-1", centre_key=CENTRE.public_key(), now=1.0,
                                       clock_synced=True, seen=lambda _: False),
        lambda: contract.check_receipt(value, hub="hub-1", centre_key=CENTRE.public_key()),
        lambda: contract.check_signed("status", value, lambda _: HUB1.public_key()),
    ):
        try:
            check()
        except ContractError:
            pass


SCHEMAS = st.sampled_from(["event-v2", "status-v2", "command-v2", "reply-v2", "receipt-v2", "event"])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), SCHEMAS)
def test_fuzz_any_bytes(raw: bytes, schema: str) -> None:
    _only_contract_errors(raw, schema)


@settings(max_examples=400, deadline=None)
@given(json_values, SCHEMAS)
def test_fuzz_any_json(value: Any, schema: str) -> None:
    raw = json.dumps(value).encode()  # NaN and Infinity included, as json.dumps writes them
    parsed = _only_contract_errors(raw, schema)
    _believe(parsed if parsed is not None else value)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_altered_envelopes(data: st.DataObject) -> None:
    raw = bytearray(RAW)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[at:at + data.draw(st.integers(1, 40))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        if not raw:
            break
    parsed = _only_contract_errors(bytes(raw), "event-v2")
    if parsed is not None:
        verdict = contract.check_envelope(parsed, lambda hub: HUB1.public_key() if hub == "hub-1" else None)
        # Whatever got through the schema, only the untouched meaning keeps the origin's signature.
        if verdict.trust is Trust.SIGNED:
            assert contract.canonical(contract.signing.signed_part("event", parsed)) == \
                contract.canonical(contract.signing.signed_part("event", ENVELOPE))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(ENVELOPE) + ["attested", "relayed_by", "path", "x"]),
                       json_values, max_size=12))
def test_fuzz_envelope_shaped_dicts(fields: dict[str, Any]) -> None:
    _believe({**ENVELOPE, **fields})
    _believe(fields)
