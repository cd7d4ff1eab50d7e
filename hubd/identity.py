"""This hub's signing identity and whom it believes (contract version 2).

A hub signs every envelope it originates, its status, its Last Will and its command replies
with its own Ed25519 key (``<state_dir>/signing.key``, 0600, made by ``hubd keys init`` or
``install.sh``), and attests the alert frames it hears on the mesh before relaying them.
It believes another hub's events only with that hub's signature, verified with the public
keys of ``[trust] hubs``, and takes commands only under the key of ``[trust] centre``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hubd import contract
from hubd.config import Config

log = logging.getLogger("hubd.identity")


class Signer:
    """Signs as one hub: ``sign(kind, payload)`` and ``attest(envelope)``."""

    def __init__(self, hub_id: str, key: Ed25519PrivateKey):
        self.hub_id = hub_id
        self._key = key
        self.public_key_text = contract.public_key_text(key)

    def sign(self, kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload`` with this hub's signature of ``kind`` (a new dict)."""
        return contract.sign(kind, payload, self._key)

    def attest(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """``envelope`` (rebuilt from a mesh frame) with this hub's ward attestation."""
        return contract.attest(envelope, self.hub_id, self._key)


class TrustedKeys:
    """The public keys this hub believes, from ``[trust]``."""

    def __init__(self, config: Config):
        self._hubs: dict[str, Ed25519PublicKey] = {
            hub: contract.parse_public_key(text) for hub, text in config.trust.hubs.items()}
        self.centre: Ed25519PublicKey | None = (contract.parse_public_key(config.trust.centre)
                                                if config.trust.centre else None)

    def hub(self, hub_id: str) -> Ed25519PublicKey | None:
        """The enrolled key of a hub (a ``contract.KeyLookup``); None for a hub not listed."""
        return self._hubs.get(hub_id)


def init_key(path: Path) -> Ed25519PrivateKey:
    """Make a new signing key at ``path`` (KeyFileError ``key_exists`` if there is one)."""
    key = contract.generate_private_key()
    contract.save_private_key(key, path)
    return key


def load_or_init_key(config: Config) -> Ed25519PrivateKey:
    """This hub's signing key; made on the first start when ``hubd keys init`` was never run
    (its public key is then logged: enrol it at the centre and at the neighbours)."""
    path = config.signing_key_path
    if not path.exists() and not path.is_symlink():
        key = init_key(path)
        log.warning("made a new signing key %s; its public key is %s: enrol it at the centre and in the "
                    "neighbours' [trust] hubs (`hubd keys show` prints it again)", path,
                    contract.public_key_text(key))
        return key
    return contract.load_private_key(path)
