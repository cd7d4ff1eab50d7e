"""Home Assistant MQTT discovery: the hub appears as one device.

Entities: a binary sensor per button (on while that button has an open alert), the
alarm state (clear / raised / acknowledged) and a siren switch (on = a test chirp,
off = silence; both go through the hub's command path).  Discovery configs are
retained under ``homeassistant/<component>/hubd_<ward>_<hub>/<object>/config``; the
state is one retained JSON document on ``<base>/ha/state``; availability follows the
hub's status topic, so the Last Will marks every entity unavailable.
"""

from __future__ import annotations

from typing import Any

from hubd import __version__
from hubd.config import Config
from hubd.contract import Topics

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
