"""Home Assistant MQTT discovery: the hub appears as one device.

Entities: a binary sensor per button (on while that button has an open alert), the
alarm state (clear / raised / acknowledged) and a siren switch (on = a test chirp,
off = silence; both go through the hub's command path).  Discovery configs are
retained under ``homeassistant/<component>/hubd_<ward>_<hub>/<object>/config``; the
state is one retained JSON document on ``<base>/ha/state``; availability follows the
hub's status topic, so the Last Will marks every entity unavailable.
:class:`HomeAssistantOutput` is the MQTT link's side output that publishes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hubd import __version__, contract
from hubd.config import Config
from hubd.contract import Topics
from hubd.model import Event
from hubd.radio.mqtt_output import Message, MqttOutput, Publish

log = logging.getLogger("hubd.mqtt")

DISCOVERY_PREFIX = "homeassistant"


def node_id(config: Config) -> str:
    return f"hubd_{config.hub.ward}_{config.hub.id}"


def discovery_messages(config: Config, topics: Topics) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, payload)`` of every discovery config (publish retained)."""
    node = node_id(config)
    device = {"identifiers": [node], "name": config.hub.name or f"Hub {config.hub.id}",
              "manufacturer": "hubd", "model": "Ward hub", "sw_version": __version__,
              "suggested_area": config.hub.location or None}
    device = {k: v for k, v in device.items() if v is not None}
    common = {"device": device, "state_topic": topics.ha_state,
              "availability_topic": topics.status,
              "availability_template": "{{ 'online' if value_json.online else 'offline' }}"}
    out: list[tuple[str, dict[str, Any]]] = []
    for b in config.buttons:
        out.append((f"{DISCOVERY_PREFIX}/binary_sensor/{node}/button_{b.name}/config", {
            **common, "name": f"Button {b.name}" + (f" ({b.zone})" if b.zone else ""),
            "unique_id": f"{node}_button_{b.name}", "device_class": "safety",
            "value_template": f"{{{{ value_json.buttons['{b.name}'] }}}}",
            "payload_on": "ON", "payload_off": "OFF"}))
    out.append((f"{DISCOVERY_PREFIX}/sensor/{node}/alarm/config", {
        **common, "name": "Alarm state", "unique_id": f"{node}_alarm", "device_class": "enum",
        "options": ["clear", "raised", "acknowledged"], "value_template": "{{ value_json.alarm }}"}))
    out.append((f"{DISCOVERY_PREFIX}/switch/{node}/siren/config", {
        **common, "name": "Siren", "unique_id": f"{node}_siren", "icon": "mdi:alarm-light",
        "value_template": "{{ value_json.siren }}", "command_topic": topics.ha_siren_set,
        "payload_on": "ON", "payload_off": "OFF", "state_on": "ON", "state_off": "OFF"}))
    return out


def state_payload(config: Config, status: dict[str, Any]) -> dict[str, Any]:
    """The state document the entities read, from ``Hub.status()``."""
    local = [a for a in status.get("open_alerts", []) if not a.get("remote")]
    sources = {a["source"] for a in local}
    if any(a["state"] == "raised" for a in local):
        alarm = "raised"
    elif local:
        alarm = "acknowledged"
    else:
        alarm = "clear"
    sirens = status.get("links", {}).get("sirens", {})
    on = isinstance(sirens, dict) and any(isinstance(s, dict) and s.get("on") for s in sirens.values())
    return {"alarm": alarm, "siren": "ON" if on else "OFF",
            "buttons": {b.name: "ON" if b.name in sources else "OFF" for b in config.buttons}}


class HomeAssistantOutput(MqttOutput):
    """Discovery at every connect; the state document whenever an alert or a siren changes
    (and once every status interval); the siren switch's commands.

    :param config: the hub configuration (its buttons, name and location)
    :param topics: the hub's topics
    :param status: ``Hub.status``, read for the state document
    :param execute: ``CommandProcessor.execute``, for the siren switch
    """

    #: The actor of the siren switch's commands.
    ACTOR = "homeassistant"

    def __init__(self, config: Config, topics: Topics, status: Callable[[], dict[str, Any]],
                 execute: Callable[[dict[str, Any], str], dict[str, Any]]):
        self.config = config
        self.topics = topics
        self.status = status
        self.execute = execute
        self._dirty = True  # the state document is out of date

    def subscriptions(self) -> list[str]:
        return [self.topics.ha_siren_set]

    def on_connect(self, publish: Publish) -> None:
        for topic, payload in discovery_messages(self.config, self.topics):
            publish(Message(topic, contract.dumps(payload), retain=True))
        self._dirty = True

    def on_event(self, event: Event) -> bool:
        if event.type.startswith("alert.") or event.type.startswith("siren."):
            self._dirty = True
        return self._dirty

    def publish_due(self, publish: Publish, periodic: bool) -> None:
        if periodic:
            self._dirty = True
        if self._dirty:
            self._dirty = False
            state = state_payload(self.config, self.status())
            publish(Message(self.topics.ha_state, contract.dumps(state), retain=True))

    def on_message(self, topic: str, payload: bytes) -> bool:
        word = payload.decode("utf-8", "replace").strip().upper()
        if word not in ("ON", "OFF"):
            log.warning("Home Assistant siren command %r ignored: expected ON or OFF", word[:20])
            return False
        reply = self.execute({"cmd": "siren_test" if word == "ON" else "silence"}, self.ACTOR)
        if not reply["ok"]:
            log.warning("Home Assistant siren %s failed: %s", word, reply["error"]["message"])
        self._dirty = True
        return True
