"""The centre's Prometheus metrics (``/metrics``): ingest rate and lag, hubs by health,
receipts pending, the quarantine, alerts by state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubd.centre import queries
from hubd.centre.supervision import HUB_SILENT, PATH_FAULT, POWER_LOST
from hubd.web.live import LiveHub
from hubd.web.metrics import Exposition

if TYPE_CHECKING:
    from hubd.centre.service import Centre

HEALTH_STATES = ("online", "waiting", HUB_SILENT, PATH_FAULT, POWER_LOST)
QUANTILES = (0.5, 0.9, 0.99)


def render(centre: Centre, live: LiveHub) -> str:
    out = Exposition()
    s = centre.ingest.stats
    now = centre.clock.monotonic()
    counts = queries.counts(centre.store)
    out.family("centre_up", "gauge", "The centre is running", [({}, 1)])
    out.family("centre_mqtt_connected", "gauge", "Connected to the broker", [({}, centre.ingest.connected)])
    out.family("centre_ingest_messages_total", "counter", "Messages received, by what they were",
               [({"kind": k}, v) for k, v in sorted(s.received.items())])
    out.family("centre_ingest_rate", "gauge", "Messages committed per second (last 10 s)",
               [({}, s.rate(now))])
    out.family("centre_ingest_backlog", "gauge", "Messages received, not yet committed",
               [({}, centre.ingest.backlog)])
    out.family("centre_ingest_lag_seconds", "summary", "From arrival to commit (recent messages)",
               [({"quantile": q}, s.lag.quantile(q)) for q in QUANTILES])
    out.family("centre_event_delay_seconds", "summary",
               "From the origin's event time to commit (recent events)",
               [({"quantile": q}, s.delay.quantile(q)) for q in QUANTILES])
    out.family("centre_events_stored_total", "counter", "Events stored since the start", [({}, s.stored)])
    out.family("centre_events_duplicate_total", "counter", "Copies of stored events heard again",
               [({}, s.duplicates)])
    out.family("centre_events", "gauge", "Events in the store", [({}, counts["events"])])
    out.family("centre_store_failures_total", "counter", "Batches that found the store down",
               [({}, s.store_failures)])
    out.family("centre_receipts_pending", "gauge", "Receipts not yet acknowledged by the broker",
               [({}, counts["receipts_pending"])])
    out.family("centre_receipts_sent_total", "counter", "Receipts sent since the start",
               [({}, s.receipts_sent)])
    out.family("centre_quarantine_messages", "gauge", "Messages in quarantine, by reason code",
               [({"code": k}, v) for k, v in sorted(counts["quarantine"].items())])
    out.family("centre_quarantined_total", "counter", "Messages quarantined since the start, by reason code",
               [({"code": k}, v) for k, v in sorted(s.quarantined.items())])
    health = centre.supervisor.health()
    out.family("centre_hubs", "gauge", "Enrolled hubs by health",
               [({"state": st}, sum(1 for h in health.values() if h["state"] == st)) for st in HEALTH_STATES])
    out.family("centre_supervision_paused", "gauge", "Supervision paused by the centre's own outage",
               [({}, centre.supervisor.paused)])
    out.family("centre_alerts", "gauge", "Alerts by state",
               [({"state": k}, v) for k, v in sorted(counts["alerts"].items())])
    skews = [({"hub": h["id"]}, h["clock_skew"]) for h in queries.hubs(centre.store)
             if h["clock_skew"] is not None]
    out.family("centre_hub_clock_skew_seconds", "gauge", "A hub's clock minus the centre's", skews)
    out.family("centre_live_streams", "gauge", "Open live streams", [({}, live.open_streams)])
    return out.text()
