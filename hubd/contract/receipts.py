"""Receipts: the centre's signed word that it has committed a hub's events and statuses.

The JSON receipt (schema ``receipt-v2``, topic ``<base>/receipt``)::

    {"v":2,"type":"receipt","hub":"hub-1","time":1763712001,"ids":["hub-1:7:raised:0"],"sig":"..."}

``time`` is the centre's clock in whole seconds, ``ids`` 1 to ``MAX_RECEIPT_IDS`` distinct ids
(events ``<alert>:<transition>:<level>`` and ``<hub>:e<n>``, statuses ``<hub>:s<n>``), all of
``hub``. The centre signs it (kind ``receipt``); nothing else is signed, so a receipt needs no
relay fields. Ids are never reused, so a receipt needs no freshness: replayed, it confirms
again only what the centre did commit.

A receipt must cross the mesh too, so it has a compact form (``encode_receipt``,
``decode_receipt``) that is a lossless image of the JSON: a relaying hub turns the JSON into
bytes, the origin turns the bytes back into the same JSON and checks the centre's signature
over its canonical form, as for a receipt heard over MQTT. Layout (big-endian)::

    1   n, the hub id's length (1..24)
    n   hub id, ASCII
    4   time (uint32, seconds)
    1   number of ids (1..16)
    ..  each id: one head byte, then numbers as unsigned LEB128 varints (7 bits a byte)
            head = kind << 5 | low
            kind 1..5: a transition (raised, acknowledged, resolved, cancelled, escalated,
                       numbered as the mesh's alert frames); low = the level, or 31 when the
                       level (>= 31) follows as a varint; then the alert's seq
            kind 6:    <hub>:e<n>, low = 0, then n
            kind 7:    <hub>:s<n>, low = 0, then n
    64  the centre's signature

so an id of an alert below seq 16384 takes 3 bytes. On the mesh it is the body of a RECEIPT
frame, which adds the frame's first byte (version | type) and its 8-byte ward tag
(``RECEIPT_FRAME_OVERHEAD``); ``receipts_for`` cuts a batch of ids into receipts that each fit
one mesh packet.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hubd.contract.envelope import CONTRACT_V2
from hubd.contract.errors import ContractError
from hubd.contract.ids import (
    HUB_PATTERN,
    RoutineEventId,
    TransitionEventId,
    parse_event_id,
    parse_status_id,
    routine_event_id,
    status_id,
    transition_event_id,
)
from hubd.contract.keys import b64url, b64url_decode
from hubd.contract.signing import SIGNATURE_BYTES, verify

MAX_RECEIPT_IDS = 16
#: Meshtastic's largest Data payload, the most one mesh packet carries.
MESH_PAYLOAD_BYTES = 233
#: What a mesh RECEIPT frame adds to the compact form: its version|type byte and 8-byte ward tag.
RECEIPT_FRAME_OVERHEAD = 1 + 8

_TRANSITIONS = ("raised", "acknowledged", "resolved", "cancelled", "escalated")  # kinds 1..5
_ROUTINE, _STATUS = 6, 7
_LEVEL_FOLLOWS = 31
_MAX_VARINT_BYTES = 8  # 56 bits: ids hold no number beyond 2**53
_HUB_RE = re.compile(HUB_PATTERN)


def receipt_payload(*, hub: str, time: int, ids: Iterable[str]) -> dict[str, Any]:
    """The unsigned receipt for ``ids`` of ``hub`` at the centre's ``time`` (whole seconds);
    ids sorted, duplicates dropped. ValueError when an id is not of ``hub``, there are none or
    more than ``MAX_RECEIPT_IDS``, or the receipt would not fit one mesh packet (use
    ``receipts_for``). Sign it with ``sign("receipt", ...)``."""
    unique = sorted(set(ids))
    if not 1 <= len(unique) <= MAX_RECEIPT_IDS:
        raise ValueError(f"a receipt names 1 to {MAX_RECEIPT_IDS} ids, not {len(unique)}")
    receipt = {"v": CONTRACT_V2, "type": "receipt", "hub": hub, "time": int(time), "ids": unique}
    size = len(_encode_body(receipt)) + SIGNATURE_BYTES + RECEIPT_FRAME_OVERHEAD
    if size > MESH_PAYLOAD_BYTES:
        raise ValueError(f"a receipt of {size} bytes would not fit one mesh packet ({MESH_PAYLOAD_BYTES})")
    return receipt


def receipts_for(*, hub: str, time: int, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Unsigned receipts naming every id of ``ids`` (sorted, once each), as few as the id
    count and one mesh packet allow."""
    fixed = RECEIPT_FRAME_OVERHEAD + 1 + len(hub.encode("ascii")) + 4 + 1 + SIGNATURE_BYTES
    out: list[dict[str, Any]] = []
    chunk: list[str] = []
    size = fixed
    for event_id in sorted(set(ids)):
        n = len(_encode_id(event_id, hub))
        if chunk and (len(chunk) == MAX_RECEIPT_IDS or size + n > MESH_PAYLOAD_BYTES):
            out.append(receipt_payload(hub=hub, time=time, ids=chunk))
            chunk, size = [], fixed
        chunk.append(event_id)
        size += n
    if chunk:
        out.append(receipt_payload(hub=hub, time=time, ids=chunk))
    return out


def check_receipt(receipt: Any, *, hub: str, centre_key: Ed25519PublicKey) -> tuple[str, ...]:
    """The ids ``receipt`` confirms to ``hub``, once the centre's signature verifies and every
    id is ``hub``'s; ContractError otherwise (``unsigned``, ``bad_signature``, ``wrong_hub``,
    ``wrong_origin``, ``unsupported_version``, ``bad_request``)."""
    verify("receipt", receipt, centre_key)
    if receipt.get("hub") != hub:
        raise ContractError("wrong_hub", f"a receipt for hub {receipt.get('hub')}, not {hub}")
    ids = receipt.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ContractError("bad_request", "'ids' is a list of ids")
    for event_id in ids:
        parsed = parse_event_id(event_id) or parse_status_id(event_id)
        if parsed is None or parsed.hub != hub:
            raise ContractError("wrong_origin", f"{event_id[:80]!r} is not an id of hub {hub}")
    return tuple(ids)


# --- the compact form -----------------------------------------------------------------------


def encode_receipt(receipt: Mapping[str, Any]) -> bytes:
    """The compact form of a signed receipt (what a mesh RECEIPT frame carries); ValueError
    when it has no such form (an id of another hub, a time beyond uint32, no signature...)."""
    sig = receipt.get("sig")
    raw_sig = b64url_decode(sig) if isinstance(sig, str) else b""
    if len(raw_sig) != SIGNATURE_BYTES:
        raise ValueError("only a signed receipt has a compact form")
    return _encode_body(receipt) + raw_sig


def decode_receipt(data: bytes) -> dict[str, Any]:
    """The JSON receipt whose compact form is ``data``; ContractError ``bad_receipt`` (and
    nothing else) when the bytes are not one. The signature is not checked here: that is
    ``check_receipt``'s job, as for a receipt heard over MQTT."""
    try:
        return _decode(bytes(data))
    except ContractError:
        raise
    except Exception as e:  # a parsing slip must still surface as the contract's error
        raise ContractError("bad_receipt", f"unparseable ({type(e).__name__}: {e})") from None


def _encode_body(receipt: Mapping[str, Any]) -> bytes:
    hub, time, ids = receipt.get("hub"), receipt.get("time"), receipt.get("ids")
    if not isinstance(hub, str) or not _HUB_RE.fullmatch(hub):
        raise ValueError(f"{hub!r} is not a hub id")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("'ids' is not a list of ids")
    if isinstance(time, bool) or not isinstance(time, int | float) or time != int(time) \
            or not 0 <= time <= 0xFFFFFFFF:
        raise ValueError(f"receipt time {time!r} is not whole seconds in 32 bits")
    if not 1 <= len(ids) <= MAX_RECEIPT_IDS:
        raise ValueError(f"a receipt names 1 to {MAX_RECEIPT_IDS} ids, not {len(ids)}")
    origin = hub.encode("ascii")
    out = bytearray(struct.pack(">B", len(origin)) + origin + struct.pack(">IB", int(time), len(ids)))
    for event_id in ids:
        out += _encode_id(event_id, hub)
    return bytes(out)


def _encode_id(text: str, hub: str) -> bytes:
    parsed = parse_event_id(text) or parse_status_id(text)
    if parsed is None or parsed.hub != hub:
        raise ValueError(f"{text!r} is not an event or status id of hub {hub}")
    if isinstance(parsed, TransitionEventId):
        kind = _TRANSITIONS.index(parsed.transition) + 1
        if parsed.level < _LEVEL_FOLLOWS:
            return bytes([kind << 5 | parsed.level]) + _varint(parsed.alert.seq)
        return bytes([kind << 5 | _LEVEL_FOLLOWS]) + _varint(parsed.level) + _varint(parsed.alert.seq)
    kind = _ROUTINE if isinstance(parsed, RoutineEventId) else _STATUS
    return bytes([kind << 5]) + _varint(parsed.n)


def _varint(n: int) -> bytes:
    if not 0 <= n < 1 << (7 * _MAX_VARINT_BYTES):
        raise ValueError(f"{n} does not fit a receipt's numbers")
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ContractError("bad_receipt", f"truncated ({len(self.data)} bytes)")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def varint(self) -> int:
        n = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i:
                    raise ContractError("bad_receipt", "a number with a needless zero byte")
                return n
        raise ContractError("bad_receipt", "a number longer than 8 bytes")


def _decode(data: bytes) -> dict[str, Any]:
    if len(data) > MESH_PAYLOAD_BYTES:
        raise ContractError("bad_receipt", f"{len(data)} bytes; a receipt fits one mesh packet")
    r = _Reader(data)
    n = r.take(1)[0]
    origin = r.take(n)
    if not _HUB_RE.fullmatch(origin.decode("ascii", "replace")):
        raise ContractError("bad_receipt", "not a hub id")
    hub = origin.decode("ascii")
    time, count = struct.unpack(">IB", r.take(5))
    if not 1 <= count <= MAX_RECEIPT_IDS:
        raise ContractError("bad_receipt", f"{count} ids; a receipt names 1 to {MAX_RECEIPT_IDS}")
    ids: list[str] = []
    for _ in range(count):
        ids.append(_decode_id(r, hub))
    if len(set(ids)) != len(ids):
        raise ContractError("bad_receipt", "an id named twice")
    sig = r.take(SIGNATURE_BYTES)
    if r.at != len(data):
        raise ContractError("bad_receipt", f"{len(data) - r.at} bytes after the signature")
    return {"v": CONTRACT_V2, "type": "receipt", "hub": hub, "time": time, "ids": ids, "sig": b64url(sig)}


def _decode_id(r: _Reader, hub: str) -> str:
    head = r.take(1)[0]
    kind, low = head >> 5, head & 0x1F
    if 1 <= kind <= len(_TRANSITIONS):
        level = r.varint() if low == _LEVEL_FOLLOWS else low
        if low == _LEVEL_FOLLOWS and level < _LEVEL_FOLLOWS:
            raise ContractError("bad_receipt", "a level written long that fits the head byte")
        seq = r.varint()
        if seq < 1:
            raise ContractError("bad_receipt", "alert seq 0")
        return transition_event_id(f"{hub}:{seq}", f"alert.{_TRANSITIONS[kind - 1]}", level)
    if kind in (_ROUTINE, _STATUS) and low == 0:
        n = r.varint()
        if n < 1:
            raise ContractError("bad_receipt", "number 0")
        return routine_event_id(hub, n) if kind == _ROUTINE else status_id(hub, n)
    raise ContractError("bad_receipt", f"unknown id head 0x{head:02x}")


def receipt_frame_size(receipt: Mapping[str, Any]) -> int:
    """Bytes of the mesh RECEIPT frame that carries ``receipt`` (signed)."""
    return len(encode_receipt(receipt)) + RECEIPT_FRAME_OVERHEAD

