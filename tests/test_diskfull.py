"""A full disk: the siren still sounds, the fault is loud, nothing crashes, and the alert
is written once the store takes writes again.

The hub's state directory is a real, tiny tmpfs mounted by the test (root is needed, as
on CI), filled with a file written until ENOSPC.  (A read-only remount cannot be tested
the same way: Linux refuses ``remount,ro`` while the store is open for writing; the
code path is the same, SQLite's OperationalError.)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HubProcess, free_port, hub_config, wait_for


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at tmp_path/state (the hub's state_dir), unmounted afterwards."""
    mnt = tmp_path / "state"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"this test mounts a tiny tmpfs and needs root with CAP_SYS_ADMIN: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    r = subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "status=none"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "No space left" in r.stderr, r.stderr
    return filler


def status(hub: HubProcess) -> dict:
    reply = hub.cli_json("status")
    assert reply["ok"], reply
    return reply["result"]


def page_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_disk_full_keeps_siren_and_writes_alert_later(tmp_path: Path, tiny_fs: Path,
                                                      hub_processes: list[HubProcess]) -> None:
    port = free_port()
    hub = HubProcess(hub_config(tmp_path, web_port=port))
    hub_processes.append(hub)
    hub.start()
    assert status(hub)["components"].get("store", {"status": "ok"})["status"] == "ok"

    filler = fill(tiny_fs)

    before = time.time()
    press = hub.cli("press", "gate")
    assert press.returncode == 0, press.stderr

    # The siren sounds although nothing could be written.
    wait_for(lambda: status(hub)["links"]["sirens"]["main"]["on"], 20, message="siren on")
    # The fault is loud: in status (and so on the page), with the reason.
    s = wait_for(lambda: (st := status(hub))["components"].get("store", {}).get("status") == "fault" and st,
                 20, message="store fault in status")
    reason = s["components"]["store"]["reason"]
    assert "full" in reason, reason
    unsaved_alerts = [u for u in s["unsaved"] if "alert" in u]
    assert len(unsaved_alerts) == 1 and unsaved_alerts[0]["alert"]["source"] == "gate"
    assert hub.cli_json("alerts")["result"] == []
    log = hub.log.read_text()
    assert "STORE FAULT" in log and "NOT SAVED" in log

    # Pressed again while unsaved: still one alert, nothing crashes.
    assert hub.cli("press", "gate").returncode == 0
    # Silencing works (the event waits in memory with the rest).
    silence = hub.cli("siren", "silence")
    assert silence.returncode == 0, silence.stderr
    assert not status(hub)["links"]["sirens"]["main"]["on"]
    assert page_status(port) < 500
    assert hub.proc is not None and hub.proc.poll() is None, hub.log.read_text()

    # Space (or write access) returns: the alert is written with its original time.
    filler.unlink()
    alerts = wait_for(lambda: hub.cli_json("alerts")["result"], 30, message="the alert written")
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["source"] == "gate" and alert["state"] == "raised"
    assert before - 1 <= alert["raised_at"] <= before + 30
    s = wait_for(lambda: (st := status(hub))["components"]["store"]["status"] == "ok" and st, 20,
                 message="store ok again")
    assert s["unsaved"] == []

    # The log holds the whole story, in the order it happened (by seq, not by time).
    events = hub.cli_json("events")["result"]
    types = [(e["type"], e["actor"]) for e in events]
    raised = types.index(("alert.raised", "button:gate"))
    fault = types.index(("component.fault", "store"))
    ok = types.index(("component.ok", "store"))
    assert fault < ok and raised < ok
    assert "siren.silenced" in [t for t, _ in types]
    raised_event = events[raised]
    assert raised_event["alert_id"] == alert["id"] and raised_event["data"]["stored_late"] >= 0
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    # A manager can act on it now.
    ack = hub.cli("ack", alert["id"])
    assert ack.returncode == 0, ack.stderr
    assert hub.terminate() == 0


def test_ack_refused_while_store_full(tmp_path: Path, tiny_fs: Path, hub_processes: list[HubProcess]) -> None:
    hub = HubProcess(hub_config(tmp_path, web=False))
    hub_processes.append(hub)
    hub.start()
    assert hub.cli("press", "gate").returncode == 0
    alert = wait_for(lambda: hub.cli_json("alerts")["result"], 20, message="alert")[0]
    filler = fill(tiny_fs)
    reply = hub.cli_json("ack", alert["id"])
    assert not reply["ok"] and reply["error"]["code"] == "store_unavailable", reply
    assert "NOT changed" in reply["error"]["message"]
    filler.unlink()
    wait_for(lambda: hub.cli_json("status")["result"]["components"]["store"]["status"] == "ok", 30,
             message="store ok again")
    # Nothing was changed by the refused command.
    db = sqlite3.connect(tmp_path / "state" / "hubd.db")
    state = db.execute("SELECT state FROM alerts WHERE id = ?", (alert["id"],)).fetchone()[0]
    db.close()
    assert state == "raised"
    assert hub.cli_json("ack", alert["id"])["ok"]
    assert json.loads(hub.cli("alerts", "--json").stdout)["result"][0]["state"] == "acknowledged"


def test_escalation_and_neighbour_events_wait_for_the_store(tmp_path: Path, tiny_fs: Path) -> None:
    """In-process: an escalation due while the disk is full, and an event heard from a
    neighbour, are both written (in order) once space returns."""
    from hubd.config import load_config
    from hubd.lifecycle import Hub
    from hubd.store import Store

    cfg = load_config(hub_config(tmp_path, web=False, protocol="cancel_window = 30\nescalation = [2, 600]"))
    store = Store(cfg.store_path)
    hub = Hub(cfg, store)
    hub.start()
    try:
        alert = hub.raise_alert("gate", "panic", "Market gate")
        filler = fill(tiny_fs)
        # The escalation falls due while the disk is full (the first write tried after the fill):
        # it fails loudly and is retried, not lost.
        wait_for(lambda: "store" in hub.health, 20, message="the escalation refused by the full store")
        assert hub.health["store"].status == "fault" and "full" in hub.health["store"].reason
        assert store.get_alert(alert.id).level == 0
        heard = {"v": 1, "id": "hub-9:e5", "type": "alert.raised", "time": time.time(), "ward": "ward-7",
                 "hub": "hub-9", "actor": "button:x", "data": {},
                 "alert": {"id": "hub-9:3", "hub": "hub-9", "seq": 3, "kind": "fire", "source": "x",
                           "zone": "", "state": "raised", "outcome": None, "level": 0, "silent": False,
                           "raised_at": time.time(), "updated_at": time.time(), "remote": False,
                           "relayed_by": None, "extra": {}}}
        assert hub.ingest_remote(heard, via="mesh", trust="ward-attested") is True
        filler.unlink()
        wait_for(lambda: store.get_alert(alert.id).level == 1, 20, message="escalation written")
        wait_for(lambda: hub.health["store"].status == "ok", 20, message="store ok")
        assert store.get_alert("hub-9:3").remote
        seqs = {e["type"] + ":" + (e["alert_id"] or ""): e["seq"] for e in store.events()}
        assert seqs["component.fault:"] < seqs["alert.raised:hub-9:3"] < seqs["component.ok:"]
    finally:
        hub.stop()
        store.close()
