"""Ed25519 signing keys: made, kept in a private file, read back, and written as text.

A hub and the centre each have one private key, in a PEM (PKCS #8) file that only its owner
may read (``openssl pkey -in signing.key -pubout`` reads it too). Its public half travels as
text, ``ed25519:<base64url of the 32 raw bytes, unpadded>`` (51 characters), and is enrolled
out of band: read off the hub's screen into the centre's registry, and the centre's into each
hub's configuration. Nothing on the wire enrols or replaces a key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hubd.contract.errors import ContractError, KeyFileError

#: What the text form of a public key starts with.
PUBLIC_KEY_PREFIX = "ed25519:"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_32 = re.compile(r"[A-Za-z0-9_-]{43}")
#: A PEM Ed25519 key is about 120 bytes; anything much larger is not one.
_MAX_KEY_FILE = 4096


def generate_private_key() -> Ed25519PrivateKey:
    """A new random signing key."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write ``key`` to a new file ``path``, mode 0600, never over an existing file.

    Missing directories are created 0700. The file is created with ``O_EXCL`` (also refusing a
    symbolic link in its place), so nothing else can have opened it first and a hub's identity
    is never overwritten by accident: KeyFileError ``key_exists`` then.
    """
    path = Path(path)
    _make_private_dirs(path.parent)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError("key_exists", f"{path} exists; a signing key is never overwritten (remove it "
                           "first only if you mean to give this machine a new identity, and enrol the "
                           "new public key)") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away, never add any
        os.write(fd, pem)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _make_private_dirs(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The signing key in ``path``; KeyFileError when it is missing (``key_missing``), open to
    other users (``key_exposed``: any group or other permission bit) or not an unencrypted
    Ed25519 PEM key (``bad_key``)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not hang us
    except FileNotFoundError:
        raise KeyFileError("key_missing", f"no signing key at {path}") from None
    except OSError as e:
        raise KeyFileError("bad_key", f"cannot open the signing key {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError("bad_key", f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError("key_exposed", f"{path} is mode {stat.S_IMODE(st.st_mode):04o}: a private "
                               f"key must be readable by its owner only (chmod 600 {path})")
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError("bad_key", f"{path} is too large to be an Ed25519 key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFileError("bad_key", f"{path} is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("bad_key", f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """``ed25519:<base64url>`` of a key's public half."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + b64url(raw)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The public key written as ``ed25519:<43 characters of base64url>``; ContractError
    ``bad_key`` with what is wrong (the form is strict: one text per key)."""
    if not isinstance(text, str):
        raise ContractError("bad_key", f"a public key is text, not {type(text).__name__}")
    body = text.strip()
    if not body.startswith(PUBLIC_KEY_PREFIX):
        raise ContractError("bad_key", f"a public key starts with {PUBLIC_KEY_PREFIX!r}: {text[:60]!r}")
    body = body[len(PUBLIC_KEY_PREFIX):]
    if not _B64URL_32.fullmatch(body):
        raise ContractError("bad_key", "an Ed25519 public key is 43 characters of unpadded base64url "
                            f"(A-Z a-z 0-9 - _) after {PUBLIC_KEY_PREFIX!r}; got {len(body)} characters")
    raw = b64url_decode(body)
    if b64url(raw) != body:  # the unused low bits of the last character must be zero
        raise ContractError("bad_key", "not the canonical base64url of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def b64url(raw: bytes) -> str:
    """Unpadded base64url text of ``raw``."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url ``text``; ValueError when it is not that."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64url: {e}") from None
