"""The managers' pages: dashboard, alert, event log, config.

Forms post to the same command path as the API and work without JavaScript; with
it, ``static/app.js`` sends them as JSON and refreshes the live parts in place.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request

from hubd.model import Outcome
from hubd.web.auth import safe_next
from hubd.web.errors import ApiError
from hubd.web.page import queries
from hubd.web.page.api import ALERT_ACTIONS, SIREN_ACTIONS, alert_detail, hub, live, run

bp = Blueprint("views", __name__)

DONE = {"ack": "acknowledged", "resolve": "resolved", "cancel": "cancelled", "silence": "silenced"}


def _latest_seq() -> int:
    return live().backlog.latest_seq()


def dashboard_context() -> dict[str, Any]:
    h = hub()
    status = h.status()
    open_alerts = h.store.alerts(open_only=True, limit=200)
    snaps: dict[str, dict[str, Any]] = {}
    for a in open_alerts:
        rows = h.store.snapshots(a.id)
        if rows:
            snaps[a.id] = rows[-1]
    closed = [a for a in h.store.alerts(limit=12) if not a.is_open][:8]
    return {
        "status": status,
        "local": [a for a in open_alerts if not a.remote],
        "remote": [a for a in open_alerts if a.remote],
        "closed": closed,
        "snaps": snaps,
        "outcomes": [o.value for o in Outcome],
        "cancel_window": h.config.protocol.cancel_window,
        "now": time.time(),
        "links": links_view(status),
    }


def links_view(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Each registered link with its outbox figures, rendered generically."""
    out = []
    outbox = status.get("outbox", {})
    dests = set(outbox) | set(hub().config.destinations())
    names = sorted(set(status.get("links", {})) | dests)
    for name in names:
        info = status.get("links", {}).get(name)
        box = outbox.get(name, {})
        connected = info.get("connected") if isinstance(info, dict) else None
        out.append({"name": name, "connected": connected, "is_link": name in dests,
                    "depth": box.get("depth", 0), "oldest_age": box.get("oldest_age"),
                    "info": info if isinstance(info, dict) else {"value": info}})
    return out


@bp.get("/")
def dashboard() -> Any:
    return render_template("dashboard.html", seq=_latest_seq(), **dashboard_context())


@bp.get("/partials/dashboard")
def dashboard_partial() -> Any:
    return render_template("_dashboard.html", **dashboard_context())


@bp.get("/alerts/<alert_id>")
def alert_page(alert_id: str) -> Any:
    return render_template("alert.html", seq=_latest_seq(), **_alert_context(alert_id))


@bp.get("/partials/alerts/<alert_id>")
def alert_partial(alert_id: str) -> Any:
    return render_template("_alert.html", **_alert_context(alert_id))


def _alert_context(alert_id: str) -> dict[str, Any]:
    d = alert_detail(alert_id)
    return {"a": d["alert"], "events": d["events"], "snapshots": d["snapshots"],
            "outcomes": [o.value for o in Outcome], "now": time.time(),
            "cancel_window": hub().config.protocol.cancel_window}


def _form_command(command: dict[str, Any], done: str) -> Any:
    """Run a form's command; on success back to the page, on refusal an error page with its status."""
    run(command)
    flash(done)
    return redirect(safe_next(request.form.get("next")), code=303)


@bp.post("/alerts/<alert_id>/<action>")
def alert_action(alert_id: str, action: str) -> Any:
    if action not in ALERT_ACTIONS:
        raise ApiError("not_found", f"no action {action!r}")
    cmd: dict[str, Any] = {"cmd": ALERT_ACTIONS[action], "alert": alert_id}
    if action == "resolve":
        cmd["outcome"] = request.form.get("outcome", "")
    return _form_command(cmd, f"{alert_id} {DONE[action]}")


@bp.post("/siren/<action>")
def siren(action: str) -> Any:
    if action not in SIREN_ACTIONS:
        raise ApiError("not_found", f"no siren action {action!r}")
    return _form_command({"cmd": SIREN_ACTIONS[action]},
                         "siren test chirp sent" if action == "test" else "sirens silenced")


@bp.get("/events")
def events() -> Any:
    error = None
    try:
        f = queries.EventFilter.parse(request.args)
        rows = queries.events(hub().store, f)
    except ApiError as e:
        f, rows, error = queries.EventFilter(), [], e.message
    status = 400 if error else 200
    return render_template("events.html", f=f, rows=rows, error=error, kinds=queries.KINDS,
                           states=queries.STATES, args=request.args), status


@bp.get("/config")
def config_page() -> Any:
    from hubd.config import redacted

    cfg = redacted(hub().config)
    return render_template("config.html", cfg=cfg)


def init_app(app: Any) -> None:
    app.register_blueprint(bp)

    @app.template_filter("ago")
    def ago(ts: float | None) -> str:
        if not ts:
            return "-"
        s = max(0, int(time.time() - ts))
        return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h"

    @app.template_filter("clock")
    def clock(ts: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"

    @app.template_filter("hm")
    def hm(ts: float | None) -> str:
        return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"

    @app.template_filter("tojson_compact")
    def tojson_compact(v: Any) -> str:
        return json.dumps(v, separators=(", ", ": "), default=str, sort_keys=True)
