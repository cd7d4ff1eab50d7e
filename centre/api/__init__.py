"""The centre's web face: the JSON API (``routes``, documented by ``docs`` at
``/api/openapi.json``), a minimal page of alerts and hubs (``page``), the live stream and
Prometheus ``/metrics`` (``metrics``), all on the shared plumbing of ``hubd.web``: its
logins, sessions, CSRF, error answers, live streams and server.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response

from hubd.centre import queries
from hubd.centre.accounts import CHANGE_ROLES, ROLES, Accounts
from hubd.centre.api import page, routes
from hubd.centre.api.metrics import render
from hubd.centre.operations import Operations
from hubd.centre.store import Store
from hubd.web import live as live_streams
from hubd.web import site
from hubd.web.auth import LoginSettings
from hubd.web.live import LiveHub, Message
from hubd.web.metrics import CONTENT_TYPE
from hubd.web.policy import LOGIN_ENDPOINTS, LOGOUT_ENDPOINTS, Policy
from hubd.web.server import WebServer

if TYPE_CHECKING:
    from hubd.centre.service import Centre

#: waitress workers kept free for ordinary requests however many live streams are open.
RESERVED_THREADS = 4

POLICY = Policy(
    home="page.home",
    public=LOGIN_ENDPOINTS | {"static", "api.openapi"},
    roles=ROLES,
    change_roles=CHANGE_ROLES,
    # Enrolment checks for a supervisor itself.
    any_role_unsafe=LOGOUT_ENDPOINTS | {"api.enrol", "api.unenrol"},
    api_paths=frozenset({"/metrics"}),
    realm="hubd-centre",
    cookie_name="hubd_centre_session",
    app_name="hubd centre",
)


class FeedBacklog:
    """``hubd.web.live.Backlog`` over the store's feed."""

    def __init__(self, store: Store):
        self.store = store

    def latest_seq(self) -> int:
        return queries.feed_latest(self.store)

    def after(self, seq: int, limit: int) -> list[Message]:
        return queries.feed_after(self.store, seq, limit)


def secret_key(path: Path) -> bytes:
    """The session secret: made once (0600) and kept, so a restart keeps sessions."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


def create_app(centre: Centre) -> Flask:
    web = centre.config.web
    app = Flask(__name__)
    policy = dataclasses.replace(POLICY, brand=centre.config.centre.name)
    site.init_app(app, policy=policy, accounts=Accounts(centre.store),
                  secret_key=secret_key(centre.config.secret_file),
                  login=LoginSettings(session_hours=web.session_hours, max_failures=web.login_max_failures,
                                      lockout=web.login_lockout))
    live = LiveHub(FeedBacklog(centre.store),
                   max_streams=max(1, min(web.max_streams, web.threads - RESERVED_THREADS)),
                   heartbeat=web.heartbeat, max_age=web.stream_max_age)
    def to_streams(messages: list[Message]) -> None:
        for m in messages:
            live.publish(m)

    centre.listen(to_streams)
    app.extensions.update({"centre": centre, "centre.ops": Operations(centre), live_streams.EXTENSION: live})
    app.register_blueprint(routes.bp)
    app.register_blueprint(page.bp)

    @app.get("/metrics")
    def prometheus() -> Any:
        return Response(render(centre, live), content_type=CONTENT_TYPE)

    return app


def serve(centre: Centre) -> WebServer:
    """The app in waitress on ``[web] bind``/``port``, started."""
    server = WebServer(create_app(centre), centre.config.web.bind, centre.config.web.port,
                       threads=centre.config.web.threads)
    server.start()
    return server
