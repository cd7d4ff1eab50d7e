"""The JSON API under ``/api``: the same command path as the CLI and MQTT.

Every change goes through ``CommandProcessor.execute`` with the user as actor; its
error codes become HTTP statuses (``COMMAND_STATUS``, else ``errors.STATUS_OF_CODE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from hubd.commands import CommandProcessor
from hubd.config import redacted
from hubd.lifecycle import Hub
from hubd.web import auth
from hubd.web import live as live_streams
from hubd.web.auth import User, current_user
from hubd.web.body import json_body
from hubd.web.errors import ApiError
from hubd.web.live import LiveHub, sse_response
from hubd.web.page import queries

bp = Blueprint("api", __name__, url_prefix="/api")

#: Actions on one alert: URL verb -> command name.
ALERT_ACTIONS = {"ack": "ack", "resolve": "resolve", "cancel": "cancel", "silence": "silence"}
SIREN_ACTIONS = {"test": "siren_test", "silence": "silence"}

#: HTTP status of the command path's own error codes (the shared ones: ``errors.STATUS_OF_CODE``).
COMMAND_STATUS = {
    "unknown_command": 400,
    "illegal_transition": 409,
    "cancel_window_passed": 409,
    "remote_alert": 409,
}


def hub() -> Hub:
    return current_app.extensions["hubd.hub"]


def processor() -> CommandProcessor:
    return current_app.extensions["hubd.processor"]


def live() -> LiveHub:
    return current_app.extensions[live_streams.EXTENSION]


def actor(user: User) -> str:
    """The event log's name for what a user does on the page."""
    return f"web:{user.name}"


def run(command: dict[str, Any]) -> Any:
    """Execute a command as the current user; the result, or ApiError with the right status."""
    user = current_user()
    assert user is not None
    reply = processor().execute(command, actor=actor(user))
    if not reply["ok"]:
        err = reply["error"]
        raise ApiError(err["code"], err["message"], status=COMMAND_STATUS.get(err["code"]))
    return reply["result"]


def alert_command(action: str, alert_id: str, body: dict[str, Any]) -> dict[str, Any]:
    for key in ("cmd", "alert"):
        if key in body:
            raise ApiError("bad_request", f"unexpected key {key!r}: the URL says it")
    return {**body, "cmd": ALERT_ACTIONS[action], "alert": alert_id}


@bp.get("/status")
def status() -> Any:
    return jsonify(hub().status())


@bp.get("/alerts")
def alerts() -> Any:
    return jsonify(queries.alerts(hub().store, request.args))


def alert_detail(alert_id: str) -> dict[str, Any]:
    a = hub().store.get_alert(alert_id)
    if a is None:
        raise ApiError("not_found", f"no alert with id {alert_id!r}")
    events = queries.events(hub().store, queries.EventFilter(alert=alert_id, limit=1000))[::-1]
    snaps = [{"id": s["id"], "time": s["time"], "size": s["size"],
              "url": f"/api/alerts/{alert_id}/snapshots/{s['id']}"} for s in hub().store.snapshots(alert_id)]
    return {"alert": a.to_dict(), "events": events, "snapshots": snaps}


@bp.get("/alerts/<alert_id>")
def alert(alert_id: str) -> Any:
    return jsonify(alert_detail(alert_id))


@bp.post("/alerts/<alert_id>/<action>")
def alert_action(alert_id: str, action: str) -> Any:
    if action not in ALERT_ACTIONS:
        raise ApiError("not_found", f"no action {action!r}; expected one of {', '.join(ALERT_ACTIONS)}")
    return jsonify(run(alert_command(action, alert_id, json_body())))


def snapshot_path(alert_id: str, snapshot_id: int) -> Path:
    row = next((s for s in hub().store.snapshots(alert_id) if s["id"] == snapshot_id), None)
    if row is None:
        raise ApiError("not_found", f"alert {alert_id!r} has no snapshot {snapshot_id}")
    base = hub().config.state_dir.resolve()
    path = (base / row["path"]).resolve()
    # The row's path comes from the store; still never serve anything outside state_dir.
    if not path.is_relative_to(base) or not path.is_file():
        raise ApiError("not_found", f"snapshot {snapshot_id} of {alert_id} is missing on disk")
    return path


@bp.get("/alerts/<alert_id>/snapshots/<int:snapshot_id>")
def snapshot(alert_id: str, snapshot_id: int) -> Any:
    resp = send_file(snapshot_path(alert_id, snapshot_id), mimetype="image/jpeg", max_age=0,
                     conditional=True)
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


@bp.post("/siren/<action>")
def siren(action: str) -> Any:
    if action not in SIREN_ACTIONS:
        raise ApiError("not_found", f"no siren action {action!r}; expected test or silence")
    body = json_body()
    if "cmd" in body:
        raise ApiError("bad_request", "unexpected key 'cmd': the URL says it")
    return jsonify(run({**body, "cmd": SIREN_ACTIONS[action]}))


@bp.get("/events")
def events() -> Any:
    return jsonify(queries.events(hub().store, queries.EventFilter.parse(request.args)))


@bp.get("/events.csv")
def events_csv() -> Any:
    f = queries.EventFilter.parse(request.args)
    text = queries.events_csv(queries.events(hub().store, f))
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="hubd-{hub().hub_id}-events.csv"'})


@bp.post("/commands")
def command() -> Any:
    """Any command of the command path; viewers may run only those that change nothing."""
    body = json_body(allow_empty=False)
    name = body.get("cmd")
    cmd = processor().commands.get(name) if isinstance(name, str) else None
    user = current_user()
    assert user is not None
    if cmd is not None and cmd.changes_state:
        auth.require_change(user)
    return jsonify(run(body))


@bp.get("/config")
def config() -> Any:
    return jsonify(redacted(hub().config))


@bp.get("/stream")
def stream() -> Any:
    return sse_response(live(), owner=auth.session_owner())


@bp.get("/openapi.json")
def openapi() -> Any:
    from hubd.web.page.openapi import build

    return jsonify(build(processor(), auth.auth().policy))
