"""Flask application factory for the managers' page and the JSON API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Response

from hubd.commands import CommandProcessor
from hubd.config import WebConfig
from hubd.lifecycle import Hub
from hubd.web import api, auth, errors, views
from hubd.web.live import LiveHub
from hubd.web.metrics import CONTENT_TYPE, Metrics

#: waitress workers kept free for ordinary requests however many live streams are open.
RESERVED_THREADS = 4

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def create_app(hub: Hub, processor: CommandProcessor, *, secret_key: bytes,
               web: WebConfig | None = None) -> Flask:
    """The page and API of one hub.  ``web`` defaults to the hub's own ``[web]`` config."""
    web = web or hub.config.web
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME="hubd_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=web.session_hours),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    live = LiveHub(hub.store, max_streams=max(1, min(web.max_streams, web.threads - RESERVED_THREADS)),
                   heartbeat=web.heartbeat, max_age=web.stream_max_age)
    metrics = Metrics(hub, live)
    hub.subscribe(live.publish)
    hub.subscribe(metrics.on_event)
    app.extensions.update({"hubd.hub": hub, "hubd.processor": processor, "hubd.live": live,
                           "hubd.metrics": metrics})

    errors.register(app)
    auth.init_app(app, hub.store, web)
    app.register_blueprint(api.bp)
    views.init_app(app)

    @app.get("/metrics")
    def prometheus() -> Any:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype in ("text/html", "application/json", "text/csv"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    return app
