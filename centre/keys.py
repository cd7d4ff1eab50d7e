"""The centre's signing key (Ed25519): it signs every receipt and every command, and each
hub holds its public half (``[trust] centre``). Made once, at the first start or with
``hubd centre keys init``, 0600 in the state directory, never overwritten."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hubd.contract import (
    KeyFileError,
    generate_private_key,
    load_private_key,
    public_key_text,
    save_private_key,
)

log = logging.getLogger("hubd.centre.keys")


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The key in ``path``, made there first if there is none (KeyFileError when the file is
    there but unusable: exposed to other users, or not a key)."""
    try:
        return load_private_key(path)
    except KeyFileError as e:
        if e.code != "key_missing":
            raise
    key = generate_private_key()
    save_private_key(key, path)
    log.warning("made the centre's signing key %s; give every hub its public key: %s", path,
                public_key_text(key))
    return key
