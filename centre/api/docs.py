"""The OpenAPI 3.1 document of the centre's API (``/api/openapi.json``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from hubd.contract import MQTT_COMMANDS, schema
from hubd.web.openapi import Paths, Schema, document, json_body, login_operations, ok, query
from hubd.web.policy import Policy

if TYPE_CHECKING:
    from hubd.centre.service import Centre

NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
TRUST = {"enum": ["signed", "ward-attested", "unsigned-v1"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


PATH = obj(["path", "via", "first_at", "last_at", "count"], path={"enum": ["direct", "relayed", "mesh"]},
           via=STR, first_at=NUM, last_at=NUM, count={"type": "integer"})

SCHEMAS: dict[str, Schema] = {
    "WireAlert": schema("alert"),
    "Alert": obj(["id", "hub", "ward", "state", "level", "raised_at", "trust", "alert"],
                 id=STR, hub=STR, ward=STR, seq={"type": "integer"}, kind=STR, source=STR, zone=STR,
                 state={"enum": ["raised", "acknowledged", "resolved", "cancelled"]}, outcome=STR_OR_NULL,
                 level={"type": "integer"}, silent={"type": "boolean"},
                 severity={"type": ["integer", "null"]},
                 raised_at=NUM, updated_at=NUM, first_seen_at=NUM, changed_at=NUM, event_id=STR, trust=TRUST,
                 alert=ref("WireAlert")),
    "Event": obj(["seq", "id", "hub", "ward", "type", "time", "received_at", "trust", "envelope", "paths"],
                 seq={"type": "integer"}, id=STR, hub=STR, ward=STR, type=STR, alert_id=STR_OR_NULL, time=NUM,
                 received_at=NUM, trust=TRUST, envelope={"type": "object"}, paths=array(PATH)),
    "Hub": obj(["id", "ward", "health"], id=STR, ward=STR, name=STR, lat=NUM_OR_NULL, lon=NUM_OR_NULL,
               public_key=STR_OR_NULL, report_every=NUM_OR_NULL, enrolled_at=NUM, enrolled_by=STR,
               last_heard_at=NUM_OR_NULL, last_direct_at=NUM_OR_NULL, last_relayed_at=NUM_OR_NULL,
               last_relayed_by=STR_OR_NULL, online={"type": ["boolean", "null"]},
               status={"type": ["object", "null"]}, status_at=NUM_OR_NULL, clock_skew=NUM_OR_NULL,
               skew_flagged={"type": "boolean"},
               health=obj(["state"], state={"enum": ["online", "waiting", "hub_silent", "path_fault",
                                                                "power_lost"]},
                          reporting_time=NUM, heard_ago=NUM_OR_NULL, relayed_ago=NUM_OR_NULL,
                          relayed_by=STR_OR_NULL)),
    "NewHub": obj(["id", "ward"], id=STR, ward=STR, name=STR, lat=NUM, lon=NUM, report_every=NUM,
                  public_key={"type": "string", "description": "ed25519:<43 base64url characters>"},
                  replace={"type": "boolean", "description": "change an enrolled hub"}),
    "Alarm": obj(["id", "hub", "kind", "opened_at", "reason"], id={"type": "integer"}, hub=STR, ward=STR,
                 kind={"enum": ["hub_silent", "path_fault", "power_lost"]}, opened_at=NUM,
                 closed_at=NUM_OR_NULL,
                 reason=STR,
                 detail={"type": "object", "description": "the hub's last known state when it opened"}),
    "Command": obj(["id", "hub", "cmd", "by", "sent_at", "state"], id=STR, hub=STR, ward=STR,
                   cmd={"enum": list(MQTT_COMMANDS)}, args={"type": "object"}, by=STR, sent_at=NUM,
                   timeout_at=NUM, state={"enum": ["sent", "replied", "failed", "timeout"]},
                   reply={"type": ["object", "null"]}, replied_at=NUM_OR_NULL),
    "NewCommand": obj(["hub", "cmd"], hub=STR, cmd={"enum": list(MQTT_COMMANDS)}, alert=STR,
                      outcome={"enum": ["genuine", "false_alarm", "test"]},
                      wait={"type": "number", "minimum": 0, "maximum": 60,
                            "description": "seconds to wait for the hub's reply"}),
    "Quarantined": obj(["id", "received_at", "topic", "code", "reason", "size"], id={"type": "integer"},
                       received_at=NUM, topic=STR, ward=STR_OR_NULL, hub=STR_OR_NULL, code=STR, reason=STR,
                       size={"type": "integer"}, payload=STR, retained={"type": "boolean"}),
}

TIME = {"type": "string", "description": "Unix seconds or ISO 8601"}


def _version() -> str:
    try:
        return version("hubd")
    except PackageNotFoundError:
        return "unknown"


def openapi_document(centre: Centre, policy: Policy) -> Schema:
    p = Paths()
    login_operations(p)
    limit = query("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "at most this many")
    since, until = query("since", TIME, "from this time"), query("until", TIME, "before this time")
    hub, ward = query("hub", STR, "of this hub"), query("ward", STR, "of this ward")
    p.add("/api/alerts", "get", "Alerts, newest raised first", params=[
        hub, ward, query("state", STR, "'open', or states separated by commas"), since, until, limit],
        responses={"200": ok(array(ref("Alert")))}, errors=("400", "401"))
    p.add("/api/alerts/{alert_id}", "get", "One alert and its timeline (every event and its paths)",
          params=[{"name": "alert_id", "in": "path", "required": True, "schema": STR}],
          responses={"200": ok({"allOf": [ref("Alert"), obj(["events"], events=array(ref("Event")))]})},
          errors=("401", "404"))
    p.add("/api/alerts/{alert_id}/{action}", "post",
          "Acknowledge, resolve, cancel or silence an alert on its hub",
          params=[{"name": "alert_id", "in": "path", "required": True, "schema": STR},
                  {"name": "action", "in": "path", "required": True,
                   "schema": {"enum": ["ack", "resolve", "cancel", "silence"]}}],
          body=json_body(obj([], outcome={"enum": ["genuine", "false_alarm", "test"]},
                             wait={"type": "number", "minimum": 0, "maximum": 60}), False),
          responses={"200": ok(ref("Command"))}, errors=("400", "401", "403", "404", "503"))
    p.add("/api/events", "get", "Events, newest first, each with the paths that carried it", params=[
        hub, ward, query("type", STR, "of this type"), query("alert", STR, "of this alert"), since, until,
        limit],
        responses={"200": ok(array(ref("Event")))}, errors=("400", "401"))
    p.add("/api/hubs", "get", "Enrolled hubs with their health", responses={"200": ok(array(ref("Hub")))},
          errors=("401",))
    p.add("/api/hubs", "post", "Enrol a hub (supervisors)", body=json_body(ref("NewHub"), True),
          responses={"201": ok({"type": "object"}), "200": ok({"type": "object"})},
          errors=("400", "401", "403"))
    hub_path = [{"name": "hub_id", "in": "path", "required": True, "schema": STR}]
    p.add("/api/hubs/{hub_id}", "get", "One hub, its alarms and recent commands", params=hub_path,
          responses={"200": ok(ref("Hub"))}, errors=("401", "404"))
    p.add("/api/hubs/{hub_id}", "delete", "Remove a hub from the registry (supervisors)", params=hub_path,
          responses={"200": ok()}, errors=("401", "403", "404"))
    p.add("/api/enrolment", "get", "Hubs heard but not enrolled (their traffic is quarantined)",
          responses={"200": ok(array({"type": "object"}))}, errors=("401",))
    p.add("/api/alarms", "get", "Supervision alarms (open ones unless all=1)",
          params=[hub, query("all", STR, "1: closed ones too"), limit],
          responses={"200": ok(array(ref("Alarm")))}, errors=("400", "401"))
    p.add("/api/quarantine", "get", "Refused messages with the reason, newest first",
          params=[hub, query("code", STR, "with this code"), limit],
          responses={"200": ok(array(ref("Quarantined")))}, errors=("400", "401"))
    p.add("/api/commands", "get", "Commands sent to hubs, newest first",
          params=[hub, query("state", STR, "sent, replied, failed or timeout"), limit],
          responses={"200": ok(array(ref("Command")))}, errors=("400", "401"))
    p.add("/api/commands", "post", "Send a command to a hub", body=json_body(ref("NewCommand"), True),
          responses={"202": ok(ref("Command"))}, errors=("400", "401", "403", "404", "503"))
    p.add("/api/commands/{command_id}", "get", "One command and its reply",
          params=[{"name": "command_id", "in": "path", "required": True, "schema": STR}],
          responses={"200": ok(ref("Command"))}, errors=("401", "404"))
    p.add("/api/status", "get", "The centre's own state", responses={"200": ok({"type": "object"})},
          errors=("401",))
    p.add("/api/stream", "get", "Live stream (Server-Sent Events) of the feed; resumes after Last-Event-ID",
          params=[query("after", {"type": "integer"}, "resume after this seq")],
          responses={"200": ok(STR, media="text/event-stream")}, errors=("400", "401", "503"))
    p.add("/api/openapi.json", "get", "This document", responses={"200": ok({"type": "object"})}, security=[])
    return document(policy=policy, title=f"{centre.config.centre.name}: hubd centre API", version=_version(),
                    description="The E-telligence centre: every ward hub's alerts, events, health and "
                                "commands. Changes need a session, its CSRF token (X-CSRF-Token) and an "
                                "operator's or supervisor's role.",
                    paths=p, schemas=SCHEMAS)

