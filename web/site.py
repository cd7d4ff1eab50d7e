"""The frame every app built on ``hubd.web`` shares: session cookie, security headers,
error answers, logins, and the shared templates (``layout.html``, ``base.html``,
``login.html``, ``error.html``).

An app's own template folder comes first, so it may give its own ``base.html``
(extending ``layout.html``: brand, navigation, its stylesheet and script); the shared
login and error pages extend ``base.html`` and so wear the app's frame.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask, Response

from hubd.web import auth, errors
from hubd.web.auth import Accounts, LoginSettings
from hubd.web.policy import Policy

#: Requests larger than this are refused (413) before any handler reads them.
MAX_BODY = 64 * 1024

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def init_app(app: Flask, *, policy: Policy, accounts: Accounts, secret_key: bytes,
             login: LoginSettings, csp: str = CSP) -> None:
    """Make ``app`` a hubd.web app: call before registering the app's own blueprints."""
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME=policy.cookie_name,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=login.session_hours),
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.jinja_env.globals["policy"] = policy
    app.register_blueprint(Blueprint("hubd_web", __name__, template_folder="templates"))
    errors.register(app, policy)
    auth.init_app(app, accounts, policy, login)

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", csp)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype in ("text/html", "application/json", "text/csv"):
            resp.headers["Cache-Control"] = "no-store"
        return resp
