"""Errors of a page and its API: one exception, one JSON shape, the right status code.

The JSON shape is the hub's command path's own: ``{"ok": false, "error": {"code", "message"}}``.
Machines (the policy's API paths, JSON requests) get it; people get the shared
``error.html`` page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from hubd.web.policy import Policy

log = logging.getLogger("hubd.web")

#: HTTP status for each error code of the shared plumbing (an app passes ``status`` for its own).
STATUS_OF_CODE: dict[str, int] = {
    "bad_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "csrf": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "unsupported_media_type": 415,
    "throttled": 429,
    "internal": 500,
    "unavailable": 503,
}

_CODE_OF_STATUS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
                   405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
                   429: "throttled", 503: "unavailable"}


class ApiError(Exception):
    """A refused request; nothing was changed."""

    def __init__(self, code: str, message: str, status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_OF_CODE.get(code, 400)
        self.headers = headers or {}


def wants_json(policy: Policy) -> bool:
    """API clients and scripts get JSON errors; people get a page."""
    if policy.is_api(request.path) or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(policy: Policy, code: str, message: str, status: int,
                   headers: dict[str, str] | None = None) -> Any:
    if wants_json(policy):
        resp = jsonify({"ok": False, "error": {"code": code, "message": message}})
    else:
        resp = Response(render_template("error.html", code=code, message=message, status=status),
                        mimetype="text/html")
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register(app: Flask, policy: Policy) -> None:
    """JSON or HTML answers for refusals, HTTP errors and unexpected exceptions."""
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> Any:
        if e.status >= 500:
            log.error("%s %s: %s", request.method, request.path, e.message)
        else:
            log.info("refused %s %s: %s (%s)", request.method, request.path, e.message, e.status)
        return error_response(policy, e.code, e.message, e.status, e.headers)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Any:
        status = e.code or 500
        message = e.description or e.name
        if status == 404:
            message = f"no such page: {request.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        headers = {}
        if status == 405 and hasattr(e, "valid_methods") and e.valid_methods:
            headers["Allow"] = ", ".join(e.valid_methods)
        return error_response(policy, _CODE_OF_STATUS.get(status, "bad_request"), message, status, headers)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Any:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(policy, "internal", f"internal error: {type(e).__name__}", 500)
