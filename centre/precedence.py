"""Alert state by precedence, not by arrival: the same final state whatever the order and
whatever the path its events came by.

An alert moves raised < acknowledged < resolved/cancelled, and within a state by level
(escalation). An event relayed over the mesh can arrive after a later one sent directly;
its ``alert`` object must not roll the state back. Between trust levels: a believed state
(signed, or a version 1 envelope) always wins over a ward-attested one, whatever their
ranks, and a ward-attested event may only raise or escalate (``trust.may_move``): a forged
mesh frame can neither close nor reopen an alert its origin signed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hubd.centre.trust import BELIEVED, may_move

STATE_RANK = {"raised": 0, "acknowledged": 1, "resolved": 2, "cancelled": 2}


def rank(alert: Mapping[str, Any]) -> tuple[int, int]:
    """Where an alert's state stands: later states and higher levels are greater."""
    return STATE_RANK[alert["state"]], int(alert["level"])


def supersedes(new: Mapping[str, Any], new_trust: str, new_type: str, current: Mapping[str, Any] | None,
               current_trust: str | None) -> bool:
    """Whether the state ``new`` (from an event of ``new_type`` and ``new_trust``) replaces
    ``current``."""
    if not may_move(new_type, new_trust):
        return False
    if current is None or current_trust is None:
        return True
    new_believed, current_believed = new_trust in BELIEVED, current_trust in BELIEVED
    if new_believed != current_believed:
        return new_believed
    return rank(new) > rank(current)
