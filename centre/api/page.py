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


@bp.get("/")
def home() -> Any:
    centre = current_app.extensions["centre"]
    ops = current_app.extensions["centre.ops"]
    return render_template("centre_home.html",
                           alerts=queries.alerts(centre.store, states=queries.OPEN_STATES),
                           recent=queries.alerts(centre.store, limit=20), hubs=ops.hubs(),
                           alarms=open_alarms(centre.store), status=ops.status(), when=_when)
