"""Alert ids and event ids: their formats, built and parsed in one place.

* alert id: ``<hub>:<seq>``, e.g. ``hub-1:7``;
* alert transition event id: ``<alert-id>:<transition>:<level>``, e.g. ``hub-1:7:raised:0``.
  Each transition happens once per alert (escalation once per level), so its id is derived
  from the alert and is the same at every hub, whether heard over MQTT or the LoRa mesh:
  duplicates deduplicate;
* every other event: ``<hub>:e<n>``, e.g. ``hub-1:e42``;
* a status (contract version 2, which confirms statuses too): ``<hub>:s<n>``, e.g. ``hub-1:s12``.

Hub ids are ``[A-Za-z0-9_-]{1,24}`` (``hubd.config`` validates them with ``HUB_PATTERN``): no
colon, so the hub is everything before the first colon and a parse is never ambiguous. Numbers
are written without leading zeros, so an id parses back to exactly one value and builds back
to the same text.

The builders trust their arguments (the hub's own id was validated with its configuration, the
numbers come from its store) and only format; the parsers are strict and refuse anything the
builders would not have written, returning None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A hub id (unanchored, for use inside other patterns).
HUB_PATTERN = r"[A-Za-z0-9_-]{1,24}"
#: A ward id (unanchored).
WARD_PATTERN = r"[A-Za-z0-9_-]{1,32}"

#: The event types of an alert's transitions: the events whose ids derive from the alert.
TRANSITION_EVENT_TYPES = frozenset({
    "alert.raised", "alert.acknowledged", "alert.resolved", "alert.cancelled", "alert.escalated",
})
_TRANSITIONS = "|".join(sorted(t.split(".", 1)[1] for t in TRANSITION_EVENT_TYPES))

_POSITIVE = r"[1-9][0-9]*"
_NATURAL = r"0|[1-9][0-9]*"
_ALERT = rf"(?P<hub>{HUB_PATTERN}):(?P<seq>{_POSITIVE})"
_ALERT_RE = re.compile(_ALERT)
_TRANSITION_RE = re.compile(rf"{_ALERT}:(?P<transition>{_TRANSITIONS}):(?P<level>{_NATURAL})")
_ROUTINE_RE = re.compile(rf"(?P<hub>{HUB_PATTERN}):e(?P<n>{_POSITIVE})")
_STATUS_RE = re.compile(rf"(?P<hub>{HUB_PATTERN}):s(?P<n>{_POSITIVE})")


@dataclass(frozen=True)
class AlertId:
    """A parsed alert id: the hub that raised the alert and its number there."""

    hub: str
    seq: int

    def __str__(self) -> str:
        return alert_id(self.hub, self.seq)


@dataclass(frozen=True)
class TransitionEventId:
    """A parsed transition event id: which alert, which transition, at which level."""

    alert: AlertId
    transition: str  # raised, acknowledged, resolved, cancelled, escalated
    level: int

    @property
    def hub(self) -> str:
        return self.alert.hub

    @property
    def event_type(self) -> str:
        return f"alert.{self.transition}"

    def __str__(self) -> str:
        return transition_event_id(str(self.alert), self.event_type, self.level)


@dataclass(frozen=True)
class RoutineEventId:
    """A parsed id of any other event: the hub and its event number there."""

    hub: str
    n: int

    def __str__(self) -> str:
        return routine_event_id(self.hub, self.n)


@dataclass(frozen=True)
class StatusId:
    """A parsed status id: the hub and the status's number there (``seq`` of status v2)."""

    hub: str
    n: int

    def __str__(self) -> str:
        return status_id(self.hub, self.n)


def alert_id(hub: str, seq: int) -> str:
    """``<hub>:<seq>``."""
    return f"{hub}:{seq}"


def transition_event_id(alert_id: str, event_type: str, level: int) -> str:
    """``<alert-id>:<transition>:<level>`` for an event type of ``TRANSITION_EVENT_TYPES``
    (``alert.raised`` gives ``raised``); ValueError for any other type."""
    if event_type not in TRANSITION_EVENT_TYPES:
        raise ValueError(f"{event_type!r} is not an alert transition; its events get routine ids")
    return f"{alert_id}:{event_type[len('alert.'):]}:{level}"


def routine_event_id(hub: str, n: int) -> str:
    """``<hub>:e<n>``."""
    return f"{hub}:e{n}"


def status_id(hub: str, n: int) -> str:
    """``<hub>:s<n>``."""
    return f"{hub}:s{n}"


def parse_alert_id(text: str) -> AlertId | None:
    """The parts of an alert id, or None when ``text`` is not one."""
    m = _ALERT_RE.fullmatch(text)
    return AlertId(m["hub"], int(m["seq"])) if m else None


def parse_event_id(text: str) -> TransitionEventId | RoutineEventId | None:
    """The parts of an event id (either form), or None when ``text`` is not one."""
    if m := _TRANSITION_RE.fullmatch(text):
        return TransitionEventId(AlertId(m["hub"], int(m["seq"])), m["transition"], int(m["level"]))
    if m := _ROUTINE_RE.fullmatch(text):
        return RoutineEventId(m["hub"], int(m["n"]))
    return None


def parse_status_id(text: str) -> StatusId | None:
    """The parts of a status id, or None when ``text`` is not one."""
    m = _STATUS_RE.fullmatch(text)
    return StatusId(m["hub"], int(m["n"])) if m else None


def origin_of(text: str) -> str:
    """The hub an alert id, event id or status id belongs to (the hub where it happened).

    A message about hub X is only to be believed when X vouches for it, so this refuses
    (ValueError) anything that is not a well-formed id rather than guess.
    """
    parsed = parse_alert_id(text) or parse_event_id(text) or parse_status_id(text)
    if parsed is None:
        raise ValueError(f"{text!r} is neither an alert id, an event id nor a status id")
    return parsed.hub
