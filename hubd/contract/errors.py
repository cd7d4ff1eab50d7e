"""The one error type of contract version 2: a refusal with a code a program can act on.

Every check of untrusted input (``parse_untrusted``, ``verify``, ``check_envelope``,
``check_command``, ``check_receipt``, ``decode_receipt``) raises only ``ContractError``, so a
receiver needs one ``except`` to refuse, count and quarantine anything a peer sends. ``code``
is stable (it goes into replies and quarantine records); ``message`` is for people.
"""

from __future__ import annotations

#: Codes and what they mean; docs/mqtt-contract.md lists the same.
CODES: dict[str, str] = {
    # reading untrusted bytes
    "too_large": "more bytes than the payload's bound",
    "bad_json": "not UTF-8 JSON, or JSON that I-JSON refuses (duplicate keys, NaN, huge numbers)",
    "too_deep": "nested deeper than the payload's bound",
    "too_many_keys": "an object with more keys than the payload's bound",
    "bad_request": "does not conform to its JSON Schema",
    "unsupported_version": "a 'v' other than 2",
    # who said it
    "unsigned": "no signature where one is required",
    "bad_signature": "a signature that does not verify, or is not 64 bytes of base64url",
    "unknown_origin": "no public key is enrolled for the hub that signed (or attested) it",
    "wrong_origin": "ids, hub and alert name different hubs",
    "not_attestable": "a ward attestation of something no mesh frame carries",
    # commands and receipts
    "wrong_hub": "addressed to another hub",
    "stale": "its time is outside the freshness window",
    "replayed": "its id was seen before",
    "bad_receipt": "a compact receipt that cannot be decoded",
    # keys (configuration and key files, not the wire)
    "bad_key": "not an Ed25519 key in the contract's form",
    "key_missing": "no key file where one was expected",
    "key_exists": "a key file is already there; it is never overwritten",
    "key_exposed": "a private key file that other users may read or write",
}


class ContractError(Exception):
    """A payload the contract refuses: ``code`` (one of ``CODES``) and a ``message``."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KeyFileError(ContractError):
    """A signing-key file that cannot be used: ``key_missing``, ``key_exists``,
    ``key_exposed`` (readable or writable by others) or ``bad_key``. The message names the
    path and, where there is one, the fix."""
