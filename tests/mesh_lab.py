"""Several hubs in one process, joined by the simulated air: for tests and the benchmark.

Each ``LabHub`` is the real core (config, SQLite store, ``Hub``, ``CommandProcessor``)
with a real ``MeshLink`` talking through the real ``meshtastic`` TCPInterface to its
own ``SimNode``.  No pins, page or control socket: ``hubd demo --hubs N`` runs whole
daemons instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hubd.commands import CommandProcessor
from hubd.config import Config, parse_config
from hubd.lifecycle import Hub
from hubd.radio.frames import write_key
from hubd.radio.mesh import MeshLink
from hubd.radio.meshsim import SimAir, SimNode
from hubd.store import Store

#: Timers short enough for a simulated air running at a fraction of real airtime.
FAST_MESH = {
    "beacon_interval": 2.0, "neighbour_timeout": 30.0, "ack_timeout": 2.5, "retry_initial": 0.5,
    "retry_max": 4.0, "reconnect_max": 1.0, "watchdog": 20.0, "replay_window": 600.0,
}


def lab_config(base: Path, hub_id: str, port: int, key_file: Path, *, ward: str = "ward-7",
               mesh: dict[str, Any] | None = None, mqtt: dict[str, Any] | None = None,
               escalation: Iterable[float] = (600.0,)) -> Config:
    data: dict[str, Any] = {
        "hub": {"ward": ward, "id": hub_id, "state_dir": str(base / hub_id),
                "runtime_dir": str(base / hub_id / "run")},
        "hardware": {"pin_factory": "mock", "boot_grace": 0},
        "camera": {"backend": "none"},
        "web": {"enabled": False},
        "protocol": {"cancel_window": 30, "escalation": list(escalation)},
        "mesh": {"connection": f"tcp:127.0.0.1:{port}", "key_file": str(key_file),
                 **FAST_MESH, **(mesh or {})},
    }
    if mqtt is not None:
        data["mqtt"] = mqtt
    return parse_config(data)


class LabHub:
    """One in-process hub with its mesh link and its simulated radio."""

    def __init__(self, config: Config, node: SimNode):
        self.config = config
        self.node = node
        self.id = config.hub.id
        self.store = Store(config.store_path)
        self.hub = Hub(config, self.store)
        self.processor = CommandProcessor(self.hub)
        self.link = MeshLink(config, self.hub, self.processor)
        self.heard: list[dict[str, Any]] = []  # every envelope announced, in order
        self.hub.subscribe(lambda event, env: self.heard.append(env))

    def start(self) -> LabHub:
        self.hub.start()
        self.link.start()
        return self

    def stop(self) -> None:
        self.link.stop()
        self.hub.stop()
        self.store.close()

    def raise_alert(self, kind: str = "panic", zone: str = "Market gate", source: str = "gate") -> Any:
        return self.hub.raise_alert(source, kind, zone)

    def events(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.events(alert_id=alert_id, limit=100_000)

    def pending(self) -> int:
        return self.store.outbox_stats().get("mesh", {}).get("depth", 0)


class Lab:
    """A simulated air with one LabHub per node, in a topology of your choosing."""

    def __init__(self, base: Path, *, seed: int | None = None, key: bytes | None = None,
                 time_scale: float = 0.02, hop_limit: int = 1, **air: Any):
        self.base = Path(base)
        self.key_file = self.base / "network.key"
        self.key = write_key(self.key_file, key)
        self.air = SimAir(seed=seed, time_scale=time_scale, **air)
        self.hop_limit = hop_limit
        self.hubs: list[LabHub] = []

    def add_hub(self, hub_id: str, **kw: Any) -> LabHub:
        node = self.air.add_node(hop_limit=self.hop_limit, name=hub_id)
        node.start()
        hub = LabHub(lab_config(self.base, hub_id, node.port, self.key_file, **kw), node)
        self.hubs.append(hub)
        return hub

    def chain(self, n: int, loss: float = 0.0, **kw: Any) -> list[LabHub]:
        hubs = [self.add_hub(f"hub-{i + 1}", **kw) for i in range(n)]
        for a, b in zip(hubs, hubs[1:], strict=False):
            self.air.link(a.node, b.node, loss)
        return hubs

    def start(self) -> Lab:
        self.air.start()
        for h in self.hubs:
            h.start()
        return self

    def stop(self) -> None:
        for h in self.hubs:
            try:
                h.stop()
            except Exception:
                pass
        self.air.stop()
