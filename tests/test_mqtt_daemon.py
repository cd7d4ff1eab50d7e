"""The MQTT link inside a real ``hubd run`` process: kill -9 during a drain, the Last Will."""

from __future__ import annotations

from pathlib import Path

import pytest
from mqtt_support import (
    CENTRAL,
    Centre,
    assert_valid,
    command,
    hub_key,
    mqtt_section,
    trust_section,
    write_hub_key,
)
from support import HubProcess, Mosquitto, hub_config, wait_for

from hubd import contract
from hubd.config import load_config
from hubd.lifecycle import Hub
from hubd.store import Store

EVENTS = "safercom/v2/ward-7/hub-1/events"
STATUS = "safercom/v2/ward-7/hub-1/status"


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path / "broker", extra_conf=CENTRAL).start()
    yield b
    b.stop()


def test_kill9_during_a_drain_loses_nothing_and_the_will_says_offline(tmp_path, broker, hub_processes):
    cfg_path = hub_config(tmp_path / "hub", web=False, extra=mqtt_section(broker.port, keepalive=5))
    # A backlog queued while the hub had no uplink: written by the core, as the daemon would.
    cfg = load_config(cfg_path)
    write_hub_key(cfg.state_dir, "hub-1")  # the daemon's key: it signed what it queued
    store = Store(cfg.store_path)
    hub = Hub(cfg, store, key=hub_key("hub-1"))
    n = 4000
    with store.transaction():
        queued = [hub.record("test.backlog", actor="test", data={"n": i}, announce=False).id
                  for i in range(n)]
    hub.stop()
    store.close()

    centre = Centre(broker.host, broker.port, (EVENTS, STATUS))
    try:
        proc = HubProcess(cfg_path)
        hub_processes.append(proc)
        proc.start(wait=False)

        def seen() -> set[str]:
            return {m.json()["id"] for m in centre.on(EVENTS) if m.json()["type"] == "test.backlog"}

        wait_for(lambda: len(seen()) >= 100, 30, message="the drain under way")
        proc.kill9()
        at_kill = len(seen())
        assert at_kill < n, "the drain finished before the kill; the test did not test a crash"

        # The broker publishes the Last Will: the retained status says offline.
        will = wait_for(lambda: [m.json() for m in centre.on(STATUS) if m.json()["online"] is False], 20,
                        message="Last Will")[-1]
        assert_valid("status-v2", will)
        contract.verify("status", will, hub_key("hub-1").public_key())  # signed at connect time
        assert will["reason"] == "connection lost"

        proc2 = HubProcess(cfg_path)
        hub_processes.append(proc2)
        proc2.start()
        wait_for(lambda: len(seen()) == n, 60, message="every queued event after the restart")
        assert seen() == set(queued)

        def online_after_will() -> list[dict]:
            statuses = [m.json() for m in centre.on(STATUS)]
            last_will = max(i for i, s in enumerate(statuses) if s.get("reason") == "connection lost")
            return [s for s in statuses[last_will:] if s["online"]]

        online = wait_for(online_after_will, 15, message="status back online")[-1]
        assert_valid("status-v2", online)
        out = wait_for(lambda: (s := proc2.cli_json("status")) and s["ok"] and
                       s["result"]["outbox"].get("mqtt", {"depth": 0})["depth"] == 0 and s, 20,
                       message="outbox empty in hubd status")
        link = out["result"]["links"]["mqtt"]
        assert link["connected"] is True and link["outbox_depth"] == 0

        # Order: the first arrival of each event follows the hub's event order.
        first: list[int] = []
        known: set[str] = set()
        for m in centre.on(EVENTS):
            env = m.json()
            if env["type"] == "test.backlog" and env["id"] not in known:
                known.add(env["id"])
                first.append(int(env["id"].rsplit(":e", 1)[1]))
        assert first == sorted(first)

        # A clean stop says 'stopped' instead of leaving it to the Will.
        assert proc2.terminate() == 0
        last = wait_for(lambda: [m.json() for m in centre.on(STATUS) if m.json().get("reason") == "stopped"],
                        10, message="clean offline status")[-1]
        assert last["online"] is False
    finally:
        centre.close()


def test_press_reaches_the_centre_from_the_daemon(tmp_path, broker, hub_processes):
    cfg_path = hub_config(tmp_path / "hub", web=False, extra=mqtt_section(broker.port) + trust_section())
    centre = Centre(broker.host, broker.port, (EVENTS, STATUS, "safercom/v2/ward-7/hub-1/reply"))
    try:
        proc = HubProcess(cfg_path).start()
        hub_processes.append(proc)
        assert proc.cli("press", "gate").returncode == 0
        raised = wait_for(lambda: [m.json() for m in centre.on(EVENTS) if m.json()["type"] == "alert.raised"],
                          20, message="alert from the daemon")[0]
        assert_valid("event-v2", raised)
        public = contract.parse_public_key(proc.cli_json("status")["result"]["public_key"])
        contract.verify("event", raised, public)  # the key the daemon made on its first start
        reply = centre.request("safercom/v2/ward-7/hub-1/cmd",
                               command("hub-1", "ack", id="d-1", alert=raised["alert"]["id"]))
        assert reply["ok"], reply
        contract.verify("reply", reply, public)
        alerts = proc.cli_json("alerts")["result"]
        assert alerts[0]["state"] == "acknowledged"
    finally:
        centre.close()
