"""The one command path shared by the CLI (control socket), the page's API and MQTT.

A command is a JSON object ``{"cmd": NAME, ...arguments}``, validated against the
command's JSON Schema before anything is touched.  ``execute`` never raises: it
returns ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message"}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from hubd.lifecycle import Hub
from hubd.model import Outcome, TransitionError

log = logging.getLogger("hubd.commands")

_ALERT_ID = {"type": "string", "minLength": 1, "maxLength": 64}

Handler = Callable[[dict[str, Any], str], Any]


class CommandError(Exception):
    """A command refused before it changed anything."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    properties: dict[str, Any]
    required: tuple[str, ...] = ()
    changes_state: bool = True
    summary: str = ""

    @property
    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"cmd": {"const": self.name}, "id": {"type": "string", "maxLength": 128},
                           **self.properties},
            "required": ["cmd", *self.required],
            "additionalProperties": False,
        }


def _alert(a: Any) -> dict[str, Any]:
    return a.to_dict()


class CommandProcessor:
    """Validates and runs commands against a Hub."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self._commands: dict[str, Command] = {}
        h = hub
        self.register(Command("ack", lambda a, who: _alert(h.acknowledge(a["alert"], who)),
                              {"alert": _ALERT_ID}, ("alert",), summary="Acknowledge an alert"))
        self.register(Command("resolve", lambda a, who: _alert(h.resolve(a["alert"], a["outcome"], who)),
                              {"alert": _ALERT_ID, "outcome": {"enum": [o.value for o in Outcome]}},
                              ("alert", "outcome"), summary="Resolve an alert with its outcome"))
        self.register(Command("cancel", lambda a, who: _alert(h.cancel(a["alert"], who)),
                              {"alert": _ALERT_ID}, ("alert",),
                              summary="Cancel an alert within the cancel window"))
        self.register(Command("silence", self._silence, {"alert": _ALERT_ID},
                              summary="Silence the sirens (alerts stay open)"))
        self.register(Command("siren_test", self._siren_test, {}, summary="Sound a short test chirp"))
        self.register(Command("status", lambda a, who: h.status(), {}, changes_state=False,
                              summary="The hub's status"))
        self.register(Command(
            "alerts", lambda a, who: [x.to_dict() for x in h.store.alerts(
                open_only=not a.get("all", False), limit=a.get("limit", 200))],
            {"all": {"type": "boolean"}, "limit": {"type": "integer", "minimum": 1, "maximum": 10_000}},
            changes_state=False, summary="Open alerts, or all with all=true"))
        self.register(Command(
            "events", lambda a, who: [{k: r[k] for k in ("seq", "id", "type", "time", "hub", "actor",
                                                         "alert_id", "data")}
                                      for r in h.store.events(since=a.get("since"), alert_id=a.get("alert"),
                                                              limit=a.get("limit", 500),
                                                              newest_first=True)][::-1],
            {"since": {"type": "number"}, "alert": _ALERT_ID,
             "limit": {"type": "integer", "minimum": 1, "maximum": 10_000}},
            changes_state=False, summary="The event log, oldest first"))

    def _silence(self, args: dict[str, Any], actor: str) -> dict[str, Any]:
        self.hub.silence(actor, args.get("alert"))
        return {"silenced": True}

    def _siren_test(self, args: dict[str, Any], actor: str) -> dict[str, Any]:
        self.hub.siren_test(actor)
        return {"tested": True}

    def register(self, command: Command) -> None:
        self._commands[command.name] = command

    @property
    def commands(self) -> dict[str, Command]:
        return dict(self._commands)

    def validate(self, request: Any) -> Command:
        """Return the command for a request, or raise CommandError saying what is wrong."""
        if not isinstance(request, dict):
            raise CommandError(f"a command must be a JSON object, got {type(request).__name__}")
        name = request.get("cmd")
        if not isinstance(name, str):
            raise CommandError("missing 'cmd': expected one of " + ", ".join(sorted(self._commands)))
        command = self._commands.get(name)
        if command is None:
            raise CommandError(f"unknown command {name!r}; expected one of "
                               + ", ".join(sorted(self._commands)), code="unknown_command")
        errors = sorted(jsonschema.Draft202012Validator(command.schema).iter_errors(request),
                        key=lambda e: list(map(str, e.path)))
        if errors:
            e = errors[0]
            where = ".".join(map(str, e.absolute_path)) or name
            raise CommandError(f"{where}: {e.message}")
        return command

    def execute(self, request: Any, actor: str) -> dict[str, Any]:
        """Run one command as ``actor``; never raises."""
        reply: dict[str, Any] = {"ok": False}
        if isinstance(request, dict) and isinstance(request.get("id"), str):
            reply["id"] = request["id"]
        try:
            command = self.validate(request)
            result = command.handler(request, actor)
        except CommandError as e:
            log.warning("refused command from %s: %s", actor, e)
            reply["error"] = {"code": e.code, "message": str(e)}
        except TransitionError as e:
            log.warning("refused command from %s: %s", actor, e)
            reply["error"] = {"code": e.code, "message": str(e)}
        except Exception as e:  # the daemon must survive any command
            log.exception("command from %s failed", actor)
            reply["error"] = {"code": "internal", "message": f"{type(e).__name__}: {e}"}
        else:
            reply["ok"] = True
            reply["result"] = result
        return reply
