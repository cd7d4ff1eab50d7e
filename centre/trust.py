"""How far the centre believes a message: the verification step of the ingest, in one place.

Trust levels stored with every event:

* ``signed``: verified under the origin hub's enrolled public key (contract v2);
* ``ward-attested``: rebuilt from a mesh frame that only the ward's network key vouches for
  (contract v2); shown and alarmed, but never overriding what the origin signed;
* ``unsigned-v1``: a contract version 1 envelope, which carries no signature: believed as the
  broker's access control is believed, during the migration to version 2 only.

Anything that cannot be given a level is refused (``Untrusted``) and quarantined with the
reason. Contract v2's signatures slot in here: ``event_trust`` and ``message_trust`` are the
only places that decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hubd.centre.registry import HubRecord

SIGNED = "signed"
WARD_ATTESTED = "ward-attested"
UNSIGNED_V1 = "unsigned-v1"
LEVELS = (SIGNED, WARD_ATTESTED, UNSIGNED_V1)
#: Levels whose alert state is believed (a ward-attested state never overrides them).
BELIEVED = frozenset({SIGNED, UNSIGNED_V1})


class Untrusted(Exception):
    """Refused: ``code`` for counting, the message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _version(payload: Mapping[str, Any]) -> Any:
    return payload.get("v")


def event_trust(envelope: Mapping[str, Any], origin: HubRecord, carrier: HubRecord) -> str:
    """The trust of an event of ``origin`` that ``carrier`` published (the same hub unless
    it was relayed); Untrusted when it is not to be believed at all."""
    if _version(envelope) == 1:
        return UNSIGNED_V1
    raise Untrusted("unsupported_version", f"contract version {_version(envelope)!r} is not understood here")


def message_trust(kind: str, payload: Mapping[str, Any], hub: HubRecord) -> str:
    """The trust of a hub's status or command reply (``kind``: status, reply)."""
    if _version(payload) == 1:
        return UNSIGNED_V1
    raise Untrusted("unsupported_version",
                    f"{kind} of contract version {_version(payload)!r} is not understood")
