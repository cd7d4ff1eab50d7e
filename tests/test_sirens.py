"""Sirens on gpiozero mock pins: patterns per kind and level, max on-time, silence and
re-escalation, the test chirp, and the feedback input."""

from __future__ import annotations

import threading

from gpiozero.pins.mock import MockFactory, MockPWMPin
from sensors_rig import Rig
from support import wait_for

from hubd.config import SirenConfig
from hubd.sensors.sirens import Siren


def trace(rig: Rig, seconds: float, step: float = 0.1) -> str:
    """The output sampled every ``step`` seconds: '#' on, '.' off."""
    out = []
    rig.advance(step / 2)  # sample mid-step, never on a pattern's edge
    for _ in range(round(seconds / step)):
        out.append("#" if rig.siren.is_on else ".")
        rig.advance(step)
    return "".join(out)


def test_patterns_follow_kind_and_level(make) -> None:
    rig = make()
    rig.siren.sound("panic", 0)
    assert trace(rig, 3) == "#" * 30  # continuous
    rig.siren.sound("medical", 0)
    assert trace(rig, 2) == "#####.....#####....."  # pulsed, 0.5 s on and off
    rig.siren.sound("medical", 1)
    assert trace(rig, 1) == "#" * 10  # one level up: continuous
    rig.siren.sound("medical", 7)
    assert trace(rig, 1) == "#" * 10  # the last pattern repeats for higher levels
    rig.siren.sound("fire", 0)  # temporal-three
    assert trace(rig, 4) == "#####.....#####.....#####..............."
    rig.siren.silence()
    rig.siren.sound("fault", 0)  # "off"
    assert trace(rig, 1) == "." * 10 and not rig.siren.sounding


def test_patterns_come_from_the_config(make) -> None:
    rig = make(sirens=[{"name": "main", "pin": 27, "patterns": {"panic": ["fast", "slow"]}}])
    rig.siren.sound("panic", 0)
    assert trace(rig, 0.8) == "##..##.."
    rig.advance(0.05)
    rig.siren.sound("panic", 1)
    assert trace(rig, 4) == "#" * 10 + "." * 10 + "#" * 10 + "." * 10


def test_the_siren_stops_by_itself_after_max_on(make) -> None:
    rig = make(sirens=[{"name": "main", "pin": 27, "max_on": 60}])
    alert = rig.hub.raise_alert("gate", "panic", "Gate")
    rig.advance(59.9)
    assert rig.siren.is_on
    rig.advance(0.2)
    assert not rig.siren.is_on and not rig.siren.sounding
    [timeout] = rig.events("siren.timeout")
    assert timeout["actor"] == "siren:main"
    assert timeout["data"] == {"siren": "main", "max_on": 60.0, "kind": "panic", "level": 0}
    assert rig.hub.get_alert(alert.id).state == "raised"  # the alert is not touched
    # The hub's status shows it off.
    assert rig.siren.status()["on"] is False and rig.siren.status()["timeouts"] == 1


def test_max_on_also_stops_a_pulsed_pattern(make) -> None:
    rig = make(sirens=[{"name": "main", "pin": 27, "max_on": 10}])
    rig.siren.sound("medical", 0)
    rig.advance(30)
    assert not rig.siren.is_on and len(rig.events("siren.timeout")) == 1


def test_silence_then_escalation_sounds_again(make) -> None:
    rig = make()
    alert = rig.hub.raise_alert("gate", "medical", "Clinic")
    assert rig.siren.is_on
    rig.hub.silence("manager", alert.id)
    assert not rig.siren.is_on
    assert trace(rig, 2) == "." * 20  # silenced means silent, pattern timers included
    assert rig.hub.get_alert(alert.id).state == "raised"  # silence does not resolve
    rig.hub.escalate(alert.id)
    assert rig.siren.is_on and rig.siren.pattern == "continuous"  # medical level 1
    rig.hub.acknowledge(alert.id, "manager")
    rig.hub.resolve(alert.id, "genuine", "manager")
    assert not rig.siren.is_on


def test_a_silent_alert_never_sounds_even_when_escalated(make) -> None:
    rig = make()
    alert = rig.hub.raise_alert("gate", "panic", silent=True)
    rig.hub.escalate(alert.id)
    assert trace(rig, 1) == "." * 10


def test_the_test_chirp_is_short_and_logged(make) -> None:
    rig = make()
    rig.hub.siren_test("manager")
    assert rig.siren.is_on
    rig.advance(0.2)
    assert not rig.siren.is_on
    assert [(e["type"], e["actor"]) for e in rig.events("siren.test")] == [("siren.test", "manager")]


def test_a_chirp_never_cuts_an_alarm_short(make) -> None:
    rig = make()
    rig.hub.raise_alert("gate", "panic")
    rig.hub.siren_test("manager")
    assert trace(rig, 1) == "#" * 10


def feedback_rig(make, **kw) -> Rig:
    return make(sirens=[{"name": "main", "pin": 27, "feedback_pin": 6, "feedback_delay": 0.5, **kw}])


def test_driven_but_feedback_off_is_a_fault(make) -> None:
    rig = feedback_rig(make)  # relay contact to ground with pull-up: active low
    fb = rig.factory.pin(6)
    rig.siren.sound("panic", 0)
    rig.advance(0.4)
    assert rig.health("siren:main")[0] == "ok"
    rig.advance(0.2)
    status, reason = rig.health("siren:main")
    assert status == "fault" and "feedback reads off" in reason
    assert rig.events("component.fault")[0]["data"]["component"] == "siren:main"
    fb.drive_low()  # the siren really sounds now
    rig.advance(0.6)
    assert rig.health("siren:main")[0] == "ok"
    assert rig.siren.status()["feedback"] is True


def test_feedback_on_while_not_driven_is_a_fault(make) -> None:
    rig = feedback_rig(make)
    fb = rig.factory.pin(6)
    rig.siren.sound("panic", 0)
    fb.drive_low()
    rig.advance(1)
    rig.siren.silence()
    rig.advance(1)  # the relay contact stays closed: welded
    status, reason = rig.health("siren:main")
    assert status == "fault" and "while not driven" in reason
    fb.drive_high()
    rig.advance(1)
    assert rig.health("siren:main")[0] == "ok"


def test_feedback_that_follows_short_pulses_is_healthy(make) -> None:
    rig = feedback_rig(make, patterns={"panic": ["fast"]})  # 0.2 s pulses, shorter than the delay
    fb = rig.factory.pin(6)
    rig.siren.sound("panic", 0)
    for _ in range(100):  # the feedback follows the output 10 ms late
        rig.advance(0.01)
        (fb.drive_low if rig.siren.is_on else fb.drive_high)()
    assert rig.health("siren:main")[0] == "ok"
    fb.drive_high()
    for _ in range(100):  # the siren breaks: no more feedback
        rig.advance(0.01)
    assert rig.health("siren:main")[0] == "fault"


def test_a_feedback_fault_clears_when_the_wiring_is_fixed_while_sounding(make) -> None:
    rig = feedback_rig(make)
    fb = rig.factory.pin(6)
    rig.siren.sound("panic", 0)
    fb.drive_low()
    rig.advance(1)
    assert rig.health("siren:main")[0] == "ok"
    fb.drive_high()  # the wire to the horn comes loose while it sounds
    rig.advance(3)
    assert rig.health("siren:main")[0] == "fault"


def test_with_its_own_thread_sound_returns_at_once_and_max_on_still_stops_it() -> None:
    """The real timer thread: nothing blocks the caller, and the siren stops by itself."""
    factory = MockFactory(pin_class=MockPWMPin)
    reports = []
    siren = Siren(SirenConfig(name="main", pin=27, max_on=3), factory,
                  on_event=lambda t, d: reports.append((t, d["siren"])))
    try:
        siren.sound("medical", 0)  # pulsed: the thread toggles it
        assert siren.is_on
        wait_for(lambda: not siren.is_on, 10, message="first pulse over")
        wait_for(lambda: siren.is_on, 10, message="second pulse")
        wait_for(lambda: reports == [("siren.timeout", "main")], 10, message="max_on")
        assert not siren.is_on and not siren.sounding
        assert "hubd-siren-main" in [t.name for t in threading.enumerate()]
    finally:
        siren.close()
