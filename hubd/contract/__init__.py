"""The wire contract, version 1: what hubs and the centre say to each other over MQTT.

One package that both sides import: the topics of any ward and hub (``topics``), the formats of
alert and event ids (``ids``), the versioned event envelope and the canonical byte form
(``envelope``), the payloads a hub publishes (``payloads``) and the JSON Schemas that are the
normative part (``schemas``, with the files in ``schemas/*.json``). docs/mqtt-contract.md
describes it in words for the centre's developers.

Why it lives here, below everything else: the hub's core (``hubd.model``) builds envelopes and
must import no adapter (``hubd.radio``, ``hubd.web``, ``hubd.sensors``), while the centre must
import none of the hub's core. So the contract is the lowest layer: it imports nothing of hubd
(no ``hubd.config``, ``hubd.model``, ``hubd.store``, ``hubd.lifecycle``, ``hubd.commands``, no
adapter), and of third-party code only jsonschema. Its builders take plain values, never the
hub's objects; hub-only helpers (a ``Topics`` from the hub's config, a status payload from
``Hub.status()``) stay in the hub.
"""

from hubd.contract.envelope import CONTRACT_VERSION, canonical, dumps, event_envelope
from hubd.contract.ids import (
    HUB_PATTERN,
    TRANSITION_EVENT_TYPES,
    WARD_PATTERN,
    AlertId,
    RoutineEventId,
    TransitionEventId,
    alert_id,
    origin_of,
    parse_alert_id,
    parse_event_id,
    routine_event_id,
    transition_event_id,
)
from hubd.contract.payloads import (
    MAX_COMMAND_BYTES,
    MQTT_COMMANDS,
    error_reply,
    offline_payload,
    outgoing_envelope,
    reply_payload,
    status_payload,
)
from hubd.contract.schemas import problems, schema
from hubd.contract.topics import TopicRef, Topics, parse_topic, topic_filter

__all__ = [
    "CONTRACT_VERSION", "canonical", "dumps", "event_envelope",
    "HUB_PATTERN", "WARD_PATTERN", "TRANSITION_EVENT_TYPES", "AlertId", "RoutineEventId",
    "TransitionEventId", "alert_id", "origin_of", "parse_alert_id", "parse_event_id",
    "routine_event_id", "transition_event_id",
    "MAX_COMMAND_BYTES", "MQTT_COMMANDS", "error_reply", "offline_payload", "outgoing_envelope",
    "reply_payload", "status_payload",
    "problems", "schema",
    "TopicRef", "Topics", "parse_topic", "topic_filter",
]
