"""The versioned event envelope of contract version 1, and the bytes a payload is published as.

``dumps`` is the form published: compact JSON, keys in the order they were built. The form a
signature covers is ``hubd.contract.canonical`` (contract version 2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The contract's version, the ``v`` of every payload. A change that breaks a consumer gets a
#: new version and a new topic root (docs/mqtt-contract.md).
CONTRACT_VERSION = 1
#: Version 2 (signed, confirmed, supervised: docs/mqtt-contract.md) is agreed and built in this
#: package; hubs publish ``CONTRACT_VERSION`` until they switch.
CONTRACT_V2 = 2


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
