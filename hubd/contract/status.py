"""Status of contract version 2: signed, numbered, with the hub's reporting promise.

A hub publishes its status (retained, signed, kind ``status``) at least every
``report_every`` seconds, and the centre answers each one with a receipt naming its id
``<hub>:s<seq>``: that round trip supervises the MQTT path both ways by traffic, not by TCP
state. ``seq`` is never reused (kept like the event numbers), so an old receipt cannot pass
for a new one.

``connected_at`` is the time the hub's current MQTT connection was made, in every status and
in the Last Will set at that connect: the Will is signed then, and a Will whose
``connected_at`` is older than that of a status the centre already has comes from an older
connection (a replay) and is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hubd.contract.envelope import CONTRACT_V2
from hubd.contract.payloads import power_fields

#: Seconds between statuses unless the hub's configuration says otherwise.
DEFAULT_REPORT_EVERY = 30


def status_payload_v2(*, hub: str, ward: str, seq: int, time: float, report_every: float,
                      connected_at: float, name: str, version: str, uptime: float, clock_synced: bool,
                      components: Mapping[str, Any], outbox: Mapping[str, Any],
                      open_alerts: int, power: Mapping[str, Any] | None = None,
                      tamper: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The unsigned status of an online hub (schema ``status-v2``); as version 1 plus ``seq``,
    ``report_every`` and ``connected_at``. Sign it with ``sign("status", ...)``."""
    return {
        "v": CONTRACT_V2, "hub": hub, "ward": ward, "online": True, "seq": seq, "time": time,
        "report_every": report_every, "connected_at": connected_at, "name": name, "version": version,
        "uptime": max(0.0, uptime), "clock_synced": clock_synced, "components": dict(components),
        "outbox": dict(outbox), "open_alerts": open_alerts, **power_fields(power, tamper),
    }


def stopped_payload_v2(*, hub: str, ward: str, seq: int, time: float, connected_at: float,
                       power: Mapping[str, Any] | None = None,
                       tamper: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The unsigned status a hub publishes when it stops cleanly (``reason`` 'stopped'; its
    ``power`` says ``shutting_down`` when the hub powered itself down)."""
    return {"v": CONTRACT_V2, "hub": hub, "ward": ward, "online": False, "reason": "stopped", "seq": seq,
            "time": time, "connected_at": connected_at, **power_fields(power, tamper)}


def will_payload_v2(*, hub: str, ward: str, connected_at: float) -> dict[str, Any]:
    """The unsigned Last Will for the connection made at ``connected_at`` (``reason``
    'connection lost'; no ``time``: the broker publishes it later). Sign it at connect time."""
    return {"v": CONTRACT_V2, "hub": hub, "ward": ward, "online": False, "reason": "connection lost",
            "connected_at": connected_at}
