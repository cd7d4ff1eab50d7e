"""The core's parts on their own: the unsaved-writes queue, the health registry, the one
commit path's ordering, escalation on the monotonic clock, the watchdog's ping, timers."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from support import ManualClock, local_hub, wait_for

from hubd.health import ComponentHealth, HealthChange, HealthRegistry
from hubd.model import Alert, AlertKind, Event, TransitionError
from hubd.timers import Timers
from hubd.unsaved import HeldAlert, HeldEvent, HeldHeard, UnsavedQueue

# --- the unsaved-writes queue ---------------------------------------------------------------


def held_alert(source: str, t: float = 1000.0) -> HeldAlert:
    alert = Alert(id="", hub="h1", seq=0, kind=AlertKind.PANIC, source=source, zone="", raised_at=t,
                  updated_at=t)
    return HeldAlert(alert, f"button:{source}", {}, True, raised_mono=t)


def held_event(type: str = "siren.silenced", t: float = 1000.0) -> HeldEvent:
    return HeldEvent(type, "cli:x", t, True)


def test_the_unsaved_queue_never_passes_its_cap_even_when_only_alerts_are_held() -> None:
    queue = UnsavedQueue(ManualClock(), cap=3)
    for source in ("a", "b", "c"):
        queue.hold(held_alert(source))
    queue.hold(held_alert("d"))
    # Held alerts are dropped last, but the cap holds: the oldest alert made room.
    assert len(queue) == 3
    assert [d["alert"]["source"] for d in queue.describe()] == ["b", "c", "d"]
    queue.hold(held_event())
    # A routine event when only alerts are held: it is the one dropped.
    assert len(queue) == 3
    assert [d["type"] for d in queue.describe()] == ["alert.raised"] * 3


def test_the_unsaved_queue_drops_the_oldest_routine_item_first() -> None:
    queue = UnsavedQueue(ManualClock(), cap=3)
    queue.hold(held_event("siren.test"))
    queue.hold(held_alert("a"))
    queue.hold(held_event("siren.silenced"))
    assert queue.hold(held_event("camera.snapshot")) == 4
    assert [d["type"] for d in queue.describe()] == ["alert.raised", "siren.silenced", "camera.snapshot"]
    assert queue.counts() == (1, 2)


def test_held_items_are_numbered_and_a_held_alert_named_by_its_number() -> None:
    queue = UnsavedQueue(ManualClock())
    queue.hold(held_event())
    item = held_alert("gate")
    assert queue.hold(item) == 2
    assert item.alert.id == "h1:unsaved-2"
    assert queue.held_alert("gate", "panic") is item
    assert queue.held_alert("gate", "fire") is None
    queue.hold(HeldHeard({"id": "h9:e1", "type": "alert.raised", "time": 5.0}, via="mesh",
                         trust="ward-attested"))
    assert queue.holds_heard("h9:e1") and not queue.holds_heard("h9:e2")
    assert queue.describe()[-1] == {"type": "alert.raised", "time": 5.0, "actor": "?"}


class FakeWriter:
    """Writes nothing; records the order, and refuses as told."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.refuse: dict[str, sqlite3.Error] = {}

    def _write(self, what: str) -> tuple[Event, dict[str, Any]]:
        if what in self.refuse:
            raise self.refuse.pop(what)
        self.written.append(what)
        return Event(id=what, type=what, time=0.0, hub="h1", actor="x"), {}

    def write_alert(self, alert: Alert, actor: str, data: dict[str, Any], **kw: Any) -> tuple[Alert, Any]:
        return dataclasses.replace(alert, id="h1:7", seq=7), self._write(f"alert:{alert.source}")

    def write_event(self, type: str, actor: str, alert_id: str | None, data: dict[str, Any],
                    **kw: Any) -> Any:
        return self._write(type)

    def write_heard(self, envelope: dict[str, Any], via: str, trust: str,
                    relay_to: tuple[str, ...] = ()) -> Any:
        return self._write(envelope["id"])


def test_a_flush_writes_oldest_first_and_stops_where_the_store_still_refuses() -> None:
    clock = ManualClock(1000.0)
    queue = UnsavedQueue(clock)
    queue.hold(held_event("one"))
    queue.hold(held_alert("gate", t=1000.0))
    queue.hold(held_event("bad"))
    queue.hold(held_event("three"))
    queue.hold(held_event("four"))
    writer = FakeWriter()
    writer.refuse = {"bad": sqlite3.IntegrityError("this item itself"),
                     "four": sqlite3.OperationalError("full")}
    clock.now += 12
    done: list[Any] = []
    with pytest.raises(sqlite3.OperationalError):
        queue.flush(writer, done.append)
    # Written in order; the item refused for itself was dropped; the rest waits for the store.
    assert writer.written == ["one", "alert:gate", "three"]
    assert [w.committed[0].id for w in done] == ["one", "alert:gate", "three"]
    assert done[1].alert.id == "h1:7" and done[1].raised_mono == 1000.0
    assert [d["type"] for d in queue.describe()] == ["four"]
    queue.flush(writer, done.append)
    assert len(queue) == 0 and writer.written[-1] == "four"


# --- the health registry --------------------------------------------------------------------


def test_health_readers_get_copies_never_the_registry_itself() -> None:
    health = HealthRegistry(ManualClock(50.0))
    health.set("camera", "ok")
    snapshot = health.snapshot()
    snapshot["camera"] = ComponentHealth("fault", "forged")
    snapshot["mesh"] = ComponentHealth("ok")
    assert health["camera"].status == "ok" and "mesh" not in health
    with pytest.raises(dataclasses.FrozenInstanceError):
        health["camera"].status = "fault"  # type: ignore[misc]
    assert dict(health) == {"camera": ComponentHealth("ok", "", 50.0)}
    assert not isinstance(health, dict)


def test_health_changes_are_reported_once_and_a_quiet_fault_keeps_its_start() -> None:
    clock = ManualClock(50.0)
    changes: list[HealthChange] = []
    health = HealthRegistry(clock, on_change=changes.append)
    health.set("mqtt", "fault", "refused")
    clock.now += 5
    assert health.set("mqtt", "fault", "refused") is None  # unchanged: nothing reported
    assert [(c.component, c.old, c.new.status) for c in changes] == [("mqtt", None, "fault")]
    clock.now += 5
    health.set("store", "fault", "1 item", quiet=True)
    clock.now += 5
    health.set("store", "fault", "2 items", quiet=True)
    assert health["store"] == ComponentHealth("fault", "2 items", 60.0)
    assert len(changes) == 1  # quiet: not reported


def test_the_hubs_status_shows_a_copy_of_the_health(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    hub.set_health("camera", "fault", "no frames")
    status = hub.status()
    status["components"]["camera"]["status"] = "ok"
    assert hub.health["camera"].status == "fault"
    assert [e["type"] for e in store.events()] == ["component.fault"]


# --- the one commit path --------------------------------------------------------------------


class RefusingStore:
    """Makes the store refuse every event write while ``refusing`` (a full SD card)."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch):
        self.refusing = False
        real = store.append_event

        def append_event(*a: Any, **kw: Any) -> Any:
            if self.refusing:
                raise sqlite3.OperationalError("database or disk is full")
            return real(*a, **kw)

        monkeypatch.setattr(store, "append_event", append_event)


def committed_ids(path: Path) -> set[str]:
    """Event ids another connection can read: what is committed."""
    other = sqlite3.connect(path)
    try:
        return {r[0] for r in other.execute("SELECT id FROM events")}
    finally:
        other.close()


def test_listeners_hear_of_each_write_only_after_its_commit(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    other, other_store = local_hub(tmp_path / "other", hub_id="h2")
    heard: list[tuple[str, bool]] = []
    hub.subscribe(lambda event, env: heard.append((event.type, event.id in committed_ids(store.path))))
    a = hub.raise_alert("gate", "panic")
    hub.record("siren.test", actor="cli:x")
    hub.acknowledge(a.id, "cli:x")
    b = other.raise_alert("gate", "fire")
    assert hub.ingest_remote(other_store.events(alert_id=b.id)[0]["envelope"], via="mqtt", trust="signed")
    assert heard == [("alert.raised", True), ("siren.test", True), ("alert.acknowledged", True),
                     ("alert.raised", True)]


def test_held_writes_go_first_and_are_announced_in_the_order_they_are_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, store = local_hub(tmp_path)
    disk = RefusingStore(store, monkeypatch)
    heard: list[str] = []
    hub.subscribe(lambda event, env: heard.append(f"{event.type}:{event.actor}"))
    disk.refusing = True
    held = hub.raise_alert("gate", "panic")
    hub.record("siren.silenced", actor="cli:x")
    assert held.id == "h1:unsaved-2" and heard == []  # the store's fault event is number 1
    assert [u["type"] for u in hub.status()["unsaved"]] == ["component.fault", "alert.raised",
                                                             "siren.silenced"]
    disk.refusing = False
    new = hub.raise_alert("clinic", "medical")
    # The older, held items were written first: the new alert overtook none of them.
    assert heard == ["component.fault:store", "alert.raised:gate", "siren.silenced:cli:x",
                     "alert.raised:clinic", "component.ok:store"]
    events = store.events()
    assert [f"{e['type']}:{e['actor']}" for e in events] == heard
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert new.id == "h1:2" and store.get_alert("h1:1").source == "gate"
    assert hub.health["store"].status == "ok" and hub.status()["unsaved"] == []


def test_a_refused_transition_changes_nothing_and_announces_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, store = local_hub(tmp_path)
    a = hub.raise_alert("gate", "panic")
    disk = RefusingStore(store, monkeypatch)
    heard: list[str] = []
    hub.subscribe(lambda event, env: heard.append(event.type))
    disk.refusing = True
    with pytest.raises(TransitionError) as e:
        hub.acknowledge(a.id, "cli:x")
    assert e.value.code == "store_unavailable"
    assert store.get_alert(a.id).state == "raised" and heard == []
    assert hub.health["store"].status == "fault"


# --- escalation and the cancel window on the monotonic clock ---------------------------------


def test_escalation_steps_follow_the_monotonic_clock_not_the_wall_clock(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    hub, store = local_hub(tmp_path, escalation=(60, 180), clock=clock)
    a = hub.raise_alert("gate", "panic")
    clock.jump(3600)  # NTP's first answer: the wall clock leaps an hour ahead
    hub.timers.run_due()
    assert store.get_alert(a.id).level == 0
    clock.now += 59
    hub.timers.run_due()
    assert store.get_alert(a.id).level == 0
    clock.now += 1
    hub.timers.run_due()
    assert store.get_alert(a.id).level == 1
    clock.jump(-7200)  # and back, two hours
    clock.now += 120
    hub.timers.run_due()
    assert store.get_alert(a.id).level == 2


def test_a_restart_resumes_escalation_from_the_stored_raise_time(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    hub, store = local_hub(tmp_path, escalation=(60, 180), clock=clock)
    a = hub.raise_alert("gate", "panic")
    store.close()
    clock.now += 50
    hub2, store2 = local_hub(tmp_path, escalation=(60, 180), clock=clock)
    hub2.start()
    try:
        clock.now += 9
        hub2.timers.run_due()
        assert store2.get_alert(a.id).level == 0
        clock.now += 1  # 60 s after the raise, on the new process's clock
        wait_for(lambda: store2.get_alert(a.id).level == 1, 5, message="the resumed step")
    finally:
        hub2.stop()
        store2.close()


def test_the_cancel_window_is_measured_on_the_monotonic_clock(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    hub, store = local_hub(tmp_path, cancel_window=30, clock=clock)
    a = hub.raise_alert("gate", "panic")
    b = hub.raise_alert("clinic", "medical")
    clock.jump(3600)
    assert hub.within_cancel_window(a)
    hub.cancel(a.id, "button:gate")
    clock.now += 31
    assert not hub.within_cancel_window(b)
    with pytest.raises(TransitionError) as e:
        hub.cancel(b.id, "button:clinic")
    assert e.value.code == "cancel_window_passed"


# --- the watchdog's ping ----------------------------------------------------------------------


def test_ping_answers_until_a_stuck_write_holds_the_core(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    hub, store = local_hub(tmp_path)
    assert hub.ping(timeout=1)
    stuck, release = threading.Event(), threading.Event()
    real = store.append_event

    def stuck_append_event(*a: Any, **kw: Any) -> Any:
        stuck.set()
        release.wait(30)
        return real(*a, **kw)

    monkeypatch.setattr(store, "append_event", stuck_append_event)
    worker = threading.Thread(target=hub.record, args=("siren.test",), kwargs={"actor": "x"})
    worker.start()
    try:
        assert stuck.wait(10)
        assert not hub.ping(timeout=0.2)
    finally:
        release.set()
        worker.join(10)
    assert hub.ping(timeout=1)


# --- timers ---------------------------------------------------------------------------------


def test_timers_every_repeats_after_each_run_even_a_failed_one() -> None:
    clock = ManualClock(0.0)
    timers = Timers("test", clock)
    runs: list[float] = []

    def tick() -> None:
        runs.append(clock.now)
        if len(runs) == 2:
            raise RuntimeError("a failing run")

    timers.every(2.0, tick)
    for _ in range(7):
        clock.now += 1
        timers.run_due()
    assert runs == [2.0, 4.0, 6.0]
