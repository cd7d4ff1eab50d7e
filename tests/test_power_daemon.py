"""Power and tamper in a real ``hubd run`` (mock pins, a simulated INA219 on the I2C bus, a
real broker): the enclosure opened with ``hubd press tamper``, the mains cut with ``hubd press
mains``, the battery run down to an orderly shutdown, and the start after it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_support import CENTRAL, Centre, assert_valid, mqtt_section
from power_hub import battery_state
from support import HUBD, REPO, HubProcess, Mosquitto, hub_config, wait_for

EVENTS = "safercom/v2/ward-7/hub-1/events"
STATUS = "safercom/v2/ward-7/hub-1/status"
#: "Down for" is said only when the clock is known to be right at both ends.
CLOCK_SYNCED = {"HUBD_CLOCK_SYNCED": "1"}


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path / "broker", extra_conf=CENTRAL).start()
    yield b
    b.stop()


def test_tamper_mains_battery_shutdown_and_the_start_after(tmp_path: Path, broker, hub_processes) -> None:
    battery = tmp_path / "battery.json"
    battery.write_text(json.dumps(battery_state(4.1, 0.2)))  # full, charging
    state = tmp_path / "hub" / "state"
    marker = tmp_path / "powered-off.db"
    copy_db = (f"{sys.executable} -c \"import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])\" "
               f"{state / 'hubd.db'} {marker}")
    extra = mqtt_section(broker.port) + f"""
[hardware.tamper]
pin = 5
zone = "Hub box"
pull_up = false

[power]
poll_interval = 0.2
low_battery = 25
critical_battery = 5
shutdown_grace = 5
shutdown_command = '{copy_db}'

[power.mains]
pin = 6
debounce = 0.3

[power.battery]
empty_voltage = 3.0
full_voltage = 4.2
"""
    cfg_path = hub_config(tmp_path / "hub", web=False, extra=extra)
    command = [sys.executable, str(REPO / "tests" / "power_hub.py"), str(battery), "run", "-c", str(cfg_path)]
    centre = Centre(broker.host, broker.port, (EVENTS, STATUS))
    mains_cut: subprocess.Popen | None = None

    def power() -> dict:
        return proc.cli_json("status")["result"]["links"]["power"]

    def events(type: str) -> list[dict]:
        return [e for e in centre.events(EVENTS) if e["type"] == type]

    def last_status() -> dict:
        return centre.on(STATUS)[-1].json()

    try:
        proc = HubProcess(cfg_path, command=command, env=CLOCK_SYNCED).start()
        hub_processes.append(proc)
        wait_for(lambda: power()["state"] == "mains", 10, message="on mains")
        assert power()["battery"] == pytest.approx(91.7, abs=0.5)

        # The enclosure is opened: a tamper alert, told to the centre.
        assert proc.cli("press", "tamper", "--hold", "0.5").returncode == 0
        raised = wait_for(lambda: events("alert.raised"), 10, message="the tamper alert at the centre")
        assert (raised[0]["alert"]["kind"], raised[0]["alert"]["source"]) == ("tamper", "tamper:enclosure")
        status = proc.cli_json("status")["result"]["links"]
        assert status["tamper"] == {"open": False, "alert": raised[0]["alert"]["id"]}

        # The mains is cut: on battery at the centre, as an event and in the retained status.
        mains_cut = subprocess.Popen([*HUBD, "press", "mains", "--hold", "120", "-c", str(cfg_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        battery.write_text(json.dumps(battery_state(3.9, -0.5)))
        wait_for(lambda: events("power.on_battery"), 10, message="power.on_battery at the centre")
        wait_for(lambda: last_status().get("power", {}).get("state") == "on_battery", 10,
                 message="the retained status on battery")
        assert_valid("status-v2", last_status())
        text = proc.cli("status").stdout
        assert "power: ON BATTERY, battery 75 %" in text, text
        assert "enclosure: closed (alert hub-1:1)" in text, text

        # The enclosure is opened again on battery: the same alert, pressed again.
        assert proc.cli("press", "tamper", "--hold", "0.3").returncode == 0
        wait_for(lambda: events("alert.pressed_again"), 10, message="tamper on battery")

        # Low: an event and the low-battery alarm.
        battery.write_text(json.dumps(battery_state(3.2, -0.5)))
        low = wait_for(lambda: events("power.battery_low"), 10, message="power.battery_low")[0]
        assert low["data"]["battery"] == pytest.approx(16.7, abs=0.5)
        alarm = wait_for(lambda: [e["alert"] for e in events("alert.raised")
                                   if e["alert"]["source"] == "power:battery"], 10,
                         message="the low-battery alarm")[0]
        assert alarm["kind"] == "fault"

        # Critical: the last status, the store flushed, then the shutdown command.
        battery.write_text(json.dumps(battery_state(3.048, -0.5)))
        shutdown = wait_for(lambda: events("power.shutdown"), 10, message="power.shutdown")[0]
        assert shutdown["data"]["message"] == "powering down, battery 4 %"
        wait_for(lambda: last_status().get("power", {}).get("state") == "shutting_down", 10,
                 message="the last status")
        wait_for(marker.exists, 10, message="the shutdown command")
        # systemd now stops hubd: its stopped status still says why.
        assert proc.terminate() == 0
        stopped = wait_for(lambda: [m.json() for m in centre.on(STATUS) if not m.json()["online"]], 10,
                           message="the stopped status")[-1]
        assert stopped["reason"] == "stopped" and stopped["power"]["state"] == "shutting_down"
        assert_valid("status-v2", stopped)
        mains_cut.kill()
        mains_cut.wait(10)

        # Power returns: the hub starts on mains, says how long it was down, raises nothing.
        battery.write_text(json.dumps(battery_state(3.3, 0.8)))
        proc = HubProcess(cfg_path, command=command, env=CLOCK_SYNCED).start()
        hub_processes.append(proc)
        restored = wait_for(lambda: events("power.restored"), 10, message="power.restored")[0]
        assert restored["data"]["down_for"] > 0
        assert restored["data"]["battery_at_shutdown"] == pytest.approx(4.0)
        wait_for(lambda: power()["state"] == "mains", 10, message="on mains after the start")
        alerts = proc.cli_json("alerts", "--all")["result"]
        assert sorted(a["source"] for a in alerts) == ["power:battery", "tamper:enclosure"]
        assert not events("power.on_battery")[1:]  # no second outage was reported
    finally:
        if mains_cut is not None and mains_cut.poll() is None:
            mains_cut.kill()
        centre.close()
