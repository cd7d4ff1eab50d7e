"""The MQTT wire contract, version 1: topics, payload builders and their JSON Schemas.

docs/mqtt-contract.md describes it for the central server's developers; the schemas in
``schemas/*.json`` are the normative part and the tests check every payload against them.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from hubd.config import Config

CONTRACT_VERSION = 1

#: Commands the centre may send over MQTT (the rest of the command path stays local).
MQTT_COMMANDS = ("ack", "resolve", "cancel", "silence", "siren_test", "status")

#: Larger command payloads are refused unread.
MAX_COMMAND_BYTES = 8192

SCHEMA_DIR = Path(__file__).parent / "schemas"


@dataclass(frozen=True)
class Topics:
    """The topics of one hub: ``<root>/<ward>/<hub>/...``."""

    root: str
    ward: str
    hub: str

    @classmethod
    def for_config(cls, config: Config) -> Topics:
        root = config.mqtt.root.strip("/") if config.mqtt else "safercom/v1"
        return cls(root, config.hub.ward, config.hub.id)

    @property
    def base(self) -> str:
        return f"{self.root}/{self.ward}/{self.hub}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    @property
    def cap(self) -> str:
        return f"{self.base}/cap"

    @property
    def ha_state(self) -> str:
        return f"{self.base}/ha/state"

    @property
    def ha_siren_set(self) -> str:
        return f"{self.base}/cmd/siren"

    def snapshot(self, alert_id: str) -> str:
        return f"{self.base}/snapshots/{alert_id}"

    def of(self, hub: str, leaf: str) -> str:
        """A topic of another hub of the same ward (a neighbour)."""
        return f"{self.root}/{self.ward}/{hub}/{leaf}"

    def split(self, topic: str) -> tuple[str, str] | None:
        """``(hub, leaf)`` for a topic of this ward, else None."""
        prefix = f"{self.root}/{self.ward}/"
        if not topic.startswith(prefix):
            return None
        hub, _, leaf = topic[len(prefix):].partition("/")
        return (hub, leaf) if hub and leaf else None


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/<name>.json`` (event, status, command, reply)."""
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    s = schema(name)
    cls = jsonschema.validators.validator_for(s)
    return cls(s)


def problems(name: str, payload: Any) -> list[str]:
    """What is wrong with ``payload`` under schema ``name`` (empty when it conforms)."""
    out = []
    for e in sorted(_validator(name).iter_errors(payload), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, e.absolute_path)) or "(top level)"
        out.append(f"{where}: {e.message}")
    return out


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def status_payload(status: dict[str, Any], online: bool = True) -> dict[str, Any]:
    """The retained status message built from ``Hub.status()``."""
    return {
        "v": CONTRACT_VERSION, "hub": status["hub"], "ward": status["ward"], "online": online,
        "time": time.time(), "name": status.get("name", ""), "version": status["version"],
        "uptime": max(0.0, status["uptime"]), "clock_synced": status["clock_synced"],
        "components": status["components"], "outbox": status["outbox"],
        "open_alerts": sum(1 for a in status["open_alerts"] if not a.get("remote")),
    }


def offline_payload(ward: str, hub: str, reason: str) -> dict[str, Any]:
    """Status for the Last Will ('connection lost') and for a clean stop ('stopped')."""
    payload: dict[str, Any] = {"v": CONTRACT_VERSION, "hub": hub, "ward": ward, "online": False,
                               "reason": reason}
    if reason != "connection lost":  # the Will is written at connect time; a time there would lie
        payload["time"] = time.time()
    return payload


def reply_payload(hub: str, command_id: str | None, reply: dict[str, Any],
                  repeated: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"v": CONTRACT_VERSION, "id": command_id, "hub": hub, "ok": bool(reply.get("ok"))}
    if repeated:
        out["repeated"] = True
    if out["ok"]:
        out["result"] = reply.get("result")
    else:
        out["error"] = reply.get("error") or {"code": "internal", "message": "no reply"}
    return out


def error_reply(hub: str, command_id: str | None, code: str, message: str) -> dict[str, Any]:
    return reply_payload(hub, command_id, {"ok": False, "error": {"code": code, "message": message}})


def outgoing_envelope(envelope: dict[str, Any], this_hub: str) -> dict[str, Any]:
    """The envelope as published: an event from another hub carries ``relayed_by``."""
    if envelope.get("hub") != this_hub and envelope.get("relayed_by") != this_hub:
        return {**envelope, "relayed_by": this_hub}
    return envelope
