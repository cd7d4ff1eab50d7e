"""The daemon end to end through the CLI, its control socket, shutdown, and kill -9."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path

from support import HubProcess, free_port, hub_config, wait_for


def open_alerts(hub: HubProcess) -> list[dict]:
    return hub.cli_json("alerts")["result"]


def siren_on(hub: HubProcess) -> bool:
    return hub.cli_json("status")["result"]["links"]["sirens"]["main"]["on"]


def test_press_siren_ack_resolve_through_the_cli(tmp_path: Path, hub_processes) -> None:
    hub = HubProcess(hub_config(tmp_path, web=False))
    hub_processes.append(hub)
    hub.start()
    assert siren_on(hub) is False

    out = hub.cli("press", "gate")
    assert out.returncode == 0, out.stderr
    assert "pressed gate" in out.stdout
    assert siren_on(hub) is True

    out = hub.cli("alerts")
    assert out.returncode == 0
    assert "hub-1:1" in out.stdout and "panic" in out.stdout and "raised" in out.stdout
    assert "Market gate" in out.stdout

    assert hub.cli("ack", "hub-1:1").stdout.strip() == "hub-1:1 is now acknowledged"
    out = hub.cli("resolve", "hub-1:1", "--outcome", "genuine")
    assert out.stdout.strip() == "hub-1:1 is now resolved (genuine)"
    assert siren_on(hub) is False  # nothing open any more
    assert hub.cli("alerts").stdout.strip() == "no alerts"
    all_alerts = hub.cli_json("alerts", "--all")["result"]
    assert [(a["id"], a["state"], a["outcome"]) for a in all_alerts] == [("hub-1:1", "resolved", "genuine")]

    events = hub.cli_json("events", "--alert", "hub-1:1")["result"]
    assert [(e["type"], e["actor"].split(":")[0]) for e in events] == [
        ("alert.raised", "button"), ("alert.acknowledged", "cli"), ("alert.resolved", "cli")]

    # A command the state machine refuses says why and exits non-zero, changing nothing.
    out = hub.cli("ack", "hub-1:1")
    assert out.returncode == 1
    assert "is resolved; it cannot become acknowledged" in out.stderr
    out = hub.cli("cancel", "hub-1:7")
    assert out.returncode == 1 and "no alert with id 'hub-1:7'" in out.stderr
    out = hub.cli("press", "nosuch")
    assert out.returncode == 1 and "no button 'nosuch'; buttons: clinic, gate" in out.stderr
    assert len(hub.cli_json("events", "--alert", "hub-1:1")["result"]) == 3

    out = hub.cli("siren", "test")
    assert out.returncode == 0
    assert hub.cli_json("events")["result"][-1]["type"] == "siren.test"

    status = hub.cli("status")
    assert "button:gate" in status.stdout and "siren:main" in status.stdout

    assert hub.terminate(timeout=5) == 0


def test_control_socket_refuses_bad_input_and_survives(tmp_path: Path, hub_processes) -> None:
    cfg = hub_config(tmp_path, web=False)
    hub = HubProcess(cfg)
    hub_processes.append(hub)
    hub.start()
    path = tmp_path / "run" / "control.sock"
    assert oct(path.stat().st_mode & 0o777) == "0o660"

    def raw(payload: bytes) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(payload)
            return json.loads(s.makefile().readline())

    assert raw(b"not json\n")["error"]["code"] == "bad_json"
    assert raw(b"[1,2]\n")["error"]["message"] == "a command must be a JSON object, got list"
    assert raw(b'{"cmd": "explode"}\n')["error"]["code"] == "unknown_command"
    assert "alert: 5 is not of type 'string'" in raw(b'{"cmd": "ack", "alert": 5}\n')["error"]["message"]
    reply = raw(b'{"cmd": "resolve", "alert": "hub-1:1", "outcome": "meh"}\n')
    assert "'meh' is not one of" in reply["error"]["message"]
    assert raw(b"x" * 70_000 + b"\n")["error"]["code"] == "too_large"
    assert hub.cli_json("status")["ok"]
    assert hub.cli_json("alerts", "--all")["result"] == []


def test_kill_9_then_restart_keeps_the_alert_once_and_raises_nothing(tmp_path: Path, hub_processes) -> None:
    dead_port = free_port()  # nothing listens here: outbox rows must stay pending
    cfg = hub_config(tmp_path, web=False, extra=f'[mqtt]\nhost = "127.0.0.1"\nport = {dead_port}\n')
    hub = HubProcess(cfg)
    hub_processes.append(hub)
    hub.start()
    assert hub.cli("press", "gate").returncode == 0
    wait_for(lambda: open_alerts(hub), 10, message="the alert")
    hub.kill9()

    db = sqlite3.connect(tmp_path / "state" / "hubd.db")
    assert db.execute("SELECT id, state FROM alerts").fetchall() == [("hub-1:1", "raised")]
    pending = db.execute("SELECT e.type FROM outbox o JOIN events e ON e.seq = o.event_seq "
                         "WHERE o.destination = 'mqtt' AND o.delivered_at IS NULL").fetchall()
    assert ("alert.raised",) in pending
    db.close()

    hub.start()
    time.sleep(1.0)  # give a false alarm the chance to happen
    alerts = hub.cli_json("alerts", "--all")["result"]
    assert [(a["id"], a["state"]) for a in alerts] == [("hub-1:1", "raised")]
    raised = [e for e in hub.cli_json("events")["result"] if e["type"] == "alert.raised"]
    assert len(raised) == 1
    status = hub.cli_json("status")["result"]
    assert status["outbox"]["mqtt"]["depth"] >= 1
    # The protocol goes on where it stopped.
    assert hub.cli("ack", "hub-1:1").returncode == 0


def test_second_daemon_on_the_same_state_is_refused(tmp_path: Path, hub_processes) -> None:
    cfg = hub_config(tmp_path, web=False)
    first = HubProcess(cfg)
    hub_processes.append(first)
    first.start()
    second = HubProcess(cfg)
    second.start(wait=False)
    assert second.proc.wait(20) == 1
    assert "another hubd is running" in second.log.read_text()
    assert first.cli_json("status")["ok"]
