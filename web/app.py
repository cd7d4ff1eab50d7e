"""Flask application factory for the status page."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, jsonify, render_template

from hubd.commands import CommandProcessor
from hubd.lifecycle import Hub


def create_app(hub: Hub, processor: CommandProcessor, *, secret_key: bytes) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")

    @app.template_filter("ago")
    def ago(ts: float) -> str:
        s = max(0, int(time.time() - ts))
        return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h"

    @app.template_filter("clock")
    def clock(ts: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))

    @app.get("/")
    def index() -> str:
        return render_template("index.html", status=hub.status(),
                               alerts=hub.store.alerts(limit=100))

    @app.get("/api/alerts")
    def api_alerts() -> Any:
        return jsonify([a.to_dict() for a in hub.store.alerts(limit=200)])

    @app.get("/api/status")
    def api_status() -> Any:
        return jsonify(hub.status())

    return app
