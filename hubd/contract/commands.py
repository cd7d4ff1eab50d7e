"""Commands of contract version 2 (the centre's alone) and the hub's signed replies.

The centre builds a command with ``command_payload_v2`` and signs it (kind ``command``) with
its key. A hub reads it with ``parse_untrusted(raw, "command-v2")`` and then
``check_command``, which accepts it only when, in this order:

1. the centre's signature verifies (``unsigned``, ``bad_signature``): nothing unsigned gets a
   say in the later checks;
2. ``hub`` is this hub (``wrong_hub``): a command for one hub cannot be replayed to another;
3. it is fresh (``stale``): with the hub's clock synchronised, ``time`` is within
   ``window`` (default ``COMMAND_WINDOW``, 300 s) of it. With the clock not synchronised, the
   hub cannot judge ``time`` against its clock, so it judges it against the newest command it
   has accepted (``newest``, kept on disk): older than that by more than ``window`` is stale.
   The command is accepted, and the reply says so (``note``);
4. its id was never seen (``replayed``), by the hub's ``seen(id)``.

The hub keeps the ids (and times) of the commands it accepted, on disk, while their time is
at or after ``command_horizon(newest, now, clock_synced)``: every command that could pass
check 3 again is then still known to check 4, across restarts and whatever its clock does
(provided the centre's clock is right).

Replies (``reply_payload_v2``, ``error_reply_v2``) are signed by the hub (kind ``reply``) and
go only to the hub's own ``<base>/reply``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hubd.contract.envelope import CONTRACT_V2
from hubd.contract.errors import ContractError
from hubd.contract.payloads import reply_payload
from hubd.contract.signing import verify

#: Seconds a command's time may differ from a synchronised hub clock.
COMMAND_WINDOW = 300.0


@dataclass(frozen=True)
class AcceptedCommand:
    """A command that passed ``check_command``: the payload, and a ``note`` for the reply when
    it was accepted on weaker grounds (the hub's clock not synchronised)."""

    command: Mapping[str, Any]
    note: str | None = None

    @property
    def id(self) -> str:
        return str(self.command["id"])

    @property
    def time(self) -> float:
        return float(self.command["time"])


def command_payload_v2(*, id: str, cmd: str, hub: str, time: float, by: str, alert: str | None = None,
                       outcome: str | None = None) -> dict[str, Any]:
    """The unsigned command ``cmd`` for ``hub`` (schema ``command-v2``): ``id`` unique (a UUID),
    ``time`` the centre's clock, ``by`` who asked (``operator:alice``). Sign it with
    ``sign("command", ...)``."""
    command: dict[str, Any] = {"v": CONTRACT_V2, "id": id, "cmd": cmd, "hub": hub, "time": time, "by": by}
    if alert is not None:
        command["alert"] = alert
    if outcome is not None:
        command["outcome"] = outcome
    return command


def check_command(command: Any, *, hub: str, centre_key: Ed25519PublicKey, now: float, clock_synced: bool,
                  seen: Callable[[str], bool], newest: float | None = None,
                  window: float = COMMAND_WINDOW) -> AcceptedCommand:
    """Accept ``command`` for ``hub`` at the hub's clock ``now`` or raise ContractError (see the
    module's doc for the checks and codes). ``newest`` is the time of the newest command this
    hub has accepted (None before the first)."""
    verify("command", command, centre_key)
    if command.get("hub") != hub:
        raise ContractError("wrong_hub", f"a command for hub {command.get('hub')}, not {hub}")
    sent, command_id = command.get("time"), command.get("id")
    if isinstance(sent, bool) or not isinstance(sent, int | float) or not math.isfinite(sent) \
            or not isinstance(command_id, str):
        raise ContractError("bad_request", "a command has a numeric 'time' and a string 'id'")
    note = None
    if clock_synced:
        if abs(sent - now) > window:
            raise ContractError("stale", f"sent {sent - now:+.0f} s from this hub's clock; the window is "
                                f"+-{window:.0f} s")
    else:
        if newest is not None and sent < newest - window:
            raise ContractError("stale", f"sent {newest - sent:.0f} s before the newest command accepted, "
                                f"more than the window of {window:.0f} s")
        note = ("this hub's clock is not synchronised: the command's time was checked only against the "
                "newest command accepted, and its id against those seen")
    if seen(command_id):
        raise ContractError("replayed", f"command {command_id[:80]} was seen before")
    return AcceptedCommand(command, note)


def command_horizon(newest: float | None, now: float, clock_synced: bool,
                    window: float = COMMAND_WINDOW) -> float:
    """The time before which a hub may forget the ids of the commands it accepted (``newest``
    is the newest one's time): no command older than this can pass ``check_command``'s
    freshness check again, with the clock synchronised or not."""
    if newest is None:
        return -math.inf  # nothing accepted, nothing to forget
    return (min(newest, now) if clock_synced else newest) - 2 * window


def reply_payload_v2(*, hub: str, command_id: str | None, time: float, reply: Mapping[str, Any],
                     repeated: bool = False, note: str | None = None) -> dict[str, Any]:
    """The unsigned reply (schema ``reply-v2``) from the command path's answer
    (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message"}}``) at the
    hub's ``time``. Sign it with ``sign("reply", ...)``."""
    out = {**reply_payload(hub, command_id, reply, repeated), "v": CONTRACT_V2, "time": time}
    if note:
        out["note"] = note
    return out


def error_reply_v2(*, hub: str, command_id: str | None, time: float, code: str,
                   message: str) -> dict[str, Any]:
    """An unsigned refusal (schema ``reply-v2``); ``code`` is one of the schema's error codes
    (a ``ContractError``'s code, for one)."""
    return reply_payload_v2(hub=hub, command_id=command_id, time=time,
                            reply={"ok": False, "error": {"code": code, "message": message}})
