"""atheris target: a command payload on the hub's MQTT ``cmd`` topic, through the MQTT link's
handler and the command path, on a real store; every payload gets exactly one valid reply.

    python tests/fuzz_targets/mqtt_commands.py -max_total_time=600
"""

from __future__ import annotations

import json
import tempfile
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


def setup() -> None:
    global LINK
    from mqtt_support import mqtt_section
    from support import hub_config

    tmp = Path(tempfile.mkdtemp(prefix="hubd-fuzz-"))
    cfg = load_config(hub_config(tmp, web=False, extra=mqtt_section(1, neighbours=["hub-2"])))
    store = Store(cfg.store_path)
    hub = Hub(cfg, store)
    LINK = MqttLink(cfg, hub, CommandProcessor(hub))
    original = LINK._publish

    def publish(topic: str, payload: bytes, **kw):  # noqa: ANN003, ANN202
        REPLIES.append((topic, payload))
        return original(topic, payload, **kw)

    LINK._publish = publish
    hub.raise_alert("gate", "panic", "Market gate")


def test_one_input(data: bytes) -> None:
    assert LINK is not None
    msg = mqtt.MQTTMessage(topic=LINK.topics.cmd.encode())
    msg.payload = data
    REPLIES.clear()
    LINK._on_message(LINK.client, None, msg)
    assert len(REPLIES) == 1
    reply = json.loads(REPLIES[0][1])
    assert not contract.problems("reply", reply), reply
    assert reply["ok"] or reply["error"]["code"] != "internal", reply
    LINK.client._out_messages.clear()  # the link is never connected: do not let paho's queue grow
    event = mqtt.MQTTMessage(topic=LINK.topics.of("hub-2").events.encode())
    event.payload = data
    LINK._on_message(LINK.client, None, event)


if __name__ == "__main__":
    _common.run(test_one_input, setup)
