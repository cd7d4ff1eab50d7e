"""Buttons, sirens and camera in a real `hubd run`, driven through `hubd press`."""

from __future__ import annotations

import textwrap
from pathlib import Path

from support import HubProcess, hub_config, wait_for

BUTTONS = textwrap.dedent("""\
    [[buttons]]
    name = "gate"
    pin = 17
    zone = "Market gate"
    hold_time = 1.0
    debounce = 0.05

    [[sirens]]
    name = "main"
    pin = 27
    """)


def config(tmp: Path, camera: str) -> Path:
    path = hub_config(tmp, web=False, buttons=BUTTONS)
    text = path.read_text()
    assert 'backend = "none"' in text
    path.write_text(text.replace('backend = "none"', camera))
    return path


def test_hold_to_confirm_through_the_cli_with_a_snapshot(tmp_path: Path, hub_processes) -> None:
    hub = HubProcess(config(tmp_path, 'backend = "generated"\nwidth = 160\nheight = 120'))
    hub_processes.append(hub)
    hub.start()

    out = hub.cli("press", "gate", "--hold", "0.3")
    assert out.returncode == 0, out.stderr
    assert hub.cli_json("alerts", "--all")["result"] == []  # too short: logged, not raised
    assert "short press" in hub.log.read_text()

    out = hub.cli("press", "gate", "--hold", "1.6")
    assert out.returncode == 0, out.stderr
    [alert] = hub.cli_json("alerts")["result"]
    assert (alert["source"], alert["zone"], alert["state"]) == ("gate", "Market gate", "raised")
    status = hub.cli_json("status")["result"]
    assert status["links"]["sirens"]["main"]["on"] is True
    assert status["components"]["button:gate"]["status"] == "ok"

    snap = wait_for(lambda: [e for e in hub.cli_json("events", "--alert", alert["id"])["result"]
                             if e["type"] == "alert.snapshot"], 30, message="snapshot event")
    path = tmp_path / "state" / snap[0]["data"]["path"]
    assert path.read_bytes()[:2] == b"\xff\xd8"
    status = hub.cli_json("status")["result"]
    assert status["components"]["camera"]["status"] == "ok"
    assert status["links"]["camera"]["taken"] == 1

    out = hub.cli("status")
    assert "button:gate" in out.stdout and "siren:main" in out.stdout and "camera" in out.stdout


def test_a_restart_never_raises_and_a_broken_camera_never_stops_the_hub(tmp_path: Path,
                                                                           hub_processes) -> None:
    # No picamera2 on this machine (it never comes from pip): a clear fault, the hub runs on.
    cfg = config(tmp_path, 'backend = "picamera2"\nfallback = "none"')
    hub = HubProcess(cfg)
    hub_processes.append(hub)
    hub.start()
    status = wait_for(lambda: (s := hub.cli_json("status")["result"])["components"].get("camera") and s,
                      20, message="camera health")
    assert status["components"]["camera"]["status"] == "fault"
    assert "picamera2" in status["components"]["camera"]["reason"]

    assert hub.cli("press", "gate", "--hold", "1.4").returncode == 0
    [alert] = hub.cli_json("alerts")["result"]
    hub.kill9()

    hub2 = HubProcess(cfg)
    hub_processes.append(hub2)
    hub2.start()
    events = hub2.cli_json("events")["result"]
    assert [e["type"] for e in events].count("alert.raised") == 1
    # The open alert was learned from the store: pressing again adds to it.
    assert hub2.cli("press", "gate", "--hold", "1.4").returncode == 0
    assert [a["id"] for a in hub2.cli_json("alerts")["result"]] == [alert["id"]]
    again = [e for e in hub2.cli_json("events", "--alert", alert["id"])["result"]
             if e["type"] == "alert.pressed_again"]
    assert len(again) == 1
