"""The centre's page: open alerts, hubs and their health, open alarms (the operator console
is a later step; this page is for seeing at a glance). It reloads itself when the live
stream says something changed."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, render_template

from hubd.centre import queries
from hubd.centre.supervision import open_alarms

bp = Blueprint("page", __name__)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _minutes(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min"


def power_text(status: dict[str, Any] | None) -> str:
    """What a hub last said of its power, for a person: "on battery · 62 % · 1 h 20 min left"."""
    power = (status or {}).get("power") or {}
    state = power.get("state")
    if not state or state == "unknown":
        return "-"
    parts = [{"mains": "mains", "on_battery": "ON BATTERY", "battery_low": "BATTERY LOW",
              "shutting_down": "POWERING DOWN"}.get(state, str(state))]
    if isinstance(power.get("battery"), int | float):
        parts.append(f"{power['battery']:.0f} %")
    if state != "mains" and isinstance(power.get("time_left"), int | float):
        parts.append(f"{_minutes(power['time_left'])} left")
    if power.get("undervoltage"):
        parts.append("under-voltage")
    return " · ".join(parts)


def enclosure_open(status: dict[str, Any] | None) -> bool:
    return bool(((status or {}).get("tamper") or {}).get("open"))


@bp.get("/")
def home() -> Any:
    centre = current_app.extensions["centre"]
    ops = current_app.extensions["centre.ops"]
    hubs = ops.hubs()
    return render_template("centre_home.html",
                           alerts=queries.alerts(centre.store, states=queries.OPEN_STATES),
                           recent=queries.alerts(centre.store, limit=20), hubs=hubs,
                           alarms=open_alarms(centre.store), status=ops.status(), when=_when,
                           power=power_text, enclosure_open=enclosure_open,
                           hub_status={h["id"]: h.get("status") for h in hubs})
