"""The hub's status, one JSON-ready dict for ``hubd status``, the page and the MQTT
status message: identity, uptime, component health, alert counts, outbox depth, the
links' and sensors' own reports (status providers) and what the store refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hubd import __version__
from hubd.clock import Clock
from hubd.config import Config
from hubd.health import HealthRegistry
from hubd.store import Store
from hubd.unsaved import UnsavedQueue

StatusProvider = Callable[[], dict[str, Any]]


class StatusBoard:
    """Assembles the status from the parts that keep it."""

    def __init__(self, config: Config, store: Store, health: HealthRegistry, unsaved: UnsavedQueue,
                 clock: Clock, clock_synced: Callable[[], bool]):
        self._config = config
        self._store = store
        self._health = health
        self._unsaved = unsaved
        self._clock = clock
        self._clock_synced = clock_synced
        self._started = clock.monotonic()
        self._lock = threading.Lock()
        self._providers: dict[str, StatusProvider] = {}

    def add_provider(self, name: str, provider: StatusProvider) -> None:
        """Show ``provider()`` under ``links[name]`` (links, sirens, buttons, camera)."""
        with self._lock:
            self._providers[name] = provider

    def status(self) -> dict[str, Any]:
        with self._lock:
            providers = dict(self._providers)
        links = {}
        for name, provider in providers.items():
            try:
                links[name] = provider()
            except Exception as e:  # a broken provider must not break `hubd status`
                links[name] = {"error": str(e)}
        hub = self._config.hub
        return {
            "hub": hub.id, "ward": hub.ward, "name": hub.name, "location": hub.location,
            "version": __version__,
            "uptime": round(self._clock.monotonic() - self._started, 1),
            "clock_synced": self._clock_synced(),
            "components": {k: {"status": v.status, "reason": v.reason, "since": v.since}
                           for k, v in self._health.snapshot().items()},
            "alerts": self._store.count_alerts_by_state(),
            "open_alerts": [a.to_dict() for a in self._store.alerts(open_only=True, limit=50)],
            "outbox": self._store.outbox_stats(),
            "links": links,
            "unsaved": self._unsaved.describe(),
        }
