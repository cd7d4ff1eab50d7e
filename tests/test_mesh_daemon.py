"""The mesh link inside real ``hubd run`` daemons: wiring, the CLI, and kill -9."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_lab import FAST_MESH
from support import HubProcess, hub_config, wait_for

from hubd.radio.frames import write_key
from hubd.radio.meshsim import SimAir


@pytest.fixture
def air() -> Iterator[SimAir]:
    air = SimAir(seed=5)
    yield air
    air.stop()


def mesh_section(port: int, key_file: Path) -> str:
    timers = "\n".join(f"{k} = {v}" for k, v in FAST_MESH.items())
    return f'[mesh]\nconnection = "tcp:127.0.0.1:{port}"\nkey_file = "{key_file}"\n{timers}\n'


def remote_alert(hub: HubProcess, alert_id: str) -> dict | None:
    reply = hub.cli_json("alerts", "--all")
    return next((a for a in reply.get("result") or [] if a["id"] == alert_id), None)


def test_daemons_exchange_alerts_and_survive_kill_9(tmp_path: Path, air: SimAir,
                                                    hub_processes: list[HubProcess]) -> None:
    key_file = tmp_path / "network.key"
    write_key(key_file)
    n1, n2 = air.add_node(hop_limit=1, name="hub-1"), air.add_node(hop_limit=1, name="hub-2")
    air.link(n1, n2, loss=0.1)
    air.start()
    hubs = []
    for i, node in ((1, n1), (2, n2)):
        cfg = hub_config(tmp_path / f"h{i}", hub_id=f"hub-{i}", web=False,
                         extra=mesh_section(node.port, key_file))
        hub = HubProcess(cfg)
        hub_processes.append(hub)
        hubs.append(hub.start())
    h1, h2 = hubs

    def neighbours(h: HubProcess) -> list:
        return h.cli_json("status")["result"]["links"]["mesh"]["neighbours"]
    wait_for(lambda: neighbours(h1) and neighbours(h2), 30, interval=0.3, message="neighbours in status")
    assert neighbours(h2)[0]["hub"] == "hub-1"

    assert h1.cli("press", "gate").returncode == 0
    seen = wait_for(lambda: remote_alert(h2, "hub-1:1"), 30, interval=0.3, message="hub-2 lists hub-1:1")
    assert seen["remote"] and seen["kind"] == "panic" and seen["zone"] == "Market gate"

    out = h1.cli("ack", "hub-1:1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: remote_alert(h2, "hub-1:1")["state"] == "acknowledged", 30, interval=0.3,
             message="the acknowledgement at hub-2")

    # The radio goes away; an alert raised meanwhile waits in SQLite through a kill -9.
    n1.stop()
    wait_for(lambda: h1.cli_json("status")["result"]["links"]["mesh"]["state"] != "connected", 20,
             interval=0.3, message="hub-1 notices the radio is gone")
    assert h1.cli("press", "clinic").returncode == 0
    wait_for(lambda: h1.cli_json("status")["result"]["outbox"].get("mesh", {}).get("depth"), 10,
             interval=0.3, message="the alert queued for the mesh")
    h1.kill9()
    n1.start()
    h1.start()
    seen = wait_for(lambda: remote_alert(h2, "hub-1:2"), 30, interval=0.3, message="the queued alert arrives")
    assert seen["kind"] == "medical"
    wait_for(lambda: not h1.cli_json("status")["result"]["outbox"].get("mesh"), 30, interval=0.3,
             message="hub-1's mesh outbox empty")
    events = h2.cli_json("events", "--alert", "hub-1:2")["result"]
    assert [e["type"] for e in events] == ["alert.raised"]
