"""The OpenAPI 3.1 document at ``/api/openapi.json``.

Request bodies are derived from the command path's own JSON Schemas
(``CommandProcessor.commands``), so the document cannot drift from what is enforced; the
Alert schema is the wire contract's (``hubd.contract``), the same as in MQTT events.
"""

from __future__ import annotations

from typing import Any

from hubd import __version__, contract
from hubd.commands import Command, CommandProcessor
from hubd.web.api import ALERT_ACTIONS, SIREN_ACTIONS
from hubd.web.queries import KINDS, STATES

ERR = {"$ref": "#/components/responses/Error"}
AUTH_ERRORS = {"401": ERR, "403": ERR}
CHANGE_SECURITY = [{"session": [], "csrf": []}]
READ_SECURITY = [{"session": []}, {"basic": []}]


def _body_schema(command: Command, from_path: tuple[str, ...] = ()) -> dict[str, Any]:
    props = {k: v for k, v in command.properties.items() if k not in from_path}
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    required = [r for r in command.required if r not in from_path]
    if required:
        schema["required"] = required
    return schema


def _json_body(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any] | None = None, media: str = "application/json",
        description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {}}}}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TIME = {"type": "string", "description": "epoch seconds or ISO date/time (hub local time)"}
ALERT_ID = {"name": "alert_id", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64}, "description": "e.g. hub-1:12"}

EVENT_FILTERS = [
    _q("since", TIME, "events at or after this time"),
    _q("until", TIME, "events at or before this time"),
    _q("type", {"type": "string", "maxLength": 128}, "event type prefix, e.g. alert. or siren."),
    _q("alert", {"type": "string", "maxLength": 64}, "only this alert's events"),
    _q("kind", {"type": "string", "enum": KINDS}, "the alert's kind"),
    _q("state", {"type": "string", "enum": STATES}, "the alert's state after the event"),
    _q("source", {"type": "string", "maxLength": 128}, "the alert's source (button) or the event's actor"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most this many (default 500)"),
]


def build(processor: CommandProcessor) -> dict[str, Any]:
    commands = processor.commands
    paths: dict[str, Any] = {}

    def op(path: str, method: str, summary: str, *, responses: dict[str, Any],
           params: list[Any] | None = None, body: dict[str, Any] | None = None,
           security: list[Any] | None = None, errors: tuple[str, ...] = ()) -> None:
        o: dict[str, Any] = {"summary": summary, "operationId": f"{method}_{path}".replace("/", "_")
                             .replace("{", "").replace("}", "").replace(".", "_").replace("__", "_"),
                             "responses": {**responses, **{c: ERR for c in errors}}}
        if params:
            o["parameters"] = params
        if body is not None:
            o["requestBody"] = body
        o["security"] = READ_SECURITY if security is None else security
        if method != "get" and security is None:
            o["security"] = CHANGE_SECURITY
        paths.setdefault(path, {})[method] = o

    op("/api/login", "post", "Log in; returns the CSRF token for later changes",
       body=_json_body({"type": "object", "required": ["user", "password"], "additionalProperties": True,
                        "properties": {"user": {"type": "string"}, "password": {"type": "string"}}}, True),
       responses={"200": _ok({"$ref": "#/components/schemas/Me"})}, security=[],
       errors=("400", "401", "403", "415", "429"))
    op("/api/logout", "post", "Log out", responses={"200": _ok()}, errors=("401", "403"))
    op("/api/me", "get", "Who is logged in, and the CSRF token", responses={"200": _ok(
        {"$ref": "#/components/schemas/Me"})}, errors=("401", "429"))
    op("/api/status", "get", "The hub's health: components, links, outbox, open alerts",
       responses={"200": _ok({"type": "object"})}, errors=("401", "429"))
    op("/api/alerts", "get", "Alerts, newest first", params=[
        _q("open", {"type": "boolean"}, "only open alerts"),
        _q("remote", {"type": "boolean"}, "only neighbours' (true) or only local (false) alerts"),
        _q("kind", {"type": "string", "enum": KINDS}, "alert kind"),
        _q("state", {"type": "string", "enum": STATES}, "alert state"),
        _q("source", {"type": "string", "maxLength": 128}, "button name or hub"),
        _q("since", TIME, "raised at or after"), _q("until", TIME, "raised at or before"),
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most (default 200)")],
       responses={"200": _ok({"type": "array", "items": {"$ref": "#/components/schemas/Alert"}})},
       errors=("400", "401", "429"))
    op("/api/alerts/{alert_id}", "get", "One alert with its timeline and snapshots", params=[ALERT_ID],
       responses={"200": _ok({"type": "object", "required": ["alert", "events", "snapshots"]})},
       errors=("401", "404", "429"))
    for action, name in ALERT_ACTIONS.items():
        c = commands[name]
        op(f"/api/alerts/{{alert_id}}/{action}", "post", c.summary, params=[ALERT_ID],
           body=_json_body(_body_schema(c, ("alert",)), bool(_body_schema(c, ("alert",)).get("required"))),
           responses={"200": _ok()}, errors=("400", "401", "403", "404", "409", "415"))
    op("/api/alerts/{alert_id}/snapshots/{snapshot_id}", "get", "A snapshot (JPEG)",
       params=[ALERT_ID, {"name": "snapshot_id", "in": "path", "required": True,
                          "schema": {"type": "integer", "minimum": 0}}],
       responses={"200": _ok({"type": "string", "format": "binary"}, "image/jpeg")},
       errors=("401", "404", "429"))
    for action, name in SIREN_ACTIONS.items():
        c = commands[name]
        op(f"/api/siren/{action}", "post", c.summary, body=_json_body(_body_schema(c), False),
           responses={"200": _ok()}, errors=("400", "401", "403", "404", "415"))
    op("/api/events", "get", "The event log, newest first", params=EVENT_FILTERS,
       responses={"200": _ok({"type": "array", "items": {"type": "object"}})}, errors=("400", "401", "429"))
    op("/api/events.csv", "get", "The event log as CSV", params=EVENT_FILTERS,
       responses={"200": _ok({"type": "string"}, "text/csv")}, errors=("400", "401", "429"))
    op("/api/commands", "post", "Run any command of the command path (as the CLI and MQTT do)",
       body=_json_body({"oneOf": [c.schema for c in commands.values()]}, True),
       responses={"200": _ok()}, errors=("400", "401", "403", "404", "409", "415"))
    op("/api/config", "get", "The configuration, secrets hidden", responses={"200": _ok({"type": "object"})},
       errors=("401", "429"))
    op("/api/stream", "get", "Live events (Server-Sent Events); resume with Last-Event-ID",
       params=[{"name": "Last-Event-ID", "in": "header", "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"}},
               _q("after", {"type": "string", "pattern": "^[0-9]{1,15}$"}, "resume after this event seq")],
       responses={"200": _ok({"type": "string"}, "text/event-stream")}, errors=("400", "401", "429", "503"))
    paths.setdefault("/metrics", {})["get"] = {
        "summary": "Prometheus metrics", "operationId": "get_metrics", "security": READ_SECURITY,
        "responses": {"200": _ok({"type": "string"}, "text/plain"), "401": ERR, "429": ERR}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "hubd", "version": __version__,
                 "description": "A ward hub's JSON API. Changes need a manager's session and the "
                                "X-CSRF-Token header (POST /api/login returns it)."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "hubd_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "responses": {"Error": {"description": "Refused; nothing was changed", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["ok", "error"], "properties": {
                    "ok": {"const": False}, "error": {"type": "object", "required": ["code", "message"],
                                                      "properties": {"code": {"type": "string"},
                                                                     "message": {"type": "string"}}}}},
                "Me": {"type": "object", "required": ["user", "role", "csrf_token"], "properties": {
                    "user": {"type": "string"}, "role": {"enum": ["manager", "viewer"]},
                    "csrf_token": {"type": "string"}}},
                "Alert": contract.schema("alert"),
            },
        },
    }
