"""The response protocol: transitions, refusals, audit log, escalation, restart."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ManualClock, local_hub, wait_for

from hubd.model import TRANSITIONS, AlertState, TransitionError


class RecordingSounder:
    name = "rec"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sound(self, kind: str, level: int) -> None:
        self.calls.append(("sound", kind, level))

    def silence(self) -> None:
        self.calls.append(("silence",))

    def chirp(self) -> None:
        self.calls.append(("chirp",))


def transition_events(store, alert_id: str) -> list[str]:
    return [e["type"] for e in store.events(alert_id=alert_id)]


def test_full_life_is_logged_with_actors(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    alert = hub.raise_alert("gate", "panic", "Market gate", actor="button:gate")
    assert alert.id == "h1:1"
    hub.acknowledge(alert.id, "web:alice")
    hub.resolve(alert.id, "genuine", "cli:bob")
    events = store.events(alert_id=alert.id)
    assert [(e["type"], e["actor"]) for e in events] == [
        ("alert.raised", "button:gate"), ("alert.acknowledged", "web:alice"), ("alert.resolved", "cli:bob")]
    assert store.get_alert(alert.id).outcome == "genuine"
    assert events[-1]["envelope"]["alert"]["state"] == "resolved"


def test_sirens_sound_before_the_store_is_touched(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    seen = []

    class Probe(RecordingSounder):
        def sound(self, kind: str, level: int) -> None:
            seen.append(store.query("SELECT count(*) AS n FROM alerts")[0]["n"])

    hub.add_sounder(Probe())
    hub.raise_alert("gate", "panic")
    assert seen == [0]  # the siren ran while the alert was not yet written


def test_silent_alert_does_not_sound(tmp_path: Path) -> None:
    hub, _ = local_hub(tmp_path)
    s = RecordingSounder()
    hub.add_sounder(s)
    hub.raise_alert("gate", "panic", silent=True)
    assert s.calls == []


def test_illegal_transition_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    a = hub.raise_alert("gate", "panic")
    hub.resolve(a.id, "false_alarm", "x")
    before = (store.get_alert(a.id), len(store.events()))
    with pytest.raises(TransitionError, match="is resolved; it cannot become acknowledged"):
        hub.acknowledge(a.id, "x")
    assert (store.get_alert(a.id), len(store.events())) == before


def test_cancel_only_inside_the_window(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    hub, store = local_hub(tmp_path, cancel_window=30, clock=clock)
    s = RecordingSounder()
    hub.add_sounder(s)
    a = hub.raise_alert("gate", "panic")
    b = hub.raise_alert("clinic", "medical")
    clock.now += 29
    hub.cancel(a.id, "button:gate")
    assert store.get_alert(a.id).state == "cancelled"
    clock.now += 2
    with pytest.raises(TransitionError) as e:
        hub.cancel(b.id, "button:clinic")
    assert e.value.code == "cancel_window_passed"
    assert store.get_alert(b.id).state == "raised"
    assert ("silence",) not in s.calls  # b is still open: the siren keeps sounding


def test_unknown_alert_and_outcome(tmp_path: Path) -> None:
    hub, _ = local_hub(tmp_path)
    with pytest.raises(TransitionError, match="no alert with id 'h1:9'"):
        hub.acknowledge("h1:9", "x")
    a = hub.raise_alert("gate", "panic")
    with pytest.raises(TransitionError, match="unknown outcome 'maybe'"):
        hub.resolve(a.id, "maybe", "x")


def test_escalation_steps_and_ack_stops_them(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path, escalation=(0.3, 0.6, 30))
    s = RecordingSounder()
    hub.add_sounder(s)
    hub.start()
    try:
        a = hub.raise_alert("gate", "panic")
        wait_for(lambda: store.get_alert(a.id).level == 2, 10, message="two escalations")
        hub.acknowledge(a.id, "x")
        time.sleep(0.2)
        assert store.get_alert(a.id).level == 2
        assert ("sound", "panic", 1) in s.calls and ("sound", "panic", 2) in s.calls
        levels = [e["data"]["level"] for e in store.events(alert_id=a.id) if e["type"] == "alert.escalated"]
        assert levels == [1, 2]
    finally:
        hub.stop()


def test_restart_resumes_escalation_without_repeating_or_raising(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path, escalation=(0.5, 1.0))
    a = hub.raise_alert("gate", "panic")
    store.close()  # the daemon dies before the first step
    time.sleep(0.7)
    hub2, store2 = local_hub(tmp_path, escalation=(0.5, 1.0))
    hub2.start()
    try:
        wait_for(lambda: store2.get_alert(a.id).level == 2, 10, message="resumed escalation")
        time.sleep(0.3)
        assert store2.query("SELECT count(*) AS n FROM alerts")[0]["n"] == 1
        types = [e["type"] for e in store2.events(alert_id=a.id)]
        assert types == ["alert.raised", "alert.escalated", "alert.escalated"]
    finally:
        hub2.stop()


def test_events_get_one_outbox_row_per_destination(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("00" * 16)
    hub, store = local_hub(tmp_path, extra={
        "mqtt": {"host": "127.0.0.1"},
        "mesh": {"connection": "tcp:127.0.0.1:1", "key_file": str(key)}})
    a = hub.raise_alert("gate", "panic")
    hub.record("component.fault", actor="camera", data={"component": "camera"})
    rows = store.query("SELECT e.type, o.destination, o.priority FROM outbox o "
                       "JOIN events e ON e.seq = o.event_seq ORDER BY o.id")
    assert rows == [{"type": "alert.raised", "destination": "mqtt", "priority": 0},
                    {"type": "alert.raised", "destination": "mesh", "priority": 0},
                    {"type": "component.fault", "destination": "mqtt", "priority": 1}]
    assert [i.event_id for i in store.pending("mqtt")][0] == store.events(alert_id=a.id)[0]["id"]


def test_remote_events_are_deduplicated_and_never_roll_back(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    other, other_store = local_hub(tmp_path / "other", hub_id="h2")
    a = other.raise_alert("gate", "panic")
    raised = other_store.events(alert_id=a.id)[0]["envelope"]
    other.acknowledge(a.id, "x")
    acked = other_store.events(alert_id=a.id)[-1]["envelope"]
    assert hub.ingest_remote(raised, via="mqtt", trust="signed") is True
    assert hub.ingest_remote(raised, via="mqtt", trust="signed") is False
    assert hub.ingest_remote(acked, via="mqtt", trust="signed") is True
    assert store.get_alert("h2:1").state == "acknowledged"
    assert store.get_alert("h2:1").remote
    with pytest.raises(TransitionError) as e:
        hub.resolve("h2:1", "genuine", "x")
    assert e.value.code == "remote_alert"


OPS = st.lists(st.tuples(st.sampled_from(["raise", "ack", "resolve", "cancel", "escalate", "silence",
                                          "tick"]),
                         st.integers(0, 4), st.sampled_from(["genuine", "false_alarm", "test", "bogus"])),
               max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_command_sequences_never_reach_an_illegal_state(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock(1_000_000.0)
        hub, store = local_hub(Path(tmp), cancel_window=10, clock=clock)
        ids: list[str] = []
        for op, i, outcome in ops:
            target = ids[i % len(ids)] if ids else "h1:99"
            before_events = len(store.events(limit=100_000))
            before = store.get_alert(target)
            try:
                if op == "raise":
                    ids.append(hub.raise_alert("b", "panic").id)
                elif op == "ack":
                    hub.acknowledge(target, "t")
                elif op == "resolve":
                    hub.resolve(target, outcome, "t")
                elif op == "cancel":
                    hub.cancel(target, "t")
                elif op == "escalate":
                    if ids:
                        hub.escalate(target)
                elif op == "silence":
                    hub.silence("t")
                else:
                    clock.now += 7
                    continue
            except TransitionError:
                assert store.get_alert(target) == before, "a refused command changed the alert"
                assert len(store.events(limit=100_000)) == before_events, "a refused command was logged"
                continue
        # Replaying each alert's logged transitions through the state machine gives its stored state.
        for alert_id in ids:
            state = AlertState.RAISED
            for t in transition_events(store, alert_id)[1:]:
                new = {"alert.acknowledged": AlertState.ACKNOWLEDGED, "alert.resolved": AlertState.RESOLVED,
                       "alert.cancelled": AlertState.CANCELLED}.get(t)
                if new is not None:
                    assert new in TRANSITIONS[state], f"{alert_id}: logged illegal {state} -> {new}"
                    state = new
            alert = store.get_alert(alert_id)
            assert alert.state == state
            assert (alert.outcome is not None) == (state == AlertState.RESOLVED)
        store.close()


def test_restart_resumes_a_sounding_siren_but_not_a_silenced_one(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    sounding = hub.raise_alert("gate", "panic")
    store.close()
    hub2, store2 = local_hub(tmp_path)
    s = RecordingSounder()
    hub2.add_sounder(s)
    hub2.start()
    hub2.stop()
    assert s.calls == [("sound", "panic", 0)]
    assert [a.id for a in store2.alerts()] == [sounding.id]  # nothing new raised
    hub2.silence("cli:x")
    store2.close()
    hub3, store3 = local_hub(tmp_path)
    s3 = RecordingSounder()
    hub3.add_sounder(s3)
    hub3.start()
    hub3.stop()
    assert s3.calls == []
