"""Events of contract version 2: the signed envelope, its origin rules, and what to believe.

An envelope is built by its origin hub with ``event_envelope_v2`` and signed with
``sign("event", envelope, key)``. Its ``alert`` is the wire alert: only what the origin knows
(``WIRE_ALERT_FIELDS``), never a receiver's bookkeeping (``remote``, ``relayed_by``, ``extra``).

``check_envelope(envelope, key_of)`` tells a receiver what an envelope is worth:

* ``Trust.SIGNED``: its origin's signature verifies. It may create and move the alert.
* ``Trust.ATTESTED``: no origin signature, but a ward attestation (a relaying hub vouching that
  it rebuilt the envelope from an authentic mesh frame) that verifies under that hub's key.
  Only alert transitions can be attested (nothing else crosses the mesh), and of those only
  ``ATTESTED_TRANSITIONS`` (raise, escalate) may change an alert's state: an attested event can
  make a receiver more alarmed, never less. The others are stored and shown beside the alert
  until the origin's signed copy of the same id replaces them.
* ``Trust.REFUSED``, with the ``ContractError`` that says why: anything else.

Before any signature it checks the origin rules (``check_origin``): the id's hub, ``hub``,
``alert.hub`` and ``alert.id``'s hub are one hub, and a transition id agrees with ``type``,
``alert.id`` and ``alert.level``. A message *about* hub X is only believed with X's signature,
so an id of one hub cannot be slipped in under another's.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hubd.contract.envelope import CONTRACT_V2
from hubd.contract.errors import ContractError
from hubd.contract.ids import (
    HUB_PATTERN,
    TRANSITION_EVENT_TYPES,
    TransitionEventId,
    parse_alert_id,
    parse_event_id,
)
from hubd.contract.signing import KeyLookup, verify

#: The fields of the wire alert: what its origin hub knows of it.
WIRE_ALERT_FIELDS = ("id", "hub", "seq", "kind", "source", "zone", "state", "outcome", "level", "silent",
                     "raised_at", "updated_at", "severity")

#: The transitions a ward-attested event may apply to an alert's state: those that raise the
#: alarm. A holder of the ward key can forge a mesh frame, so it may cause a false alarm (shown
#: as attested) but never acknowledge, resolve or cancel a real one.
ATTESTED_TRANSITIONS = frozenset({"alert.raised", "alert.escalated"})

_HUB_RE = re.compile(HUB_PATTERN)


class Trust(enum.StrEnum):
    """What a receiver may do with an envelope."""

    SIGNED = "signed"
    ATTESTED = "ward-attested"
    REFUSED = "refused"


@dataclass(frozen=True)
class Verdict:
    """The result of ``check_envelope``: ``origin`` is the hub the envelope is about (None when
    that could not be told), ``attested_by`` the hub that vouches for an attested one, ``error``
    why a refused one was refused."""

    trust: Trust
    origin: str | None = None
    attested_by: str | None = None
    error: ContractError | None = None

    @property
    def accepted(self) -> bool:
        return self.trust is not Trust.REFUSED


def wire_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as its origin puts it on the wire: the fields of ``WIRE_ALERT_FIELDS``."""
    return {k: alert[k] for k in WIRE_ALERT_FIELDS if k in alert}


def event_envelope_v2(*, id: str, type: str, time: float, ward: str, hub: str, actor: str,
                      data: Mapping[str, Any], alert: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The unsigned version 2 envelope of one event (schema ``event-v2``): as version 1, with
    ``"v": 2`` and the wire alert. Sign it with ``sign("event", ...)``."""
    env: dict[str, Any] = {"v": CONTRACT_V2, "id": id, "type": type, "time": time, "ward": ward,
                           "hub": hub, "actor": actor, "data": dict(data)}
    if alert is not None:
        env["alert"] = wire_alert(alert)
    return env


def check_origin(envelope: Mapping[str, Any]) -> str:
    """The origin hub of ``envelope`` when its ids, ``hub`` and ``alert`` agree; ContractError
    ``wrong_origin`` when they name different hubs, ``bad_request`` when they disagree
    otherwise (a transition id of another type, alert or level)."""
    hub, event_id = envelope.get("hub"), envelope.get("id")
    if not isinstance(hub, str) or not isinstance(event_id, str):
        raise ContractError("bad_request", "an envelope has a string 'id' and 'hub'")
    parsed = parse_event_id(event_id)
    if parsed is None:
        raise ContractError("bad_request", f"{event_id[:80]!r} is not an event id")
    if parsed.hub != hub:
        raise ContractError("wrong_origin", f"event {event_id} belongs to {parsed.hub}, not to hub {hub}")
    alert = envelope.get("alert")
    if alert is not None:
        if not isinstance(alert, Mapping):
            raise ContractError("bad_request", "'alert' is not an object")
        alert_id = alert.get("id")
        parsed_alert = parse_alert_id(alert_id) if isinstance(alert_id, str) else None
        if parsed_alert is None:
            raise ContractError("bad_request", f"{str(alert_id)[:80]!r} is not an alert id")
        if parsed_alert.hub != hub or alert.get("hub") != hub:
            raise ContractError("wrong_origin", f"alert {alert_id} of hub {alert.get('hub')} in an event of "
                                f"hub {hub}")
        if alert.get("seq") != parsed_alert.seq:
            raise ContractError("bad_request", f"alert {alert_id} says seq {alert.get('seq')}")
    event_type = envelope.get("type")
    if isinstance(parsed, TransitionEventId):
        if event_type != parsed.event_type:
            raise ContractError("bad_request", f"event {event_id} is of type {parsed.event_type}, "
                                f"not {event_type}")
        if alert is None or alert.get("id") != str(parsed.alert) or alert.get("level") != parsed.level:
            raise ContractError("bad_request", f"event {event_id} needs alert {parsed.alert} at level "
                                f"{parsed.level}")
    elif event_type in TRANSITION_EVENT_TYPES:
        raise ContractError("bad_request", f"a {event_type} event has an id <alert>:<transition>:<level>, "
                            f"not {event_id}")
    return hub


def check_envelope(envelope: Any, key_of: KeyLookup) -> Verdict:
    """What ``envelope`` (parsed, ideally by ``parse_untrusted(raw, "event-v2")``) is worth,
    given ``key_of``, the enrolled public key of a hub. Never raises ContractError: a refusal is
    a Verdict with the error."""
    origin: str | None = None
    try:
        if not isinstance(envelope, Mapping):
            raise ContractError("bad_request", "an envelope is a JSON object")
        if envelope.get("v") != CONTRACT_V2:
            raise ContractError("unsupported_version", f"v {envelope.get('v')!r} is not {CONTRACT_V2}")
        origin = check_origin(envelope)
        if envelope.get("sig") is not None:
            # An origin signature decides alone: a bad one is a forgery, not a cue to fall back
            # on an attestation.
            verify("event", envelope, _key(key_of, origin, "origin"))
            return Verdict(Trust.SIGNED, origin)
        attested = envelope.get("attested")
        if attested is None:
            raise ContractError("unsigned", f"event {envelope['id']} carries neither a signature nor an "
                                "attestation")
        by = attested.get("by") if isinstance(attested, Mapping) else None
        if not isinstance(by, str) or not _HUB_RE.fullmatch(by):
            raise ContractError("bad_request", "'attested.by' is not a hub id")
        if by == origin:
            raise ContractError("not_attestable", f"hub {by} attests its own event; an origin signs")
        if not isinstance(parse_event_id(envelope["id"]), TransitionEventId):
            raise ContractError("not_attestable", f"event {envelope['id']} ({envelope.get('type')}) cannot "
                                "come from a mesh frame; only alert transitions can be attested")
        verify("attestation", envelope, _key(key_of, by, "attesting"))
        return Verdict(Trust.ATTESTED, origin, attested_by=by)
    except ContractError as e:
        return Verdict(Trust.REFUSED, origin, error=e)


def _key(key_of: KeyLookup, hub: str, role: str) -> Ed25519PublicKey:
    key = key_of(hub)
    if key is None:
        raise ContractError("unknown_origin", f"no public key is enrolled for the {role} hub {hub}")
    return key
