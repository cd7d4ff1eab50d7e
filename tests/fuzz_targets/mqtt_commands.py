"""atheris target: a payload on the hub's MQTT ``cmd`` topic and on a neighbour's ``events`` topic,
through the MQTT link's handlers (contract version 2), on a real store. Every command gets
exactly one reply, signed by the hub and valid under reply-v2.json; nothing crashes.

The fuzzer's bytes are laid over a command and an event that are validly signed (by the test
centre and by the neighbour), so the checks behind the signature are reached too: a byte that
changes a signed field must be refused as ``bad_signature``, never obeyed.

    python tests/fuzz_targets/mqtt_commands.py -max_total_time=600
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import _common
import paho.mqtt.client as mqtt

from hubd import contract
from hubd.commands import CommandProcessor
from hubd.config import load_config
from hubd.lifecycle import Hub
from hubd.radio.mqtt import MqttLink
from hubd.store import Store

LINK: MqttLink | None = None
REPLIES: list[tuple[str, bytes]] = []
SIGNED: list[bytes] = []


def setup() -> None:
    global LINK
    from mqtt_support import CENTRE_KEY, hub_key, mqtt_section, trust_section
    from support import hub_config

    tmp = Path(tempfile.mkdtemp(prefix="hubd-fuzz-"))
    cfg = load_config(hub_config(tmp, web=False, extra=mqtt_section(1, neighbours=["hub-2"])
                                 + trust_section(["hub-2"])))
    store = Store(cfg.store_path)
    hub = Hub(cfg, store, key=hub_key("hub-1"))
    LINK = MqttLink(cfg, hub, CommandProcessor(hub))
    original = LINK._publish

    def publish(topic: str, payload: bytes, **kw):  # noqa: ANN003, ANN202
        REPLIES.append((topic, payload))
        return original(topic, payload, **kw)

    LINK._publish = publish
    hub.raise_alert("gate", "panic", "Market gate")
    now = time.time()
    SIGNED.append(contract.dumps(contract.sign("command", contract.command_payload_v2(
        id="fuzz", cmd="ack", hub="hub-1", time=now + 10**6, by="operator:fuzz", alert="hub-1:999"),
        CENTRE_KEY)))
    alert = {"id": "hub-2:4", "hub": "hub-2", "seq": 4, "kind": "panic", "source": "gate", "zone": "Gate",
             "state": "raised", "outcome": None, "level": 0, "silent": False, "raised_at": now,
             "updated_at": now, "severity": 1}
    SIGNED.append(contract.dumps(contract.sign("event", contract.event_envelope_v2(
        id="hub-2:4:raised:0", type="alert.raised", time=now, ward="ward-7", hub="hub-2", actor="gate",
        data={}, alert=alert), hub_key("hub-2"))))


def overlay(base: bytes, data: bytes) -> bytes:
    """``data`` laid over ``base`` at the offset its first two bytes name (or ``data`` itself)."""
    if len(data) < 3 or data[0] & 1:
        return data[1:]
    at = int.from_bytes(data[1:3], "big") % (len(base) + 1)
    return base[:at] + data[3:] + base[at + len(data) - 3:]


def test_one_input(data: bytes) -> None:
    assert LINK is not None
    msg = mqtt.MQTTMessage(topic=LINK.topics.cmd.encode())
    msg.payload = overlay(SIGNED[0], data)
    REPLIES.clear()
    LINK._on_message(LINK.client, None, msg)
    assert len(REPLIES) == 1
    reply = json.loads(REPLIES[0][1])
    assert not contract.problems("reply-v2", reply), reply
    assert reply["ok"] or reply["error"]["code"] != "internal", reply
    LINK.client._out_messages.clear()  # the link is never connected: do not let paho's queue grow
    event = mqtt.MQTTMessage(topic=LINK.topics.of("hub-2").events.encode())
    event.payload = overlay(SIGNED[1], data)
    LINK._on_message(LINK.client, None, event)
    assert not LINK.store.query("SELECT 1 FROM events WHERE trust IS NOT NULL AND id LIKE 'hub-1:%'")


if __name__ == "__main__":
    _common.run(test_one_input, setup)
