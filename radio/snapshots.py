"""Camera snapshots over MQTT: the JPEG of this hub's ``alert.snapshot`` event on
``<base>/snapshots/<alert-id>``, published with the event (an MQTT link side output)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubd.radio.mqtt_output import Message, MqttOutput

log = logging.getLogger("hubd.mqtt")


class SnapshotOutput(MqttOutput):
    """Adds the JPEG to this hub's own ``alert.snapshot`` events.

    :param hub_id: this hub (relayed events carry no file of ours)
    :param state_dir: the state directory the events' paths are relative to
    :param topic: the topic of an alert's snapshots (``Topics.snapshot``)
    """

    def __init__(self, hub_id: str, state_dir: Path, topic: Callable[[str], str]):
        self.hub_id = hub_id
        self.state_dir = state_dir
        self.topic = topic

    def messages(self, envelope: dict[str, Any]) -> list[Message]:
        if envelope.get("type") != "alert.snapshot" or envelope.get("hub") != self.hub_id:
            return []
        jpeg = self.read(envelope)
        alert_id = (envelope.get("alert") or {}).get("id")
        if jpeg is None or not alert_id:
            return []
        return [Message(self.topic(alert_id), jpeg, "image/jpeg")]

    def read(self, envelope: dict[str, Any]) -> bytes | None:
        """The JPEG a snapshot event names, if it is still there and inside the state directory."""
        rel = (envelope.get("data") or {}).get("path")
        if not isinstance(rel, str):
            log.warning("snapshot event %s has no path", envelope["id"])
            return None
        base = self.state_dir.resolve()
        path = (base / rel).resolve()
        if not path.is_relative_to(base):
            log.warning("snapshot event %s names a path outside the state directory: %s", envelope["id"], rel)
            return None
        try:
            return path.read_bytes()
        except OSError as e:
            # Retention may have removed it; the event still goes, so the centre knows it existed.
            log.warning("snapshot %s for %s is gone: %s", rel, envelope["id"], e.strerror)
            return None
