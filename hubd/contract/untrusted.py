"""Reading bytes from the wire: bounds first, then JSON, then the schema.

Anything a peer sends is read with ``parse_untrusted(raw, schema)``. It checks, in this order
and each before spending more work: the size; UTF-8 and JSON as I-JSON (RFC 7493) allows it
(no duplicate keys, which two parsers could read differently under one signature; no NaN or
infinities; no integer beyond +-2**53; no lone surrogates); the nesting depth and the number of
keys of every object; and last the JSON Schema. It returns the parsed value or raises
``ContractError`` (``too_large``, ``bad_json``, ``too_deep``, ``too_many_keys``,
``unsupported_version`` for an object whose ``v`` is not the schema's, ``bad_request``), and
nothing else, whatever the bytes.

The bounds (``BOUNDS``, documented in docs/mqtt-contract.md) are far above what a hub sends
and far below what would cost a receiver: an event is at most 8 KiB, nested at most 8 deep
(the envelope is 1, its ``alert`` and ``data`` 2), no object has more than 32 keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hubd.contract.canonical import MAX_SAFE_INTEGER
from hubd.contract.errors import ContractError
from hubd.contract.schemas import problems, version


@dataclass(frozen=True)
class Bounds:
    """Limits on a payload, checked before its schema: bytes, nesting depth (the top-level
    value is depth 1) and keys of any one object."""

    max_bytes: int
    max_depth: int = 8
    max_keys: int = 32


#: The bounds of each payload, by schema name (version 1's, for a centre that reads both).
BOUNDS: dict[str, Bounds] = {
    "event-v2": Bounds(8192),
    "status-v2": Bounds(8192, max_keys=64),  # a hub's components: buttons, sirens, links
    "command-v2": Bounds(8192),
    "reply-v2": Bounds(16384, max_keys=64),  # may carry a status
    "receipt-v2": Bounds(4096),
    "event": Bounds(8192),
    "status": Bounds(8192, max_keys=64),
    "command": Bounds(8192),
    "reply": Bounds(16384, max_keys=64),
}


def parse_untrusted(raw: bytes | bytearray | memoryview, schema: str, bounds: Bounds | None = None) -> Any:
    """The JSON value in ``raw``, checked against ``bounds`` (default ``BOUNDS[schema]``) and
    the JSON Schema ``schema``; ContractError and nothing else when it is not acceptable."""
    limits = bounds or BOUNDS[schema]
    try:
        value = _read(raw, limits)
        expected = version(schema)
        if isinstance(value, dict) and expected is not None and value.get("v") != expected:
            raise ContractError("unsupported_version", f"v {value.get('v')!r}, read as version {expected}")
        found = problems(schema, value)
    except ContractError:
        raise
    except Exception as e:  # whatever slips through is still a refusal, never a crash
        raise ContractError("bad_json", f"unreadable ({type(e).__name__}: {e})") from None
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise ContractError("bad_request", "; ".join(found[:3]) + more)
    return value


def _read(raw: bytes | bytearray | memoryview, limits: Bounds) -> Any:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ContractError("bad_json", f"expected bytes, got {type(raw).__name__}")
    if len(raw) > limits.max_bytes:
        raise ContractError("too_large", f"{len(raw)} bytes; at most {limits.max_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractError("bad_json", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise ContractError("bad_json", "a byte order mark is not JSON")
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant,
                           parse_int=_integer, parse_float=_float)
    except RecursionError:
        raise ContractError("too_deep", f"nested deeper than {limits.max_depth}") from None
    except json.JSONDecodeError as e:
        raise ContractError("bad_json", f"not JSON: {e.msg} at character {e.pos}") from None
    _check_shape(value, limits)
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ContractError("bad_json", f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise ContractError("bad_json", f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 16:
        raise ContractError("bad_json", f"integer of {len(text)} digits is beyond +-2**53")
    n = int(text)
    if abs(n) > MAX_SAFE_INTEGER:
        raise ContractError("bad_json", f"integer {n} is beyond +-2**53")
    return n


def _float(text: str) -> float:
    x = float(text)
    if x in (float("inf"), float("-inf")):
        raise ContractError("bad_json", f"number {text[:40]} is out of range")
    return x


def _check_shape(value: Any, limits: Bounds) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list) and depth > limits.max_depth:
            raise ContractError("too_deep", f"nested deeper than {limits.max_depth}")
        if isinstance(v, dict):
            if len(v) > limits.max_keys:
                raise ContractError("too_many_keys", f"an object of {len(v)} keys; at most {limits.max_keys}")
            for k, item in v.items():
                _check_text(k)
                stack.append((item, depth + 1))
        elif isinstance(v, list):
            stack.extend((item, depth + 1) for item in v)
        elif isinstance(v, str):
            _check_text(v)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError("bad_json", "a string with a lone surrogate is not Unicode text") from None
