"""Signatures of contract version 2: Ed25519 over a domain and the canonical signed part.

A signature is Ed25519 (pure, RFC 8032) over ``DOMAIN(kind) + canonical(signed part)``:

* ``DOMAIN(kind)`` is ``b"hubd-v2-<kind>\\n"`` for the six kinds of ``KINDS``, so a signature
  made for one kind of message can never be passed off as another (a hub's signed reply
  ``{"id": ..., "hub": ...}`` is no event, a status no command);
* ``canonical`` is RFC 8785 (``hubd.contract.canonical``);
* the signed part is the payload less the fields of ``UNSIGNED[kind]``: always ``sig`` itself,
  and for events also what a relay adds (``relayed_by``, ``path``) and a relay's own
  attestation (``attested``). A relay publishes the origin's envelope unchanged apart from
  those, and every receiver checks the origin's signature. Every other field is covered,
  ``v`` included, so no field can be changed, added or dropped unnoticed.

``sig`` is the 64-byte signature as unpadded base64url (86 characters).

A **ward attestation** (kind ``attestation``) is a relaying hub's signature over an envelope it
rebuilt from a mesh frame (which has no room for the origin's signature): it sits in
``"attested": {"by": <hub>, "sig": ...}`` and covers the envelope's signed part together with
``attested.by``, so it names which hub vouches for the frame and cannot be moved to another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hubd.contract.canonical import canonical
from hubd.contract.envelope import CONTRACT_V2
from hubd.contract.errors import ContractError
from hubd.contract.keys import b64url, b64url_decode

#: The kinds of signed message, each its own signature domain.
KINDS = ("event", "status", "reply", "receipt", "command", "attestation")

#: Fields a signature of each kind does not cover.
UNSIGNED: dict[str, frozenset[str]] = {
    "event": frozenset({"sig", "relayed_by", "path", "attested"}),
    "status": frozenset({"sig"}),
    "reply": frozenset({"sig"}),
    "receipt": frozenset({"sig"}),
    "command": frozenset({"sig"}),
    "attestation": frozenset({"sig", "relayed_by", "path", "attested"}),  # plus attested.by, below
}

SIGNATURE_BYTES = 64
SIGNATURE_CHARS = 86

#: Looks up the enrolled public key of a hub (None when the hub is not enrolled).
KeyLookup = Callable[[str], Ed25519PublicKey | None]


def domain(kind: str) -> bytes:
    """The prefix that keeps the kinds' signatures apart; ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of signed message {kind!r} (one of {', '.join(KINDS)})")
    return f"hubd-v2-{kind}\n".encode("ascii")


def signed_part(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a signature of ``kind`` covers (for an attestation, ``attested`` less its ``sig``)."""
    part = {k: v for k, v in payload.items() if k not in UNSIGNED[kind]}
    if kind == "attestation":
        attested = payload.get("attested")
        if not isinstance(attested, Mapping):
            raise ContractError("unsigned", "no 'attested' object")
        part["attested"] = {k: v for k, v in attested.items() if k != "sig"}
    return part


def signing_input(kind: str, payload: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature of ``kind`` over ``payload`` is made on."""
    return domain(kind) + canonical(signed_part(kind, payload))


def sign(kind: str, payload: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``payload`` with ``sig`` set (a new dict). For an attestation use ``attest``."""
    if kind == "attestation":
        raise ValueError("a ward attestation is made with attest(), which also names the attester")
    return {**payload, "sig": b64url(key.sign(signing_input(kind, payload)))}


def attest(envelope: Mapping[str, Any], by: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """``envelope`` with ``attested``: hub ``by`` vouches with ``key`` (its own) that it
    rebuilt this envelope from an authentic mesh frame."""
    unsigned = {**envelope, "attested": {"by": by}}
    sig = b64url(key.sign(signing_input("attestation", unsigned)))
    return {**envelope, "attested": {"by": by, "sig": sig}}


def verify(kind: str, payload: Any, key: Ed25519PublicKey) -> None:
    """Check ``payload``'s version 2 signature of ``kind`` under ``key``; for ``attestation``
    the one in ``attested``. Raises ContractError ``bad_request`` (not an object, or one with
    no canonical form), ``unsupported_version`` (a ``v`` other than 2: its signature, if any,
    is not this one), ``unsigned`` or ``bad_signature``."""
    if not isinstance(payload, Mapping):
        raise ContractError("bad_request", f"a signed payload is a JSON object, not {type(payload).__name__}")
    if payload.get("v") != CONTRACT_V2:
        raise ContractError("unsupported_version", f"v {payload.get('v')!r} is not {CONTRACT_V2}")
    holder = payload.get("attested") if kind == "attestation" else payload
    if not isinstance(holder, Mapping) or holder.get("sig") is None:
        raise ContractError("unsigned", "no ward attestation" if kind == "attestation" else "no signature")
    sig = holder["sig"]
    try:
        if not isinstance(sig, str) or len(sig) != SIGNATURE_CHARS:
            raise ValueError
        raw = b64url_decode(sig)
        if b64url(raw) != sig:  # one text per signature: the unused low bits must be zero
            raise ValueError
    except ValueError:
        raise ContractError("bad_signature", f"'sig' is not {SIGNATURE_CHARS} characters of base64url "
                            f"({SIGNATURE_BYTES} bytes)") from None
    try:
        message = signing_input(kind, payload)
    except (ValueError, TypeError) as e:
        raise ContractError("bad_request", f"no canonical form: {e}") from None
    try:
        key.verify(raw, message)
    except InvalidSignature:
        raise ContractError("bad_signature", f"the {kind} signature does not verify") from None


def check_signed(kind: str, payload: Any, key_of: KeyLookup) -> str:
    """The hub that signed ``payload`` (a status or reply: its ``hub``), once its signature
    verifies under that hub's enrolled key; ContractError ``unknown_origin``, ``unsigned``,
    ``bad_signature``, ``unsupported_version`` or ``bad_request`` otherwise."""
    hub = payload.get("hub") if isinstance(payload, Mapping) else None
    if not isinstance(hub, str):
        raise ContractError("bad_request", "no 'hub'")
    key = key_of(hub)
    if key is None:
        raise ContractError("unknown_origin", f"no public key is enrolled for hub {hub[:40]}")
    verify(kind, payload, key)
    return hub
