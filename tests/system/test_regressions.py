"""Bugs the chaos suite found, pinned by fast in-process tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import local_hub


def heard(event: str, state: str, t: float, outcome: str | None = None, level: int = 0) -> dict[str, Any]:
    """An event of hub-9's alert hub-9:1 as the mesh delivers it (whole-second times)."""
    return {"v": 1, "id": f"hub-9:1:{event}:{level}", "type": f"alert.{event}", "time": t, "ward": "w",
            "hub": "hub-9", "actor": "mesh", "data": {},
            "alert": {"id": "hub-9:1", "hub": "hub-9", "seq": 1, "kind": "panic", "source": "mesh",
                      "zone": "Gate", "state": state, "outcome": outcome, "level": level, "silent": False,
                      "raised_at": 1000.0, "updated_at": t, "remote": True, "relayed_by": None,
                      "extra": {}}}


def test_a_late_acknowledgement_in_the_same_second_does_not_reopen_a_resolved_alert(tmp_path: Path) -> None:
    # Found by test_a_hub_cut_off_from_mqtt_reaches_the_centre_through_the_mesh: with 10 % loss
    # the resolve frame overtook the acknowledgement, both stamped with the same second, and the
    # neighbour showed the alert open (acknowledged) for good.
    hub, store = local_hub(tmp_path)
    try:
        for env in (heard("raised", "raised", 1000.0), heard("resolved", "resolved", 1000.0, "genuine"),
                    heard("acknowledged", "acknowledged", 1000.0)):
            assert hub.ingest_remote(env, via="mesh")
        alert = store.get_alert("hub-9:1")
        assert (alert.state, alert.outcome) == ("resolved", "genuine")
        # Every event is still in the log, in the order heard.
        assert [e["type"] for e in store.events(alert_id="hub-9:1")] == [
            "alert.raised", "alert.resolved", "alert.acknowledged"]
        # A late escalation of a raised alert does not reopen an acknowledged one either...
        assert hub.ingest_remote(heard("escalated", "raised", 1001.0, level=1), via="mesh")
        assert store.get_alert("hub-9:1").state == "resolved"
    finally:
        hub.stop()
        store.close()


def test_escalation_and_later_states_still_move_a_neighbours_alert_forward(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    try:
        hub.ingest_remote(heard("raised", "raised", 1000.0), via="mqtt")
        hub.ingest_remote(heard("escalated", "raised", 1060.0, level=1), via="mqtt")
        assert store.get_alert("hub-9:1").level == 1
        hub.ingest_remote(heard("acknowledged", "acknowledged", 1070.0, level=1), via="mqtt")
        assert store.get_alert("hub-9:1").state == "acknowledged"
        hub.ingest_remote(heard("resolved", "resolved", 1080.0, "false_alarm", level=1), via="mqtt")
        assert (store.get_alert("hub-9:1").state, store.get_alert("hub-9:1").outcome) == (
            "resolved", "false_alarm")
    finally:
        hub.stop()
        store.close()
