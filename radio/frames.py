"""The mesh wire format: compact, versioned, authenticated binary frames.

Every frame is sent as the payload of one Meshtastic packet on the ward's private
application port.  Layout (big-endian; ``n`` = origin length)::

    0      1   version (high 4 bits, = 1) | type (low 4 bits)
    1      1   n, the origin hub id's length (1..16)
    2      n   origin hub id, ASCII [A-Za-z0-9_-]
    2+n    4   time: when this copy was transmitted, seconds since the epoch (uint32)
    6+n    ..  body (depends on type, below)
    end-8  8   tag: HMAC-SHA256(key, DOMAIN | transmitting node number | all bytes above)[:8]

Bodies:

* alert frames (raised, acknowledged, resolved, cancelled, escalated)::

      3  seq of the alert at its origin (uint24)
      2  age: seconds from the event to this transmission (uint16, saturating)
      1  kind (3 bits) | level (3 bits, capped at 7) | outcome (2 bits)
      1  flags: bit 0 silent, bit 1 the origin has an uplink (MQTT)
      z  zone, UTF-8, up to the tag; cut so that the whole frame is at most 40 bytes

* beacon: 1 byte flags (bit 1 uplink), 1 byte open local alerts (capped at 255).
* have (an application-level receipt: "I hold this event")::

      3  seq, 1  referenced type (high 4 bits) | level (low 4 bits)

Why these choices: the origin is carried as text (hub ids of at most 16 bytes on a
mesh) so that any hub can rebuild ``<hub>:<seq>`` from one frame, without first having
heard a beacon.  The tag covers the transmitting node's number (taken from the packet
header, not sent twice), so a frame cannot be replayed under another node's name; the
time is the transmission time so that retries and relays are fresh frames, and the
event's own time is ``time - age``.  A 64-bit tag is plenty for frames that are only
worth forging for minutes.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from hubd.private import private_dir

VERSION = 1
TAG_LEN = 8
MAX_ORIGIN = 16
MAX_ALERT_FRAME = 40
#: Meshtastic's largest Data payload.
MAX_PAYLOAD = 233
_DOMAIN = b"hubd-mesh-v1"
_ORIGIN_RE = re.compile(rb"^[A-Za-z0-9_-]{1,16}$")

KINDS = ("panic", "medical", "fire", "intrusion", "tamper", "fault", "test")
OUTCOMES = (None, "genuine", "false_alarm", "test")
MAX_LEVEL = 7


class FrameType(enum.IntEnum):
    RAISED = 1
    ACKNOWLEDGED = 2
    RESOLVED = 3
    CANCELLED = 4
    ESCALATED = 5
    BEACON = 6
    HAVE = 7


ALERT_TYPES = frozenset({FrameType.RAISED, FrameType.ACKNOWLEDGED, FrameType.RESOLVED,
                         FrameType.CANCELLED, FrameType.ESCALATED})

#: Event type of the core (``hubd.eventlog.MESH_EVENT_TYPES``) for each alert frame type.
EVENT_TYPE = {
    FrameType.RAISED: "alert.raised",
    FrameType.ACKNOWLEDGED: "alert.acknowledged",
    FrameType.RESOLVED: "alert.resolved",
    FrameType.CANCELLED: "alert.cancelled",
    FrameType.ESCALATED: "alert.escalated",
}
FRAME_TYPE = {v: k for k, v in EVENT_TYPE.items()}

#: The alert state each alert frame type leaves the alert in.
STATE = {
    FrameType.RAISED: "raised",
    FrameType.ACKNOWLEDGED: "acknowledged",
    FrameType.RESOLVED: "resolved",
    FrameType.CANCELLED: "cancelled",
    FrameType.ESCALATED: "raised",
}


class FrameError(Exception):
    """Bytes that are not an acceptable frame.  The only exception ``decode`` raises."""

    reason = "invalid"


class FrameFormatError(FrameError):
    """Truncated, oversized, of an unknown version or type, or with a field out of range."""

    reason = "malformed"


class FrameAuthError(FrameError):
    """The tag does not match: wrong network key, or bytes altered on the way."""

    reason = "forged"


class FrameReplayError(FrameError):
    """An authentic frame heard before, or older than the replay window allows."""

    reason = "replayed"


@dataclass(frozen=True)
class Frame:
    """One decoded frame.  Fields that a type does not use keep their defaults."""

    type: FrameType
    origin: str
    time: int
    seq: int = 0
    age: int = 0
    kind: str = "panic"
    level: int = 0
    outcome: str | None = None
    silent: bool = False
    uplink: bool = False
    zone: str = ""
    open_alerts: int = 0
    ref_type: FrameType | None = None  # HAVE: the type of the event held

    @property
    def event_time(self) -> int:
        return self.time - self.age

    @property
    def identity(self) -> tuple[str, int, int, int]:
        """(origin, seq, type, level): what an alert frame or a HAVE is about."""
        if self.type == FrameType.HAVE:
            assert self.ref_type is not None
            return (self.origin, self.seq, int(self.ref_type), self.level)
        return (self.origin, self.seq, int(self.type), self.level)


def load_key(text: str | bytes) -> bytes:
    """Parse a network key file's content (hex or base64, at least 16 bytes)."""
    import base64
    import binascii

    s = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).strip()
    key: bytes | None = None
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", s):
        key = bytes.fromhex(s)
    else:
        try:
            key = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None:
        raise ValueError("the network key must be hex or base64 text")
    if len(key) < 16:
        raise ValueError(f"the network key is {len(key)} bytes; it must be at least 16")
    return key


def read_key(path: Path) -> bytes:
    """The network key in a key file (see :func:`load_key`)."""
    return load_key(path.read_text())


def write_key(path: Path, key: bytes | None = None) -> bytes:
    """Write a network key file (hex, mode 0600; a new random key unless ``key`` is given)
    and return the key."""
    key = key or secrets.token_bytes(32)
    if not path.parent.exists():
        private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def _tag(key: bytes, node: int, body: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + struct.pack(">I", node & 0xFFFFFFFF) + body,
                    hashlib.sha256).digest()[:TAG_LEN]


def _cut_utf8(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")[:max(limit, 0)]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def encode(frame: Frame, key: bytes, node: int) -> bytes:
    """The bytes of ``frame`` as transmitted by radio node ``node``, tag included.

    Raises ValueError for a frame that cannot be represented (origin too long,
    unknown kind...); zone text is shortened to fit, never refused."""
    origin = frame.origin.encode("ascii", "strict")
    if not _ORIGIN_RE.match(origin):
        raise ValueError(f"hub id {frame.origin!r} cannot go on the mesh: at most {MAX_ORIGIN} "
                         "characters of A-Z a-z 0-9 _ -")
    if not 0 <= frame.time <= 0xFFFFFFFF:
        raise ValueError("time out of range")
    head = struct.pack(">BB", (VERSION << 4) | int(frame.type), len(origin)) + origin \
        + struct.pack(">I", frame.time)
    if frame.type in ALERT_TYPES:
        if not 0 <= frame.seq <= 0xFFFFFF:
            raise ValueError(f"alert seq {frame.seq} does not fit in 24 bits")
        level = min(max(frame.level, 0), MAX_LEVEL)
        info = (KINDS.index(frame.kind) << 5) | (level << 2) | OUTCOMES.index(frame.outcome)
        flags = (1 if frame.silent else 0) | (2 if frame.uplink else 0)
        body = head + struct.pack(">IHBB", frame.seq, min(max(frame.age, 0), 0xFFFF), info, flags)[1:]
        body += _cut_utf8(frame.zone, MAX_ALERT_FRAME - TAG_LEN - len(body))
    elif frame.type == FrameType.BEACON:
        body = head + struct.pack(">BB", 2 if frame.uplink else 0, min(max(frame.open_alerts, 0), 255))
    elif frame.type == FrameType.HAVE:
        if frame.ref_type not in ALERT_TYPES:
            raise ValueError("a HAVE frame must refer to an alert frame type")
        body = head + struct.pack(">I", frame.seq)[1:] + bytes(
            [(int(frame.ref_type) << 4) | min(max(frame.level, 0), MAX_LEVEL)])
    else:  # pragma: no cover - FrameType is closed
        raise ValueError(f"unknown frame type {frame.type!r}")
    return body + _tag(key, node, body)


def decode(data: bytes, key: bytes, node: int) -> Frame:
    """Check and parse the bytes heard from radio node ``node``.

    Returns a Frame or raises a FrameError subclass; nothing else escapes."""
    try:
        return _decode(bytes(data), key, node)
    except FrameError:
        raise
    except Exception as e:  # a parsing slip must still surface as the typed error
        raise FrameFormatError(f"unparseable frame ({type(e).__name__}: {e})") from None


def _decode(data: bytes, key: bytes, node: int) -> Frame:
    if len(data) < 2 + 1 + 4 + TAG_LEN:
        raise FrameFormatError(f"truncated frame ({len(data)} bytes)")
    if len(data) > MAX_PAYLOAD:
        raise FrameFormatError(f"oversized frame ({len(data)} bytes)")
    version, ftype = data[0] >> 4, data[0] & 0x0F
    if version != VERSION:
        raise FrameFormatError(f"unsupported frame version {version}")
    body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    # Authenticate before interpreting anything else: unauthenticated bytes get no say.
    if not hmac.compare_digest(tag, _tag(key, node, body)):
        raise FrameAuthError("bad tag (wrong network key or altered frame)")
    try:
        ftype = FrameType(ftype)
    except ValueError:
        raise FrameFormatError(f"unknown frame type {ftype}") from None
    n = body[1]
    if not 1 <= n <= MAX_ORIGIN or len(body) < 2 + n + 4:
        raise FrameFormatError("bad origin length")
    origin_b = body[2:2 + n]
    if not _ORIGIN_RE.match(origin_b):
        raise FrameFormatError("bad origin hub id")
    origin = origin_b.decode("ascii")
    (time_,) = struct.unpack(">I", body[2 + n:6 + n])
    rest = body[6 + n:]
    if ftype in ALERT_TYPES:
        if len(rest) < 7:
            raise FrameFormatError("truncated alert frame")
        seq = int.from_bytes(rest[0:3], "big")
        (age,) = struct.unpack(">H", rest[3:5])
        info, flags = rest[5], rest[6]
        kind_i, level, outcome_i = info >> 5, (info >> 2) & 0x07, info & 0x03
        if kind_i >= len(KINDS):
            raise FrameFormatError(f"unknown alert kind {kind_i}")
        if flags & ~0x03:
            raise FrameFormatError("unknown flags")
        if age > time_:
            raise FrameFormatError("age exceeds time")
        try:
            zone = rest[7:].decode("utf-8")
        except UnicodeDecodeError:
            raise FrameFormatError("zone is not UTF-8") from None
        if ftype == FrameType.RESOLVED and outcome_i == 0:
            raise FrameFormatError("resolved frame without an outcome")
        return Frame(ftype, origin, time_, seq=seq, age=age, kind=KINDS[kind_i], level=level,
                     outcome=OUTCOMES[outcome_i], silent=bool(flags & 1), uplink=bool(flags & 2), zone=zone)
    if ftype == FrameType.BEACON:
        if len(rest) != 2:
            raise FrameFormatError("bad beacon length")
        if rest[0] & ~0x02:
            raise FrameFormatError("unknown flags")
        return Frame(ftype, origin, time_, uplink=bool(rest[0] & 2), open_alerts=rest[1])
    # HAVE
    if len(rest) != 4:
        raise FrameFormatError("bad receipt length")
    ref_i, level = rest[3] >> 4, rest[3] & 0x0F
    try:
        ref = FrameType(ref_i)
    except ValueError:
        raise FrameFormatError(f"receipt for unknown type {ref_i}") from None
    if ref not in ALERT_TYPES or level > MAX_LEVEL:
        raise FrameFormatError("bad receipt reference")
    return Frame(ftype, origin, time_, seq=int.from_bytes(rest[0:3], "big"), level=level, ref_type=ref)


class ReplayWindow:
    """Refuses authentic frames heard before, or too old to be news.

    Kept per transmitting node (whose number the tag covers): the newest frame time
    heard from it, and the tags heard within ``window`` seconds of that.  A frame is
    refused when its exact bytes were heard already, or when its time is more than
    ``window`` seconds older than the newest from the same node.  A node unheard for
    ``forget_after`` seconds (of this hub's monotonic clock) is forgotten, so that a
    neighbour whose clock was set back recovers within that time.

    The window survives restarts: the link keeps what it records (``restore`` puts it
    back), and refuses by this hub's clock, when it is synchronised, any frame sent
    before its store's retention (an event that old may have been pruned, so its id no
    longer deduplicates it).
    """

    def __init__(self, window: float = 600.0, forget_after: float = 3600.0):
        self.window = window
        self.forget_after = forget_after
        self._newest: dict[int, tuple[int, float]] = {}  # node -> (newest time, monotonic when)
        self._seen: dict[int, dict[bytes, int]] = {}  # node -> {tag: frame time}

    def restore(self, node: int, frame_time: int, tag: bytes, now: float) -> None:
        """Record a frame heard before this window existed (before a restart)."""
        newest = self._newest.get(node)
        self._newest[node] = (frame_time if newest is None else max(frame_time, newest[0]), now)
        self._seen.setdefault(node, {})[tag] = frame_time

    def check(self, node: int, frame_time: int, tag: bytes, now: float) -> None:
        """Raise FrameReplayError, or record the frame as heard."""
        newest = self._newest.get(node)
        if newest is not None and now - newest[1] > self.forget_after:
            self._newest.pop(node, None)
            self._seen.pop(node, None)
            newest = None
        seen = self._seen.setdefault(node, {})
        if tag in seen:
            raise FrameReplayError("replayed frame (heard before)")
        if newest is not None and frame_time < newest[0] - self.window:
            raise FrameReplayError(f"stale frame ({newest[0] - frame_time} s older than the newest "
                                   f"from this node)")
        newest = (frame_time if newest is None else max(frame_time, newest[0]), now)
        self._newest[node] = newest
        seen[tag] = frame_time
        if len(seen) > 64:
            floor = newest[0] - self.window
            for t in [t for t, ft in seen.items() if ft < floor]:
                del seen[t]
            while len(seen) > 4096:  # a flood of fresh frames: forget the oldest
                del seen[min(seen, key=seen.__getitem__)]
