"""The versioned event envelope, and the two byte forms of a payload.

``dumps`` is the form published today: compact JSON, keys in the order they were built.
``canonical`` is the deterministic form that signatures (contract v2) will cover: the same
payload gives the same bytes whatever order its keys were built in, at every hub and at the
centre.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The contract's version, the ``v`` of every payload. A change that breaks a consumer gets a
#: new version and a new topic root (docs/mqtt-contract.md).
CONTRACT_VERSION = 1


def event_envelope(*, id: str, type: str, time: float, ward: str, hub: str, actor: str,
                   data: Mapping[str, Any], alert: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The wire form of one event (schema ``event``): ``hub`` is where it happened, ``alert``
    the alert's state after it (as a plain dict), when the event belongs to one."""
    env: dict[str, Any] = {
        "v": CONTRACT_VERSION, "id": id, "type": type, "time": time, "ward": ward, "hub": hub,
        "actor": actor, "data": data,
    }
    if alert is not None:
        env["alert"] = alert
    return env


def dumps(payload: Any) -> bytes:
    """Compact JSON as published (keys in build order, non-ASCII escaped)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def canonical(payload: Any) -> bytes:
    """The canonical bytes of a JSON payload, the form a signature covers.

    The rules: UTF-8 JSON, object keys sorted (by code point), no whitespace (``,`` and ``:``
    only), strings not escaped beyond what JSON requires (non-ASCII as UTF-8), integers in
    decimal, floats in Python's shortest form that reads back to the same value (``0.1``,
    ``1e+16``; a float stays a float: ``1.0``, not ``1``). Refused, with ValueError: NaN and
    infinities (not JSON), object keys that are not strings (JSON would turn ``1`` into
    ``"1"`` and two keys could collide), strings that are not valid Unicode (lone surrogates).
    TypeError for values JSON has no form for.

    ``canonical(json.loads(canonical(p))) == canonical(p)``: a receiver that parses the bytes
    it got gets the same canonical form back. This is not RFC 8785 (JCS), whose numbers follow
    ECMAScript; a consumer in another language must format floats as above.
    """
    _check_keys(payload)
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: {e}") from None


def _check_keys(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Mapping):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ValueError(f"object key {k!r} is not a string")
                stack.append(item)
        elif isinstance(v, list | tuple):
            stack.extend(v)
