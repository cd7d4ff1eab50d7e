"""What one MQTT message is, decided before anything is stored: an event, a status, a
command reply, a snapshot, or refused with a reason (to quarantine).

``classify`` is pure: the topic, the bytes and the registry in, a verdict out. It never
raises for anything a sender can put on the wire. Its checks, in order: a topic of the
contract under the centre's root; the size; an enrolled hub of the right ward; UTF-8 JSON
object; the schema; the ids and topics agreeing on whose message it is (an event about hub
X is X's: its id, its alert's id and the topic, unless a neighbour relayed it); and the
trust (``trust``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hubd.centre import trust
from hubd.centre.registry import HubRecord
from hubd.contract import (
    TransitionEventId,
    origin_of,
    parse_alert_id,
    parse_event_id,
    parse_topic,
    problems,
)

#: Leaves of a hub's topic the centre reads (``snapshots/<alert-id>`` too).
LEAVES = ("events", "status", "reply")
SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class Received:
    """One MQTT message as it arrived."""

    topic: str
    payload: bytes
    qos: int = 1
    mid: int = 0
    retain: bool = False
    #: The centre's wall clock and monotonic clock when it arrived.
    received_at: float = 0.0
    received_mono: float = 0.0
    correlation: bytes | None = None


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 8192
    max_snapshot_bytes: int = 2 * 1024 * 1024


@dataclass(frozen=True)
class EventMessage:
    envelope: dict[str, Any]
    #: The hub where it happened, and its ward.
    origin: str
    ward: str
    #: The hub whose topic it came on (the origin, or the neighbour that relayed it).
    carrier: str
    #: direct | relayed | mesh
    path: str
    #: The relaying hub ("" when direct).
    via: str
    trust: str

    @property
    def id(self) -> str:
        return str(self.envelope["id"])

    @property
    def alert(self) -> dict[str, Any] | None:
        return self.envelope.get("alert")


@dataclass(frozen=True)
class StatusMessage:
    hub: str
    ward: str
    status: dict[str, Any]
    trust: str

    @property
    def online(self) -> bool:
        return bool(self.status["online"])


@dataclass(frozen=True)
class ReplyMessage:
    hub: str
    ward: str
    reply: dict[str, Any]
    trust: str


@dataclass(frozen=True)
class SnapshotMessage:
    hub: str
    ward: str
    alert_id: str
    jpeg: bytes


@dataclass(frozen=True)
class Refused:
    """Quarantined: ``code`` is short and countable, ``reason`` says what was wrong."""

    code: str
    reason: str
    ward: str | None = None
    hub: str | None = None


Classified = EventMessage | StatusMessage | ReplyMessage | SnapshotMessage | Refused


def classify(msg: Received, *, root: str, hubs: Mapping[str, HubRecord], limits: Limits) -> Classified:
    """The verdict on one message."""
    ref = parse_topic(root, msg.topic)
    if ref is None:
        return Refused("bad_topic", f"not a hub topic under {root}/<ward>/<hub>/")
    leaf = ref.leaf
    is_snapshot = leaf.startswith(SNAPSHOTS + "/") and leaf.count("/") == 1
    if leaf not in LEAVES and not is_snapshot:
        return Refused("bad_topic", f"the centre does not read {leaf!r} topics", ref.ward, ref.hub)
    limit = limits.max_snapshot_bytes if is_snapshot else limits.max_message_bytes
    if len(msg.payload) > limit:
        return Refused("too_large", f"{len(msg.payload)} bytes; at most {limit} on {leaf.split('/')[0]}",
                       ref.ward, ref.hub)
    carrier = hubs.get(ref.hub)
    if carrier is None:
        return Refused("unknown_hub", f"hub {ref.hub} (ward {ref.ward}) is not enrolled", ref.ward, ref.hub)
    if carrier.ward != ref.ward:
        return Refused("wrong_ward", f"hub {ref.hub} is enrolled in ward {carrier.ward}, not {ref.ward}",
                       ref.ward, ref.hub)
    if is_snapshot:
        alert = leaf.split("/", 1)[1]
        parsed = parse_alert_id(alert)
        if parsed is None or parsed.hub != ref.hub:
            return Refused("wrong_origin", f"snapshot for {alert!r}, which is not an alert of {ref.hub}",
                           ref.ward, ref.hub)
        return SnapshotMessage(ref.hub, ref.ward, alert, msg.payload)

    try:
        payload = json.loads(msg.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return Refused("bad_json", f"not UTF-8 JSON: {e}", ref.ward, ref.hub)
    if not isinstance(payload, dict):
        return Refused("bad_json", f"a JSON {type(payload).__name__}, not an object", ref.ward, ref.hub)
    schema = {"events": "event", "status": "status", "reply": "reply"}[leaf]
    wrong = problems(schema, payload)
    if wrong:
        return Refused("schema", f"not a valid {schema}: " + "; ".join(wrong[:3]), ref.ward, ref.hub)
    try:
        if leaf == "events":
            return _event(payload, carrier, hubs, ref.ward)
        if payload["hub"] != ref.hub or (leaf == "status" and payload["ward"] != ref.ward):
            return Refused("wrong_origin",
                           f"{schema} names hub {payload['hub']} but came on {ref.hub}'s topic",
                           ref.ward, ref.hub)
        if leaf == "status":
            return StatusMessage(ref.hub, ref.ward, payload, trust.message_trust("status", payload, carrier))
        return ReplyMessage(ref.hub, ref.ward, payload, trust.message_trust("reply", payload, carrier))
    except trust.Untrusted as e:
        return Refused(e.code, str(e), ref.ward, ref.hub)


def _event(env: dict[str, Any], carrier: HubRecord, hubs: Mapping[str, HubRecord],
           topic_ward: str) -> Classified:
    origin_id, relayed_by = env["hub"], env.get("relayed_by")
    where = (topic_ward, carrier.id)
    if relayed_by is None:
        if origin_id != carrier.id:
            return Refused("wrong_origin", f"event of hub {origin_id} on hub {carrier.id}'s topic, "
                                           "without relayed_by", *where)
        path, via = "direct", ""
    else:
        if relayed_by != carrier.id:
            return Refused("wrong_origin",
                           f"relayed_by {relayed_by}, but it came on hub {carrier.id}'s topic", *where)
        if origin_id == carrier.id:
            return Refused("wrong_origin", f"hub {origin_id} says it relayed its own event", *where)
        path, via = ("mesh" if env.get("path") == "mesh" else "relayed"), carrier.id
    try:
        id_origin = origin_of(env["id"])
    except ValueError:
        return Refused("bad_id", f"event id {env['id']!r} is not an id of the contract", *where)
    if id_origin != origin_id:
        return Refused("wrong_origin", f"event id {env['id']} belongs to hub {id_origin}, not {origin_id}",
                       *where)
    alert = env.get("alert")
    if alert is not None and (alert["hub"] != origin_id or parse_alert_id(alert["id"]) is None
                              or origin_of(alert["id"]) != origin_id):
        return Refused("wrong_origin",
                       f"alert {alert['id']} of hub {alert['hub']} in an event of {origin_id}", *where)
    parsed = parse_event_id(env["id"])
    if isinstance(parsed, TransitionEventId) and (
            parsed.event_type != env["type"] or alert is None or str(parsed.alert) != alert["id"]):
        return Refused("inconsistent", f"event id {env['id']} does not match its type {env['type']} "
                                       "and alert", *where)
    origin = hubs.get(origin_id)
    if origin is None:
        return Refused("unknown_hub", f"hub {origin_id} (ward {env['ward']}), relayed by {carrier.id}, "
                                      "is not enrolled", env["ward"], origin_id)
    if origin.ward != env["ward"]:
        return Refused("wrong_ward", f"hub {origin_id} is enrolled in ward {origin.ward}, not {env['ward']}",
                       *where)
    try:
        level = trust.event_trust(env, origin, carrier)
    except trust.Untrusted as e:
        return Refused(e.code, str(e), *where)
    return EventMessage(envelope=env, origin=origin_id, ward=origin.ward, carrier=carrier.id, path=path,
                        via=via, trust=level)
