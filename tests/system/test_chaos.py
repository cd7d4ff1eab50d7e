"""Chaos scenarios for a whole ward: N daemons, a broker, the simulated mesh, the centre.

Each asserts zero lost alerts (every raised alert, with its final state, at the centre and
at every neighbour that should hear it), no false alerts, and bounded memory.  CI runs
them sized by default (5 hubs, 1,000 presses, a 60 s broker outage); run them bigger by
hand, e.g. ``HUBD_CHAOS_HUBS=20 HUBD_CHAOS_PRESSES=10000 .venv/bin/pytest tests/system``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from .harness import Closure, Node, Ward, Workload, check_ward, env_int

HUBS = env_int("HUBD_CHAOS_HUBS", 5)
PRESSES = env_int("HUBD_CHAOS_PRESSES", 1000)
OUTAGE = env_int("HUBD_CHAOS_OUTAGE", 60)


@pytest.fixture
def wards() -> Iterator[list[Ward]]:
    made: list[Ward] = []
    yield made
    for w in made:
        w.stop()


def start(wards: list[Ward], ward: Ward) -> Ward:
    wards.append(ward)
    return ward.start()


@pytest.mark.timeout(900)
def test_a_thousand_presses_at_random_times(tmp_path: Path, wards: list[Ward]) -> None:
    ward = start(wards, Ward(tmp_path, HUBS))
    work = Workload(ward, PRESSES, mean_gap=0.05).start()
    work.join(timeout=600)
    assert sum(len(v) for v in work.raised.values()) == PRESSES
    check_ward(ward, work)
    ward.assert_memory_bounded()


@pytest.mark.timeout(900)
def test_broker_killed_for_a_minute_in_the_middle(tmp_path: Path, wards: list[Ward]) -> None:
    ward = start(wards, Ward(tmp_path, HUBS))
    per_hub = 30
    work = Workload(ward, per_hub * HUBS, mean_gap=(OUTAGE + 30) / per_hub).start()
    wait_for(lambda: work.done >= per_hub * HUBS // 5, 120, interval=0.2, message="presses before the outage")
    ward.broker.kill()  # kill -9: no goodbye, the Wills are never sent
    at_kill = work.done
    time.sleep(OUTAGE)
    during = work.done - at_kill
    assert ward.centre is not None
    ward.centre.status.clear()
    ward.broker.start()  # the same port: the hubs and the centre find it again by themselves
    work.join(timeout=600)
    assert during > 0, "no press happened while the broker was down; the test did not test the outage"
    check_ward(ward, work)
    # Every hub says again that it is online (peers that forget this look dead after a restart).
    wait_for(lambda: all(ward.centre.status.get(h, {}).get("online") for h in ward.ids), 60, interval=0.5,
             message=f"every hub online again at the centre: {ward.centre.status}")
    ward.assert_memory_bounded()


@pytest.mark.timeout(900)
def test_a_hub_killed_and_restarted_while_presses_continue(tmp_path: Path, wards: list[Ward]) -> None:
    ward = start(wards, Ward(tmp_path, HUBS))
    victim = ward.nodes[1]
    kills = 5
    work = Workload(ward, 60 * HUBS, mean_gap=0.15).start()

    def killer() -> None:
        for _ in range(kills):
            time.sleep(ward.random.uniform(2.0, 5.0))
            ward.restart(victim)

    t = threading.Thread(target=killer, name="test-killer", daemon=True)
    t.start()
    t.join(300)
    assert not t.is_alive()
    work.join(timeout=600)
    assert work.unknown <= kills
    check_ward(ward, work)
    # A restart never raises, repeats or forgets an alert: each of the victim's alerts has one
    # raise and one resolve in its log, however often the hub died around them.
    events = victim.call({"cmd": "events", "limit": 10_000})["result"]
    for kind in ("alert.raised", "alert.resolved"):
        per_alert = [e["alert_id"] for e in events if e["type"] == kind and e["hub"] == victim.id]
        assert sorted(per_alert) == sorted(set(per_alert)) == sorted(work.raised[victim.id]), kind
    ward.assert_memory_bounded()


@pytest.mark.timeout(900)
def test_a_hub_cut_off_from_mqtt_reaches_the_centre_through_the_mesh(tmp_path: Path,
                                                                     wards: list[Ward]) -> None:
    ward = start(wards, Ward(tmp_path, HUBS, mesh=True, cabled={1}, loss=0.1))
    cut = ward.nodes[0]
    wait_for(lambda: all(n.status()["links"]["mesh"]["neighbours"] for n in ward.nodes), 60, interval=0.5,
             message="every hub hears a neighbour on the mesh")
    assert cut.cable is not None and ward.centre is not None
    cut.cable.cut()
    wait_for(lambda: not cut.status()["links"]["mqtt"]["connected"], 30, interval=0.2,
             message="hub-1 notices it is cut off")
    work = Workload(ward, 12, mean_gap=0.5, hubs=[cut], centre_share=0.0).start()
    work.join(timeout=300)
    raised = work.raised[cut.id]
    # The centre hears every alert of the cut-off hub, relayed by its neighbour over the mesh,
    # while the hub itself is still cut off.
    wait_for(lambda: all(ward.centre.alert_state(a) == "resolved" for a in raised), 180, interval=1.0,
             message="hub-1's alerts at the centre through the mesh relay")
    assert not cut.status()["links"]["mqtt"]["connected"]
    relayed = {ward.centre.events[f"{a}:raised:0"].get("relayed_by") for a in raised}
    assert relayed and None not in relayed and cut.id not in relayed, relayed
    cut.cable.mend()
    # Once back, hub-1 delivers its own copies too; the centre keeps one per event id.
    check_ward(ward, work)
    assert all(ward.centre.copies[f"{a}:raised:0"] >= 2 for a in raised)
    ward.assert_memory_bounded()


@pytest.mark.timeout(900)
def test_a_mesh_partition_heals_with_ten_percent_loss(tmp_path: Path, wards: list[Ward]) -> None:
    # A street of posts on the radio only; the last one has the uplink to the centre.
    ward = start(wards, Ward(tmp_path, HUBS, mqtt={HUBS}, mesh=True, loss=0.1))
    assert ward.air is not None
    wait_for(lambda: all(n.status()["links"]["mesh"]["neighbours"] for n in ward.nodes), 60, interval=0.5,
             message="every hub hears a neighbour on the mesh")
    left, right = ward.nodes[1], ward.nodes[2]
    assert left.radio is not None and right.radio is not None
    ward.air.unlink(left.radio, right.radio)  # the mesh splits in two
    work = Workload(ward, 4 * HUBS, mean_gap=2.0, centre_share=0.0).start()
    time.sleep(45)  # longer than neighbour_timeout (30 s): each side forgets the other
    ward.air.link(left.radio, right.radio, loss=0.1)  # and heals
    work.join(timeout=300)
    check_ward(ward, work, timeout=300)
    ward.assert_memory_bounded()


def request(cmd: str, alert_id: str, outcome: str) -> dict:
    r = {"cmd": cmd, "alert": alert_id}
    return {**r, "outcome": outcome} if cmd == "resolve" else r


def race(ward: Ward, hub: Node, by_centre: dict, by_hand: dict) -> dict[str, dict]:
    """Send one command from the centre and one on the hub's CLI path at the same moment."""
    assert ward.centre is not None
    replies: dict[str, dict] = {}
    go = threading.Barrier(2)

    def centre() -> None:
        go.wait()
        replies["centre"] = ward.centre.command(hub.id, by_centre)

    def hand() -> None:
        go.wait()
        replies["local"] = hub.call(by_hand)

    threads = [threading.Thread(target=f, name=f"test-race-{f.__name__}") for f in (centre, hand)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert set(replies) == {"centre", "local"}, replies
    return replies


@pytest.mark.timeout(900)
def test_central_commands_race_local_actions(tmp_path: Path, wards: list[Ward]) -> None:
    ward = start(wards, Ward(tmp_path, min(HUBS, 3)))
    assert ward.centre is not None
    hub = ward.nodes[0]
    work = Workload(ward, 0)
    pairs = [("ack", "ack"), ("resolve", "resolve"), ("ack", "resolve"), ("resolve", "ack")]
    buttons = ["gate", "clinic", "store", "yard"]
    refused = 0
    for i in range(24):
        button = buttons[i % 4]
        time.sleep(0.2)  # past the button's debounce
        assert hub.call({"cmd": "press", "button": button, "hold": 0.05})["ok"]
        alert_id = next(a["id"] for a in hub.alerts(all_=False)
                        if a["hub"] == hub.id and a["source"] == button)
        work.raised[hub.id].append(alert_id)
        centre_cmd, local_cmd = pairs[i % len(pairs)]
        replies = race(ward, hub, request(centre_cmd, alert_id, "genuine"),
                       request(local_cmd, alert_id, "false_alarm"))
        for who, reply in replies.items():
            # The loser is refused cleanly (the alert moved on), never half-applied or crashed.
            assert reply["ok"] or reply["error"]["code"] == "illegal_transition", (who, reply)
            refused += not reply["ok"]
        final = next(a for a in hub.alerts() if a["id"] == alert_id)
        if final["state"] == "acknowledged":
            assert hub.call({"cmd": "resolve", "alert": alert_id, "outcome": "test"})["ok"]
            final = next(a for a in hub.alerts() if a["id"] == alert_id)
        assert final["state"] == "resolved"
        log = hub.call({"cmd": "events", "alert": alert_id})["result"]
        types = [e["type"] for e in log]
        assert types.count("alert.raised") == 1 and types.count("alert.resolved") == 1, types
        assert types.count("alert.acknowledged") <= 1, types
        work.closures[alert_id] = Closure("race", final["outcome"], "alert.acknowledged" in types)
    assert refused > 0, "no command lost a race; the test did not race anything"
    check_ward(ward, work)
