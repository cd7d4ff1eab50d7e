"""The payloads a hub publishes besides events: status and Last Will, command replies, and
the envelope as it goes out; and the limits on the commands it takes.

Every builder takes plain values (the caller reads its own clock and its own state), so the
hub and anything that speaks for a hub, or checks one, build the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hubd.contract.envelope import CONTRACT_VERSION

#: Commands the centre may send over MQTT (the rest of the command path stays local).
MQTT_COMMANDS = ("ack", "resolve", "cancel", "silence", "siren_test", "status")

#: Larger command payloads are refused unread.
MAX_COMMAND_BYTES = 8192


def status_payload(*, hub: str, ward: str, time: float, name: str, version: str, uptime: float,
                   clock_synced: bool, components: Mapping[str, Any], outbox: Mapping[str, Any],
                   open_alerts: int, online: bool = True, power: Mapping[str, Any] | None = None,
                   tamper: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The retained status (schema ``status``) at ``time``: ``components`` maps a name to its
    health (``status``, ``reason``, ``since``), ``outbox`` a destination to its ``depth`` and
    ``oldest_age``; ``open_alerts`` counts the hub's own open alerts.  ``power`` and
    ``tamper`` are there only on hubs that have those sources (see ``power_fields``)."""
    return {
        "v": CONTRACT_VERSION, "hub": hub, "ward": ward, "online": online, "time": time,
        "name": name, "version": version, "uptime": max(0.0, uptime), "clock_synced": clock_synced,
        "components": components, "outbox": outbox, "open_alerts": open_alerts,
        **power_fields(power, tamper),
    }


def offline_payload(ward: str, hub: str, reason: str, time: float | None = None, *,
                    power: Mapping[str, Any] | None = None,
                    tamper: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status that says offline: ``reason`` 'connection lost' for the Last Will, 'stopped'
    for a clean stop. Give ``time`` only when it is the moment of publishing: the Will is
    written at connect time, and a time there would lie. A clean stop may say its ``power``
    (state ``shutting_down``: the hub powered itself down) and ``tamper``."""
    payload: dict[str, Any] = {"v": CONTRACT_VERSION, "hub": hub, "ward": ward, "online": False,
                               "reason": reason}
    if time is not None:
        payload["time"] = time
    payload.update(power_fields(power, tamper))
    return payload


#: Keys of the status's ``power`` object (schema ``status``, ``$defs/power``).
POWER_KEYS = ("state", "since", "mains", "battery", "voltage", "current", "time_left", "undervoltage",
              "throttled", "low_at", "critical_at")
#: Keys of the status's ``tamper`` object.
TAMPER_KEYS = ("open", "alert")


def power_fields(power: Mapping[str, Any] | None, tamper: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``power`` and ``tamper`` members of a status, for those given (the keys the schema
    knows, nothing else)."""
    out: dict[str, Any] = {}
    if power is not None:
        out["power"] = {k: power.get(k) for k in POWER_KEYS}
    if tamper is not None:
        out["tamper"] = {k: tamper.get(k) for k in TAMPER_KEYS}
    return out


def reply_payload(hub: str, command_id: str | None, reply: Mapping[str, Any],
                  repeated: bool = False) -> dict[str, Any]:
    """The reply to a command (schema ``reply``) from the command path's answer
    (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message"}}``)."""
    out: dict[str, Any] = {"v": CONTRACT_VERSION, "id": command_id, "hub": hub, "ok": bool(reply.get("ok"))}
    if repeated:
        out["repeated"] = True
    if out["ok"]:
        out["result"] = reply.get("result")
    else:
        out["error"] = reply.get("error") or {"code": "internal", "message": "no reply"}
    return out


def error_reply(hub: str, command_id: str | None, code: str, message: str) -> dict[str, Any]:
    """A refusal (schema ``reply``): ``code`` is one of the schema's error codes."""
    return reply_payload(hub, command_id, {"ok": False, "error": {"code": code, "message": message}})


def outgoing_envelope(envelope: dict[str, Any], this_hub: str) -> dict[str, Any]:
    """The envelope as ``this_hub`` publishes it: an event from another hub carries ``relayed_by``."""
    if envelope.get("hub") != this_hub and envelope.get("relayed_by") != this_hub:
        return {**envelope, "relayed_by": this_hub}
    return envelope
