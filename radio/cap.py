"""CAP 1.2 (OASIS Common Alerting Protocol) messages for a hub's alerts.

One ``<alert>`` per alert transition, published on ``<root>/<ward>/<hub>/cap`` so that
CAP-consuming alerting systems can take hub alerts directly.  The first message of an
alert has the alert id as identifier; later ones (escalated, acknowledged, resolved,
cancelled) have the event id and reference the first.  :class:`CapOutput` is the MQTT
link's side output that publishes them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from hubd.radio.mqtt_output import Message, MqttOutput

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"

#: Event types that produce a CAP message.
CAP_EVENT_TYPES = frozenset({"alert.raised", "alert.escalated", "alert.acknowledged", "alert.resolved",
                             "alert.cancelled"})

_CATEGORY = {"panic": "Security", "medical": "Health", "fire": "Fire", "intrusion": "Security",
             "tamper": "Security", "fault": "Infra", "test": "Other"}
_SEVERITY = {1: "Severe", 2: "Moderate", 3: "Minor", 4: "Minor"}
_EVENT = {"panic": "Panic alarm", "medical": "Medical emergency", "fire": "Fire alarm",
          "intrusion": "Intrusion alarm", "tamper": "Equipment tamper", "fault": "Equipment fault",
          "test": "Test alarm"}


def cap_time(t: float) -> str:
    """CAP's dateTime: seconds precision, an explicit offset, never 'Z'; UTC is written
    "-00:00", as CAP 1.2 (section 3.3.2) requires."""
    return datetime.fromtimestamp(int(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S-00:00")


def sender(ward: str, hub: str) -> str:
    return f"hubd.{hub}@{ward}"


def cap_alert(envelope: dict[str, Any], *, hub_name: str = "", location: str = "") -> bytes | None:
    """The CAP XML for an alert event envelope, or None for events that have none."""
    alert = envelope.get("alert")
    if envelope.get("type") not in CAP_EVENT_TYPES or not isinstance(alert, dict):
        return None
    kind = str(alert["kind"])
    state = alert["state"]
    outcome = alert.get("outcome")
    exercise = kind == "test" or outcome == "test"
    first = envelope["type"] == "alert.raised"
    who = sender(envelope["ward"], alert["hub"])

    ET.register_namespace("", CAP_NS)
    root = ET.Element(f"{{{CAP_NS}}}alert")

    def sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
        el.text = text
        return el

    sub(root, "identifier", alert["id"] if first else envelope["id"])
    sub(root, "sender", who)
    sub(root, "sent", cap_time(envelope["time"]))
    sub(root, "status", "Exercise" if exercise else "Actual")
    if first:
        msg_type = "Alert"
    elif state == "cancelled" or outcome == "false_alarm":
        msg_type = "Cancel"
    else:
        msg_type = "Update"
    sub(root, "msgType", msg_type)
    sub(root, "scope", "Public")
    if not first:
        sub(root, "references", f"{who},{alert['id']},{cap_time(alert['raised_at'])}")

    info = ET.SubElement(root, f"{{{CAP_NS}}}info")
    sub(info, "language", "en")
    sub(info, "category", _CATEGORY.get(kind, "Other"))
    sub(info, "event", _EVENT.get(kind, kind))
    closed = state in ("resolved", "cancelled")
    if closed:
        sub(info, "responseType", "AllClear")
    sub(info, "urgency", "Past" if closed else "Immediate")
    sub(info, "severity", _SEVERITY.get(int(alert.get("severity") or 4), "Unknown"))
    sub(info, "certainty", "Likely" if state == "raised" else "Observed")
    sub(info, "senderName", hub_name or alert["hub"])
    where = alert.get("zone") or location or hub_name or alert["hub"]
    headline = f"{_EVENT.get(kind, kind)} at {where}: {state}"
    if alert.get("level"):
        headline += f" (escalation level {alert['level']})"
    sub(info, "headline", headline[:160])
    sub(info, "description", f"Alert {alert['id']} from hub {alert['hub']} ({kind}, {state}"
                             + (f", {outcome}" if outcome else "") + f"); source {alert.get('source', '')}.")
    param = ET.SubElement(info, f"{{{CAP_NS}}}parameter")
    sub(param, "valueName", "hubd-alert-id")
    sub(param, "value", alert["id"])
    area = ET.SubElement(info, f"{{{CAP_NS}}}area")
    sub(area, "areaDesc", where)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


class CapOutput(MqttOutput):
    """Adds the CAP message to each of this hub's own alert transitions.

    :param topic: the hub's CAP topic (``Topics.cap``)
    :param hub_id: this hub (alerts relayed from others are theirs to announce)
    :param hub_name: the sender's name in the message
    :param location: the area, when the alert names no zone
    """

    def __init__(self, topic: str, hub_id: str, *, hub_name: str = "", location: str = ""):
        self.topic = topic
        self.hub_id = hub_id
        self.hub_name = hub_name
        self.location = location

    def messages(self, envelope: dict[str, Any]) -> list[Message]:
        if envelope.get("hub") != self.hub_id:
            return []
        xml = cap_alert(envelope, hub_name=self.hub_name, location=self.location)
        return [] if xml is None else [Message(self.topic, xml, "application/cap+xml")]
