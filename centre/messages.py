"""What one MQTT message is, decided before anything is stored: an event, a status, a
command reply, a snapshot, or refused with a reason (to quarantine).

``classify`` is pure: the topic, the bytes and the registry in, a verdict out. It never
raises for anything a sender can put on the wire. Its checks, in order: a topic of the
contract under one of the centre's roots (version 2's, or version 1's during the
migration); an enrolled hub of the right ward; the bytes, read with the contract's
``parse_untrusted`` (size, I-JSON, depth, keys, ``v``, schema); the ids and topics agreeing on
whose message it is (``check_origin``: an event about hub X is X's, and on another hub's topic
only when that hub says it relayed it); and the trust (``trust``: signatures for version 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hubd.centre import trust
from hubd.centre.registry import HubRecord
from hubd.contract import (
    ContractError,
    KeyLookup,
    TopicRef,
    check_origin,
    parse_alert_id,
    parse_topic,
    parse_untrusted,
)

#: Leaves of a hub's topic the centre reads (``snapshots/<alert-id>`` too).
LEAVES = ("events", "status", "reply")
SNAPSHOTS = "snapshots"
#: The schema of each leaf, by contract version.
SCHEMAS = {1: {"events": "event", "status": "status", "reply": "reply"},
           2: {"events": "event-v2", "status": "status-v2", "reply": "reply-v2"}}


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
    #: The topic root it came under (receipts go back under it) and its contract version.
    root: str
    version: int

    @property
    def id(self) -> str:
        return str(self.envelope["id"])

    @property
    def type(self) -> str:
        return str(self.envelope["type"])

    @property
    def alert(self) -> dict[str, Any] | None:
        return self.envelope.get("alert")


@dataclass(frozen=True)
class StatusMessage:
    hub: str
    ward: str
    status: dict[str, Any]
    trust: str
    root: str
    version: int

    @property
    def online(self) -> bool:
        return bool(self.status["online"])

    @property
    def seq(self) -> int | None:
        """Version 2: its number, which a receipt names (``<hub>:s<seq>``); a Will has none."""
        seq = self.status.get("seq")
        return seq if isinstance(seq, int) else None

    @property
    def connected_at(self) -> float | None:
        value = self.status.get("connected_at")
        return float(value) if isinstance(value, int | float) else None


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


def where(roots: Mapping[str, int], topic: str) -> tuple[str, int, TopicRef] | None:
    """The root a topic is under (the longest that fits), its contract version, and whose
    topic it is."""
    for root in sorted(roots, key=len, reverse=True):
        ref = parse_topic(root, topic)
        if ref is not None:
            return root, roots[root], ref
    return None


def classify(msg: Received, *, roots: Mapping[str, int], hubs: Mapping[str, HubRecord], key_of: KeyLookup,
             max_snapshot_bytes: int) -> Classified:
    """The verdict on one message."""
    found = where(roots, msg.topic)
    if found is None:
        under = " or ".join(f"{r}/<ward>/<hub>/" for r in roots)
        return Refused("bad_topic", f"not a hub topic under {under}")
    root, version, ref = found
    leaf = ref.leaf
    is_snapshot = leaf.startswith(SNAPSHOTS + "/") and leaf.count("/") == 1
    if leaf not in LEAVES and not is_snapshot:
        return Refused("bad_topic", f"the centre does not read {leaf!r} topics", ref.ward, ref.hub)
    carrier = hubs.get(ref.hub)
    if carrier is None:
        return Refused("unknown_hub", f"hub {ref.hub} (ward {ref.ward}) is not enrolled", ref.ward, ref.hub)
    if carrier.ward != ref.ward:
        return Refused("wrong_ward", f"hub {ref.hub} is enrolled in ward {carrier.ward}, not {ref.ward}",
                       ref.ward, ref.hub)
    if is_snapshot:
        return _snapshot(msg, ref, max_snapshot_bytes)
    schema = SCHEMAS[version][leaf]
    try:
        payload = parse_untrusted(msg.payload, schema)
        if leaf == "events":
            return _event(payload, carrier, hubs, key_of, ref, root, version)
        if payload["hub"] != ref.hub or (leaf == "status" and payload["ward"] != ref.ward):
            return Refused("wrong_origin", f"{leaf} names hub {payload['hub']} but came on {ref.hub}'s topic",
                           ref.ward, ref.hub)
        if leaf == "status":
            level = trust.message_trust("status", payload, version, carrier, key_of)
            return StatusMessage(ref.hub, ref.ward, payload, level, root, version)
        level = trust.message_trust("reply", payload, version, carrier, key_of)
        return ReplyMessage(ref.hub, ref.ward, payload, level)
    except ContractError as e:
        return Refused(e.code, f"{schema}: {e.message}", ref.ward, ref.hub)
    except trust.Untrusted as e:
        return Refused(e.code, str(e), ref.ward, ref.hub)


def _snapshot(msg: Received, ref: TopicRef, limit: int) -> Classified:
    if len(msg.payload) > limit:
        return Refused("too_large", f"snapshot of {len(msg.payload)} bytes; at most {limit}",
                       ref.ward, ref.hub)
    alert = ref.leaf.split("/", 1)[1]
    parsed = parse_alert_id(alert)
    if parsed is None or parsed.hub != ref.hub:
        return Refused("wrong_origin", f"snapshot for {alert!r}, which is not an alert of {ref.hub}",
                       ref.ward, ref.hub)
    return SnapshotMessage(ref.hub, ref.ward, alert, msg.payload)


def _event(env: dict[str, Any], carrier: HubRecord, hubs: Mapping[str, HubRecord], key_of: KeyLookup,
           ref: TopicRef, root: str, version: int) -> Classified:
    at = (ref.ward, ref.hub)
    origin_id = check_origin(env)  # ContractError when ids, hub and alert disagree
    relayed_by = env.get("relayed_by")
    if relayed_by is None:
        if origin_id != carrier.id:
            return Refused("wrong_origin", f"event of hub {origin_id} on hub {carrier.id}'s topic, "
                                           "without relayed_by", *at)
        path, via = "direct", ""
    else:
        if relayed_by != carrier.id:
            return Refused("wrong_origin",
                           f"relayed_by {relayed_by}, but it came on hub {carrier.id}'s topic", *at)
        if origin_id == carrier.id:
            return Refused("wrong_origin", f"hub {origin_id} says it relayed its own event", *at)
        path, via = ("mesh" if env.get("path") == "mesh" or "attested" in env else "relayed"), carrier.id
    origin = hubs.get(origin_id)
    if origin is None:
        return Refused("unknown_hub", f"hub {origin_id} (ward {env['ward']}), relayed by {carrier.id}, "
                                      "is not enrolled", env["ward"], origin_id)
    if origin.ward != env["ward"]:
        return Refused("wrong_ward", f"hub {origin_id} is enrolled in ward {origin.ward}, not {env['ward']}",
                       *at)
    level, _attested_by = trust.event_trust(env, version, origin, key_of)
    return EventMessage(envelope=env, origin=origin_id, ward=origin.ward, carrier=carrier.id, path=path,
                        via=via, trust=level, root=root, version=version)
