"""Panic buttons on gpiozero mock pins: debounce, hold-to-confirm, the silent gesture,
cancel, hold-down, stuck inputs, boot grace and tamper, against a real Store and Hub."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sensors_rig import Rig
from support import wait_for

from hubd.config import ConfigError, parse_config


def button(**kw) -> list[dict]:
    return [{"name": "gate", "pin": 17, "zone": "Gate", **kw}]


# --- debounce ---------------------------------------------------------------------------

def test_a_bounce_train_on_press_and_release_is_one_press(make) -> None:
    rig = make(buttons=button(debounce=0.05))
    for active in (True, False, True, False, True):  # contact bounce, 2 ms apart
        rig.drive("gate", active)
        rig.advance(0.002)
    assert rig.siren.is_on
    rig.advance(0.5)
    for active in (False, True, False, True, False):  # and again on release
        rig.drive("gate", active)
        rig.advance(0.002)
    rig.advance(0.2)
    assert len(rig.alerts()) == 1
    assert rig.events("alert.pressed_again") == []
    # Once the line has been quiet for longer than the debounce, the next press is a new press.
    rig.press("gate", 0.3)
    assert len(rig.alerts()) == 1
    assert len(rig.events("alert.pressed_again")) == 1


def test_bounces_during_a_hold_do_not_break_the_hold(make) -> None:
    rig = make(buttons=button(debounce=0.05, hold_time=1.0))
    rig.drive("gate", True)
    for _ in range(5):  # a worn contact: 10 ms drop-outs every 150 ms, shorter than the debounce
        rig.advance(0.14)
        rig.drive("gate", False)
        rig.advance(0.01)
        rig.drive("gate", True)
    rig.advance(0.4)
    assert [a.kind for a in rig.alerts()] == ["panic"]


def test_a_gap_longer_than_the_debounce_ends_the_press(make) -> None:
    rig = make(buttons=button(debounce=0.05, hold_time=1.0))
    rig.drive("gate", True)
    rig.advance(0.6)
    rig.drive("gate", False)
    rig.advance(0.1)  # a real release
    rig.drive("gate", True)
    rig.advance(0.6)  # 1.2 s of pressing in all, but no single press of 1 s
    rig.drive("gate", False)
    rig.advance(0.2)
    assert rig.alerts() == []
    assert rig.buttons["gate"].short_presses == 2


def test_a_late_timer_does_not_change_the_decision(make) -> None:
    """Decisions come from edge times: a release whose timer has not run yet still counts."""
    rig = make(buttons=button(debounce=0.05, hold_time=1.0))
    rig.drive("gate", True)
    rig.clock.now += 0.5            # no timer runs: a busy machine
    rig.drive("gate", False)
    rig.clock.now += 0.2            # release confirmed by time, its timer still pending
    rig.drive("gate", True)         # ... so this is a new press, not a bounce
    rig.clock.now += 1.3            # held past hold_time, timer late again
    rig.drive("gate", False)        # the hold is judged at release
    rig.advance(0.2)
    assert len(rig.alerts()) == 1
    assert rig.buttons["gate"].short_presses == 1


# --- hold to confirm --------------------------------------------------------------------

def test_a_press_just_under_the_hold_time_is_logged_not_raised(make, caplog) -> None:
    rig = make(buttons=button(hold_time=1.0))
    with caplog.at_level("INFO", logger="hubd.sensors.button"):
        rig.press("gate", 0.95)
    assert rig.alerts() == []
    assert not rig.siren.is_on
    assert "short press" in caplog.text and "not an alert" in caplog.text


def test_a_press_just_over_the_hold_time_raises_while_still_held(make) -> None:
    rig = make(buttons=button(hold_time=1.0))
    rig.drive("gate", True)
    rig.advance(0.99)
    assert rig.alerts() == [] and not rig.siren.is_on
    rig.advance(0.02)
    alerts = rig.alerts()
    assert [(a.kind, a.source, a.zone, a.silent) for a in alerts] == [("panic", "gate", "Gate", False)]
    assert rig.siren.is_on
    assert rig.events("alert.raised")[0]["actor"] == "button:gate"


def test_hold_time_zero_raises_on_the_first_edge(make) -> None:
    rig = make(buttons=button(hold_time=0))
    rig.drive("gate", True)
    assert rig.siren.is_on and len(rig.alerts()) == 1


def test_the_siren_sounds_even_while_the_store_hangs(make) -> None:
    """Nothing on the press path touches the disk before the siren: hold the store's
    write lock (an SD card that hangs) and the siren must still sound at once."""
    rig = make(buttons=button(hold_time=0))
    release = threading.Event()
    held = threading.Event()

    def hang() -> None:
        with rig.store.transaction():
            held.set()
            release.wait(30)

    threading.Thread(target=hang, name="test-hang").start()
    assert held.wait(10)
    presser = threading.Thread(target=rig.drive, args=("gate", True), name="test-press")
    presser.start()
    try:
        wait_for(lambda: rig.siren.is_on, 10, message="siren on while the store hangs")
        assert presser.is_alive()  # the alert itself is still waiting for the disk
    finally:
        release.set()
    presser.join(10)
    assert len(rig.alerts()) == 1


# --- the silent gesture -----------------------------------------------------------------

def test_a_double_press_raises_a_silent_alert(make) -> None:
    rig = make(buttons=button(hold_time=1.0, silent_presses=2, silent_window=1.5))
    rig.press("gate", 0.2, settle=0.3)
    assert rig.alerts() == []
    rig.press("gate", 0.2)
    alerts = rig.alerts()
    assert [(a.kind, a.silent) for a in alerts] == [("panic", True)]
    assert not rig.siren.is_on
    assert rig.events("alert.raised")[0]["data"] == {"silent": True}


def test_short_presses_too_far_apart_are_no_gesture(make) -> None:
    rig = make(buttons=button(hold_time=1.0, silent_presses=2, silent_window=1.5))
    rig.press("gate", 0.2, settle=2.0)
    rig.press("gate", 0.2)
    assert rig.alerts() == []


def test_a_long_press_after_a_short_one_is_a_loud_alert(make) -> None:
    rig = make(buttons=button(hold_time=1.0, silent_presses=2, silent_window=3))
    rig.press("gate", 0.2, settle=0.3)
    rig.press("gate", 1.2)
    assert [a.silent for a in rig.alerts()] == [False]
    assert rig.siren.is_on


def test_a_silent_gesture_without_hold_time_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"hub": {"ward": "w", "id": "h"},
                      "buttons": [{"name": "gate", "pin": 17, "silent_presses": 2}]}, check_files=False)
    assert "'gate': silent_presses needs hold_time > 0" in str(e.value)


# --- cancel -----------------------------------------------------------------------------

def test_holding_again_inside_the_window_cancels(make) -> None:
    rig = make(buttons=button(cancel_hold=2.0))
    rig.press("gate", 0.3)
    assert rig.siren.is_on
    rig.advance(5)
    rig.drive("gate", True)
    rig.advance(1.9)
    assert rig.alerts()[0].state == "raised" and rig.siren.is_on
    rig.advance(0.2)
    assert rig.alerts()[0].state == "cancelled"
    assert not rig.siren.is_on
    cancelled = rig.events("alert.cancelled")
    assert [e["actor"] for e in cancelled] == ["button:gate"]
    # The centre is told: the cancel has an outbox row for the uplink.
    assert rig.store.query("SELECT destination FROM outbox WHERE event_seq = ?",
                           (cancelled[0]["seq"],)) == [{"destination": "mqtt"}]
    rig.drive("gate", False)
    rig.advance(0.2)
    assert len(rig.alerts()) == 1  # the cancelling press raised nothing new
    rig.press("gate", 0.3)
    assert len(rig.alerts()) == 2  # and the next press is a new alert


def test_a_short_press_inside_the_window_is_pressed_again_not_cancel(make) -> None:
    rig = make(buttons=button(cancel_hold=2.0))
    rig.press("gate", 0.3)
    rig.press("gate", 1.0)
    assert rig.alerts()[0].state == "raised"
    assert len(rig.events("alert.pressed_again")) == 1


def test_holding_again_after_the_window_does_not_cancel(make) -> None:
    rig = make(buttons=button(cancel_hold=2.0), protocol={"cancel_window": 10})
    rig.press("gate", 0.3)
    rig.advance(11)
    rig.press("gate", 2.5)
    assert rig.alerts()[0].state == "raised"
    assert rig.siren.is_on
    assert rig.events("alert.cancelled") == []
    assert len(rig.events("alert.pressed_again")) == 1


# --- hold-down --------------------------------------------------------------------------

def test_presses_while_the_alert_is_open_never_raise_another(make) -> None:
    rig = make(buttons=button(), protocol={"cancel_window": 0})
    for _ in range(10):
        rig.press("gate", 0.3)
    alerts = rig.alerts()
    assert len(alerts) == 1
    again = rig.events("alert.pressed_again")
    assert len(again) == 9 and {e["alert_id"] for e in again} == {alerts[0].id}
    rig.hub.acknowledge(alerts[0].id, "manager")
    rig.press("gate", 0.3)
    assert len(rig.alerts()) == 1 and len(rig.events("alert.pressed_again")) == 10
    rig.hub.resolve(alerts[0].id, "genuine", "manager")
    rig.press("gate", 0.3)
    assert len(rig.alerts()) == 2  # closed: the next press is a new alert


def test_repeated_presses_escalate_at_most_every_30_s(make) -> None:
    rig = make(buttons=button(repeat_escalates=True), protocol={"cancel_window": 0})
    rig.press("gate", 0.3)
    rig.press("gate", 0.3)
    rig.press("gate", 0.3)
    assert rig.alerts()[0].level == 1
    rig.advance(31)
    rig.press("gate", 0.3)
    assert rig.alerts()[0].level == 2
    assert [e["data"]["reason"] for e in rig.events("alert.escalated")] == ["pressed again"] * 2


def test_the_open_alert_is_learned_from_the_store_at_start(make, tmp_path: Path) -> None:
    first = make(buttons=button(), protocol={"cancel_window": 0})
    first.press("gate", 0.3)
    first.close()
    # The same state directory, as after a restart: the open alert is remembered.
    again = Rig(tmp_path / "rig0", buttons=button(), protocol={"cancel_window": 0})
    try:
        assert again.alerts()[0].state == "raised"
        again.press("gate", 0.3)
        assert len(again.alerts()) == 1
        assert len(again.events("alert.pressed_again")) == 1
    finally:
        again.close()


# --- stuck inputs and boot --------------------------------------------------------------

def test_a_stuck_input_is_one_alert_then_a_fault_until_released(make) -> None:
    rig = make(buttons=button(stuck_after=5))
    rig.drive("gate", True)
    rig.advance(4.9)
    assert rig.health("button:gate")[0] == "ok"
    rig.advance(600)
    status, reason = rig.health("button:gate")
    assert status == "fault" and "stuck or shorted" in reason
    assert len(rig.alerts()) == 1
    rig.drive("gate", False)
    rig.advance(0.2)
    assert rig.health("button:gate")[0] == "ok"
    assert [e["data"]["status"] for e in rig.events() if e["type"].startswith("component.")
            and e["data"]["component"] == "button:gate"] == ["fault", "ok"]


def test_a_button_held_at_start_is_a_fault_never_an_alert(make) -> None:
    # A button to 3V3 with an external pull-down: the mock line floats where the test leaves it.
    rig = make(buttons=button(pull_up=False, active_high=True), start=False)
    rig.factory.pin(17).drive_high()  # held (or shorted) while the daemon starts
    rig.start_inputs()
    rig.advance(30)
    assert rig.alerts() == []
    assert not rig.siren.is_on
    status, reason = rig.health("button:gate")
    assert status == "fault" and "active at start" in reason
    rig.drive("gate", False)
    rig.advance(0.2)
    assert rig.health("button:gate")[0] == "ok" and rig.alerts() == []
    rig.press("gate", 0.3)
    assert len(rig.alerts()) == 1  # once released, the button works


def test_a_normally_closed_button_reads_a_cut_wire_as_active(make) -> None:
    # pull_up + active_high: the loop is closed to ground at rest; an unconnected mock line
    # is pulled high, which is what a cut wire looks like.
    rig = make(buttons=button(pull_up=True, active_high=True))
    assert rig.health("button:gate")[0] == "fault" and rig.alerts() == []
    rig.factory.pin(17).drive_low()  # wire connected, button at rest
    rig.advance(0.2)
    assert rig.health("button:gate")[0] == "ok"
    rig.factory.pin(17).drive_high()  # pressed (or the wire is cut)
    assert len(rig.alerts()) == 1


def test_a_press_inside_the_boot_grace_is_a_fault(make) -> None:
    rig = make(buttons=button(), hardware={"boot_grace": 2.0})
    rig.advance(1.0)
    rig.press("gate", 0.3)
    assert rig.alerts() == []
    health = [e["data"]["status"] for e in rig.events() if e["type"].startswith("component.")]
    assert health == ["fault", "ok"]
    rig.advance(1.0)
    rig.press("gate", 0.3)
    assert len(rig.alerts()) == 1


# --- tamper -----------------------------------------------------------------------------

def test_opening_the_enclosure_raises_one_tamper_alert(make) -> None:
    rig = make(hardware={"tamper": {"pin": 5, "zone": "Hub box"}})
    # Normally-closed switch with pull-up: the loop is open (pulled high) until it is connected.
    assert rig.health("tamper")[0] == "fault"
    rig.factory.pin(5).drive_low()  # lid closed
    rig.advance(0.2)
    assert rig.health("tamper")[0] == "ok"
    rig.factory.pin(5).drive_high()  # lid opened
    rig.advance(0.2)
    rig.factory.pin(5).drive_low()
    rig.advance(0.2)
    rig.factory.pin(5).drive_high()  # opened again: the same alert, pressed again
    alerts = rig.alerts()
    assert [(a.kind, a.source, a.zone) for a in alerts] == [("tamper", "tamper:enclosure", "Hub box")]
    assert rig.siren.is_on and rig.siren.pattern == "slow"
    assert [e["actor"] for e in rig.events("alert.pressed_again")] == ["tamper"]
