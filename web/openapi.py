"""Building blocks for the OpenAPI 3.1 document of an app built on ``hubd.web``.

``Paths`` collects operations; ``login_operations`` documents the shared login
endpoints; ``document`` wraps it all with the security schemes, the shared error
response and the ``Error`` and ``Me`` schemas.
"""

from __future__ import annotations

from typing import Any

from hubd.web.auth import CSRF_HEADER
from hubd.web.policy import Policy

Schema = dict[str, Any]
Security = list[dict[str, list[str]]]

ERROR: Schema = {"$ref": "#/components/responses/Error"}
#: Changes: a session and its CSRF token.  Reads: a session, or HTTP Basic.
CHANGE_SECURITY: Security = [{"session": [], "csrf": []}]
READ_SECURITY: Security = [{"session": []}, {"basic": []}]


def json_body(schema: Schema, required: bool) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def ok(schema: Schema | None = None, media: str = "application/json", description: str = "OK") -> Schema:
    return {"description": description, "content": {media: {"schema": schema or {}}}}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def operation_id(method: str, path: str) -> str:
    return f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", "").replace(".", "_") \
        .replace("__", "_")


class Paths:
    """The ``paths`` of a document, one operation at a time."""

    def __init__(self) -> None:
        self.paths: dict[str, dict[str, Schema]] = {}

    def add(self, path: str, method: str, summary: str, *, responses: dict[str, Any],
            params: list[Schema] | None = None, body: Schema | None = None,
            security: Security | None = None, errors: tuple[str, ...] = ()) -> None:
        """One operation; ``errors`` lists the status codes answered with the shared error.
        ``security`` defaults to a session and CSRF token for changes, a session or Basic
        for reads."""
        op: Schema = {"summary": summary, "operationId": operation_id(method, path),
                      "responses": {**responses, **{c: ERROR for c in errors}}}
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = body
        if security is None:
            security = READ_SECURITY if method == "get" else CHANGE_SECURITY
        op["security"] = security
        self.paths.setdefault(path, {})[method] = op


def login_operations(paths: Paths) -> None:
    """The shared login endpoints (``hubd.web.auth``)."""
    credentials = {"type": "object", "required": ["user", "password"], "additionalProperties": True,
                   "properties": {"user": {"type": "string"}, "password": {"type": "string"}}}
    paths.add("/api/login", "post", "Log in; returns the CSRF token for later changes",
              body=json_body(credentials, True),
              responses={"200": ok({"$ref": "#/components/schemas/Me"})}, security=[],
              errors=("400", "401", "403", "415", "429"))
    paths.add("/api/logout", "post", "Log out", responses={"200": ok()}, errors=("401", "403"))
    paths.add("/api/me", "get", "Who is logged in, and the CSRF token",
              responses={"200": ok({"$ref": "#/components/schemas/Me"})}, errors=("401", "429"))


def document(*, policy: Policy, title: str, version: str, description: str, paths: Paths,
             schemas: dict[str, Schema] | None = None) -> Schema:
    """The whole document; ``schemas`` are the app's own, beside ``Error`` and ``Me``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths.paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": policy.cookie_name},
                "csrf": {"type": "apiKey", "in": "header", "name": CSRF_HEADER},
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
                    "user": {"type": "string"}, "role": {"enum": list(policy.roles)},
                    "csrf_token": {"type": "string"}}},
                **(schemas or {}),
            },
        },
    }
