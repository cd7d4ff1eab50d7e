"""The MQTT link's side outputs on their own (no broker): snapshots, CAP and Home Assistant,
and which of them a configuration turns on."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from mqtt_support import CAP_DATETIME, mqtt_section
from support import hub_config

from hubd.commands import CommandProcessor
from hubd.config import Config, load_config
from hubd.contract import Topics
from hubd.lifecycle import Hub
from hubd.model import Event
from hubd.radio.cap import CAP_NS, CapOutput
from hubd.radio.homeassistant import HomeAssistantOutput
from hubd.radio.mqtt import standard_outputs, topics_for
from hubd.radio.mqtt_output import Message
from hubd.radio.snapshots import SnapshotOutput
from hubd.store import Store

TOPICS = Topics("safercom/v2", "ward-7", "hub-1")


def envelope(type_: str = "alert.raised", hub: str = "hub-1", **extra: Any) -> dict[str, Any]:
    alert = {"id": f"{hub}:3", "hub": hub, "seq": 3, "kind": "panic", "source": "gate", "zone": "Market gate",
             "state": "raised", "outcome": None, "level": 0, "silent": False, "raised_at": 1.7e9,
             "updated_at": 1.7e9, "severity": 1}
    return {"v": 2, "id": f"{hub}:3:raised:0", "type": type_, "time": 1.7e9, "ward": "ward-7", "hub": hub,
            "actor": "button:gate", "data": {}, "alert": alert, **extra}


def event(type_: str) -> Event:
    return Event(id="hub-1:e1", type=type_, time=1.7e9, hub="hub-1", actor="test", alert_id=None, data={})


def config(tmp_path: Path, **mqtt: Any) -> Config:
    return load_config(hub_config(tmp_path, web=False, extra=mqtt_section(1883, **mqtt)))


# --- snapshots ---------------------------------------------------------------------------------


def test_a_snapshot_event_of_this_hub_carries_its_jpeg(tmp_path: Path) -> None:
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    out = SnapshotOutput("hub-1", tmp_path, TOPICS.snapshot)
    env = envelope("alert.snapshot", data={"path": "snapshots/a.jpg"})
    assert out.messages(env) == [Message("safercom/v2/ward-7/hub-1/snapshots/hub-1:3", b"\xff\xd8jpeg",
                                         "image/jpeg")]
    assert out.messages(envelope("alert.raised", data={"path": "snapshots/a.jpg"})) == []
    assert out.messages(envelope("alert.snapshot", hub="hub-2", data={"path": "snapshots/a.jpg"})) == []


def test_a_snapshot_outside_the_state_directory_or_gone_is_not_sent(tmp_path: Path, caplog) -> None:
    (tmp_path / "secret.jpg").write_bytes(b"not for the centre")
    out = SnapshotOutput("hub-1", tmp_path / "state", TOPICS.snapshot)
    (tmp_path / "state").mkdir()
    assert out.messages(envelope("alert.snapshot", data={"path": "../secret.jpg"})) == []
    assert "outside the state directory" in caplog.text
    assert out.messages(envelope("alert.snapshot", data={"path": "snapshots/gone.jpg"})) == []
    assert "is gone" in caplog.text
    assert out.messages(envelope("alert.snapshot", data={})) == []
    assert "has no path" in caplog.text


# --- CAP ---------------------------------------------------------------------------------------


def test_cap_goes_with_this_hubs_alert_transitions_only() -> None:
    out = CapOutput(TOPICS.cap, "hub-1", hub_name="Hub one", location="Market")
    [m] = out.messages(envelope())
    assert m.topic == "safercom/v2/ward-7/hub-1/cap" and m.content_type == "application/cap+xml"
    assert f"<alert xmlns=\"{CAP_NS}\">".encode() in m.payload and b"<senderName>Hub one" in m.payload
    assert out.messages(envelope(hub="hub-2")) == [], "a relayed alert is its origin's to announce"
    assert out.messages({**envelope(), "type": "siren.test", "alert": None}) == []


def test_cap_times_are_utc_written_as_cap_requires() -> None:
    ns = {"cap": CAP_NS}
    out = CapOutput(TOPICS.cap, "hub-1")
    acked = envelope("alert.acknowledged", id="hub-1:3:acknowledged:0", time=1.7e9 + 75)
    raised, update = (ET.fromstring(out.messages(env)[0].payload) for env in (envelope(), acked))
    assert raised.findtext("cap:sent", "", ns) == "2023-11-14T22:13:20-00:00"
    assert update.findtext("cap:sent", "", ns) == "2023-11-14T22:14:35-00:00"
    assert update.findtext("cap:references", "", ns) == "hubd.hub-1@ward-7,hub-1:3,2023-11-14T22:13:20-00:00"
    assert re.fullmatch(CAP_DATETIME, update.findtext("cap:sent", "", ns))
    assert not re.fullmatch(CAP_DATETIME, "2023-11-14T22:14:35+00:00"), "CAP 1.2: UTC is -00:00"
    assert re.fullmatch(CAP_DATETIME, "2023-11-15T00:14:35+02:00")


# --- Home Assistant ----------------------------------------------------------------------------


class FakeCore:
    def __init__(self) -> None:
        self.commands: list[tuple[dict[str, Any], str]] = []
        self.siren_on = False

    def status(self) -> dict[str, Any]:
        return {"open_alerts": [{"source": "gate", "state": "raised", "remote": False}],
                "links": {"sirens": {"main": {"on": self.siren_on}}}}

    def execute(self, request: dict[str, Any], actor: str) -> dict[str, Any]:
        self.commands.append((request, actor))
        self.siren_on = request["cmd"] == "siren_test"
        return {"ok": True, "result": None}


def home_assistant(tmp_path: Path) -> tuple[HomeAssistantOutput, FakeCore, list[Message]]:
    cfg = config(tmp_path, homeassistant=True)
    core = FakeCore()
    return HomeAssistantOutput(cfg, topics_for(cfg), core.status, core.execute), core, []


def test_home_assistant_announces_itself_at_every_connect(tmp_path: Path) -> None:
    ha, _, sent = home_assistant(tmp_path)
    assert ha.subscriptions() == ["safercom/v2/ward-7/hub-1/cmd/siren"]
    for _ in range(2):
        sent.clear()
        ha.on_connect(sent.append)
        assert len(sent) == 4 and all(m.retain and m.topic.endswith("/config") for m in sent)
        assert all(m.topic.startswith("homeassistant/") for m in sent)


def test_home_assistant_state_follows_alerts_and_sirens(tmp_path: Path) -> None:
    ha, core, sent = home_assistant(tmp_path)
    ha.publish_due(sent.append, periodic=False)
    [first] = sent
    assert first.topic == "safercom/v2/ward-7/hub-1/ha/state" and first.retain
    assert json.loads(first.payload) == {"alarm": "raised", "siren": "OFF",
                                         "buttons": {"gate": "ON", "clinic": "OFF"}}
    sent.clear()
    ha.publish_due(sent.append, periodic=False)
    assert sent == [], "nothing changed: nothing published"
    assert ha.on_event(event("button.pressed")) is False
    assert ha.on_event(event("siren.on")) is True
    ha.publish_due(sent.append, periodic=False)
    assert len(sent) == 1
    ha.publish_due(sent.append, periodic=True)
    assert len(sent) == 2, "published again every status interval"


@pytest.mark.parametrize(("word", "command"), [(b"ON", "siren_test"), (b" off\n", "silence")])
def test_home_assistant_siren_switch_goes_through_the_command_path(tmp_path: Path, word: bytes,
                                                                   command: str) -> None:
    ha, core, sent = home_assistant(tmp_path)
    ha.publish_due(sent.append, periodic=False)
    assert ha.on_message(ha.subscriptions()[0], word) is True
    assert core.commands == [({"cmd": command}, "homeassistant")]
    ha.publish_due(sent.append, periodic=False)
    assert json.loads(sent[-1].payload)["siren"] == ("ON" if command == "siren_test" else "OFF")


def test_home_assistant_ignores_other_siren_words(tmp_path: Path, caplog) -> None:
    ha, core, _ = home_assistant(tmp_path)
    assert ha.on_message(ha.subscriptions()[0], b"BLINK") is False
    assert core.commands == [] and "expected ON or OFF" in caplog.text


# --- what a configuration turns on -------------------------------------------------------------


@pytest.mark.parametrize(("options", "kinds"), [
    ({}, [SnapshotOutput]),
    ({"cap": True}, [SnapshotOutput, CapOutput]),
    ({"cap": True, "homeassistant": True}, [SnapshotOutput, CapOutput, HomeAssistantOutput]),
])
def test_standard_outputs_follow_the_configuration(tmp_path: Path, options: dict[str, bool],
                                                   kinds: list[type]) -> None:
    cfg = config(tmp_path, **options)
    store = Store(cfg.store_path)
    try:
        hub = Hub(cfg, store)
        outputs = standard_outputs(cfg, topics_for(cfg), hub, CommandProcessor(hub))
        assert [type(o) for o in outputs] == kinds
    finally:
        store.close()
