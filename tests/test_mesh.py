"""The mesh link: real hub cores and the real ``meshtastic`` TCPInterface against simulated radios.

Times in these tests are bounds, never measurements: the air runs at 1/50 of LongFast
airtime and the link's timers are short (``mesh_lab.FAST_MESH``, tests/mesh_lab.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_lab import Lab, LabHub
from meshtastic.protobuf import mesh_pb2
from meshtastic.tcp_interface import TCPInterface
from pubsub import pub
from support import wait_for

from hubd.radio import frames
from hubd.radio.frames import Frame, FrameType

#: Every hub of the 10-hub chain learns every alert within this many seconds (simulated air,
#: 20 % loss on each link, hop limit 1: relaying by the hubs carries alerts down the chain).
CHAIN_BOUND = 60.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, seed=7)
    yield lab
    lab.stop()


def neighbours_known(*hubs: LabHub, counts: list[int] | None = None) -> None:
    counts = counts or [1] * len(hubs)

    def ready() -> bool:
        return all(h.link.state == "connected" and len(h.link.expected_holders()) >= n
                   for h, n in zip(hubs, counts, strict=True))
    wait_for(ready, 30, message="hubs connected and neighbours heard")


def heard_events(hub: LabHub, alert_id: str) -> list[str]:
    return [e["type"] for e in hub.heard if (e.get("alert") or {}).get("id") == alert_id]


class Handheld:
    """A marshal's (or an attacker's) radio: a plain TCPInterface on its own simulated node."""

    def __init__(self, lab: Lab, near: LabHub | None = None, node=None):  # noqa: ANN001
        self.node = node or lab.air.add_node(hop_limit=1, name="handheld")
        self.node.start()
        if near is not None:
            lab.air.link(self.node, near.node)
        self.iface: TCPInterface | None = None
        self.texts: list[tuple[int, str]] = []

    def connect(self) -> Handheld:
        self.iface = TCPInterface("127.0.0.1", portNumber=self.node.port, timeout=10)
        pub.subscribe(self._on_text, "meshtastic.receive.text")
        return self

    def _on_text(self, packet, interface) -> None:  # noqa: ANN001
        if interface is self.iface:
            self.texts.append((packet["from"], packet["decoded"]["text"]))

    def direct(self, text: str, to: int, *, pki: bool = True) -> None:
        """A direct message, public-key encrypted (as a handheld on firmware 2.5+ sends one)."""
        assert self.iface is not None
        self.iface.sendData(text.encode(), destinationId=to, portNum=1, pkiEncrypted=pki)

    def close(self) -> None:
        pub.unsubscribe(self._on_text, "meshtastic.receive.text")
        if self.iface is not None:
            self.iface.close()


def test_two_hubs_exchange_an_alert_and_its_acknowledgement(lab: Lab) -> None:
    a, b = lab.chain(2)
    lab.start()
    neighbours_known(a, b)
    alert = a.raise_alert("panic", "Market gate")
    seen = wait_for(lambda: b.store.get_alert(alert.id), 20, message="hub-2 hears the alert")
    assert (seen.kind, seen.zone, seen.state, seen.remote) == ("panic", "Market gate", "raised", True)
    assert abs(seen.raised_at - alert.raised_at) <= 1.0
    refused = b.processor.execute({"cmd": "ack", "alert": alert.id}, "manager")
    assert refused["error"]["code"] == "remote_alert"

    assert a.processor.execute({"cmd": "ack", "alert": alert.id}, "manager")["ok"]
    wait_for(lambda: b.store.get_alert(alert.id).state == "acknowledged", 20, message="ack heard")
    wait_for(lambda: a.pending() == 0 and b.pending() == 0, 20, message="both outboxes delivered")
    assert heard_events(b, alert.id) == ["alert.raised", "alert.acknowledged"]
    assert [e["id"] for e in b.events(alert.id)] == [f"{alert.id}:raised:0", f"{alert.id}:acknowledged:0"]
    # hub-1 heard its own alert relayed back and stored nothing for it
    assert heard_events(a, alert.id) == ["alert.raised", "alert.acknowledged"]
    assert len(a.events(alert.id)) == 2

    status = b.link.status()
    assert status["state"] == "connected"
    assert [(n["hub"], n["node"], n["stale"]) for n in status["neighbours"]] == [
        ("hub-1", a.node.node_id, False)]


def test_escalation_and_resolution_travel_too(lab: Lab) -> None:
    a, b = lab.chain(2)
    lab.start()
    neighbours_known(a, b)
    alert = a.raise_alert("fire", "Grain store")
    a.hub.escalate(alert.id)
    a.processor.execute({"cmd": "resolve", "alert": alert.id, "outcome": "false_alarm"}, "manager")
    wait_for(lambda: (x := b.store.get_alert(alert.id)) and x.state == "resolved", 20, message="resolved")
    got = b.store.get_alert(alert.id)
    assert (got.outcome, got.level, got.kind) == ("false_alarm", 1, "fire")
    wait_for(lambda: set(heard_events(b, alert.id)) == {"alert.raised", "alert.escalated", "alert.resolved"},
             20, message="all three events")


def test_chain_of_ten_with_lossy_links_learns_every_alert_exactly_once(lab: Lab) -> None:
    hubs = lab.chain(10, loss=0.2)
    lab.start()
    neighbours_known(*hubs, counts=[1] + [2] * 8 + [1])
    start = time.monotonic()
    alerts = [hubs[0].raise_alert("panic", "North gate"), hubs[4].raise_alert("fire", "Grain store"),
              hubs[9].raise_alert("medical", "Clinic")]

    def everyone_knows() -> bool:
        return all(h.store.get_alert(a.id) for h in hubs for a in alerts)
    wait_for(everyone_knows, CHAIN_BOUND, message=f"every hub to know every alert within {CHAIN_BOUND} s")
    learned_in = time.monotonic() - start
    wait_for(lambda: all(h.pending() == 0 for h in hubs), CHAIN_BOUND, message="every outbox delivered")
    for h in hubs:
        for a in alerts:
            if a.hub != h.id:
                assert heard_events(h, a.id) == ["alert.raised"], (h.id, a.id)
                assert len(h.events(a.id)) == 1
    assert learned_in < CHAIN_BOUND


def test_node_reboot_and_dropped_tcp_recover_and_queued_alerts_go_out(lab: Lab) -> None:
    a, b = lab.chain(2)
    lab.start()
    neighbours_known(a, b)
    connects = a.link.counters["connects"]

    a.node.reboot(down_for=2.0)
    wait_for(lambda: a.link.state != "connected", 10, message="hub-1 notices its radio went away")
    first = a.raise_alert("panic", "While rebooting")
    assert a.pending() >= 1
    wait_for(lambda: b.store.get_alert(first.id), 30, message="the queued alert after the reboot")
    assert a.link.counters["connects"] > connects
    assert a.hub.health["mesh"].status == "ok"

    before = a.node.connections
    a.node.drop_client()
    second = a.raise_alert("medical", "After a drop")
    wait_for(lambda: b.store.get_alert(second.id), 30, message="the alert raised as TCP dropped")
    assert a.node.connections > before
    wait_for(lambda: a.pending() == 0, 30, message="hub-1's outbox delivered")


def test_silent_radio_is_detected_and_reconnected(tmp_path: Path) -> None:
    lab = Lab(tmp_path, seed=11)
    try:
        a, b = lab.chain(2, mesh={"watchdog": 3.0, "beacon_interval": 30.0})
        lab.start()
        neighbours_known(a, b)
        a.node.freeze()
        # The counter moves just before the link reports the fault: wait for both.
        wait_for(lambda: a.link.counters["watchdog"] >= 1 and a.hub.health["mesh"].status == "fault", 20,
                 message="the watchdog to notice and report the fault")
        alert = a.raise_alert("intrusion", "Back door")
        a.node.freeze(False)
        wait_for(lambda: b.store.get_alert(alert.id), 30, message="the alert once the radio answers")
        assert a.link.state == "connected"
    finally:
        lab.stop()


def test_forged_replayed_and_garbage_frames_are_refused_and_logged(lab: Lab, caplog) -> None:  # noqa: ANN001
    a, b = lab.chain(2)
    rogue = Handheld(lab, near=b)
    lab.start()
    neighbours_known(a, b)
    alert = a.raise_alert("panic", "Market gate")
    wait_for(lambda: b.store.get_alert(alert.id), 20, message="the genuine alert")
    wait_for(lambda: a.pending() == 0, 20, message="delivered")
    caplog.set_level(logging.WARNING, logger="hubd.radio.mesh")
    events_before = len(b.events())
    rogue.connect()
    try:
        port = b.config.mesh.port_num
        wrong_key = bytes(32)
        forged = Frame(FrameType.RAISED, "hub-1", int(time.time()), seq=99, kind="fire", zone="Fake")
        rogue.iface.sendData(frames.encode(forged, wrong_key, rogue.node.num), portNum=port)
        genuine_for_rogue = frames.encode(forged, lab.key, a.node.num)  # right key, wrong node
        rogue.iface.sendData(genuine_for_rogue, portNum=port)
        rogue.iface.sendData(b"\x11\x05hub", portNum=port)  # truncated
        rogue.iface.sendData(bytes(range(7, 47)), portNum=port)  # random bytes

        # A replay: hub-1's genuine raise frame, transmitted again under hub-1's node number.
        original = next(p for p in a.node.sent if p.decoded.portnum == port
                        and frames.decode(p.decoded.payload, lab.key, a.node.num).type == FrameType.RAISED)
        replay = mesh_pb2.MeshPacket()
        replay.CopyFrom(original)
        replay.id = original.id ^ 0x5A5A
        b.node.inject(replay)

        wait_for(lambda: b.link.counters["refused_forged"] >= 2 and b.link.counters["refused_malformed"] >= 1
                 and b.link.counters["refused_replayed"] >= 1, 20, message="all refusals counted")
        assert b.link.counters["refused_forged"] + b.link.counters["refused_malformed"] == 4
        time.sleep(0.5)
        assert len(b.events()) == events_before  # nothing changed
        assert b.store.get_alert("hub-1:99") is None
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "refused forged frame" in logged and "refused replayed frame" in logged
        assert "refused malformed frame" in logged
        assert b.link.alive() and b.link.state == "connected"
    finally:
        rogue.close()


def test_marshal_acknowledges_from_a_handheld(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    lab = Lab(tmp_path, seed=3)
    marshal_node = lab.air.add_node(hop_limit=1, name="marshal")
    try:
        a = lab.add_hub("hub-1", mesh={"marshals": [marshal_node.node_id], "code": "H1"})
        marshal = Handheld(lab, near=a, node=marshal_node)
        stranger = Handheld(lab, near=a)
        lab.start()
        marshal.connect()
        stranger.connect()
        wait_for(lambda: a.link.state == "connected", 20, message="hub connected")
        alert = a.raise_alert("panic", "Market gate")
        text = wait_for(lambda: [t for f, t in marshal.texts if t.startswith("ALERT")], 20,
                        message="the marshal's handheld shows the alert")[0]
        assert text.startswith(f"ALERT {alert.seq} PANIC Market gate ")
        assert text.endswith(f"reply ACK H1 {alert.seq}")  # it names the hub

        caplog.set_level(logging.INFO, logger="hubd.radio.mesh")
        stranger.direct(f"ACK H1 {alert.seq}", a.node.num)
        stranger.iface.sendText("hello hub")
        wait_for(lambda: "not in mesh.marshals" in caplog.text and "ignored text" in caplog.text, 20,
                 message="the stranger's texts ignored with a log line")
        # The marshal's own radio, but as channel text (whose sender anyone can set), or naming no hub.
        marshal.iface.sendText(f"ACK H1 {alert.seq}")
        marshal.direct(f"ACK {alert.seq}", a.node.num)
        marshal.direct(f"ACK H2 {alert.seq}", a.node.num)
        wait_for(lambda: a.link.counters["marshal_unauthenticated"] == 1 and
                 a.link.counters["marshal_ambiguous"] == 1 and "is for hub H2" in caplog.text, 20,
                 message="channel text and an ACK naming no hub refused")
        assert a.store.get_alert(alert.id).state == "raised"

        marshal.direct(f"ack h1 {alert.seq}", a.node.num)
        wait_for(lambda: a.store.get_alert(alert.id).state == "acknowledged", 20, message="marshal's ACK")
        ev = [e for e in a.events(alert.id) if e["type"] == "alert.acknowledged"]
        assert ev[0]["actor"] == f"marshal:{marshal_node.node_id}"
        wait_for(lambda: (a.node.num, f"ACK {alert.seq} OK") in marshal.texts, 20,
                 message="the confirmation on the handheld")
        marshal.close()
        stranger.close()
    finally:
        lab.stop()


def test_without_marshals_no_text_goes_on_the_channel(lab: Lab) -> None:
    a, b = lab.chain(2)
    listener = Handheld(lab, near=a)
    lab.start()
    listener.connect()
    try:
        neighbours_known(a, b)
        alert = a.raise_alert("panic", "Market gate")
        a.hub.escalate(alert.id)
        wait_for(lambda: (x := b.store.get_alert(alert.id)) and x.level == 1, 20,
                 message="hub-2 hears the alert and its escalation")
        wait_for(lambda: a.pending() == 0, 20, message="hub-1's outbox delivered")
        assert a.link.counters["texts_sent"] == 0
        assert listener.node.received, "the handheld hears the air (the hubs' frames)"
        assert not listener.texts, f"no mesh.marshals: no alert text on the channel, got {listener.texts}"
    finally:
        listener.close()


def test_channel_text_from_a_marshal_counts_only_where_the_config_says_so(tmp_path: Path) -> None:
    # Radios without public-key messages (firmware before 2.5): weaker, and documented as such.
    lab = Lab(tmp_path, seed=4)
    marshal_node = lab.air.add_node(hop_limit=1, name="marshal")
    try:
        a = lab.add_hub("hub-1", mesh={"marshals": [marshal_node.node_id], "marshal_channel_text": True})
        marshal = Handheld(lab, near=a, node=marshal_node)
        lab.start()
        marshal.connect()
        wait_for(lambda: a.link.state == "connected", 20, message="hub connected")
        alert = a.raise_alert("panic", "Market gate")
        marshal.iface.sendText(f"ACK hub-1 {alert.seq}")
        wait_for(lambda: a.store.get_alert(alert.id).state == "acknowledged", 20, message="marshal's ACK")
        marshal.close()
    finally:
        lab.stop()


def test_gateway_hands_alerts_from_hubs_without_uplink_to_mqtt_once(lab: Lab) -> None:
    mqtt = {"host": "127.0.0.1", "port": 1}  # never reached: only the outbox is looked at
    a = lab.add_hub("hub-1")  # no uplink
    b = lab.add_hub("hub-2", mqtt=mqtt)  # a gateway
    c = lab.add_hub("hub-3", mqtt=mqtt)  # has an uplink of its own
    lab.air.link(a.node, b.node)
    lab.air.link(b.node, c.node)
    lab.start()
    neighbours_known(a, b, c, counts=[1, 2, 1])
    from_a = a.raise_alert("panic", "A")
    from_c = c.raise_alert("fire", "C")
    wait_for(lambda: b.store.get_alert(from_a.id) and b.store.get_alert(from_c.id), 20, message="heard")
    wait_for(lambda: all(h.pending() == 0 for h in (a, b, c)), 20, message="mesh outboxes delivered")
    relayed = [i.envelope for i in b.store.pending("mqtt", limit=1000) if i.envelope["hub"] != "hub-2"]
    assert [(e["hub"], e["type"]) for e in relayed] == [("hub-1", "alert.raised")]
    # Rebuilt from a frame, it carries b's ward attestation, not hub-1's signature (contract v2).
    assert relayed[0]["attested"]["by"] == "hub-2" and "sig" not in relayed[0]
    assert relayed[0]["path"] == "mesh" and relayed[0]["data"]["mesh"]["uplink"] is False


def test_a_hub_that_cannot_use_the_mesh_says_why_and_keeps_running(tmp_path: Path) -> None:
    from mesh_lab import lab_config

    from hubd.radio.frames import write_key

    key_file = tmp_path / "network.key"
    write_key(key_file)
    from hubd.config import ConfigError

    with pytest.raises(ConfigError, match="hub.id: at most 16 characters when \\[mesh\\] is configured"):
        lab_config(tmp_path, "a-hub-id-of-twenty-ch", 1, key_file)

    key_file.write_text("too short\n")
    hub = LabHub(lab_config(tmp_path, "hub-1", 1, key_file), node=None)  # type: ignore[arg-type]
    hub.link.start()
    assert "mesh.key_file" in hub.hub.health["mesh"].reason
    assert hub.hub.raise_alert("gate", "panic").id == "hub-1:1"  # the hub itself works on
    hub.stop()
