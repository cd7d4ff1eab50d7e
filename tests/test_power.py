"""Power and tamper: the INA219's register maths against its datasheet, the driver on a
simulated chip, the firmware's flags, the power rules (mains or battery, low, critical,
time left, under-voltage), the supervisor on a real Hub and Store (events, the low-battery
alarm, the orderly shutdown and the restart after it), the monitor on mock pins, the
configuration's checks and the status on the wire."""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_i2c import POR_CONFIG, FakeINA219Bus
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support import ManualClock, ShiftedClock, local_hub, wait_for

from hubd import contract
from hubd.config import ConfigError, PowerConfig, parse_config
from hubd.power import (
    ALARM_SOURCE,
    PowerReading,
    PowerRules,
    PowerState,
    PowerSupervisor,
    battery_percent,
    describe,
    format_duration,
)
from hubd.radio.mqtt import status_message, stopped_message
from hubd.sensors import power as ina
from hubd.sensors.power import (
    INA219,
    BatteryMonitor,
    FirmwareFlags,
    PowerMonitor,
    parse_throttled,
    throttled_flags,
)

# --- the INA219's register maths, against the datasheet (TI SBOS448) ---------------------------
#
# Table 3, "Configure/Measure/Calculate Example": load 10 A, VCM 12 V, R_shunt 2 mOhm, shunt
# full-scale range 40 mV, bus range 16 V, Current_LSB 1 mA:
#   Configuration 019Fh; Shunt 07D0h = 2000 x 10 uV = 20 mV; Bus 5D98h -> 0BB3h = 2995 x 4 mV =
#   11.98 V; Calibration 5000h = 20480; Current 2710h = 10000 x 1 mA = 10.0 A;
#   Power 1766h = 5990 x 20 mW = 119.8 W.

def test_calibration_is_the_datasheets() -> None:
    assert ina.calibration(current_lsb=0.001, shunt_ohms=0.002) == 0x5000  # Table 3, step 4
    # Section 8.5.1's equation with 100 uA a bit through 0.1 ohm: trunc(0.04096 / 1e-5).
    assert ina.calibration(current_lsb=100e-6, shunt_ohms=0.1) == 4096


def test_configuration_words_are_the_datasheets() -> None:
    # Table 3, step 1: 16 V, PGA /1 (40 mV), 12-bit bus and shunt ADC, continuous.
    assert ina.config_word(16, 0.04, ina.ADC_12BIT, ina.ADC_12BIT, ina.MODE_CONTINUOUS) == 0x019F
    # The power-on value (Table 4): 32 V, PGA /8 (320 mV), 12-bit, continuous.
    por = ina.config_word(32, 0.32, ina.ADC_12BIT, ina.ADC_12BIT, ina.MODE_CONTINUOUS)
    assert por == 0x399F == POR_CONFIG


def test_shunt_voltage_register() -> None:
    assert ina.shunt_voltage(0x07D0) == pytest.approx(0.020)  # Table 3, step 2
    # Section 8.6.3.1's two's complement example: -320 mV is 8300h; +320 mV is 7D00h.
    assert ina.shunt_voltage(0x8300) == pytest.approx(-0.320)
    assert ina.shunt_voltage(0x7D00) == pytest.approx(0.320)
    assert ina.shunt_voltage(0xFFFF) == pytest.approx(-10e-6)


def test_bus_voltage_register() -> None:
    assert ina.bus_voltage(0x5D98) == (pytest.approx(11.98), False, False)  # Table 3, step 3
    # Full scale at 32 V is decimal 8000 (1F40h) in bits 15-3: FA00h.
    assert ina.bus_voltage(0x1F40 << 3)[0] == pytest.approx(32.0)
    assert ina.bus_voltage(0x0FA0 << 3)[0] == pytest.approx(16.0)
    assert ina.bus_voltage(0x5D98 | 0b10) == (pytest.approx(11.98), True, False)  # CNVR
    assert ina.bus_voltage(0x5D98 | 0b01) == (pytest.approx(11.98), False, True)  # OVF


def test_current_and_power_registers() -> None:
    assert ina.current(0x2710, 0.001) == pytest.approx(10.0)  # Table 3, step 5
    assert ina.power(0x1766, 0.001) == pytest.approx(119.8)  # Table 3, step 6
    assert ina.current(0xD8F0, 0.001) == pytest.approx(-10.0)  # the register is signed


def test_the_simulated_chip_computes_as_the_datasheet_says() -> None:
    chip = FakeINA219Bus(shunt=0x07D0, bus=0x5D98)
    chip.write_i2c_block_data(0x40, 5, [0x50, 0x00])
    assert chip.read_i2c_block_data(0x40, 4, 2) == [0x27, 0x10]
    assert chip.read_i2c_block_data(0x40, 3, 2) == [0x17, 0x66]


def test_the_driver_configures_and_reads_the_datasheet_example() -> None:
    chip = FakeINA219Bus(0x41, shunt=0x07D0, bus=0x5D98)
    monitor = INA219(chip, 0x41, shunt_ohms=0.002, max_current=10, bus_range=16, shunt_range=0.04,
                     current_lsb=0.001, adc=ina.ADC_12BIT)
    # Registers go most significant byte first.
    assert chip.writes == [(0x41, 0, [0x01, 0x9F]), (0x41, 5, [0x50, 0x00])]
    r = monitor.read()
    assert r.bus_voltage == pytest.approx(11.98)
    assert r.shunt_voltage == pytest.approx(0.020)
    assert r.current == pytest.approx(10.0)
    assert r.power == pytest.approx(119.8)
    assert not r.overflow


def test_the_driver_picks_the_smallest_shunt_range_and_finest_lsb() -> None:
    chip = FakeINA219Bus()
    monitor = INA219(chip, shunt_ohms=0.1, max_current=1.0)  # 100 mV: the 160 mV range
    assert monitor.config >> 11 & 0b11 == 0b10
    assert monitor.current_lsb == pytest.approx(1.0 / 32768)
    with pytest.raises(ValueError):
        INA219(FakeINA219Bus(), shunt_ohms=0.1, max_current=4.0)


def test_a_chip_that_lost_its_calibration_is_configured_again() -> None:
    chip = FakeINA219Bus(shunt=0x07D0, bus=0x5D98)
    monitor = INA219(chip, shunt_ohms=0.002, max_current=10, shunt_range=0.04, current_lsb=0.001)
    chip.reset()  # a brown-out
    monitor.read()
    assert chip.registers[5] == 0x5000 and chip.registers[0] == monitor.config
    assert monitor.read().current == pytest.approx(10.0)


def test_battery_monitor_reopens_the_bus_after_an_error_and_signs_the_current() -> None:
    cfg = parse_config({"hub": {"ward": "w", "id": "h"}, "power": {"battery": {
        "address": 0x42, "shunt_ohms": 0.1, "max_current": 3.2, "charge_positive": False}}},
        check_files=False).power
    assert cfg is not None and cfg.battery is not None
    buses: list[FakeINA219Bus] = []

    def open_bus(number: int) -> FakeINA219Bus:
        assert number == 1
        bus = FakeINA219Bus(0x42, shunt=0x07D0, bus=(4000 // 4) << 3)  # 20 mV, 4.0 V
        buses.append(bus)
        return bus

    monitor = BatteryMonitor(cfg.battery, open_bus)
    volts, amps = monitor.read()
    assert volts == pytest.approx(4.0)
    assert amps == pytest.approx(-0.2, rel=1e-3)  # 20 mV / 0.1 ohm, wired the other way round
    buses[0].fail = True
    with pytest.raises(OSError):
        monitor.read()
    assert buses[0].closed
    monitor.read()
    assert len(buses) == 2


# --- the firmware's flags ----------------------------------------------------------------------

def test_throttled_flags(tmp_path: Path) -> None:
    assert parse_throttled("50005\n") == 0x50005  # sysfs
    assert parse_throttled("throttled=0x50005") == 0x50005  # vcgencmd get_throttled
    assert throttled_flags(0x50005) == ("undervoltage", "throttled")
    assert throttled_flags(0x50000, occurred=True) == ("undervoltage", "throttled")
    assert throttled_flags(0x50000) == ()
    assert throttled_flags(0xA) == ("freq_capped", "soft_temp_limit")
    path = tmp_path / "get_throttled"
    path.write_text("0\n")
    assert FirmwareFlags(path).read() == 0
    path.write_text("garbage")
    with pytest.raises(ValueError):
        FirmwareFlags(path).read()


# --- the rules -----------------------------------------------------------------------------------

def power_config(**power: Any) -> PowerConfig:
    cfg = parse_config({"hub": {"ward": "w", "id": "h"}, "power": power}, check_files=False).power
    assert cfg is not None
    return cfg


MAINS = {"pin": 6, "debounce": 2.0}
BATTERY = {"empty_voltage": 3.0, "full_voltage": 4.2}


def volts(percent: float) -> float:
    return 3.0 + 1.2 * percent / 100


def types(changes: list) -> list[str]:
    return [c.type for c in changes]


def test_battery_percent() -> None:
    assert battery_percent(3.6, 3.0, 4.2) == pytest.approx(50)
    assert battery_percent(2.5, 3.0, 4.2) == 0
    assert battery_percent(4.3, 3.0, 4.2) == 100


def test_a_mains_flicker_is_not_an_outage_and_an_outage_is_reported_once() -> None:
    rules = PowerRules(power_config(mains=MAINS))
    assert rules.update(PowerReading(mains_failed=False), 0) == []  # pending: unknown until it holds
    assert rules.update(PowerReading(mains_failed=False), 2) == []  # on mains from the start: no event
    assert rules.state == PowerState.MAINS
    assert rules.update(PowerReading(mains_failed=True), 10) == []
    assert rules.due() == 12
    assert rules.update(PowerReading(mains_failed=False), 11) == []  # back within the debounce
    assert rules.due() is None
    assert rules.update(PowerReading(mains_failed=True), 20) == []
    changes = rules.update(PowerReading(mains_failed=True), 22)
    assert types(changes) == ["power.on_battery"] and rules.state == PowerState.ON_BATTERY
    assert rules.update(PowerReading(mains_failed=True), 30) == []
    rules.update(PowerReading(mains_failed=False), 100)
    changes = rules.update(PowerReading(mains_failed=False), 102)
    assert types(changes) == ["power.mains_restored"]
    assert changes[0].data["on_battery_for"] == 80


def test_a_hub_that_starts_on_battery_says_so() -> None:
    rules = PowerRules(power_config(mains=MAINS))
    rules.update(PowerReading(mains_failed=True), 0)
    changes = rules.update(PowerReading(mains_failed=True), 2)
    assert types(changes) == ["power.on_battery"] and changes[0].data["at_start"] is True


def test_without_a_mains_input_the_battery_current_says_on_battery() -> None:
    rules = PowerRules(power_config(battery=BATTERY))
    rules.update(PowerReading(battery_voltage=4.1, battery_current=0.3), 0)
    assert types(rules.update(PowerReading(battery_voltage=4.1, battery_current=0.3), 10)) == []
    assert rules.state == PowerState.MAINS
    rules.update(PowerReading(battery_voltage=4.0, battery_current=-0.6), 20)
    assert types(rules.update(PowerReading(battery_voltage=4.0, battery_current=-0.6), 30)) == \
        ["power.on_battery"]
    # Idle is not charging, but not discharging either.
    assert rules.update(PowerReading(battery_voltage=4.0, battery_current=-0.01), 40) == []
    rules.update(PowerReading(battery_voltage=4.0, battery_current=0.0), 40)
    assert types(rules.update(PowerReading(battery_voltage=4.0, battery_current=0.0), 50)) == \
        ["power.mains_restored"]


def on_battery(rules: PowerRules, percent: float = 80, at: float = 0) -> None:
    rules.update(PowerReading(mains_failed=True, battery_voltage=volts(percent)), at)
    assert types(rules.update(PowerReading(mains_failed=True, battery_voltage=volts(percent)), at + 2)) == \
        ["power.on_battery"]


def test_low_battery_once_per_outage_never_on_mains() -> None:
    rules = PowerRules(power_config(mains=MAINS, battery=BATTERY, low_battery=25, critical_battery=5))
    # On mains a low battery is charging: nothing to report.
    for t in range(5):
        assert rules.update(PowerReading(mains_failed=False, battery_voltage=volts(10)), t) == []
    rules = PowerRules(power_config(mains=MAINS, battery=BATTERY, low_battery=25, critical_battery=5))
    on_battery(rules, 30)
    seen = []
    t = 10.0
    for percent in (28, 26, 24, 24, 23, 22, 24, 21, 20):
        seen += rules.update(PowerReading(mains_failed=True, battery_voltage=volts(percent)), t)
        t += 5
    assert types(seen) == ["power.battery_low"]
    assert seen[0].data["battery"] <= 25 and seen[0].data["low_at"] == 25
    assert rules.state == PowerState.BATTERY_LOW
    # Recovering by the hysteresis (a load went off) is battery_ok; mains back clears it silently.
    for _ in range(5):
        seen = rules.update(PowerReading(mains_failed=True, battery_voltage=volts(31)), t)
        t += 5
        if seen:
            break
    assert types(seen) == ["power.battery_ok"]


def test_one_sag_neither_alarms_nor_shuts_down() -> None:
    rules = PowerRules(power_config(mains=MAINS, battery=BATTERY, low_battery=25, critical_battery=5))
    on_battery(rules, 60)
    for i, percent in enumerate((60, 2, 60, 60, 1, 60)):
        assert rules.update(PowerReading(mains_failed=True, battery_voltage=volts(percent)), 10 + i) == []


def test_critical_battery_starts_one_shutdown_and_a_failed_one_is_tried_again() -> None:
    rules = PowerRules(power_config(mains=MAINS, battery=BATTERY, low_battery=25, critical_battery=5))
    on_battery(rules, 30)
    seen: list = []
    t = 10.0
    for _ in range(6):
        seen += rules.update(PowerReading(mains_failed=True, battery_voltage=volts(4)), t)
        t += 5
    assert types(seen) == ["power.battery_low", "power.shutdown"]
    shutdown = seen[1].data
    assert shutdown["message"] == "powering down, battery 4 %" and "critical at 5 %" in shutdown["reason"]
    assert rules.state == PowerState.SHUTTING_DOWN
    rules.shutdown_failed(t)
    assert rules.state == PowerState.BATTERY_LOW
    assert rules.update(PowerReading(mains_failed=True, battery_voltage=volts(4)), t + 30) == []
    assert types(rules.update(PowerReading(mains_failed=True, battery_voltage=volts(4)), t + 61)) == \
        ["power.shutdown"]


def test_no_shutdown_when_it_is_off_and_shutdown_after_without_a_battery_monitor() -> None:
    rules = PowerRules(power_config(mains=MAINS, battery=BATTERY, shutdown=False))
    rules.update(PowerReading(mains_failed=True, battery_voltage=volts(2)), 0)
    assert types(rules.update(PowerReading(mains_failed=True, battery_voltage=volts(2)), 2)) == \
        ["power.on_battery", "power.battery_low"]
    assert rules.update(PowerReading(mains_failed=True, battery_voltage=volts(1)), 10) == []
    assert rules.time_left(10) is None
    rules = PowerRules(power_config(mains=MAINS, shutdown_after=600))
    rules.update(PowerReading(mains_failed=True), 0)
    rules.update(PowerReading(mains_failed=True), 2)
    assert rules.time_left(102) == pytest.approx(500)
    assert rules.update(PowerReading(mains_failed=True), 601) == []
    changes = rules.update(PowerReading(mains_failed=True), 602)
    assert types(changes) == ["power.shutdown"]
    assert changes[0].data == {"battery": None, "reason": "on battery for 10 min", "message": "powering down"}


def test_time_left_from_the_current_and_the_capacity() -> None:
    rules = PowerRules(power_config(mains=MAINS, battery={**BATTERY, "capacity_mah": 2000},
                                    critical_battery=8))
    rules.update(PowerReading(mains_failed=True, battery_voltage=volts(50), battery_current=-0.5), 0)
    rules.update(PowerReading(mains_failed=True, battery_voltage=volts(50), battery_current=-0.5), 2)
    # 42 points of 2000 mAh above the critical level is 0.84 Ah; at 0.5 A that is 1.68 h.
    assert rules.time_left(2) == pytest.approx(1.68 * 3600, rel=1e-3)
    rules.update(PowerReading(mains_failed=False, battery_voltage=volts(50), battery_current=0.4), 5)
    rules.update(PowerReading(mains_failed=False, battery_voltage=volts(50), battery_current=0.4), 7)
    assert rules.time_left(7) is None  # on mains


def test_time_left_from_the_fall_of_the_level() -> None:
    rules = PowerRules(power_config(mains=MAINS, battery=BATTERY, critical_battery=10))
    on_battery(rules, 50)
    t, level = 2.0, 50.0
    while t < 300:
        t += 10
        level -= 1 / 6  # a point a minute
        rules.update(PowerReading(mains_failed=True, battery_voltage=volts(level)), t)
    left = rules.time_left(t)
    assert left is not None
    # About (level - 10) minutes (the median lags two readings).
    assert (level - 10) * 60 * 0.9 < left < (level - 10) * 60 * 1.15


def test_undervoltage_is_reported_and_cleared_only_after_it_stayed_away() -> None:
    rules = PowerRules(power_config(throttled={}))
    assert rules.update(PowerReading(undervoltage=False), 0) == []
    changes = rules.update(PowerReading(undervoltage=True, throttled=("undervoltage",)), 5)
    assert types(changes) == ["power.undervoltage"] and changes[0].data == {"flags": ["undervoltage"]}
    assert rules.update(PowerReading(undervoltage=False), 10) == []
    assert rules.update(PowerReading(undervoltage=True), 20) == []  # it came back: still one event
    assert rules.update(PowerReading(undervoltage=False), 25) == []
    assert types(rules.update(PowerReading(undervoltage=False), 56)) == ["power.undervoltage_cleared"]


def test_describe_and_format_duration() -> None:
    assert format_duration(45) == "45 s"
    assert format_duration(4800) == "1 h 20 min"
    assert format_duration(3 * 86400 + 3600) == "3 d 1 h"
    assert describe({"state": "on_battery", "battery": 62.4, "time_left": 4800}) == \
        "ON BATTERY, battery 62 %, about 1 h 20 min left"
    assert describe({"state": "shutting_down", "battery": 5, "time_left": 0}) == "POWERING DOWN, battery 5 %"
    assert describe({"state": "mains", "battery": None, "undervoltage": True}) == \
        "mains power; the Pi's supply is UNDER-VOLTAGE"


# --- the supervisor on a real hub ------------------------------------------------------------

def supervised(tmp: Path, *, clock: Any = None, run: Any = None, **power: Any):
    power = {"mains": MAINS, "battery": BATTERY, "low_battery": 25, "critical_battery": 5,
             "shutdown_grace": 0.5, **power}
    hub, store = local_hub(tmp, clock=clock, extra={"mqtt": {"host": "127.0.0.1"}, "power": power})
    kwargs = {"run": run} if run is not None else {}
    supervisor = PowerSupervisor(hub.config, hub, clock=hub.clock, **kwargs)
    return hub, store, supervisor


def feed(supervisor: PowerSupervisor, clock: ManualClock, percent: float, *, mains_failed: bool = True,
         times: int = 1, step: float = 5) -> None:
    for _ in range(times):
        supervisor.update(PowerReading(mains_failed=mains_failed, battery_voltage=volts(percent)))
        clock.now += step


def power_events(store) -> list[dict]:
    return [e for e in store.events(limit=1000) if e["type"].startswith("power.")]


def test_the_supervisor_reports_each_change_and_raises_one_low_battery_alarm(tmp_path: Path) -> None:
    clock = ManualClock()
    hub, store, supervisor = supervised(tmp_path, clock=clock)
    supervisor.start()
    feed(supervisor, clock, 80, mains_failed=False, times=2)
    assert supervisor.status()["state"] == "mains" and power_events(store) == []
    feed(supervisor, clock, 40, times=3)
    feed(supervisor, clock, 20, times=4)
    events = power_events(store)
    assert [e["type"] for e in events] == ["power.on_battery", "power.battery_low"]
    assert {e["actor"] for e in events} == {"power"}
    assert all(store.query("SELECT destination FROM outbox WHERE event_seq = ?", (e["seq"],)) ==
               [{"destination": "mqtt"}] for e in events)  # each goes to the centre
    alarms = store.alerts(source=ALARM_SOURCE)
    assert [(a.kind, a.zone, a.extra["reason"]) for a in alarms] == [("fault", "power", "battery low")]
    # Mains back, out again, low again: the alarm is still open, so no second one.
    feed(supervisor, clock, 20, mains_failed=False, times=2)
    feed(supervisor, clock, 20, times=4)
    assert [e["type"] for e in power_events(store)][-3:] == \
        ["power.mains_restored", "power.on_battery", "power.battery_low"]
    assert len(store.alerts(source=ALARM_SOURCE)) == 1
    status = supervisor.status()
    assert status["state"] == "battery_low" and status["battery"] == pytest.approx(20)
    assert not contract.problems("status", {"v": 1, "hub": "h1", "ward": "w", "online": True,
                                            **contract.power_fields(status, None)})
    store.close()


def test_orderly_shutdown_last_status_flush_then_the_command_and_a_quiet_restart(tmp_path: Path) -> None:
    """The shutdown command (here: copy the database file, without its WAL) runs after the
    store was flushed: the copy alone holds the shutdown event and record."""
    db = tmp_path / "hubd.db"
    copy = tmp_path / "at-shutdown.db"
    clock = ShiftedClock()
    hub, store, supervisor = supervised(
        tmp_path, clock=clock,
        shutdown_command=f"{sys.executable} -c \"import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])\" "
                         f"{db} {copy}")
    assert store.path == db
    order: list[str] = []

    def last_status() -> None:
        order.append(f"status {supervisor.status()['state']}")
        rows = store.query("SELECT id FROM outbox WHERE delivered_at IS NULL")
        store.mark_delivered([r["id"] for r in rows])  # the broker took it at once

    supervisor.on_change.append(last_status)
    supervisor.start()
    supervisor.update(PowerReading(mains_failed=True, battery_voltage=volts(30)))
    clock.shift += 3
    started = time.monotonic()
    for _ in range(5):
        supervisor.update(PowerReading(mains_failed=True, battery_voltage=volts(3)))
        clock.shift += 5
    assert time.monotonic() - started < 0.5  # delivered at once: no waiting out the grace
    assert order == ["status battery_low", "status shutting_down"]  # on battery and low: one reading
    assert supervisor.status()["state"] == "shutting_down"
    shutdown = [e for e in power_events(store) if e["type"] == "power.shutdown"]
    assert len(shutdown) == 1 and shutdown[0]["data"]["message"] == "powering down, battery 3 %"
    assert copy.exists()
    snapshot = sqlite3.connect(copy)  # the main file alone, as the command saw it
    assert snapshot.execute("SELECT count(*) FROM events WHERE type = 'power.shutdown'").fetchone() == (1,)
    assert snapshot.execute("SELECT value FROM meta WHERE key = 'power:down'").fetchone() is not None
    snapshot.close()
    alerts_before = store.alerts(limit=100)
    store.close()  # systemd stops hubd

    clock.shift += 3600  # an hour without power
    hub, store, supervisor = supervised(tmp_path, clock=clock)
    hub.start()
    supervisor.start()
    restored = [e for e in power_events(store) if e["type"] == "power.restored"]
    assert len(restored) == 1
    data = restored[0]["data"]
    assert data["down_for"] == pytest.approx(3600, abs=30) and data["battery_at_shutdown"] == pytest.approx(3)
    # Back on mains with the battery still nearly empty: charging, nothing to raise.
    supervisor.update(PowerReading(mains_failed=False, battery_voltage=volts(3)))
    clock.shift += 3
    supervisor.update(PowerReading(mains_failed=False, battery_voltage=volts(3)))
    assert supervisor.status()["state"] == "mains"
    assert [a.id for a in store.alerts(limit=100)] == [a.id for a in alerts_before]
    assert [e["type"] for e in power_events(store)][-1] == "power.restored"
    hub.stop()
    store.close()
    hub, store, supervisor = supervised(tmp_path, clock=clock)
    supervisor.start()
    assert len([e for e in power_events(store) if e["type"] == "power.restored"]) == 1  # said once
    store.close()


def test_a_shutdown_waits_for_the_broker_no_longer_than_the_grace(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    hub, store, supervisor = supervised(tmp_path, clock=ShiftedClock(), shutdown_grace=0.4,
                                        run=lambda argv: ran.append(list(argv)),
                                        mains={"pin": 6, "debounce": 0})
    started = time.monotonic()
    for _ in range(3):
        supervisor.update(PowerReading(mains_failed=True, battery_voltage=volts(1)))
    assert 0.4 <= time.monotonic() - started < 3
    assert ran == [["systemctl", "poweroff"]]
    store.close()


def test_a_failed_shutdown_is_reported_and_the_hub_runs_on(tmp_path: Path) -> None:
    clock = ShiftedClock()
    hub, store, supervisor = supervised(tmp_path, clock=clock, shutdown_grace=0,
                                        shutdown_command="/nonexistent/poweroff --now")
    supervisor.update(PowerReading(mains_failed=True, battery_voltage=volts(1)))
    clock.shift += 3
    for _ in range(3):
        supervisor.update(PowerReading(mains_failed=True, battery_voltage=volts(1)))
    failed = [e for e in power_events(store) if e["type"] == "power.shutdown_failed"]
    assert len(failed) == 1 and failed[0]["data"]["command"] == "/nonexistent/poweroff --now"
    assert supervisor.status()["state"] == "battery_low"
    assert store.take_power_down() is None  # no record: the next start is not "back from a power-down"
    store.close()


def test_down_for_waits_for_a_synchronised_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    hub, store, _ = supervised(tmp_path, clock=clock)
    store.save_power_down({"time": clock.time() - 600, "battery": 4.0, "reason": "r", "clock_synced": True})
    synced = [False]
    supervisor = PowerSupervisor(hub.config, hub, clock=clock, clock_synced=lambda: synced[0])
    supervisor.start()
    supervisor.update(PowerReading(mains_failed=False))
    assert power_events(store) == []
    synced[0] = True
    supervisor.update(PowerReading(mains_failed=False))
    assert [(e["type"], e["data"]["down_for"]) for e in power_events(store)] == [("power.restored", 600)]
    store.close()


# --- the monitor on mock pins and a simulated bus -----------------------------------------

def test_the_monitor_reads_every_source_and_a_mains_edge_is_read_at_once(tmp_path: Path) -> None:
    throttled = tmp_path / "get_throttled"
    throttled.write_text("50005\n")
    hub, store, supervisor = supervised(tmp_path, clock=ShiftedClock(), poll_interval=60,
                                        mains={"pin": 6, "debounce": 0}, throttled={"path": str(throttled)})
    chip = FakeINA219Bus(shunt=0x07D0, bus=(3600 // 4) << 3)  # 20 mV: 0.2 A charging; 3.6 V
    factory = MockFactory(pin_class=MockPWMPin)
    monitor = PowerMonitor(hub.config, supervisor, hub, factory, open_bus=lambda n: chip)
    reading = monitor.read()
    assert reading == PowerReading(mains_failed=False, battery_voltage=pytest.approx(3.6),
                                   battery_current=pytest.approx(0.2, rel=1e-3), undervoltage=True,
                                   throttled=("undervoltage", "throttled"))
    assert {k: v.status for k, v in hub.health.snapshot().items()} == \
        {"power:battery": "ok", "power:firmware": "ok", "power:mains": "ok"}
    monitor.start()
    try:
        wait_for(lambda: supervisor.status()["state"] == "mains", 5)
        assert monitor.mains is not None
        monitor.mains.line.drive(True)  # the mains fails
        wait_for(lambda: supervisor.status()["state"] == "on_battery", 5, message="on battery at once")
        chip.fail = True
        monitor.mains.line.drive(False)
        wait_for(lambda: hub.health.snapshot()["power:battery"].status == "fault", 5)
        assert "0x40 on /dev/i2c-1" in hub.health.snapshot()["power:battery"].reason
        wait_for(lambda: supervisor.status()["state"] == "mains", 5)
    finally:
        monitor.stop()
    assert not monitor.alive()
    assert [e["type"] for e in power_events(store)] == \
        ["power.undervoltage", "power.on_battery", "power.mains_restored"]
    store.close()


def test_a_mains_input_that_cannot_start_is_a_fault_and_the_rest_runs(tmp_path: Path) -> None:
    hub, store, supervisor = supervised(tmp_path, clock=ShiftedClock())
    factory = MockFactory(pin_class=MockPWMPin)
    factory.pin(6)  # taken
    from gpiozero import DigitalInputDevice

    holder = DigitalInputDevice(6, pin_factory=factory)
    monitor = PowerMonitor(hub.config, supervisor, hub, factory, open_bus=lambda n: FakeINA219Bus())
    assert monitor.mains is None
    assert hub.health.snapshot()["power:mains"].status == "fault"
    holder.close()
    store.close()


# --- tamper ----------------------------------------------------------------------------------

def test_tamper_raises_its_configured_kind_also_on_battery(make) -> None:
    rig = make(hardware={"tamper": {"pin": 5, "zone": "Hub box", "kind": "intrusion"}})
    rig.factory.pin(5).drive_low()  # lid closed
    rig.advance(0.2)
    supervisor = PowerSupervisor(
        parse_config({**_rig_data(rig), "power": {"mains": {"pin": 6, "debounce": 0}}}, check_files=False),
        rig.hub, clock=rig.clock)
    supervisor.update(PowerReading(mains_failed=True))
    assert supervisor.status()["state"] == "on_battery"
    rig.factory.pin(5).drive_high()  # lid opened
    rig.advance(0.2)
    assert [(a.kind, a.source, a.zone) for a in rig.alerts()] == \
        [("intrusion", "tamper:enclosure", "Hub box")]
    assert rig.siren.is_on and rig.siren.pattern == "pulsed"  # the intrusion pattern


def _rig_data(rig) -> dict:
    hub = rig.config.hub
    return {"hub": {"ward": hub.ward, "id": hub.id, "state_dir": hub.state_dir}}


# --- configuration and the wire ---------------------------------------------------------------

def test_power_configuration_errors_name_their_keys() -> None:
    def errors(power: dict, **more: Any) -> list[str]:
        with pytest.raises(ConfigError) as e:
            parse_config({"hub": {"ward": "w", "id": "h"}, "power": power, **more}, check_files=False)
        return e.value.errors

    assert errors({}) == \
        ["power: no source configured: add [power.mains], [power.battery] or [power.throttled]"]
    assert errors({"throttled": {}, "low_battery": 10, "critical_battery": 10}) == \
        ["power.critical_battery: 10 % must be below power.low_battery (10 %)"]
    assert errors({"battery": {"empty_voltage": 4.2, "full_voltage": 3.0}}) == \
        ["power.battery.empty_voltage: 4.2 V must be below full_voltage (3 V)"]
    assert errors({"battery": {"shunt_ohms": 0.1, "max_current": 5}}) == \
        ["power.battery.max_current: 5 A through 0.1 ohm is 500 mV, beyond the monitor's 320 mV shunt range"]
    assert errors({"battery": {"address": 0x20}}) == \
        ["power.battery.address: 32 is out of range (minimum 64)"]
    assert errors({"throttled": {}, "shutdown_command": "'unclosed"}) == \
        ["power.shutdown_command: cannot run \"'unclosed\": No closing quotation"]
    assert errors({"mains": {"pin": 17}}, buttons=[{"name": "gate", "pin": 17}]) == \
        ["power.mains.pin: pin 17 is already used by buttons[0].pin"]
    assert errors({"mains": {"pin": 6}}, buttons=[{"name": "mains", "pin": 17}]) == \
        ["buttons[0].name: 'mains' is the name `hubd press` gives power.mains; choose another"]
    with pytest.raises(ConfigError) as e:
        parse_config({"hub": {"ward": "w", "id": "h"}, "hardware": {"tamper": {"pin": 5}},
                      "buttons": [{"name": "tamper", "pin": 17}]}, check_files=False)
    assert e.value.errors == ["buttons[0].name: 'tamper' is the name `hubd press` gives hardware.tamper; "
                              "choose another"]
    power = {"throttled": {}, "shutdown": False, "shutdown_command": ""}
    cfg = parse_config({"hub": {"ward": "w", "id": "h"}, "power": power}, check_files=False)
    assert cfg.power is not None and cfg.power.throttled is not None


POWER = {"state": "on_battery", "since": 1.0, "mains": False, "battery": 62.5, "voltage": 3.75,
         "current": -0.5, "time_left": 4800, "undervoltage": False, "throttled": [], "low_at": 25.0,
         "critical_at": 8.0}


def test_status_on_the_wire_carries_power_and_tamper() -> None:
    status = {"hub": "h1", "ward": "w", "name": "n", "version": "1", "uptime": 3.0, "clock_synced": True,
              "components": {}, "outbox": {}, "open_alerts": [],
              "links": {"power": {**POWER, "extra": "not on the wire"},
                        "tamper": {"open": True, "alert": "h1:4"}}}
    wire = {"seq": 1, "now": 10.0, "report_every": 30, "connected_at": 5.0}  # contract version 2
    online = status_message(status, **wire)
    assert online["power"] == POWER and online["tamper"] == {"open": True, "alert": "h1:4"}
    assert contract.problems("status-v2", online) == []
    stopped = stopped_message({**status, "links": {"power": {**POWER, "state": "shutting_down"}}}, seq=2,
                              now=11.0, connected_at=5.0)
    assert stopped["online"] is False and stopped["reason"] == "stopped"
    assert stopped["power"]["state"] == "shutting_down" and "tamper" not in stopped
    assert contract.problems("status-v2", stopped) == []
    # A hub without power sources says nothing of them.
    assert "power" not in status_message({**status, "links": {}}, **wire)
    assert contract.problems("status-v2", {**online, "power": {**POWER, "state": "flat"}})


def test_status_v2_carries_power_and_tamper() -> None:
    common = {"hub": "h1", "ward": "w", "seq": 3, "time": 10.0, "connected_at": 5.0}
    online = contract.status_payload_v2(**common, report_every=30, name="n", version="1", uptime=3,
                                        clock_synced=True, components={}, outbox={}, open_alerts=0,
                                        power=POWER, tamper={"open": False, "alert": None})
    assert contract.problems("status-v2", online) == []
    stopped = contract.stopped_payload_v2(**common, power={**POWER, "state": "shutting_down"})
    assert contract.problems("status-v2", stopped) == []
    assert contract.problems("status-v2", {**online, "power": {**POWER, "unknown_key": 1}})


def test_press_simulation_names_are_reserved_only_when_fitted() -> None:
    cfg = parse_config({"hub": {"ward": "w", "id": "h"}, "buttons": [{"name": "tamper", "pin": 17},
                                                                     {"name": "mains", "pin": 18}]},
                       check_files=False)
    assert [b.name for b in cfg.buttons] == ["tamper", "mains"]



def test_the_example_configs_power_block_is_valid() -> None:
    """hubd/example.toml's commented [power] and [hardware.tamper] blocks, uncommented."""
    import tomllib

    text = (Path(__file__).resolve().parent.parent / "hubd" / "example.toml").read_text()
    lines, block = [], False
    for line in text.splitlines():
        block = block or line.startswith(("# [power", "# [hardware.tamper]"))
        if block and line.startswith("#"):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
        else:
            block = False
            lines.append(line)
    cfg = parse_config(tomllib.loads("\n".join(lines)), check_files=False)
    assert cfg.power is not None and cfg.power.mains is not None and cfg.power.battery is not None
    assert cfg.power.battery.address == 0x42 and cfg.power.throttled is not None
    assert cfg.hardware.tamper is not None and cfg.hardware.tamper.kind == "tamper"


def test_the_page_shows_on_battery_time_left_and_an_open_enclosure(tmp_path: Path) -> None:
    from test_web_helpers import login, make_web_hub

    wh = make_web_hub(tmp_path)
    try:
        wh.hub.add_status_provider("power", lambda: {**POWER, "since": time.time() - 60})
        wh.hub.add_status_provider("tamper", lambda: {"open": True, "alert": None})
        c = wh.app.test_client()
        login(c)
        html = c.get("/").get_data(as_text=True)
        banner = re.search(r'<p class="banner warn" id="power-banner"[^>]*>(.*?)</p>', html, re.S)
        expected = r"ON BATTERY since \d\d:\d\d:\d\d · battery 62 % · about 1 h 20 min left"
        assert banner and re.fullmatch(expected, banner.group(1).strip()), banner
        assert 'id="tamper-banner"' in html and "ENCLOSURE OPEN" in html
        assert re.search(r'id="power-battery">battery 62 % · 3.75 V · -0.50 A<', html)
        wh.hub.add_status_provider("power", lambda: {**POWER, "state": "mains", "mains": True,
                                                     "time_left": None})
        html = c.get("/partials/dashboard").get_data(as_text=True)
        assert 'id="power-banner"' not in html and ">mains power<" in html
    finally:
        wh.hub.stop()
        wh.store.close()
