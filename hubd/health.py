"""The health of the hub's components (store, sirens, buttons, camera, links).

A :class:`HealthRegistry` is a read-only mapping of component name to an immutable
:class:`ComponentHealth`; every read is a copy taken under its own lock, so a reader
never holds, nor sees half of, what a writer changes.  A change (a new status or a new
reason) is handed to the ``on_change`` callback after the lock is released: the hub
records it as an event there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from hubd.clock import Clock


@dataclass(frozen=True)
class ComponentHealth:
    """One component's health: ``status`` is "ok", "fault" or "unknown"; ``since`` is wall time."""

    status: str
    reason: str = ""
    since: float = 0.0


@dataclass(frozen=True)
class HealthChange:
    """What one ``set`` changed (``old`` is None for a component reported for the first time)."""

    component: str
    old: ComponentHealth | None
    new: ComponentHealth


class HealthRegistry(Mapping[str, ComponentHealth]):
    """Component name -> :class:`ComponentHealth`, safe to read and write from any thread."""

    def __init__(self, clock: Clock, on_change: Callable[[HealthChange], None] | None = None):
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._health: dict[str, ComponentHealth] = {}

    def set(self, component: str, status: str, reason: str = "", *,
            quiet: bool = False) -> HealthChange | None:
        """Report a component's health; returns the change, or None if nothing changed.

        ``quiet`` is for a fault that goes on with a new reason (the store's, counting the
        items it keeps in memory): ``on_change`` is not called and, while the status stays
        the same, ``since`` keeps the time it began."""
        with self._lock:
            old = self._health.get(component)
            if old is not None and old.status == status and old.reason == reason:
                return None
            keep = quiet and old is not None and old.status == status
            new = ComponentHealth(status, reason, old.since if keep and old else self._clock.time())
            self._health[component] = new
        change = HealthChange(component, old, new)
        if not quiet and self._on_change is not None:
            self._on_change(change)
        return change

    def snapshot(self) -> dict[str, ComponentHealth]:
        """A copy of every component's health, sorted by name."""
        with self._lock:
            return dict(sorted(self._health.items()))

    def __getitem__(self, component: str) -> ComponentHealth:
        with self._lock:
            return self._health[component]

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._health)
