"""The alert model: kinds, states, outcomes and the response protocol's state machine.

Pure data and rules, no I/O: the lifecycle (``hubd.lifecycle``) applies them and the
store (``hubd.store``) keeps them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from hubd.contract import event_envelope_v2


class AlertKind(enum.StrEnum):
    PANIC = "panic"
    MEDICAL = "medical"
    FIRE = "fire"
    INTRUSION = "intrusion"
    TAMPER = "tamper"
    FAULT = "fault"
    TEST = "test"


#: Severity follows kind: 1 (highest) .. 4.
SEVERITY: dict[AlertKind, int] = {
    AlertKind.PANIC: 1,
    AlertKind.MEDICAL: 1,
    AlertKind.FIRE: 1,
    AlertKind.INTRUSION: 2,
    AlertKind.TAMPER: 3,
    AlertKind.FAULT: 4,
    AlertKind.TEST: 4,
}


class AlertState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    GENUINE = "genuine"
    FALSE_ALARM = "false_alarm"
    TEST = "test"


OPEN_STATES = frozenset({AlertState.RAISED, AlertState.ACKNOWLEDGED})

#: The response protocol.  Anything not listed is refused.
TRANSITIONS: dict[AlertState, frozenset[AlertState]] = {
    AlertState.RAISED: frozenset({AlertState.ACKNOWLEDGED, AlertState.RESOLVED, AlertState.CANCELLED}),
    AlertState.ACKNOWLEDGED: frozenset({AlertState.RESOLVED}),
    AlertState.RESOLVED: frozenset(),
    AlertState.CANCELLED: frozenset(),
}

#: Event type recorded for each transition into a state.
TRANSITION_EVENT: dict[AlertState, str] = {
    AlertState.RAISED: "alert.raised",
    AlertState.ACKNOWLEDGED: "alert.acknowledged",
    AlertState.RESOLVED: "alert.resolved",
    AlertState.CANCELLED: "alert.cancelled",
}

#: Event types that belong to an alert and are routed at alert priority.
ALERT_EVENT_TYPES = frozenset(TRANSITION_EVENT.values()) | {
    "alert.escalated", "alert.pressed_again", "alert.silenced", "alert.snapshot",
}


class TransitionError(Exception):
    """A command the response protocol refuses.  Nothing was changed."""

    def __init__(self, message: str, code: str = "illegal_transition"):
        super().__init__(message)
        self.code = code


class NotFound(TransitionError):
    def __init__(self, alert_id: str):
        super().__init__(f"no alert with id {alert_id!r}", code="not_found")


def check_transition(alert: Alert, target: AlertState) -> None:
    """Raise TransitionError unless ``alert`` may move to ``target``."""
    if alert.remote:
        raise TransitionError(
            f"alert {alert.id} belongs to hub {alert.hub}; act on it there", code="remote_alert")
    if target not in TRANSITIONS[alert.state]:
        allowed = ", ".join(sorted(TRANSITIONS[alert.state])) or "nothing (it is closed)"
        raise TransitionError(
            f"alert {alert.id} is {alert.state}; it cannot become {target} (allowed: {allowed})")


@dataclass
class Alert:
    """Current state of one alert (local or heard from a neighbour)."""

    id: str
    hub: str
    seq: int
    kind: AlertKind
    source: str
    zone: str
    state: AlertState = AlertState.RAISED
    outcome: Outcome | None = None
    level: int = 0
    silent: bool = False
    raised_at: float = 0.0
    updated_at: float = 0.0
    remote: bool = False
    relayed_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> int:
        return SEVERITY[self.kind]

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies and costs more than the INSERT
        # on the alert path.
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["extra"] = dict(self.extra)
        d["kind"] = str(self.kind)
        d["state"] = str(self.state)
        d["outcome"] = str(self.outcome) if self.outcome else None
        d["severity"] = self.severity
        return d

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alert:
        import json

        return cls(
            id=row["id"], hub=row["hub"], seq=row["seq"], kind=AlertKind(row["kind"]),
            source=row["source"], zone=row["zone"], state=AlertState(row["state"]),
            outcome=Outcome(row["outcome"]) if row["outcome"] else None, level=row["level"],
            silent=bool(row["silent"]), raised_at=row["raised_at"], updated_at=row["updated_at"],
            remote=bool(row["remote"]), relayed_by=row["relayed_by"],
            extra=json.loads(row["extra"] or "{}"),
        )


@dataclass(frozen=True)
class Event:
    """One entry of the append-only audit log, and the envelope sent to other hubs."""

    id: str
    type: str
    time: float
    hub: str
    actor: str
    alert_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # local order (store rowid); never wall time
    #: (destination, outbox row id, priority) of each delivery the store queued with it.
    outbox: tuple[tuple[str, int, int], ...] = ()

    def envelope(self, ward: str, alert: Alert | None) -> dict[str, Any]:
        """The versioned wire form, unsigned (contract version 2: the MQTT ``events`` topic; SSE
        and the API show it too)."""
        return event_envelope_v2(id=self.id, type=self.type, time=self.time, ward=ward, hub=self.hub,
                                 actor=self.actor, data=self.data,
                                 alert=alert.to_dict() if alert is not None else None)
