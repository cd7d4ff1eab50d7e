"""The MQTT link against a real mosquitto: delivery, snapshots, commands, neighbours, relay,
broker loss, TLS with passwords and the broker ACL, Home Assistant discovery and CAP."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import pytest
from mqtt_support import (
    AS_ROOT,
    CAP_DATETIME,
    CENTRAL,
    Centre,
    assert_valid,
    command,
    hub_key,
    local_hub,
    mqtt_section,
    signed_event,
    undelivered,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import REPO, ManualClock, Mosquitto, free_port, hub_config, wait_for

from hubd import contract
from hubd.commands import CommandProcessor
from hubd.config import load_config
from hubd.lifecycle import Hub
from hubd.radio import cap, homeassistant
from hubd.radio.mqtt import MqttLink
from hubd.store import Store

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 40 + b"\xff\xd9"


def _seq(event_id: str) -> int:
    return int(event_id.rsplit(":e", 1)[1])


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path / "broker", extra_conf=CENTRAL).start()
    yield b
    b.stop()


@pytest.fixture
def cleanup():
    items: list = []
    yield items
    for item in reversed(items):
        try:
            item.stop() if hasattr(item, "stop") else item.close()
        except Exception:
            pass


def centre_and_hub(tmp_path: Path, broker: Mosquitto, cleanup: list, **options: str):
    """A recording centre and an in-process hub on the broker, both stopped after the test."""
    centre = Centre(broker.host, broker.port)
    cleanup.append(centre)
    h = local_hub(tmp_path / "hub", broker.port, **options)
    cleanup.append(h)
    return centre, h


def test_alert_events_and_snapshot_reach_the_centre(tmp_path, broker, cleanup):
    centre, h = centre_and_hub(tmp_path, broker, cleanup)
    t = h.topics

    alert = h.hub.raise_alert("gate", "panic", "Market gate")
    rel = "snapshots/a1.jpg"
    (h.hub.config.state_dir / "snapshots").mkdir(exist_ok=True)
    (h.hub.config.state_dir / rel).write_bytes(JPEG)
    sid = h.store.add_snapshot(alert.id, rel, time.time(), len(JPEG))
    h.hub.record("alert.snapshot", actor="camera", alert_id=alert.id,
                 data={"snapshot_id": sid, "path": rel, "size": len(JPEG)})

    wait_for(lambda: {"alert.raised", "alert.snapshot"} <= {e["type"] for e in centre.events(t.events)},
             15, message="alert events at the centre")
    jpegs = wait_for(lambda: centre.on(t.snapshot(alert.id)), 15, message="snapshot JPEG")
    assert jpegs[0].payload == JPEG
    raised = next(e for e in centre.events(t.events) if e["type"] == "alert.raised")
    assert raised["alert"]["id"] == alert.id and raised["alert"]["zone"] == "Market gate"
    assert raised["hub"] == "hub-1" and "relayed_by" not in raised

    status = wait_for(lambda: centre.on(t.status), 10, message="status")[-1]
    assert status.json()["online"] is True and status.json()["hub"] == "hub-1"
    for m in centre.on(t.events):  # contract version 2: every envelope signed by its hub
        assert_valid("event-v2", m.json())
        contract.verify("event", m.json(), hub_key("hub-1").public_key())
    for m in centre.on(t.status):
        assert_valid("status-v2", m.json())
        contract.verify("status", m.json(), hub_key("hub-1").public_key())

    # Delivered means PUBACKed: the outbox empties and the rows carry a delivery time.
    wait_for(lambda: undelivered(h.store) == 0, 10, message="outbox drained")
    rows = h.store.query("SELECT delivered_at FROM outbox WHERE destination = 'mqtt'")
    assert rows and all(r["delivered_at"] for r in rows)
    assert h.link.status()["connected"] and h.link.status()["outbox_depth"] == 0

    # A late subscriber still learns that the hub is online: the status is retained.
    late = Centre(broker.host, broker.port, (t.status,))
    cleanup.append(late)
    msg = wait_for(lambda: late.on(t.status), 10, message="retained status")[0]
    assert msg.retain and msg.json()["online"] is True


def test_a_new_alert_never_overtakes_an_older_waiting_row(tmp_path, broker, cleanup):
    # A new alert is published from the committing thread, straight from memory, only when
    # it is next in line; here an older alert-priority row waits that the link was never
    # told of (written without an announcement), so both must leave in the store's order.
    centre, h = centre_and_hub(tmp_path, broker, cleanup)
    wait_for(lambda: h.link.status()["connected"] and undelivered(h.store) == 0, 15,
             message="link up and outbox empty")
    for _ in range(5):
        older = h.hub.record("siren.test", actor="tech", announce=False)
        alert = h.hub.raise_alert("gate", "panic")
        both = {older.id, f"{alert.id}:raised:0"}
        wait_for(lambda both=both: both <= {e["id"] for e in centre.events(h.topics.events)},
                 15, message="both events at the centre")
    ids = [e["id"] for e in centre.events(h.topics.events) if e["type"] in ("siren.test", "alert.raised")]
    assert len(ids) == 10
    for first, second in zip(ids[::2], ids[1::2], strict=True):
        assert first.split(":e")[0] == "hub-1" and second.endswith(":raised:0"), ids


def test_commands_round_trip_and_every_bad_input_is_refused(tmp_path, broker, cleanup):
    centre, h = centre_and_hub(tmp_path, broker, cleanup)
    t = h.topics
    alert = h.hub.raise_alert("gate", "panic", "Market gate")

    def valid(reply: dict) -> dict:
        assert_valid("reply-v2", reply)
        contract.verify("reply", reply, hub_key("hub-1").public_key())  # signed by the hub
        return reply

    ack = command("hub-1", "ack", id="c-1", alert=alert.id)
    reply = valid(centre.request(t.cmd, ack))
    assert reply["ok"] is True and reply["id"] == "c-1" and reply["result"]["state"] == "acknowledged"
    assert h.hub.get_alert(alert.id).state == "acknowledged"
    acks = h.store.events(alert_id=alert.id, type_prefix="alert.acknowledged")
    assert len(acks) == 1 and acks[0]["actor"] == "centre:operator:test"

    # The same command again is answered, not applied again.
    again = valid(centre.request(t.cmd, ack))
    assert again["ok"] is True and again["repeated"] is True
    assert len(h.store.events(alert_id=alert.id, type_prefix="alert.acknowledged")) == 1

    status = valid(centre.request(t.cmd, command("hub-1", "status", id="c-2")))
    assert status["ok"] and status["result"]["hub"] == "hub-1"

    events_before = len(h.store.events(limit=10_000))
    unsigned = contract.command_payload_v2(id="c-12", cmd="silence", hub="hub-1", time=time.time(), by="x")
    bad = [
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00", "bad_json"),
        (command("hub-1", "ack", id="big", alert=alert.id, by="x" * 9000), "too_large"),
        (b'["ack"]', "bad_request"),
        (json.dumps({k: v for k, v in json.loads(ack).items() if k != "id"}).encode(), "bad_request"),
        (command("hub-1", "launch", id="c-3"), "bad_request"),
        (command("hub-1", "press", id="c-4"), "bad_request"),  # local only
        (json.dumps({**json.loads(command("hub-1", "ack", id="c-5", alert=alert.id)), "alert": 5}).encode(),
         "bad_request"),
        (command("hub-1", "resolve", id="c-6", alert=alert.id, outcome="maybe"), "bad_request"),
        (json.dumps({**json.loads(command("hub-1", "ack", id="c-7", alert=alert.id)), "extra": 1}).encode(),
         "bad_request"),
        (json.dumps({"cmd": "silence", "id": "c-13"}).encode(), "unsupported_version"),  # version 1
        (contract.dumps(unsigned), "unsigned"),
        (command("hub-1", "silence", id="c-14", key=hub_key("hub-1")), "bad_signature"),
        (json.dumps({**json.loads(command("hub-1", "ack", id="c-15", alert=alert.id)), "by": "eve"}).encode(),
         "bad_signature"),
        (command("hub-2", "silence", id="c-16"), "wrong_hub"),
        (command("hub-1", "silence", id="c-17", time=time.time() - 3600), "stale"),
        (command("hub-1", "ack", id="c-8", alert="hub-1:999"), "not_found"),
        (command("hub-1", "cancel", id="c-9", alert=alert.id), "illegal_transition"),
        (command("hub-1", "ack", id="c-10", alert=alert.id), "illegal_transition"),
    ]
    for payload, code in bad:
        r = valid(centre.request(t.cmd, payload))
        assert r["ok"] is False and r["error"]["code"] == code, (payload[:60], r)
        assert r["error"]["message"]
    assert h.hub.get_alert(alert.id).state == "acknowledged"
    assert len(h.store.events(limit=10_000)) == events_before  # nothing changed
    assert h.link.alive() and h.link.status()["connected"]
    assert h.link.status()["refused"]["command_bad_signature"] == 2

    # Without a response topic the reply goes to <base>/reply; a response topic elsewhere is not
    # written to (the hub replies on its own topic only).
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "evil/anywhere"
    props.CorrelationData = b"c-11"
    centre.client.publish(t.cmd, command("hub-1", "resolve", id="c-11", alert=alert.id, outcome="genuine"),
                          qos=1, properties=props)
    r = wait_for(lambda: [m.json() for m in centre.on(t.reply) if m.json().get("id") == "c-11"], 10,
                 message="reply on the reply topic")[0]
    assert r["ok"] and h.hub.get_alert(alert.id).state == "resolved"
    time.sleep(0.3)
    assert not centre.on("evil/anywhere")

    # Every command the contract documents is valid under command-v2.json; the bad ones are not.
    assert_valid("command-v2", json.loads(command("hub-1", "ack", alert=alert.id)))
    assert_valid("command-v2", json.loads(command("hub-1", "siren_test")))
    assert contract.problems("command-v2", {**json.loads(command("hub-1", "ack", alert=alert.id)), "by": 1})
    assert contract.problems("command-v2", json.loads(command("hub-1", "press")))


def test_mqtt_311_replies_on_the_reply_topic(tmp_path, broker, cleanup):
    centre, h = centre_and_hub(tmp_path, broker, cleanup, protocol="3.1.1")
    alert = h.hub.raise_alert("gate", "panic")
    wait_for(lambda: any(e["type"] == "alert.raised" for e in centre.events(h.topics.events)), 15,
             message="alert over 3.1.1")
    centre.publish(h.topics.cmd, command("hub-1", "ack", id="v3-1", alert=alert.id))
    r = wait_for(lambda: [m.json() for m in centre.on(h.topics.reply)], 10, message="3.1.1 reply")[0]
    assert_valid("reply-v2", r)
    assert r["ok"] and r["id"] == "v3-1" and h.hub.get_alert(alert.id).state == "acknowledged"


def test_burst_of_1000_events_survives_a_broker_kill9(tmp_path, cleanup):
    # The broker saves its state every second, as the contract page advises for the centre's broker.
    broker = Mosquitto(tmp_path / "broker", extra_conf="autosave_interval 1\n" + CENTRAL).start()
    cleanup.append(broker)
    centre = Centre(broker.host, broker.port, ("safercom/v2/ward-7/hub-1/events",), client_id="centre-burst")
    cleanup.append(centre)
    h = local_hub(tmp_path / "hub", broker.port)
    cleanup.append(h)
    # Mosquitto saves about every 2 s (and does not log it): wait for a save that includes
    # the centre's subscription, or the restarted broker would drop what it missed.
    wait_for(lambda: h.link.status()["connected"], 15, message="the hub connected")
    subscribed = time.time()
    saved = broker.workdir / "mosquitto.db"
    wait_for(lambda: saved.exists() and saved.stat().st_mtime > subscribed + 0.01, 15,
             message="the broker to save the centre's session")

    n = 1000
    ids: list[str] = []

    def burst() -> None:
        for i in range(n):
            ids.append(h.hub.record("test.burst", actor="test", data={"n": i}).id)
            if i % 50 == 0:
                time.sleep(0.02)

    producer = threading.Thread(target=burst)
    producer.start()

    def seen() -> set[str]:
        return {e["id"] for e in centre.events(h.topics.events) if e["type"] == "test.burst"}

    wait_for(lambda: len(seen()) >= 200, 30, message="first part of the burst")
    broker.kill()
    time.sleep(1.0)
    broker.start()
    producer.join(60)
    try:
        wait_for(lambda: len(seen()) == n, 60, message="every event of the burst after the broker restart")
    except AssertionError:
        missing = sorted(set(ids) - seen(), key=_seq)
        print("MISSING", len(missing), missing[:5], missing[-5:], "first seen", len(seen()))
        print(h.store.query("SELECT o.delivered_at, o.attempts, e.id FROM outbox o JOIN events e "
                            "ON e.seq=o.event_seq WHERE e.id IN (?, ?)", (missing[0], missing[-1])))
        print(broker.log.read_text()[-3000:])
        raise

    burst_msgs = [m for m in centre.on(h.topics.events) if m.json()["type"] == "test.burst"]
    by_id: dict[str, bytes] = {}
    first_order: list[int] = []
    for m in burst_msgs:
        env = m.json()
        assert_valid("event-v2", env)
        if env["id"] in by_id:
            assert by_id[env["id"]] == m.payload, "a duplicate must be the same event"
        else:
            by_id[env["id"]] = m.payload
            first_order.append(_seq(env["id"]))
    assert set(by_id) == set(ids)
    assert first_order == sorted(first_order), "events arrived out of order"
    wait_for(lambda: undelivered(h.store) == 0, 30, message="outbox empty")
    # The hub noticed the loss and came back: health fault then ok, recorded as events.
    types = [e["type"] for e in h.store.events(type_prefix="component.", limit=100)]
    assert "component.fault" in types and "component.ok" in types


def test_relayed_events_keep_their_origin_and_name_the_relay(tmp_path, broker, cleanup):
    centre, h = centre_and_hub(tmp_path, broker, cleanup)
    now = time.time()
    alert = {"id": "hub-9:2", "hub": "hub-9", "seq": 2, "kind": "fire", "source": "gate", "zone": "Mill",
             "state": "raised", "outcome": None, "level": 0, "silent": False, "raised_at": now,
             "updated_at": now, "severity": 1}
    raised = contract.event_envelope_v2(id="hub-9:2:raised:0", type="alert.raised", time=now, ward="ward-7",
                                        hub="hub-9", actor="gate", data={}, alert=alert)
    # Heard on the mesh: hub-1 attests it (no room for hub-9's signature in a frame).
    assert h.hub.ingest_remote({**h.hub.signer.attest(raised), "path": "mesh"}, via="mesh",
                               trust="ward-attested", relay_to=("mqtt",))
    # Heard signed: relayed with hub-9's own signature, untouched.
    escalated = contract.event_envelope_v2(id="hub-9:2:escalated:1", type="alert.escalated", time=now + 1,
                                           ward="ward-7", hub="hub-9", actor="system", data={"level": 1},
                                           alert={**alert, "level": 1, "updated_at": now + 1})
    assert h.hub.ingest_remote(json.loads(signed_event("hub-9", escalated)), via="mqtt", trust="signed",
                               relay_to=("mqtt",))
    got = wait_for(lambda: (relayed := {e["id"]: e for e in centre.events(h.topics.events)
                                        if e["hub"] == "hub-9"}) and len(relayed) == 2 and relayed, 15,
                   message="both relayed events")
    keys = {"hub-1": hub_key("hub-1").public_key(), "hub-9": hub_key("hub-9").public_key()}.get
    for env in got.values():
        assert_valid("event-v2", env)
        assert env["hub"] == "hub-9" and env["relayed_by"] == "hub-1" and env["alert"]["id"] == "hub-9:2"
    assert contract.check_envelope(got["hub-9:2:raised:0"], keys).trust is contract.Trust.ATTESTED
    assert got["hub-9:2:raised:0"]["attested"]["by"] == "hub-1" and got["hub-9:2:raised:0"]["path"] == "mesh"
    assert contract.check_envelope(got["hub-9:2:escalated:1"], keys).trust is contract.Trust.SIGNED


def test_neighbour_alert_is_stored_once_and_chimes(tmp_path, broker, cleanup):
    h1 = local_hub(tmp_path / "h1", broker.port, hub_id="hub-1")
    cleanup.append(h1)
    h2 = local_hub(tmp_path / "h2", broker.port, hub_id="hub-2", sirens=True, neighbours=["hub-1"],
                   chime_on_neighbour=True)
    cleanup.append(h2)
    centre = Centre(broker.host, broker.port)
    cleanup.append(centre)
    time.sleep(0.5)  # hub-2's subscription to hub-1 is in place once connected; give SUBACK a moment
    pin = h2.sounders[0].device.pin
    chirps_before = sum(1 for s in pin.states if s.state)

    alert = h1.hub.raise_alert("gate", "panic", "Market gate")
    stored = wait_for(lambda: h2.store.get_alert(alert.id), 15, message="neighbour alert stored on hub-2")
    assert stored.remote and stored.hub == "hub-1" and stored.state == "raised"
    assert stored.extra["trust"] == "signed"
    wait_for(lambda: sum(1 for s in pin.states if s.state) > chirps_before, 5, message="chime on hub-2")
    assert not any(a.remote is False for a in h2.store.alerts(open_only=True)), "no local alert on hub-2"

    # The same event again (a retry, a relay) is stored once; an invalid one is refused, no crash.
    raised = wait_for(lambda: [m for m in centre.on(h1.topics.events) if m.json()["type"] == "alert.raised"],
                      10, message="the original")[0]
    centre.publish(h1.topics.events, raised.payload)
    centre.publish(h1.topics.events, b"{broken")
    centre.publish(h1.topics.events, json.dumps({"v": 2, "id": "x"}).encode())
    centre.publish(h1.topics.events, json.dumps({**raised.json(), "v": 1}).encode())
    forged = dict(raised.json(), id="hub-3:e1", hub="hub-3")
    centre.publish(h1.topics.events, json.dumps(forged).encode())
    h1.processor.execute({"cmd": "ack", "alert": alert.id}, "manager")
    wait_for(lambda: h2.store.get_alert(alert.id).state == "acknowledged", 15, message="ack seen by hub-2")
    copies = h2.store.query("SELECT count(*) AS n FROM events WHERE id = ?", (raised.json()["id"],))
    assert copies[0]["n"] == 1
    assert not h2.store.has_event("hub-3:e1") and not h2.store.has_event("x")
    assert len(h2.store.alerts(remote=True)) == 1
    assert h2.link.alive()
    refused = h2.link.status()["refused"]
    assert refused["bad_json"] == 1 and refused["bad_request"] == 1 and refused["unsupported_version"] == 1
    assert refused["wrong_origin"] == 1 or refused["unknown_origin"] == 1, refused
    nb = wait_for(lambda: h2.link.status()["neighbours"].get("hub-1"), 10, message="neighbour status")
    assert nb["online"] is True


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_tls_with_test_ca_password_and_acl(tmp_path, cleanup):
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=hubd test CA", cwd=certs)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=certs)
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=certs)
    pw = tmp_path / "broker-passwd"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd, "-b", "-c", str(pw), "hub-1", "s3cret-hub-1"], check=True, timeout=30)
    subprocess.run([passwd, "-b", str(pw), "hub-2", "s3cret-hub-2"], check=True, timeout=30)
    subprocess.run([passwd, "-b", str(pw), "centre", "s3cret-centre"], check=True, timeout=30)
    acl = tmp_path / "acl"
    shutil.copy(REPO / "docs" / "mosquitto-acl.conf", acl)
    for f in (pw, acl):  # mosquitto 2 refuses world-readable password/ACL files in future versions
        f.chmod(0o600)
    port = free_port()
    broker = Mosquitto(tmp_path / "broker", port=port)
    broker.conf.write_text(
        f"{AS_ROOT}per_listener_settings false\nallow_anonymous false\npassword_file {pw}\nacl_file {acl}\n"
        f"persistence false\nlog_dest file {broker.log}\n"
        f"listener {port} 127.0.0.1\ncafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
        f"keyfile {certs / 'server.key'}\n")
    broker.start()
    cleanup.append(broker)
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-hub-1\n")
    secret.chmod(0o600)

    centre = Centre("127.0.0.1", port, ("safercom/v2/#",), username="centre", password="s3cret-centre",
                    ca_file=str(certs / "ca.crt"))
    cleanup.append(centre)
    h = local_hub(tmp_path / "hub", port, tls=True, ca_file=str(certs / "ca.crt"), username="hub-1",
                  password_file=str(secret))
    cleanup.append(h)
    alert = h.hub.raise_alert("gate", "panic")
    wait_for(lambda: any(e["type"] == "alert.raised" for e in centre.events(h.topics.events)), 15,
             message="alert over TLS")
    r = centre.request(h.topics.cmd, command("hub-1", "ack", id="tls-1", alert=alert.id))
    assert r["ok"], r

    # ACL: hub-2 may not write into hub-1's subtree nor read hub-1's commands.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    spy_msgs: list = []
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hubd-hub-2", protocol=mqtt.MQTTv5)
    spy.username_pw_set("hub-2", "s3cret-hub-2")
    spy.tls_set(ca_certs=str(certs / "ca.crt"))
    spy.on_message = lambda c, u, m: spy_msgs.append(m.topic)
    subscribed = threading.Event()
    spy.on_subscribe = lambda *a: subscribed.set()
    spy.connect("127.0.0.1", port, 30)
    spy.loop_start()
    try:
        spy.subscribe([(h.topics.cmd, 1), ("safercom/v2/ward-7/hub-1/events", 1)])
        assert subscribed.wait(10)
        spy.publish(h.topics.status, b'{"forged": true}', qos=1, retain=True).wait_for_publish(10)
        spy.publish("safercom/v2/ward-7/hub-2/status", b'{"own": true}', qos=1).wait_for_publish(10)
        wait_for(lambda: centre.on("safercom/v2/ward-7/hub-2/status"), 10, message="hub-2 may write its own")
        centre.publish(h.topics.cmd, command("hub-1", "status", id="tls-2"))
        wait_for(lambda: any(m.json().get("id") == "tls-2" for m in centre.on(h.topics.reply)), 10,
                 message="reply to tls-2")
        h.hub.record("test.ping", actor="test")
        wait_for(lambda: "safercom/v2/ward-7/hub-1/events" in spy_msgs, 10,
                 message="a neighbour may read hub-1's events")
        assert h.topics.cmd not in spy_msgs, "hub-2 read hub-1's commands"
        forged = [m for m in centre.on(h.topics.status) if b"forged" in m.payload]
        assert not forged, "hub-2 wrote hub-1's status"
    finally:
        spy.disconnect()
        spy.loop_stop()

    # A wrong password is refused and said so; the link keeps trying without crashing.
    secret.write_text("wrong\n")
    bad = local_hub(tmp_path / "bad", port, hub_id="hub-1", start=False, tls=True,
                    ca_file=str(certs / "ca.crt"), username="hub-1", password_file=str(secret))
    h.stop()
    cleanup.remove(h)
    bad.link.start()
    cleanup.append(bad)
    wait_for(lambda: "refused" in bad.link.status()["last_error"], 15, message="refusal reported")
    assert not bad.link.status()["connected"] and bad.link.alive()
    assert bad.hub.health["mqtt"].status == "fault"


def test_home_assistant_discovery_and_cap(tmp_path, broker, cleanup):
    centre = Centre(broker.host, broker.port, ("#",))
    cleanup.append(centre)
    h = local_hub(tmp_path / "hub", broker.port, homeassistant=True, cap=True, sirens=True)
    cleanup.append(h)
    t = h.topics
    node = homeassistant.node_id(h.hub.config)
    wait_for(lambda: len(centre.under("homeassistant/")) >= 4, 10, message="all discovery configs")
    # Home Assistant may start after the hub: the configs must be retained.
    late = Centre(broker.host, broker.port, ("homeassistant/#",))
    cleanup.append(late)
    wait_for(lambda: len(late.under("homeassistant/")) >= 4, 10, message="retained discovery configs")
    configs = {m.topic: m for m in late.under("homeassistant/")}
    assert set(configs) == {f"homeassistant/binary_sensor/{node}/button_gate/config",
                            f"homeassistant/binary_sensor/{node}/button_clinic/config",
                            f"homeassistant/sensor/{node}/alarm/config",
                            f"homeassistant/switch/{node}/siren/config"}
    uids = set()
    for topic, m in configs.items():
        assert m.retain
        c = m.json()
        assert re.fullmatch(r"homeassistant/(binary_sensor|sensor|switch)/[\w-]+/[\w-]+/config", topic)
        for key in ("name", "unique_id", "state_topic", "value_template", "device", "availability_topic"):
            assert key in c, (topic, key)
        assert c["device"]["identifiers"] == [node]
        assert c["state_topic"] == t.ha_state and c["availability_topic"] == t.status
        uids.add(c["unique_id"])
    assert len(uids) == 4

    env = jinja2.Environment()

    def render(cfg_topic: str, key: str, state: bytes) -> str:
        c = configs[cfg_topic].json()
        return env.from_string(c[key]).render(value_json=json.loads(state)).strip()

    alert = h.hub.raise_alert("gate", "panic", "Market gate")

    def gate_on() -> bool:
        states = centre.on(t.ha_state)
        return bool(states) and render(f"homeassistant/binary_sensor/{node}/button_gate/config",
                                       "value_template", states[-1].payload) == "ON"

    wait_for(gate_on, 10, message="gate binary sensor ON")
    last = centre.on(t.ha_state)[-1].payload
    assert render(f"homeassistant/binary_sensor/{node}/button_clinic/config", "value_template", last) == "OFF"
    assert render(f"homeassistant/sensor/{node}/alarm/config", "value_template", last) == "raised"
    assert render(f"homeassistant/switch/{node}/siren/config", "value_template", last) == "ON"
    status_msg = centre.on(t.status)[-1].payload
    alarm_cfg = f"homeassistant/sensor/{node}/alarm/config"
    assert render(alarm_cfg, "availability_template", status_msg) == "online"
    # The siren switch's OFF goes through the command path: silence.
    centre.publish(configs[f"homeassistant/switch/{node}/siren/config"].json()["command_topic"], b"OFF")
    wait_for(lambda: not h.sounders[0].is_on, 10, message="siren silenced from Home Assistant")
    wait_for(lambda: h.store.events(type_prefix="siren.silenced"), 10, message="silence recorded")

    h.processor.execute({"cmd": "ack", "alert": alert.id}, "manager")
    caps = wait_for(lambda: len(centre.on(t.cap)) >= 2 and centre.on(t.cap), 15, message="CAP messages")
    ns = {"cap": cap.CAP_NS}
    docs = [ET.fromstring(m.payload) for m in caps]
    for doc in docs:
        assert doc.tag == f"{{{cap.CAP_NS}}}alert"
        for tag in ("identifier", "sender", "sent", "status", "msgType", "scope"):
            el = doc.find(f"cap:{tag}", ns)
            assert el is not None and el.text, tag
        assert re.fullmatch(CAP_DATETIME, doc.findtext("cap:sent", "", ns)), doc.findtext("cap:sent", "", ns)
        assert doc.findtext("cap:status", "", ns) in ("Actual", "Exercise", "System", "Test", "Draft")
        assert not re.search(r"[\s,<&]", doc.findtext("cap:identifier", "", ns))
        assert not re.search(r"[\s,<&]", doc.findtext("cap:sender", "", ns))
        info = doc.find("cap:info", ns)
        assert info is not None
        assert info.findtext("cap:category", "", ns) in (
            "Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
            "CBRNE", "Other")
        assert info.findtext("cap:urgency", "", ns) in ("Immediate", "Expected", "Future", "Past", "Unknown")
        assert info.findtext("cap:severity", "", ns) in ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
        assert info.findtext("cap:certainty", "", ns) in ("Observed", "Likely", "Possible", "Unlikely",
                                                            "Unknown")
        assert info.findtext("cap:event", "", ns)
        assert info.find("cap:area/cap:areaDesc", ns).text == "Market gate"
    first, update = docs[0], docs[1]
    assert first.findtext("cap:msgType", "", ns) == "Alert"
    assert first.findtext("cap:identifier", "", ns) == alert.id
    assert update.findtext("cap:msgType", "", ns) == "Update"
    sender, ident, sent = update.findtext("cap:references", "", ns).split(",")
    assert (sender, ident, sent) == (first.findtext("cap:sender", "", ns), alert.id,
                                     first.findtext("cap:sent", "", ns))


def test_the_status_heartbeat_keeps_its_rate_whatever_the_drain_loop_latency(tmp_path, broker, cleanup):
    # Found by the day soak (tests/test_soak.py), which lost heartbeats on a loaded machine: each
    # was timed from the one before plus the drain loop's wake-up latency, so the latency added up.
    clock = ManualClock()
    cfg = load_config(hub_config(tmp_path, web=False, extra=mqtt_section(broker.port)))
    store = Store(cfg.store_path, clock=clock)
    cleanup.append(store)
    hub = Hub(cfg, store, clock=clock)
    link = MqttLink(cfg, hub, CommandProcessor(hub), clock=clock)
    beats = []
    publish_status = link._publish_status

    def counted() -> None:
        beats.append(clock.monotonic())
        publish_status()

    link._publish_status = counted
    link.start()
    cleanup.append(link)
    wait_for(lambda: link.status()["connected"], 15, message="connected")
    wait_for(lambda: beats, 10, message="the status published on connecting")
    start, first = clock.monotonic(), len(beats)  # the drain's schedule starts here: 60, 120, 180...
    interval = link.STATUS_INTERVAL
    # Late by a third of an interval, not at all, by all but a second of one, by half a second.
    for n, late in [(1, interval / 3), (2, 0.0), (3, interval - 1.0), (4, 0.5)]:
        clock.now = start + n * link.STATUS_INTERVAL + late  # the loop woke `late` s after the due time
        link._wake.set()
        wait_for(lambda n=n: len(beats) - first >= n, 10,
                 message=lambda n=n: f"heartbeat {n} (beats at {[b - start for b in beats]})")
    assert len(beats) - first == 4
