"""The centre's JSON API (documented at ``/api/openapi.json`` by ``docs``).

Reads need a login (session, or HTTP Basic); changes need a session, its CSRF token and an
operator's or supervisor's role; enrolling and removing hubs a supervisor's. Who asked is
recorded with every command as ``<role>:<user>``.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from hubd.centre import queries, registry
from hubd.centre.api.docs import openapi_document
from hubd.centre.operations import MAX_WAIT, Operations, OpError
from hubd.centre.registry import HubRecord
from hubd.centre.supervision import open_alarms
from hubd.contract import MQTT_COMMANDS
from hubd.web.auth import auth, current_user
from hubd.web.body import json_body
from hubd.web.errors import ApiError
from hubd.web.live import sse_response

bp = Blueprint("api", __name__)

STATES = ("raised", "acknowledged", "resolved", "cancelled")
MAX_LIMIT = 5000
#: The API's status for each operation error code.
STATUS = {"not_found": 404, "bad_request": 400, "unavailable": 503, "internal": 500}


def ops() -> Operations:
    return current_app.extensions["centre.ops"]


def who() -> str:
    user = current_user()
    assert user is not None
    return f"{user.role}:{user.name}"


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except OpError as e:
        raise ApiError(e.code, e.message, STATUS.get(e.code, 400)) from None


def _time_arg(name: str) -> float | None:
    """``since``/``until``: ``2h`` (ago), Unix seconds or an ISO 8601 date/time."""
    text = request.args.get(name)
    if not text:
        return None
    try:
        return queries.parse_time(text, time.time())
    except ValueError as e:
        raise ApiError("bad_request", f"{name}: {e}") from None


def _limit(default: int = 200) -> int:
    text = request.args.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError("bad_request", f"limit: expected 1 to {MAX_LIMIT}")
    return int(text)


def _states() -> list[str]:
    text = request.args.get("state", "")
    if not text:
        return []
    if text == "open":
        return list(queries.OPEN_STATES)
    states = text.split(",")
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise ApiError("bad_request", f"state {unknown[0]!r}: expected 'open' or any of {', '.join(STATES)}")
    return states


def _wait(body: dict[str, Any]) -> float:
    wait = body.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
        raise ApiError("bad_request", f"wait: expected 0 to {MAX_WAIT:g} seconds")
    return float(wait)


# -- alerts and events ---------------------------------------------------------------------------

@bp.get("/api/alerts")
def alerts() -> Any:
    centre = current_app.extensions["centre"]
    return jsonify(queries.alerts(centre.store, ward=request.args.get("ward"), hub=request.args.get("hub"),
                                  states=_states(), since=_time_arg("since"), until=_time_arg("until"),
                                  limit=_limit()))


@bp.get("/api/alerts/<alert_id>")
def alert(alert_id: str) -> Any:
    return jsonify(_call(ops().alert, alert_id))


@bp.post("/api/alerts/<alert_id>/<action>")
def act(alert_id: str, action: str) -> Any:
    if action not in ("ack", "resolve", "cancel", "silence"):
        raise ApiError("not_found", f"no action {action!r}: ack, resolve, cancel or silence")
    body = json_body()
    outcome = body.get("outcome")
    return jsonify(_call(ops().act_on_alert, alert_id, action, who(), outcome=outcome, wait=_wait(body)))


@bp.get("/api/events")
def events() -> Any:
    centre = current_app.extensions["centre"]
    a = request.args
    return jsonify(queries.events(centre.store, hub=a.get("hub"), ward=a.get("ward"), type=a.get("type"),
                                  alert_id=a.get("alert"), since=_time_arg("since"), until=_time_arg("until"),
                                  limit=_limit()))


# -- hubs ------------------------------------------------------------------------------------------

@bp.get("/api/hubs")
def hubs() -> Any:
    return jsonify(ops().hubs())


@bp.get("/api/hubs/<hub_id>")
def hub(hub_id: str) -> Any:
    return jsonify(_call(ops().hub, hub_id))


def _require_supervisor() -> None:
    user = current_user()
    if user is None or user.role != "supervisor":
        raise ApiError("forbidden", "only supervisors can enrol or remove hubs")


def _optional_number(body: dict[str, Any], key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ApiError("bad_request", f"{key}: expected a number")
    return float(v)


@bp.post("/api/hubs")
def enrol() -> Any:
    _require_supervisor()
    body = json_body(allow_empty=False)
    for key in ("id", "ward"):
        if not isinstance(body.get(key), str):
            raise ApiError("bad_request", f"{key}: expected a string")
    for key in ("name", "public_key"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError("bad_request", f"{key}: expected a string")
    record = HubRecord(id=body["id"], ward=body["ward"], name=body.get("name") or "",
                       lat=_optional_number(body, "lat"), lon=_optional_number(body, "lon"),
                       public_key=body.get("public_key"), report_every=_optional_number(body, "report_every"))
    replace = body.get("replace") is True
    return jsonify(_call(ops().enrol, record, who(), replace)), 200 if replace else 201


@bp.delete("/api/hubs/<hub_id>")
def unenrol(hub_id: str) -> Any:
    _require_supervisor()
    _call(ops().remove, hub_id, who())
    return jsonify({"ok": True})


@bp.get("/api/enrolment")
def enrolment() -> Any:
    """Hubs heard but not enrolled."""
    return jsonify(registry.candidates(current_app.extensions["centre"].store))


# -- supervision, quarantine, commands, status -------------------------------------------------------

@bp.get("/api/alarms")
def alarms() -> Any:
    centre = current_app.extensions["centre"]
    include_closed = request.args.get("all") in ("1", "true")
    return jsonify(open_alarms(centre.store, request.args.get("hub"), include_closed=include_closed,
                               limit=_limit()))


@bp.get("/api/quarantine")
def quarantine() -> Any:
    centre = current_app.extensions["centre"]
    return jsonify(queries.quarantine(centre.store, hub=request.args.get("hub"),
                                      code=request.args.get("code"), limit=_limit(100)))


@bp.get("/api/commands")
def commands() -> Any:
    centre = current_app.extensions["centre"]
    return jsonify(centre.commands.list(hub=request.args.get("hub"), state=request.args.get("state"),
                                        limit=_limit(100)))


@bp.get("/api/commands/<command_id>")
def command(command_id: str) -> Any:
    found = current_app.extensions["centre"].commands.get(command_id)
    if found is None:
        raise ApiError("not_found", f"no command {command_id!r}")
    return jsonify(found)


@bp.post("/api/commands")
def send_command() -> Any:
    body = json_body(allow_empty=False)
    hub_id, cmd = body.get("hub"), body.get("cmd")
    if not isinstance(hub_id, str) or cmd not in MQTT_COMMANDS:
        raise ApiError("bad_request",
                       f"expected {{\"hub\": <id>, \"cmd\": one of {', '.join(MQTT_COMMANDS)}}}")
    args = {k: v for k, v in body.items() if k in ("alert", "outcome")}
    return jsonify(_call(ops().command, hub_id, cmd, args, who(), _wait(body))), 202


@bp.get("/api/status")
def status() -> Any:
    return jsonify(ops().status())


@bp.get("/api/stream")
def stream() -> Any:
    return sse_response(current_app.extensions["hubd.live"])


@bp.get("/api/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document(current_app.extensions["centre"], auth().policy))
