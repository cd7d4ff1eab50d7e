"""``/metrics`` in the Prometheus text exposition format (version 0.0.4).

Read from ``hub.status()`` so it shows whatever links are registered: a link whose
status has ``connected`` gives ``hubd_link_up``, one with ``neighbours`` gives
``hubd_neighbours_heard``.  Last button activity is tracked from the hub's events.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from hubd.lifecycle import Hub
from hubd.model import AlertState, Event

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if not v.is_integer() else str(int(v))


class Metrics:
    """Builds the exposition; keeps the last button activity per button."""

    def __init__(self, hub: Hub, streams: Any = None):
        self.hub = hub
        self.streams = streams
        self._lock = threading.Lock()
        self.button_activity: dict[str, float] = {}
        # Seed from the store once; afterwards the hub's events keep it current.
        for r in hub.store.query("SELECT actor, max(time) AS t FROM events WHERE actor LIKE 'button:%' "
                                 "GROUP BY actor"):
            self.button_activity[r["actor"].split(":", 1)[1]] = r["t"]

    def on_event(self, event: Event, envelope: dict[str, Any]) -> None:
        if event.actor.startswith("button:"):
            with self._lock:
                self.button_activity[event.actor.split(":", 1)[1]] = event.time

    def render(self) -> str:
        status = self.hub.status()
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[dict[str, Any], Any]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                if value is None:
                    continue
                lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
                out.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

        family("hubd_info", "gauge", "Which hub this is", [({"hub": status["hub"], "ward": status["ward"],
                                                             "version": status["version"]}, 1)])
        family("hubd_uptime_seconds", "gauge", "Seconds since the daemon started", [({}, status["uptime"])])
        family("hubd_clock_synced", "gauge", "1 if the system clock is synchronised",
               [({}, bool(status["clock_synced"]))])
        counts = status["alerts"]
        family("hubd_alerts", "gauge", "Local alerts by state",
               [({"state": s.value}, counts.get(s.value, 0)) for s in AlertState])
        remote_open = sum(1 for a in status["open_alerts"] if a.get("remote"))
        family("hubd_neighbour_open_alerts", "gauge", "Open alerts heard from neighbouring hubs",
               [({}, remote_open)])
        family("hubd_unsaved_events", "gauge", "Events kept in memory because the store refuses writes",
               [({}, len(status.get("unsaved") or []))])
        outbox = status["outbox"]
        links = status["links"]
        dests = sorted(set(self.hub.config.destinations()) | set(outbox))
        family("hubd_outbox_depth", "gauge", "Events waiting for delivery, per link",
               [({"link": d}, outbox.get(d, {}).get("depth", 0)) for d in dests])
        family("hubd_outbox_oldest_age_seconds", "gauge", "Age of the oldest undelivered event, per link",
               [({"link": d}, outbox.get(d, {}).get("oldest_age") or 0) for d in dests])
        family("hubd_link_up", "gauge", "1 if the link is connected",
               [({"link": n}, bool(v["connected"])) for n, v in sorted(links.items())
                if isinstance(v, dict) and "connected" in v])
        family("hubd_neighbours_heard", "gauge", "Neighbouring hubs heard recently, per link",
               [({"link": n}, _count(v["neighbours"])) for n, v in sorted(links.items())
                if isinstance(v, dict) and "neighbours" in v])
        family("hubd_component_ok", "gauge", "1 if the component (button, siren, camera...) is healthy",
               [({"component": c}, h["status"] == "ok") for c, h in status["components"].items()])
        with self._lock:
            activity = dict(self.button_activity)
        family("hubd_button_last_activity_timestamp_seconds", "gauge",
               "When each button last raised or re-pressed an alert (epoch seconds)",
               [({"button": b}, t) for b, t in sorted(activity.items())])
        if self.streams is not None:
            family("hubd_web_live_streams", "gauge", "Open live (SSE) streams",
                   [({}, self.streams.open_streams)])
        return "\n".join(out) + "\n"


def _count(value: Any) -> int:
    if isinstance(value, dict | list | tuple | set):
        return len(value)
    if isinstance(value, int | float):
        return int(value)
    return 0
