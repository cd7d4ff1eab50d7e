"""Supervision on a manual clock: "hub silent" after the reporting time, "path fault" when a
hub is heard only through a neighbour, the Last Will only speeding things up, restores
closing alarms, and neither a restart of the centre nor its own outage raising a false
alarm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hubd.centre import registry, tables
from hubd.centre.config import SupervisionConfig
from hubd.centre.registry import HubRecord
from hubd.centre.store import Store
from hubd.centre.supervision import HUB_SILENT, PATH_FAULT, POWER_LOST, Supervisor, open_alarms


class ManualClock:
    def __init__(self) -> None:
        self.wall = 1_763_712_000.0
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'centre.db'}")
    registry.enrol(s, HubRecord(id="hub-1", ward="ward-7"), by="test")
    registry.enrol(s, HubRecord(id="hub-2", ward="ward-7"), by="test")
    registry.enrol(s, HubRecord(id="fast", ward="ward-7", report_every=20), by="test")
    registry.enrol(s, HubRecord(id="far", ward="ward-9"), by="test")
    yield s
    s.close()


CONFIG = SupervisionConfig(report_every=90, wards={"ward-9": 180}, will_grace=10)


def supervisor(store: Store, clock: ManualClock, feed: list[dict[str, Any]] | None = None) -> Supervisor:
    s = Supervisor(store, CONFIG, clock=clock, publish=(feed.extend if feed is not None else None))
    s.load(registry.all_hubs(store))
    return s


def alarms(store: Store) -> list[tuple[str, str, bool]]:
    """(hub, kind, open) of every alarm ever, oldest first."""
    a = tables.alarms.c
    with store.read() as conn:
        rows = conn.execute(sa.select(a.hub, a.kind, a.closed_at).order_by(a.id))
        return [(r.hub, r.kind, r.closed_at is None) for r in rows]


def hear_all(s: Supervisor, clock: ManualClock, *hubs: str) -> None:
    for h in hubs or ("hub-1", "hub-2", "fast", "far"):
        s.heard(h, clock.monotonic())


def test_a_hub_not_heard_within_its_reporting_time_is_silent_until_heard(store: Store) -> None:
    clock, feed = ManualClock(), []
    s = supervisor(store, clock, feed)
    hear_all(s, clock)
    clock.advance(19)
    s.check()
    assert alarms(store) == []
    clock.advance(2)  # "fast" has a reporting time of its own: 20 s
    s.check()
    assert alarms(store) == [("fast", HUB_SILENT, True)]
    hear_all(s, clock, "fast", "hub-1", "hub-2", "far")
    clock.advance(85)
    hear_all(s, clock, "fast")
    s.check()
    assert alarms(store) == [("fast", HUB_SILENT, False)]
    clock.advance(6)  # hub-1 and hub-2: 91 s; "far", of ward-9: 180 s
    s.check()
    assert sorted(alarms(store)[1:]) == [("hub-1", HUB_SILENT, True), ("hub-2", HUB_SILENT, True)]
    assert s.health()["hub-1"]["state"] == HUB_SILENT and s.health()["far"]["state"] == "online"
    assert [f["action"] for f in feed] == ["opened", "closed", "opened", "opened"]
    opened = open_alarms(store, "hub-1")[0]
    assert "not heard for 91 s" in opened["reason"] and "last_heard_at" in opened["detail"]


def test_heard_only_through_a_neighbour_is_a_path_fault_not_silent(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    hear_all(s, clock)
    for _ in range(10):
        clock.advance(10)
        s.heard("hub-2", clock.monotonic())
        s.heard_relayed("hub-1", "hub-2", clock.monotonic())
        s.check()
    assert ("hub-1", PATH_FAULT, True) in alarms(store)
    assert ("hub-1", HUB_SILENT, True) not in alarms(store)
    assert "heard only through hub-2" in open_alarms(store, "hub-1")[0]["reason"]
    # The relay goes quiet too: silent.
    clock.advance(91)
    s.heard("hub-2", clock.monotonic())
    s.check()
    assert [a for a in alarms(store) if a[0] == "hub-1"] == [("hub-1", PATH_FAULT, False),
                                                             ("hub-1", HUB_SILENT, True)]
    s.heard("hub-1", clock.monotonic())
    s.check()
    assert not any(a[2] for a in alarms(store) if a[0] == "hub-1")


def test_a_last_will_speeds_detection_and_a_return_cancels_it(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    hear_all(s, clock)
    s.went_offline("hub-1", clock.monotonic())
    clock.advance(5)
    s.heard("hub-1", clock.monotonic())  # back within the grace: no alarm
    clock.advance(6)
    s.check()
    assert alarms(store) == []
    s.went_offline("hub-1", clock.monotonic())
    hear_all(s, clock, "fast")
    clock.advance(11)
    s.check()
    assert alarms(store) == [("hub-1", HUB_SILENT, True)]
    assert "Last Will" in open_alarms(store, "hub-1")[0]["reason"]


def test_a_restart_raises_nothing_false_and_keeps_what_is_open(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    hear_all(s, clock)
    clock.advance(95)
    hear_all(s, clock, "hub-2", "fast", "far")
    s.check()
    assert alarms(store) == [("hub-1", HUB_SILENT, True)]
    # The centre restarts long after anyone was heard: every hub gets a full reporting time.
    clock.advance(500)
    s2 = supervisor(store, clock)
    clock.advance(19)
    s2.check()
    assert alarms(store) == [("hub-1", HUB_SILENT, True)]
    assert s2.health()["hub-2"]["state"] == "waiting" and s2.health()["hub-1"]["state"] == HUB_SILENT
    hear_all(s2, clock)
    s2.check()
    assert alarms(store) == [("hub-1", HUB_SILENT, False)]


def test_the_centres_own_outage_pauses_supervision(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    hear_all(s, clock)
    s.pause("the store is down")
    clock.advance(300)
    s.check()
    assert alarms(store) == []
    s.resume("the store is down")
    clock.advance(19)
    s.check()
    assert alarms(store) == []
    clock.advance(2)
    s.check()
    assert alarms(store) == [("fast", HUB_SILENT, True)]


def test_a_wall_clock_jump_changes_nothing(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    hear_all(s, clock)
    clock.wall += 86400
    s.check()
    clock.wall -= 2 * 86400
    s.check()
    assert alarms(store) == []


def test_removed_hubs_have_their_alarms_closed_and_new_ones_a_full_period(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    clock.advance(100)
    s.check()
    assert ("hub-1", HUB_SILENT, True) in alarms(store)
    registry.remove(store, "hub-1", by="test")
    registry.enrol(store, HubRecord(id="new", ward="ward-7"), by="test")
    s.load(registry.all_hubs(store))
    assert ("hub-1", HUB_SILENT, False) in alarms(store)
    clock.advance(80)
    s.check()
    assert not any(a[0] == "new" for a in alarms(store))


def test_silent_after_saying_it_was_on_battery_is_power_lost(store: Store) -> None:
    clock = ManualClock()
    s = supervisor(store, clock)
    hear_all(s, clock)
    with store.write() as conn:
        conn.execute(tables.hubs.update().where(tables.hubs.c.id == "hub-1").values(
            status={"online": True, "power": {"state": "on_battery", "battery": 41.5}}))
    hear_all(s, clock, "hub-2", "fast", "far")
    clock.advance(19)
    hear_all(s, clock, "hub-2", "fast", "far")
    clock.advance(19)
    hear_all(s, clock, "hub-2", "fast", "far")
    clock.advance(19)
    hear_all(s, clock, "hub-2", "fast", "far")
    clock.advance(19)
    hear_all(s, clock, "hub-2", "fast", "far")
    clock.advance(15)
    s.check()
    s.check()  # still the same alarm: not closed and reopened
    assert alarms(store) == [("hub-1", POWER_LOST, True)]
    assert "power most likely lost (last heard on battery, battery 42 %)" in open_alarms(store)[0]["reason"]
    assert s.health()["hub-1"]["state"] == POWER_LOST
    s.heard("hub-1", clock.monotonic())
    s.check()
    assert alarms(store) == [("hub-1", POWER_LOST, False)]
