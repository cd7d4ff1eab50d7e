"""How far the centre believes a message: the verification step of the ingest, in one place.

Trust levels stored with every event:

* ``signed``: contract version 2, verified under the origin hub's enrolled public key
  (``hubd.contract.check_envelope``). It may create and move an alert.
* ``ward-attested``: version 2, rebuilt by a neighbour from a mesh frame and signed by that
  neighbour (``attested``), not by the origin. Stored, shown and alarmed; it may raise or
  escalate an alert (``ATTESTED_TRANSITIONS``), never acknowledge, resolve or cancel one, and
  the origin's signed copy of the same id replaces it.
* ``unsigned-v1``: a version 1 envelope, which carries no signature, read during the
  migration only and only from a hub with no public key enrolled: once a hub's key is
  enrolled, anything unsigned in its name is refused (anyone on the broker could write it).

Statuses and command replies of version 2 must carry their hub's signature. Anything that
cannot be given a level is refused (``Untrusted``, with the contract's error code) and
quarantined with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hubd.centre.registry import HubRecord
from hubd.contract import ATTESTED_TRANSITIONS, ContractError, KeyLookup, Trust, check_envelope, check_signed

SIGNED = Trust.SIGNED.value
WARD_ATTESTED = Trust.ATTESTED.value
UNSIGNED_V1 = "unsigned-v1"
LEVELS = (SIGNED, WARD_ATTESTED, UNSIGNED_V1)
#: Levels whose alert state is believed (a ward-attested state never overrides them).
BELIEVED = frozenset({SIGNED, UNSIGNED_V1})


class Untrusted(Exception):
    """Refused: ``code`` for counting, the message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _unsigned_v1(hub: HubRecord, what: str) -> str:
    if hub.public_key is not None:
        raise Untrusted("unsigned", f"hub {hub.id} signs (its key is enrolled): an unsigned version 1 {what} "
                                    "in its name is refused")
    return UNSIGNED_V1


def event_trust(envelope: Mapping[str, Any], version: int, origin: HubRecord,
                key_of: KeyLookup) -> tuple[str, str | None]:
    """The trust of an event of ``origin`` read as contract ``version``, and the hub that
    attests it (ward-attested only); Untrusted when it is not to be believed at all."""
    if version == 1:
        return _unsigned_v1(origin, "event"), None
    verdict = check_envelope(envelope, key_of)
    if verdict.error is not None:
        raise Untrusted(verdict.error.code, verdict.error.message)
    return verdict.trust.value, verdict.attested_by


def message_trust(kind: str, payload: Mapping[str, Any], version: int, hub: HubRecord,
                  key_of: KeyLookup) -> str:
    """The trust of a hub's status or command reply (``kind``: status, reply)."""
    if version == 1:
        return _unsigned_v1(hub, kind)
    try:
        check_signed(kind, payload, key_of)
    except ContractError as e:
        raise Untrusted(e.code, e.message) from None
    return SIGNED


def may_move(event_type: str, trust: str) -> bool:
    """Whether an event of this type and trust may change an alert's state at all."""
    return trust in BELIEVED or event_type in ATTESTED_TRANSITIONS
