"""Reading a request's JSON body, refused with a message that says what is wrong."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from hubd.web.errors import ApiError


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
