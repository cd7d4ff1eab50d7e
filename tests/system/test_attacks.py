"""Issue 15's attacks, each performed against a running hub, each shown refused, and the hub
still working afterwards.

The hub under attack is ``hubA``: a real ``hubd run`` with mock pins on a real Mosquitto, its
neighbour ``hubB`` (``[mqtt] neighbours = ["hubB"]``, hubB's key in ``[trust] hubs``) and the
test centre's key in ``[trust] centre``. The attacker is any client of the same broker; where
an attack needs more (a neighbour gone bad, the ward's radio key, a local account, a LAN
address), the test says so.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_support import CENTRAL, Centre, command, hub_key, mqtt_section, trust_section, write_hub_key
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import HubProcess, Mosquitto, hub_config, wait_for

from hubd import contract

ROOT = "safercom/v2/ward-7"
A, B = f"{ROOT}/hubA", f"{ROOT}/hubB"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker", extra_conf=CENTRAL).start()
    yield b
    b.stop()


class Target:
    """hubA, running, and a client of its broker: the attacker's (and the test's) eyes."""

    def __init__(self, tmp: Path, broker: Mosquitto, procs: list[HubProcess], *, web: bool = False,
                 extra: str = "", trusted: tuple[str, ...] = ("hubB",)):
        write_hub_key(tmp / "hubA" / "state", "hubA")
        self.config = hub_config(tmp / "hubA", hub_id="hubA", web=web,
                                 extra=mqtt_section(broker.port, neighbours=["hubB"], keepalive=5)
                                 + trust_section(trusted) + extra)
        self.procs = procs
        self.broker = broker
        self.centre = Centre(broker.host, broker.port, (f"{ROOT}/#", "evil/#"))
        self.proc = self.start()

    def start(self) -> HubProcess:
        # A hub whose clock is synchronised judges a command's freshness by it (one that is not
        # judges by order, which the contract's own tests cover).
        self.proc = HubProcess(self.config, env={"HUBD_CLOCK_SYNCED": "1"}).start()
        self.procs.append(self.proc)
        wait_for(lambda: self.status()["links"]["mqtt"]["connected"], 20, message="hubA connected")
        time.sleep(0.3)  # its subscriptions (SUBACK) are in place
        return self.proc

    def restart(self) -> None:
        assert self.proc.terminate() == 0, self.proc.log.read_text()[-3000:]
        self.proc = self.start()

    def cli(self, *args: str) -> dict[str, Any]:
        return self.proc.cli_json(*args)

    def status(self) -> dict[str, Any]:
        return self.cli("status")["result"]

    def refused(self) -> dict[str, int]:
        return self.status()["links"]["mqtt"]["refused"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.cli("alerts", "--all")["result"]

    def events(self) -> list[dict[str, Any]]:
        return self.cli("events", "--limit", "10000")["result"]

    def siren_on(self) -> bool:
        return self.status()["links"]["sirens"]["main"]["on"]

    def press_raises_an_alert(self) -> dict[str, Any]:
        """The hub still works: a press sounds the siren, stores the alert and sends it, signed."""
        before = {a["id"] for a in self.alerts()}
        assert self.proc.cli("press", "gate").returncode == 0
        new = wait_for(lambda: [a for a in self.alerts() if a["id"] not in before and not a["remote"]],
                       15, message="a new alert on hubA")[0]
        assert self.siren_on()
        sent = wait_for(lambda: [e for e in self.centre.events(f"{A}/events")
                                 if e["id"] == f"{new['id']}:raised:0"], 15,
                        message="the alert at the centre")[0]
        assert contract.check_envelope(sent, {"hubA": self.public_key()}.get).trust is contract.Trust.SIGNED
        return new

    def public_key(self) -> Any:
        return contract.parse_public_key(self.status()["public_key"])

    def close(self) -> None:
        self.centre.close()


@pytest.fixture
def target(tmp_path: Path, broker: Mosquitto, hub_processes: list[HubProcess]) -> Iterator[Target]:
    t = Target(tmp_path, broker, hub_processes)
    yield t
    t.close()


def envelope(hub: str, seq: int, event: str = "raised", *, state: str = "raised", level: int = 0,
             outcome: str | None = None, event_id: str | None = None, zone: str = "Gate",
             t: float | None = None) -> dict[str, Any]:
    now = time.time() if t is None else t
    alert = {"id": f"{hub}:{seq}", "hub": hub, "seq": seq, "kind": "panic", "source": "gate", "zone": zone,
             "state": state, "outcome": outcome, "level": level, "silent": False, "raised_at": now,
             "updated_at": now, "severity": 1}
    return contract.event_envelope_v2(id=event_id or f"{hub}:{seq}:{event}:{level}", type=f"alert.{event}",
                                      time=now, ward="ward-7", hub=hub, actor="gate", data={}, alert=alert)


def signed(env: dict[str, Any], by: str) -> bytes:
    return contract.dumps(contract.sign("event", env, hub_key(by)))


# --- 1. no message can break a hub --------------------------------------------------------------

def test_events_under_the_hubs_own_ids_are_refused_and_the_hub_keeps_working(target: Target) -> None:
    c = target.centre
    forged: list[bytes] = []
    for seq in (1, 2, 3):  # its next alerts' ids and their transitions
        forged.append(contract.dumps(envelope("hubA", seq)))  # unsigned
        forged.append(signed(envelope("hubA", seq), "hubB"))  # a neighbour gone bad signs them
        forged.append(signed({**envelope("hubB", seq), "id": f"hubA:{seq}:raised:0"}, "hubB"))
    for n in range(5, 60):
        forged.append(signed({**envelope("hubB", 1), "type": "siren.test", "id": f"hubA:e{n}",
                              "alert": None}, "hubB"))
        forged.append(json.dumps({"v": 1, "id": f"hubA:e{n}", "type": "siren.test", "time": time.time(),
                                  "ward": "ward-7", "hub": "hubA", "actor": "x", "data": {}}).encode())
    forged.append(signed({k: v for k, v in envelope("hubA", 2).items()}, "hubA"))  # not even hubA's key
    for payload in forged:
        c.publish(f"{B}/events", payload)
    wait_for(lambda: sum(target.refused().values()) >= len(forged) - 1, 20, message="every forgery refused")
    assert not [a for a in target.alerts() if a["remote"] or a["hub"] != "hubA"]
    assert not [e for e in target.events() if e["actor"] in ("gate", "x")]

    # The hub still works: a press stores and sends its alert; siren test and a signed silence work.
    alert = target.press_raises_an_alert()
    assert alert["id"] == "hubA:1"
    assert target.proc.cli("siren", "test").returncode == 0
    reply = c.request(f"{A}/cmd", command("hubA", "silence"))
    assert reply["ok"], reply
    wait_for(lambda: not target.siren_on(), 10, message="silenced")
    assert c.request(f"{A}/cmd", command("hubA", "resolve", alert=alert["id"], outcome="genuine"))["ok"]
    # ...and it starts again.
    target.restart()
    assert target.press_raises_an_alert()["id"] == "hubA:2"


# --- 2. origin authenticity -----------------------------------------------------------------------

def test_a_neighbour_cannot_forge_or_close_a_third_hubs_alert(tmp_path: Path, broker: Mosquitto,
                                                              hub_processes: list[HubProcess]) -> None:
    # hubC is enrolled (its key in [trust] hubs) but is no MQTT neighbour: its events reach hubA
    # relayed by hubB, with hubC's own signature. hubD is not enrolled at all.
    target = Target(tmp_path, broker, hub_processes, trusted=("hubB", "hubC"))
    try:
        c = target.centre
        real = envelope("hubC", 3)
        c.publish(f"{B}/events", contract.dumps({**contract.sign("event", real, hub_key("hubC")),
                                                 "relayed_by": "hubB", "path": "mqtt"}))
        seen = wait_for(lambda: [a for a in target.alerts() if a["id"] == "hubC:3"], 15,
                        message="hubC's real alert, relayed")[0]
        assert seen["state"] == "raised" and seen["extra"]["trust"] == "signed"

        attacks = [
            # hubB forges hubC's alert and signs it itself; and with no signature at all.
            signed({**envelope("hubC", 9), "relayed_by": "hubB"}, "hubB"),
            contract.dumps({**envelope("hubC", 9), "relayed_by": "hubB"}),
            # hubB closes hubC's open alert: signed by hubB, as a relay of hubC's, unsigned.
            signed(envelope("hubC", 3, "resolved", state="resolved", outcome="false_alarm"), "hubB"),
            contract.dumps(envelope("hubC", 3, "resolved", state="resolved", outcome="false_alarm")),
            # hubB changes hubC's signed event (the zone) and relays it: the signature no longer holds.
            contract.dumps({**contract.sign("event", real, hub_key("hubC")), "relayed_by": "hubB",
                            "alert": {**real["alert"], "zone": "Elsewhere"}}),
            # hubD, whom hubA does not know, signs its own alert.
            signed(envelope("hubD", 1), "hubD"),
        ]
        for payload in attacks:
            c.publish(f"{B}/events", payload)
        # hubB's ward attestation of a resolve is kept beside the alert, and changes nothing.
        attested = contract.attest(envelope("hubC", 3, "cancelled", state="cancelled"), "hubB",
                                   hub_key("hubB"))
        c.publish(f"{B}/events", contract.dumps(attested))
        refused = wait_for(lambda: (r := target.refused()) and sum(r.values()) >= len(attacks) and r, 15,
                           message="the forgeries refused")
        assert refused.get("bad_signature", 0) >= 3 and refused.get("unsigned", 0) >= 2
        assert refused.get("unknown_origin", 0) >= 1
        hub_c = wait_for(lambda: [a for a in target.alerts() if a["id"] == "hubC:3"
                                  and a["extra"].get("attested")], 15, message="the attestation noted")[0]
        assert hub_c["state"] == "raised" and hub_c["zone"] == "Gate"  # what hubC signed stands
        assert hub_c["extra"]["attested"]["state"] == "cancelled"
        assert hub_c["extra"]["attested"]["by"] == "hubB"
        assert {a["id"] for a in target.alerts() if a["remote"]} == {"hubC:3"}
        # Only hubC's signature closes it.
        c.publish(f"{B}/events", signed(envelope("hubC", 3, "resolved", state="resolved", outcome="genuine"),
                                        "hubC"))
        wait_for(lambda: [a for a in target.alerts() if a["id"] == "hubC:3" and a["state"] == "resolved"], 15,
                 message="hubC's own resolve")
        target.press_raises_an_alert()
    finally:
        target.close()


# --- 3. commands are the centre's alone -------------------------------------------------------------

def test_only_the_centres_fresh_signed_commands_are_obeyed(target: Target) -> None:
    c = target.centre
    alert = target.press_raises_an_alert()
    replies_before = len(c.on(f"{A}/reply"))
    events_before = len(target.events())
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "evil/anywhere"
    props.CorrelationData = b"x"
    stale = command("hubA", "resolve", alert=alert["id"], outcome="false_alarm", time=time.time() - 3600)
    attacks = [
        json.dumps({"id": "a1", "cmd": "silence"}).encode(),  # version 1, as in the issue
        json.dumps({"id": "a2", "cmd": "siren_test"}).encode(),
        json.dumps({"id": "a3", "cmd": "resolve", "alert": alert["id"], "outcome": "false_alarm"}).encode(),
        contract.dumps(contract.command_payload_v2(id="a4", cmd="cancel", hub="hubA", time=time.time(),
                                                   by="eve", alert=alert["id"])),  # unsigned
        command("hubA", "ack", alert=alert["id"], key=hub_key("hubB")),  # a neighbour's key
        command("hubA", "resolve", alert=alert["id"], outcome="genuine", key=hub_key("hubA")),
        command("hubB", "silence"),  # the centre's, for another hub
        stale,
        command("hubA", "status", key=hub_key("hubB")),
    ]
    for payload in attacks:
        c.client.publish(f"{A}/cmd", payload, qos=1, properties=props)
    replies = wait_for(lambda: len(c.on(f"{A}/reply")) >= replies_before + len(attacks) and
                       [m.json() for m in c.on(f"{A}/reply")][replies_before:], 15, message="every refusal")
    public = target.public_key()
    for r in replies:
        contract.verify("reply", r, public)  # every answer is the hub's own, signed
        assert r["ok"] is False and r["error"]["code"] in (
            "unsupported_version", "unsigned", "bad_signature", "wrong_hub", "stale"), r
    assert not c.under("evil/"), "nothing was published on the attacker's response topic"
    assert target.siren_on() and len(target.events()) == events_before
    assert next(a for a in target.alerts() if a["id"] == alert["id"])["state"] == "raised"

    # The centre's command is obeyed once; its replay, even after a restart, is not.
    ack = command("hubA", "ack", alert=alert["id"])
    assert c.request(f"{A}/cmd", ack)["ok"]
    resolve = command("hubA", "resolve", alert=alert["id"], outcome="genuine")
    assert c.request(f"{A}/cmd", resolve)["ok"]
    target.restart()
    again = c.request(f"{A}/cmd", resolve)
    assert again.get("repeated") is True or again["error"]["code"] == "replayed"
    states = [e["type"] for e in target.events() if e["alert_id"] == alert["id"]]
    assert states.count("alert.resolved") == 1 and states.count("alert.acknowledged") == 1
    target.press_raises_an_alert()


# --- 4. bounds --------------------------------------------------------------------------------------

def test_huge_deep_or_too_many_events_are_refused_and_counted(target: Target) -> None:
    c = target.centre
    db = Path(target.status()["links"]["mqtt"]["topic"]) and target.config.parent / "state" / "hubd.db"
    size_before = db.stat().st_size + Path(f"{db}-wal").stat().st_size
    big = envelope("hubB", 1)
    big["data"] = {"pad": "x" * (4 * 1024 * 1024)}
    for _ in range(10):  # ten 4 MiB events, as in the issue
        c.publish(f"{B}/events", signed(big, "hubB"))
    deep: Any = {}
    for _ in range(40):
        deep = {"d": deep}
    c.publish(f"{B}/events", signed({**envelope("hubB", 2), "data": deep}, "hubB"))
    c.publish(f"{B}/events", signed({**envelope("hubB", 3), "data": {f"k{i}": i for i in range(100)}},
                                    "hubB"))
    refused = wait_for(lambda: (r := target.refused()) and r.get("too_large", 0) >= 10 and r, 30,
                       message="ten huge events refused")
    assert refused.get("too_deep") == 1 and refused.get("too_many_keys") == 1
    # A flood above the neighbour's rate (burst 300, then 20 a second) is cut off and counted.
    flood = [signed(contract.event_envelope_v2(id=f"hubB:e{n}", type="test.flood", time=time.time(),
                                               ward="ward-7", hub="hubB", actor="x", data={}), "hubB")
             for n in range(1, 701)]
    for payload in flood:
        c.client.publish(f"{B}/events", payload, qos=1)
    wait_for(lambda: target.refused().get("rate", 0) >= 300, 30, message="the flood cut off at the rate")
    stored = [e for e in target.events() if e["type"] == "test.flood"]
    assert 300 <= len(stored) <= 400, len(stored)
    size_after = db.stat().st_size + Path(f"{db}-wal").stat().st_size
    assert size_after - size_before < 8 * 1024 * 1024, (size_before, size_after)
    target.press_raises_an_alert()


# --- 5. mesh replay, after restarts and prunes ---------------------------------------------------

def test_a_replayed_mesh_frame_is_refused_after_a_restart_and_a_prune(tmp_path: Path) -> None:
    # Running hubs in this process: the real core and mesh link through the real meshtastic
    # client to simulated radios. The attacker has a radio on the air and recorded hub-1's frames.
    from mesh_lab import Lab, LabHub
    from meshtastic.protobuf import mesh_pb2

    from hubd.radio import frames

    lab = Lab(tmp_path, seed=5)
    hubs: list[LabHub] = []
    try:
        a, b = lab.chain(2, mesh={"replay_window": 600.0})
        hubs += [a, b]
        lab.start()
        alert = a.raise_alert("panic", "North gate")
        a.hub.resolve(alert.id, "genuine", "test")
        wait_for(lambda: (x := b.store.get_alert(alert.id)) and x.state == "resolved" and a.pending() == 0
                 and b.pending() == 0, 30, message="hub-2 holds the resolved alert")
        heard = {tag for node, tag, _ in b.store.mesh_frames_seen() if node == a.node.num}
        captured = next(bytes(p.decoded.payload) for p in a.node.sent
                        if p.decoded.portnum == a.config.mesh.port_num
                        and frames.decode(bytes(p.decoded.payload), lab.key, a.node.num).type
                        == frames.FrameType.RAISED and bytes(p.decoded.payload)[-frames.TAG_LEN:] in heard)

        # hub-2 restarts, and its retention prunes the closed alert: its id no longer dedupes.
        b.stop()
        b.store = None  # type: ignore[assignment]
        from hubd.store import Store

        pruned = Store(b.config.store_path)
        assert pruned.prune(time.time() + 60) > 0 and pruned.get_alert(alert.id) is None
        pruned.close()
        b2 = LabHub(b.config, b.node).start()
        hubs[1] = b2
        wait_for(lambda: b2.link.state == "connected", 20, message="hub-2 back")

        def replay(data: bytes, sender: int) -> None:
            packet = mesh_pb2.MeshPacket()
            setattr(packet, "from", sender)  # the tag covers the sender: it must be the recorded radio's
            packet.to = 0xFFFFFFFF
            packet.id = int.from_bytes(data[-4:], "big") ^ int(time.time())  # a new packet id
            packet.decoded.portnum = a.config.mesh.port_num
            packet.decoded.payload = data
            b2.node.inject(packet)

        # Within the window: the same bytes were heard before the restart (the window is kept).
        replay(captured, a.node.num)
        wait_for(lambda: b2.link.counters["refused_replayed"] >= 1, 15, message="the replay refused")
        # Long after: a frame recorded two days ago from a radio hub-2 has not heard since (so no
        # window knows it), beyond hub-2's retention (1 day here), is refused by its time.
        old = frames.decode(captured, lab.key, a.node.num)
        recorder = 0x3A3A3A3A
        stale = frames.encode(frames.Frame(frames.FrameType.RAISED, "hub-3", int(time.time()) - 2 * 86400,
                                           seq=old.seq, kind=old.kind, zone=old.zone), lab.key, recorder)
        object.__setattr__(b2.config.store, "retention_days", 1.0)
        replay(stale, recorder)
        wait_for(lambda: b2.link.counters["refused_replayed"] >= 2, 15, message="the stale frame refused")
        time.sleep(1.0)
        # (hub-1 may well send hub-2 its alert again, resolved, when it hears hub-2 back: that is
        # the catch-up of a returning neighbour, not the replay, which was refused.)
        back = b2.store.get_alert(alert.id)
        assert back is None or back.state == "resolved", "the resolved alert came back as raised"
        assert b2.store.get_alert(f"hub-3:{old.seq}") is None

        # And hub-2 still hears what is new.
        fresh = a.raise_alert("fire", "Mill")
        wait_for(lambda: b2.store.get_alert(fresh.id), 30, message="a new alert heard after the replays")
    finally:
        for h in hubs:
            try:
                h.stop()
            except Exception:
                pass
        lab.air.stop()


# --- 6. marshals ----------------------------------------------------------------------------------

def test_a_marshals_ack_names_its_hub_and_a_forged_sender_is_refused(tmp_path: Path) -> None:
    from mesh_lab import Lab
    from meshtastic.protobuf import mesh_pb2
    from meshtastic.tcp_interface import TCPInterface

    lab = Lab(tmp_path, seed=6)
    marshal_node = lab.air.add_node(hop_limit=1, name="marshal")
    attacker_node = lab.air.add_node(hop_limit=1, name="attacker")
    radio = None
    try:
        a, b = lab.chain(2, mesh={"marshals": [marshal_node.node_id]})
        for hub in (a, b):
            lab.air.link(marshal_node, hub.node)
            lab.air.link(attacker_node, hub.node)
        marshal_node.start()
        attacker_node.start()
        lab.start()
        wait_for(lambda: a.link.state == b.link.state == "connected", 20, message="hubs connected")
        alert_a, alert_b = a.raise_alert("panic", "Gate"), b.raise_alert("fire", "Mill")
        assert alert_a.seq == alert_b.seq == 1  # "ACK 1" fits both

        ids = iter(range(0x5000, 0x6000))

        def forged(text: str, to: int, *, pki: bool) -> None:
            packet = mesh_pb2.MeshPacket()
            setattr(packet, "from", marshal_node.num)  # anyone with the channel key can set it
            packet.to, packet.id, packet.pki_encrypted = to, next(ids), pki
            packet.decoded.portnum = 1
            packet.decoded.payload = text.encode()
            for hub in (a, b):
                hub.node.inject(packet)

        # The attacker, as the marshal: channel text "ACK 1" (the issue's), a direct message that
        # claims to be public-key encrypted, and one naming the hub.
        forged("ACK 1", 0xFFFFFFFF, pki=False)
        forged("ACK hub-1 1", a.node.num, pki=True)
        forged("ACK hub-2 1", b.node.num, pki=True)
        def refused(hub: Any) -> int:
            return hub.link.counters["marshal_unauthenticated"] + hub.link.counters["marshal_ambiguous"]

        wait_for(lambda: refused(a) >= 2 and refused(b) >= 2, 20,
                 message="the forged acknowledgements refused")
        time.sleep(0.5)
        assert a.store.get_alert(alert_a.id).state == b.store.get_alert(alert_b.id).state == "raised"

        # The real marshal's public-key direct message names its hub: only that alert is acknowledged.
        radio = TCPInterface("127.0.0.1", portNumber=marshal_node.port, timeout=10)
        radio.sendData(b"ACK hub-2 1", destinationId=b.node.num, portNum=1, pkiEncrypted=True)
        wait_for(lambda: b.store.get_alert(alert_b.id).state == "acknowledged", 20, message="the real ACK")
        time.sleep(0.5)
        assert a.store.get_alert(alert_a.id).state == "raised"
        assert a.processor.execute({"cmd": "ack", "alert": alert_a.id}, "manager")["ok"]  # still works
    finally:
        if radio is not None:
            radio.close()
        lab.stop()


# --- 7. the page ------------------------------------------------------------------------------------

def test_logout_ends_every_session_and_guessing_never_locks_the_owner_out(
        tmp_path: Path, broker: Mosquitto, hub_processes: list[HubProcess]) -> None:
    import http.client
    import subprocess

    import requests
    from support import HUBD, REPO, free_port

    port = free_port()
    target = Target(tmp_path, broker, hub_processes)
    try:
        # The page is on: a second hubA config would do, but the target's own is simplest edited.
        text = target.config.read_text().replace("enabled = false", "enabled = true").replace(
            "port = 0", f"port = {port}")
        target.config.write_text(text)
        target.restart()
        url = f"http://127.0.0.1:{port}"
        for name, role in (("manager", "manager"), ("viewer", "viewer")):
            subprocess.run([*HUBD, "user", "add", name, "--role", role, "--password-stdin", "-c",
                            str(target.config)], input=f"{name}-password-1\n", text=True, check=True,
                           cwd=REPO, timeout=60)

        def login(name: str, addr: str | None = None) -> requests.Session:
            s = requests.Session()
            headers = {"X-Forwarded-For": addr} if addr else {}
            r = s.post(f"{url}/api/login", json={"user": name, "password": f"{name}-password-1"},
                       headers=headers, timeout=10)
            assert r.status_code == 200, r.text
            s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
            return s

        # Logout (and a new password) end every session of the account, on the server.
        laptop, phone = login("manager"), login("manager")
        cookie, token = dict(laptop.cookies), laptop.headers["X-CSRF-Token"]
        assert laptop.post(f"{url}/api/logout", timeout=10).status_code == 200
        stolen = requests.Session()
        stolen.cookies.update(cookie)
        stolen.headers["X-CSRF-Token"] = token
        assert stolen.get(f"{url}/api/me", timeout=10).status_code == 401
        assert stolen.post(f"{url}/api/siren/silence", json={}, timeout=10).status_code in (401, 403)
        assert phone.get(f"{url}/api/me", timeout=10).status_code == 401  # every session of it
        tablet = login("manager")
        subprocess.run([*HUBD, "user", "passwd", "manager", "--password-stdin", "-c", str(target.config)],
                       input="manager-password-1\n", text=True, check=True, cwd=REPO, timeout=60)
        assert tablet.get(f"{url}/api/me", timeout=10).status_code == 401

        # Twenty wrong passwords for an account from four addresses (the attack) slow
        # guessing, but its owner, at another address, still logs in with the right one.
        def attempt(name: str, password: str, addr: str) -> tuple[int, dict[str, Any]]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(addr, 0))
            try:
                conn.request("POST", "/api/login", json.dumps({"user": name, "password": password}),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, {"retry": resp.getheader("Retry-After"), **json.loads(resp.read())}
            finally:
                conn.close()

        attackers = [f"127.0.0.{n}" for n in (11, 12, 13, 14)]
        for addr in attackers:
            for _ in range(5):
                assert attempt("viewer", "guess-guess", addr)[0] == 401
        assert attempt("viewer", "viewer-password-1", attackers[0])[0] == 429  # that address waits
        assert attempt("viewer", "guess-guess", "127.0.0.15")[0] in (401, 429)  # slowed, paced
        status, body = attempt("viewer", "viewer-password-1", "127.0.0.20")
        if status == 429:  # at most a few seconds: the pace of tries on an account under attack
            assert int(body["retry"]) <= 5, body
            time.sleep(int(body["retry"]))
            status, body = attempt("viewer", "viewer-password-1", "127.0.0.20")
        assert status == 200, body
        # Nothing makes the manager different: its account was never locked by the viewer's.
        assert attempt("manager", "manager-password-1", attackers[1])[0] == 429  # the address is
        assert attempt("manager", "manager-password-1", "127.0.0.21")[0] == 200

        # One session cannot take every live stream.
        viewer = login("viewer")
        opened = []
        for _ in range(40):
            r = viewer.get(f"{url}/api/stream", stream=True, timeout=10)
            if r.status_code != 200:
                assert r.status_code == 503 and "for one login" in r.json()["error"]["message"]
                break
            opened.append(r)
        else:
            raise AssertionError("one login opened 40 live streams")
        other = login("manager")
        r = other.get(f"{url}/api/stream", stream=True, timeout=10)
        assert r.status_code == 200, "another login still gets a live stream"
        for s in [*opened, r]:
            s.close()
    finally:
        target.close()


# --- 8. local ---------------------------------------------------------------------------------------

FAKE_SERVER = """
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777)
os.setgid(65534); os.setuid(65534)  # the other user, from here on (listen records who answers)
s.listen(5)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(json.dumps({"ok": True, "result": {"hub": "fake", "planted": True}}).encode() + b"\\n")
    c.close()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to play another local user")
def test_a_planted_control_socket_is_refused_and_files_are_private_whatever_the_umask(
        tmp_path: Path, hub_processes: list[HubProcess]) -> None:
    import subprocess
    import sys

    from support import HUBD, REPO

    nobody = 65534
    # Another local user (nobody) made the runtime directory first and answers on a socket in it.
    shared = tmp_path / "tmp"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    planted = shared / "hubd-0"
    planted.mkdir()
    os.chown(planted, nobody, nobody)
    os.chown(tmp_path, 0, 0)
    tmp_path.chmod(0o755)
    sock = planted / "control.sock"
    fake = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(sock)])
    try:
        wait_for(sock.exists, 10, message="the planted socket")
        cfg = hub_config(tmp_path / "hub", web=True, extra="")
        cfg.write_text(cfg.read_text().replace(f'runtime_dir = "{tmp_path / "hub" / "run"}"',
                                               f'runtime_dir = "{planted}"'))
        # The CLI does not talk to it...
        out = subprocess.run([*HUBD, "status", "-c", str(cfg)], capture_output=True, text=True, cwd=REPO,
                             timeout=60)
        assert out.returncode != 0 and "refusing the control socket" in out.stderr, out
        assert "planted" not in out.stdout
        # ...and the daemon does not start in it, saying why.
        run = subprocess.run([*HUBD, "run", "-c", str(cfg)], capture_output=True, text=True, cwd=REPO,
                             timeout=60)
        assert run.returncode == 1 and "belongs to nobody" in run.stderr, run.stderr[-2000:]
    finally:
        fake.kill()
        fake.wait(10)

    # Outside systemd, with a umask that lets everyone read: the store, the keys and the
    # secrets are the hub's alone, and so is their directory.
    cfg = hub_config(tmp_path / "private", web=True)
    old = os.umask(0o022)
    try:
        proc = HubProcess(cfg).start()
    finally:
        os.umask(old)
    hub_processes.append(proc)
    assert proc.cli("press", "gate").returncode == 0
    state = tmp_path / "private" / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("hubd.db", "hubd.db-wal", "signing.key", "secret_key"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((tmp_path / "private" / "run").stat().st_mode) == 0o700


# --- 9. transport -----------------------------------------------------------------------------------

def _own_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # no packet is sent: it only picks the outgoing interface
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_broker_across_the_network_without_tls_is_refused_unless_insecure(
        tmp_path: Path, hub_processes: list[HubProcess]) -> None:
    import subprocess

    from support import HUBD, REPO, free_port

    plain = hub_config(tmp_path / "plain", web=False, extra='[mqtt]\nhost = "198.51.100.7"\n')
    for args in (["run", "-c", str(plain)], ["check-config", str(plain)]):
        out = subprocess.run([*HUBD, *args], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert out.returncode == 2 and "not on this machine and tls is off" in out.stderr, out

    address = _own_address()
    if address is None:
        pytest.skip("this machine has no address but loopback to put a broker on")
    port = free_port()
    broker = Mosquitto(tmp_path / "broker", extra_conf=f"listener {port} {address}\n").start()
    try:
        cfg = hub_config(tmp_path / "insecure", web=False,
                         extra=f'[mqtt]\nhost = "{address}"\nport = {port}\ninsecure = true\n')
        proc = HubProcess(cfg).start()
        hub_processes.append(proc)
        wait_for(lambda: proc.cli_json("status")["result"]["links"]["mqtt"]["connected"], 20,
                 message="the hub on a broker across the network, knowingly without TLS")
        out = subprocess.run([*HUBD, "doctor", "--json", "-c", str(cfg)], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
        broker_check = next(c for c in json.loads(out.stdout)["checks"] if c["name"] == "broker")
        assert broker_check["status"] == "warn" and "without TLS" in broker_check["detail"], broker_check
    finally:
        broker.stop()
