"""The page's OpenAPI 3.1 document at ``/api/openapi.json``.

Request bodies are derived from the command path's own JSON Schemas
(``CommandProcessor.commands``), so the document cannot drift from what is enforced; the
Alert schema is the wire contract's (``hubd.contract``), the same as in MQTT events.
"""

from __future__ import annotations

from typing import Any

from hubd import __version__, contract
from hubd.commands import Command, CommandProcessor
from hubd.web.openapi import Paths, Schema, document, json_body, login_operations, ok, query
from hubd.web.page.api import ALERT_ACTIONS, SIREN_ACTIONS
from hubd.web.page.queries import KINDS, STATES
from hubd.web.policy import Policy


def _body_schema(command: Command, from_path: tuple[str, ...] = ()) -> Schema:
    props = {k: v for k, v in command.properties.items() if k not in from_path}
    schema: Schema = {"type": "object", "properties": props, "additionalProperties": False}
    required = [r for r in command.required if r not in from_path]
    if required:
        schema["required"] = required
    return schema


TIME = {"type": "string", "description": "epoch seconds or ISO date/time (hub local time)"}
ALERT_ID = {"name": "alert_id", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64}, "description": "e.g. hub-1:12"}

EVENT_FILTERS = [
    query("since", TIME, "events at or after this time"),
    query("until", TIME, "events at or before this time"),
    query("type", {"type": "string", "maxLength": 128}, "event type prefix, e.g. alert. or siren."),
    query("alert", {"type": "string", "maxLength": 64}, "only this alert's events"),
    query("kind", {"type": "string", "enum": KINDS}, "the alert's kind"),
    query("state", {"type": "string", "enum": STATES}, "the alert's state after the event"),
    query("source", {"type": "string", "maxLength": 128}, "the alert's source (button) or the event's actor"),
    query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most this many (default 500)"),
]


# --- the alert, as the API returns it ------------------------------------------------------

#: The wire contract's alert schema, the same as in MQTT events.
ALERT_SCHEMA: Schema = contract.schema("alert")

# -------------------------------------------------------------------------------------------


def build(processor: CommandProcessor, policy: Policy) -> dict[str, Any]:
    commands = processor.commands
    paths = Paths()
    op = paths.add
    login_operations(paths)
    op("/api/status", "get", "The hub's health: components, links, outbox, open alerts",
       responses={"200": ok({"type": "object"})}, errors=("401", "429"))
    op("/api/alerts", "get", "Alerts, newest first", params=[
        query("open", {"type": "boolean"}, "only open alerts"),
        query("remote", {"type": "boolean"}, "only neighbours' (true) or only local (false) alerts"),
        query("kind", {"type": "string", "enum": KINDS}, "alert kind"),
        query("state", {"type": "string", "enum": STATES}, "alert state"),
        query("source", {"type": "string", "maxLength": 128}, "button name or hub"),
        query("since", TIME, "raised at or after"), query("until", TIME, "raised at or before"),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most (default 200)")],
       responses={"200": ok({"type": "array", "items": {"$ref": "#/components/schemas/Alert"}})},
       errors=("400", "401", "429"))
    op("/api/alerts/{alert_id}", "get", "One alert with its timeline and snapshots", params=[ALERT_ID],
       responses={"200": ok({"type": "object", "required": ["alert", "events", "snapshots"]})},
       errors=("401", "404", "429"))
    for action, name in ALERT_ACTIONS.items():
        c = commands[name]
        op(f"/api/alerts/{{alert_id}}/{action}", "post", c.summary, params=[ALERT_ID],
           body=json_body(_body_schema(c, ("alert",)), bool(_body_schema(c, ("alert",)).get("required"))),
           responses={"200": ok()}, errors=("400", "401", "403", "404", "409", "415"))
    op("/api/alerts/{alert_id}/snapshots/{snapshot_id}", "get", "A snapshot (JPEG)",
       params=[ALERT_ID, {"name": "snapshot_id", "in": "path", "required": True,
                          "schema": {"type": "integer", "minimum": 0}}],
       responses={"200": ok({"type": "string", "format": "binary"}, "image/jpeg")},
       errors=("401", "404", "429"))
    for action, name in SIREN_ACTIONS.items():
        c = commands[name]
        op(f"/api/siren/{action}", "post", c.summary, body=json_body(_body_schema(c), False),
           responses={"200": ok()}, errors=("400", "401", "403", "404", "415"))
    op("/api/events", "get", "The event log, newest first", params=EVENT_FILTERS,
       responses={"200": ok({"type": "array", "items": {"type": "object"}})}, errors=("400", "401", "429"))
    op("/api/events.csv", "get", "The event log as CSV", params=EVENT_FILTERS,
       responses={"200": ok({"type": "string"}, "text/csv")}, errors=("400", "401", "429"))
    op("/api/commands", "post", "Run any command of the command path (as the CLI and MQTT do)",
       body=json_body({"oneOf": [c.schema for c in commands.values()]}, True),
       responses={"200": ok()}, errors=("400", "401", "403", "404", "409", "415"))
    op("/api/config", "get", "The configuration, secrets hidden", responses={"200": ok({"type": "object"})},
       errors=("401", "429"))
    op("/api/stream", "get", "Live events (Server-Sent Events); resume with Last-Event-ID",
       params=[{"name": "Last-Event-ID", "in": "header", "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"}},
               query("after", {"type": "string", "pattern": "^[0-9]{1,15}$"}, "resume after this event seq")],
       responses={"200": ok({"type": "string"}, "text/event-stream")}, errors=("400", "401", "429", "503"))
    op("/metrics", "get", "Prometheus metrics", responses={"200": ok({"type": "string"}, "text/plain")},
       errors=("401", "429"))
    return document(policy=policy, title="hubd", version=__version__,
                    description="A ward hub's JSON API. Changes need a manager's session and the "
                                "X-CSRF-Token header (POST /api/login returns it).",
                    paths=paths, schemas={"Alert": ALERT_SCHEMA})

