"""The JSON API under ``/api``: the same command path as the CLI and MQTT.

Every change goes through ``CommandProcessor.execute`` with the user as actor; its
error codes become HTTP statuses (``errors.STATUS_OF_CODE``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from hubd.commands import CommandProcessor
from hubd.config import redacted
from hubd.lifecycle import Hub
from hubd.web import queries
from hubd.web.auth import current_user
from hubd.web.errors import ApiError
from hubd.web.live import LiveHub, StreamBody

bp = Blueprint("api", __name__, url_prefix="/api")

#: Actions on one alert: URL verb -> command name.
ALERT_ACTIONS = {"ack": "ack", "resolve": "resolve", "cancel": "cancel", "silence": "silence"}
SIREN_ACTIONS = {"test": "siren_test", "silence": "silence"}


def hub() -> Hub:
    return current_app.extensions["hubd.hub"]


def processor() -> CommandProcessor:
    return current_app.extensions["hubd.processor"]


def live() -> LiveHub:
    return current_app.extensions["hubd.live"]


def json_body(*, allow_empty: bool = True) -> dict[str, Any]:
    """The request's JSON object, or ApiError saying what is wrong with it."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError("bad_request", "empty body: expected a JSON object")
    if request.mimetype != "application/json":
        raise ApiError("unsupported_media_type",
                       f"expected Content-Type: application/json, got {request.mimetype or 'none'!r}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError("bad_request", f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", f"body must be a JSON object, got {type(body).__name__}")
    return body


def run(command: dict[str, Any]) -> Any:
    """Execute a command as the current user; the result, or ApiError with the right status."""
    user = current_user()
    assert user is not None
    reply = processor().execute(command, actor=user.actor)
    if not reply["ok"]:
        err = reply["error"]
        raise ApiError(err["code"], err["message"])
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
    cmd = processor().commands.get(body.get("cmd")) if isinstance(body.get("cmd"), str) else None
    user = current_user()
    assert user is not None
    if cmd is not None and cmd.changes_state and not user.is_manager:
        raise ApiError("forbidden", f"user {user.name} is a {user.role}: only managers can change state")
    return jsonify(run(body))


@bp.get("/config")
def config() -> Any:
    return jsonify(redacted(hub().config))


@bp.get("/stream")
def stream() -> Any:
    last = request.headers.get("Last-Event-ID") or request.args.get("after")
    last_seq = None
    if last:
        try:
            last_seq = int(last)
        except ValueError:
            raise ApiError("bad_request", f"Last-Event-ID/after {last!r} is not an event sequence number") \
                from None
        if last_seq < 0:
            raise ApiError("bad_request", "Last-Event-ID/after must not be negative")
    s = live().open()
    if s is None:
        raise ApiError("unavailable", f"too many live streams open ({live().max_streams}); "
                                      "the page still works by reloading", headers={"Retry-After": "30"})
    resp = Response(StreamBody(live(), s, last_seq), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


@bp.get("/openapi.json")
def openapi() -> Any:
    from hubd.web.openapi import build

    return jsonify(build(processor()))
