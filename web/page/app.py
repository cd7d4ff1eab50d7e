"""Flask application factory for the managers' page and the JSON API."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask, Response

from hubd.commands import CommandProcessor
from hubd.config import WebConfig
from hubd.lifecycle import Hub
from hubd.web import live as live_streams
from hubd.web import site
from hubd.web.auth import LoginSettings
from hubd.web.live import LiveHub
from hubd.web.metrics import CONTENT_TYPE
from hubd.web.page import api, views
from hubd.web.page.accounts import UserAccounts
from hubd.web.page.backlog import StoreBacklog, live_feed
from hubd.web.page.metrics import Metrics
from hubd.web.policy import LOGIN_ENDPOINTS, LOGOUT_ENDPOINTS, Policy

#: waitress workers kept free for ordinary requests however many live streams are open.
RESERVED_THREADS = 4

#: Who may do what on the page (its brand, the hub's name, is set per hub by ``create_app``).
POLICY = Policy(
    home="views.dashboard",
    public=LOGIN_ENDPOINTS | {"static", "api.openapi"},
    # The generic command endpoint checks the role per command.
    any_role_unsafe=LOGOUT_ENDPOINTS | {"api.command"},
    api_paths=frozenset({"/metrics"}),
    login_template="hub_login.html",
)


def create_app(hub: Hub, processor: CommandProcessor, *, secret_key: bytes,
               web: WebConfig | None = None) -> Flask:
    """The page and API of one hub.  ``web`` defaults to the hub's own ``[web]`` config."""
    web = web or hub.config.web
    app = Flask(__name__)
    policy = dataclasses.replace(POLICY, brand=hub.config.hub.name or hub.hub_id)
    site.init_app(app, policy=policy, accounts=UserAccounts(hub.store), secret_key=secret_key,
                  login=LoginSettings(session_hours=web.session_hours, max_failures=web.login_max_failures,
                                      lockout=web.login_lockout))
    live = LiveHub(StoreBacklog(hub.store),
                   max_streams=max(1, min(web.max_streams, web.threads - RESERVED_THREADS)),
                   heartbeat=web.heartbeat, max_age=web.stream_max_age)
    metrics = Metrics(hub, live)
    hub.subscribe(live_feed(live))
    hub.subscribe(metrics.on_event)
    app.extensions.update({"hubd.hub": hub, "hubd.processor": processor, live_streams.EXTENSION: live,
                           "hubd.metrics": metrics})

    app.jinja_env.globals["hub_id"] = hub.hub_id  # the live toast tells a neighbour's alert by it
    app.register_blueprint(api.bp)
    views.init_app(app)

    @app.get("/metrics")
    def prometheus() -> Any:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    return app
