"""``/metrics`` in the Prometheus text exposition format (version 0.0.4).

Read from ``hub.status()`` so it shows whatever links are registered: a link whose
status has ``connected`` gives ``hubd_link_up``, one with ``neighbours`` gives
``hubd_neighbours_heard``.  Last button activity is tracked from the hub's events.
"""

from __future__ import annotations

import threading
from typing import Any

from hubd.lifecycle import Hub
from hubd.model import AlertState, Event
from hubd.web.live import LiveHub
from hubd.web.metrics import Exposition


class Metrics:
    """Builds the exposition; keeps the last button activity per button."""

    def __init__(self, hub: Hub, streams: LiveHub | None = None):
        self.hub = hub
        self.streams = streams
        self._lock = threading.Lock()
        # Seed from the store once; afterwards the hub's events keep it current.
        self.button_activity: dict[str, float] = hub.store.last_button_activity()

    def on_event(self, event: Event, envelope: dict[str, Any]) -> None:
        if event.actor.startswith("button:"):
            with self._lock:
                self.button_activity[event.actor.split(":", 1)[1]] = event.time

    def render(self) -> str:
        status = self.hub.status()
        out = Exposition()
        family = out.family

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
        return out.text()


def _count(value: Any) -> int:
    if isinstance(value, dict | list | tuple | set):
        return len(value)
    if isinstance(value, int | float):
        return int(value)
    return 0
