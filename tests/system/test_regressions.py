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
            assert hub.ingest_remote(env, via="mqtt", trust="signed")
        alert = store.get_alert("hub-9:1")
        assert (alert.state, alert.outcome) == ("resolved", "genuine")
        # Every event is still in the log, in the order heard.
        assert [e["type"] for e in store.events(alert_id="hub-9:1")] == [
            "alert.raised", "alert.resolved", "alert.acknowledged"]
        # A late escalation of a raised alert does not reopen an acknowledged one either...
        assert hub.ingest_remote(heard("escalated", "raised", 1001.0, level=1), via="mqtt", trust="signed")
        assert store.get_alert("hub-9:1").state == "resolved"
    finally:
        hub.stop()
        store.close()


def test_escalation_and_later_states_still_move_a_neighbours_alert_forward(tmp_path: Path) -> None:
    hub, store = local_hub(tmp_path)
    try:
        hub.ingest_remote(heard("raised", "raised", 1000.0), via="mqtt", trust="signed")
        hub.ingest_remote(heard("escalated", "raised", 1060.0, level=1), via="mqtt", trust="signed")
        assert store.get_alert("hub-9:1").level == 1
        hub.ingest_remote(heard("acknowledged", "acknowledged", 1070.0, level=1), via="mqtt",
                          trust="signed")
        assert store.get_alert("hub-9:1").state == "acknowledged"
        hub.ingest_remote(heard("resolved", "resolved", 1080.0, "false_alarm", level=1), via="mqtt",
                          trust="signed")
        assert (store.get_alert("hub-9:1").state, store.get_alert("hub-9:1").outcome) == (
            "resolved", "false_alarm")
    finally:
        hub.stop()
        store.close()


def test_a_mesh_partition_that_heals_delivers_what_happened_meanwhile(tmp_path: Path) -> None:
    # Found by test_a_mesh_partition_heals_with_ten_percent_loss: delivery waits only for the
    # neighbours heard lately, so after neighbour_timeout each side of a split mesh counted its
    # alerts delivered, and nothing sent them across when the mesh healed.  A neighbour heard
    # again after going stale is now sent the alerts that changed meanwhile.
    from mesh_lab import Lab
    from support import wait_for

    lab = Lab(tmp_path, seed=3)
    try:
        a, b, c = lab.chain(3, mesh={"neighbour_timeout": 3.0, "beacon_interval": 1.0})
        lab.start()
        wait_for(lambda: len(b.link.expected_holders()) == 2, 30, message="b hears a and c")
        lab.air.unlink(b.node, c.node)
        wait_for(lambda: c.node.num not in b.link.expected_holders(), 30, message="b forgets c")
        alert = a.raise_alert("panic", "North gate")
        a.hub.resolve(alert.id, "genuine", "test")
        wait_for(lambda: (x := b.store.get_alert(alert.id)) and x.state == "resolved" and a.pending() == 0
                 and b.pending() == 0, 30, message="a's alert delivered on a's side of the split")
        assert c.store.get_alert(alert.id) is None
        lab.air.link(b.node, c.node)
        wait_for(lambda: (x := c.store.get_alert(alert.id)) and x.state == "resolved", 30,
                 message="a's alert at c after the mesh healed")
        assert [e["type"] for e in c.events(alert.id)] == ["alert.raised", "alert.resolved"]
    finally:
        lab.stop()


def test_a_neighbour_never_heard_before_gets_what_happened_since_the_link_started(tmp_path: Path) -> None:
    # Found by the same chaos scenario after the fix above: when the split came before the two
    # sides had ever heard each other, the first contact sent only the last neighbour_timeout's
    # alerts, so older ones never crossed.  A first contact now covers everything since start.
    import time

    from mesh_lab import Lab
    from support import wait_for

    lab = Lab(tmp_path, seed=4)
    try:
        a, b, c = lab.chain(3, mesh={"neighbour_timeout": 2.0, "beacon_interval": 1.0})
        lab.air.unlink(b.node, c.node)  # split from the very start
        lab.start()
        alert = a.raise_alert("panic", "North gate")
        a.hub.resolve(alert.id, "genuine", "test")
        wait_for(lambda: (x := b.store.get_alert(alert.id)) and x.state == "resolved" and a.pending() == 0
                 and b.pending() == 0, 30, message="a's alert delivered on a's side of the split")
        time.sleep(3.0)  # older than neighbour_timeout by the time the mesh heals
        lab.air.link(b.node, c.node)
        wait_for(lambda: (x := c.store.get_alert(alert.id)) and x.state == "resolved", 30,
                 message="a's alert at c after the first contact")
    finally:
        lab.stop()


def test_a_hub_cut_off_from_its_broker_says_so_on_the_mesh(tmp_path: Path) -> None:
    # Found by test_a_hub_cut_off_from_mqtt_reaches_the_centre_through_the_mesh: a hub with an
    # [mqtt] section claimed an uplink in every frame, even with its broker unreachable, so no
    # neighbour relayed its alerts and the centre heard nothing until the hub's network returned.
    from mesh_lab import LabHub, lab_config

    from hubd.radio.frames import write_key

    key_file = tmp_path / "network.key"
    write_key(key_file)
    cfg = lab_config(tmp_path, "hub-1", 1, key_file, mqtt={"host": "127.0.0.1", "port": 1})
    lab_hub = LabHub(cfg, node=None)  # type: ignore[arg-type]  # the radio is not needed here
    try:
        env = lab_hub.events(lab_hub.raise_alert().id)[0]["envelope"]
        assert lab_hub.link.frame_for(env).uplink  # not known to be down: it may reach the centre
        lab_hub.hub.set_health("mqtt", "fault", "cannot connect to 127.0.0.1:1")
        assert not lab_hub.link.frame_for(env).uplink
        lab_hub.hub.set_health("mqtt", "ok")
        assert lab_hub.link.frame_for(env).uplink
    finally:
        lab_hub.stop()
