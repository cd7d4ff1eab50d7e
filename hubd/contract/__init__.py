"""The wire contract: what hubs and the centre say to each other over MQTT (and, for receipts,
over the mesh).

One package that both sides import: the topics of any ward and hub (``topics``), the formats of
alert, event and status ids (``ids``), the JSON Schemas that are the normative part
(``schemas``, with the files in ``schemas/*.json``), and two versions of the payloads:

* version 1, what hubs publish today: the event envelope (``envelope``) and the status, Last
  Will and replies (``payloads``);
* version 2, signed, confirmed and supervised, agreed here before either side uses it: the
  canonical form a signature covers (``canonical``, RFC 8785), Ed25519 keys and their files
  (``keys``), signatures and ward attestations (``signing``), reading untrusted bytes within
  bounds (``untrusted``), signed envelopes and what to believe of them (``events``), receipts
  and their compact mesh form (``receipts``), centre-signed commands and signed replies
  (``commands``), signed status and Last Will (``status``); every refusal is one
  ``ContractError`` with a code (``errors``).

docs/mqtt-contract.md describes both in words for the centre's developers.

Why it lives here, below everything else: the hub's core (``hubd.model``) builds envelopes and
must import no adapter (``hubd.radio``, ``hubd.web``, ``hubd.sensors``), while the centre must
import none of the hub's core. So the contract is the lowest layer: it imports nothing of hubd
(no ``hubd.config``, ``hubd.model``, ``hubd.store``, ``hubd.lifecycle``, ``hubd.commands``, no
adapter), and of third-party code only jsonschema and cryptography. Its builders take plain
values, never the hub's objects, and its checks take the hub's state as plain values and
callables (a clock reading, ``seen(id)``, ``key_of(hub)``); hub-only helpers (a ``Topics``
from the hub's config, a status payload from ``Hub.status()``) stay in the hub.
"""

from hubd.contract.canonical import canonical
from hubd.contract.commands import (
    COMMAND_WINDOW,
    AcceptedCommand,
    check_command,
    command_horizon,
    command_payload_v2,
    error_reply_v2,
    reply_payload_v2,
)
from hubd.contract.envelope import CONTRACT_V2, CONTRACT_VERSION, dumps, event_envelope
from hubd.contract.errors import ContractError, KeyFileError
from hubd.contract.events import (
    ATTESTED_TRANSITIONS,
    WIRE_ALERT_FIELDS,
    Trust,
    Verdict,
    check_envelope,
    check_origin,
    event_envelope_v2,
    wire_alert,
)
from hubd.contract.ids import (
    HUB_PATTERN,
    TRANSITION_EVENT_TYPES,
    WARD_PATTERN,
    AlertId,
    RoutineEventId,
    StatusId,
    TransitionEventId,
    alert_id,
    origin_of,
    parse_alert_id,
    parse_event_id,
    parse_status_id,
    routine_event_id,
    status_id,
    transition_event_id,
)
from hubd.contract.keys import (
    generate_private_key,
    load_private_key,
    parse_public_key,
    public_key_text,
    save_private_key,
)
from hubd.contract.payloads import (
    MAX_COMMAND_BYTES,
    MQTT_COMMANDS,
    error_reply,
    offline_payload,
    outgoing_envelope,
    power_fields,
    reply_payload,
    status_payload,
)
from hubd.contract.receipts import (
    MAX_RECEIPT_IDS,
    check_receipt,
    decode_receipt,
    encode_receipt,
    receipt_frame_size,
    receipt_payload,
    receipts_for,
)
from hubd.contract.schemas import problems, schema
from hubd.contract.signing import KeyLookup, attest, check_signed, sign, verify
from hubd.contract.status import (
    DEFAULT_REPORT_EVERY,
    status_payload_v2,
    stopped_payload_v2,
    will_payload_v2,
)
from hubd.contract.topics import TopicRef, Topics, parse_topic, topic_filter
from hubd.contract.untrusted import BOUNDS, Bounds, parse_untrusted

__all__ = [
    # version 1 (the current wire) and what both versions share
    "CONTRACT_VERSION", "canonical", "dumps", "event_envelope",
    "HUB_PATTERN", "WARD_PATTERN", "TRANSITION_EVENT_TYPES", "AlertId", "RoutineEventId", "StatusId",
    "TransitionEventId", "alert_id", "origin_of", "parse_alert_id", "parse_event_id", "parse_status_id",
    "routine_event_id", "status_id", "transition_event_id",
    "MAX_COMMAND_BYTES", "MQTT_COMMANDS", "error_reply", "offline_payload", "outgoing_envelope",
    "power_fields", "reply_payload", "status_payload",
    "problems", "schema",
    "TopicRef", "Topics", "parse_topic", "topic_filter",
    # version 2
    "CONTRACT_V2", "ContractError", "KeyFileError",
    "generate_private_key", "load_private_key", "parse_public_key", "public_key_text", "save_private_key",
    "KeyLookup", "attest", "check_signed", "sign", "verify",
    "BOUNDS", "Bounds", "parse_untrusted",
    "ATTESTED_TRANSITIONS", "WIRE_ALERT_FIELDS", "Trust", "Verdict", "check_envelope", "check_origin",
    "event_envelope_v2", "wire_alert",
    "MAX_RECEIPT_IDS", "check_receipt", "decode_receipt", "encode_receipt", "receipt_frame_size",
    "receipt_payload", "receipts_for",
    "COMMAND_WINDOW", "AcceptedCommand", "check_command", "command_horizon", "command_payload_v2",
    "error_reply_v2", "reply_payload_v2",
    "DEFAULT_REPORT_EVERY", "status_payload_v2", "stopped_payload_v2", "will_payload_v2",
]
