"""Helpers for the MQTT suites: a recording subscriber (the 'centre') and in-process hubs."""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import hub_config, wait_for

from hubd import contract
from hubd.commands import CommandProcessor
from hubd.config import load_config
from hubd.lifecycle import Hub
from hubd.radio.mqtt import MqttLink
from hubd.store import Store

#: CAP 1.2's dateTime (section 3.3.2): the schema's pattern, \d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-,+]\d\d:\d\d,
#: with the rule the schema cannot say: UTC "MUST be represented as -00:00" (so never +00:00).
CAP_DATETIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:-\d\d:\d\d|\+(?!00:00)\d\d:\d\d)"

#: mosquitto started as root drops to the "mosquitto" user and then cannot write under the
#: test's directories. tests/support.py's Mosquitto handles it; configs written by hand need it.
AS_ROOT = "user root\n" if os.geteuid() == 0 else ""

#: What docs/mqtt-contract.md asks of the central broker: a subscriber that falls behind a burst
#: must not have messages dropped (mosquitto's default queue is 1000 per client).
CENTRAL = "max_queued_bytes 0\n"  # max_queued_messages 0 is in every test broker


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    properties: Any = None

    def json(self) -> Any:
        return json.loads(self.payload)


class Centre:
    """A real paho v5 subscriber with a persistent session that records everything it hears."""

    def __init__(self, host: str, port: int, topics: tuple[str, ...] = ("#",), *,
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None):
        self.messages: list[Msg] = []
        self._lock = threading.Lock()
        self.topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"centre-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(host, port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "centre could not subscribe"

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:  # noqa: ANN001
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self._lock:
            self.messages.append(Msg(msg.topic, bytes(msg.payload), bool(msg.retain),
                                     getattr(msg, "properties", None)))

    def on(self, topic: str) -> list[Msg]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def under(self, prefix: str) -> list[Msg]:
        with self._lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.on(topic)]

    def request(self, topic: str, payload: bytes, response_topic: str | None = None,
                correlation: bytes | None = None, timeout: float = 15) -> dict[str, Any]:
        """Send a command and wait for the reply carrying our correlation data."""
        correlation = correlation or uuid.uuid4().bytes
        response_topic = response_topic or topic.rsplit("/", 1)[0] + "/reply"
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=props)

        def reply() -> dict[str, Any] | None:
            for m in self.on(response_topic):
                if m.properties is not None and getattr(m.properties, "CorrelationData", None) == correlation:
                    return m.json()
            return None

        return wait_for(reply, timeout, message=f"reply on {response_topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


#: The centre's signing key in these tests (its public half is every test hub's [trust] centre).
CENTRE_KEY = contract.generate_private_key()
_HUB_KEYS: dict[str, Any] = {}


def hub_key(hub_id: str) -> Any:
    """The signing key of the test hub ``hub_id`` (the same in every test of this run)."""
    if hub_id not in _HUB_KEYS:
        _HUB_KEYS[hub_id] = contract.generate_private_key()
    return _HUB_KEYS[hub_id]


def trust_section(hubs: tuple[str, ...] | list[str] = (), *, centre: bool = True) -> str:
    """``[trust]`` with the public keys of these test hubs and of the test centre."""
    lines = ["[trust]"]
    if centre:
        lines.append(f'centre = "{contract.public_key_text(CENTRE_KEY)}"')
    if hubs:
        keys = ", ".join(f'"{h}" = "{contract.public_key_text(hub_key(h))}"' for h in hubs)
        lines.append(f"hubs = {{ {keys} }}")
    return "\n".join(lines) + "\n"


def write_hub_key(state_dir: Path, hub_id: str) -> None:
    """Put the test key of ``hub_id`` where ``hubd run`` looks for it."""
    path = Path(state_dir) / "signing.key"
    if not path.exists():
        contract.save_private_key(hub_key(hub_id), path)


def command(hub: str, cmd: str, *, id: str | None = None, by: str = "operator:test",
            time: float | None = None, key: Any = None, **args: Any) -> bytes:
    """A command of contract version 2, signed with the test centre's key (or ``key``)."""
    import time as _time

    payload = contract.command_payload_v2(id=id or uuid.uuid4().hex, cmd=cmd, hub=hub,
                                          time=_time.time() if time is None else time, by=by, **args)
    return contract.dumps(contract.sign("command", payload, key or CENTRE_KEY))


def signed_event(hub: str, envelope: dict[str, Any]) -> bytes:
    """``envelope`` signed by the test hub ``hub``."""
    return contract.dumps(contract.sign("event", envelope, hub_key(hub)))


def mqtt_section(port: int, **options: Any) -> str:
    lines = ["[mqtt]", 'host = "127.0.0.1"', f"port = {port}"]
    for k, v in options.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {str(v).lower()}")
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, list | tuple):
            lines.append(f"{k} = {json.dumps(list(v))}")
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


@dataclass
class LocalHub:
    """A hub core and its MQTT link in this process (no sensors)."""

    hub: Hub
    link: MqttLink
    store: Store
    processor: CommandProcessor
    sounders: list[Any] = field(default_factory=list)

    @property
    def topics(self) -> contract.Topics:
        return self.link.topics

    def stop(self) -> None:
        self.link.stop()
        self.hub.stop()
        for s in self.sounders:
            s.device.close()
        self.store.close()


def local_hub(tmp: Path, port: int, *, hub_id: str = "hub-1", sirens: bool = False, start: bool = True,
              trusted: tuple[str, ...] | list[str] | None = None, **mqtt_options: Any) -> LocalHub:
    """An in-process hub and its MQTT link. It signs with ``hub_key(hub_id)`` and believes the test
    centre and the test hubs ``trusted`` (by default its neighbours)."""
    trusted = mqtt_options.get("neighbours", ()) if trusted is None else trusted
    cfg_path = hub_config(tmp, hub_id=hub_id, web=False,
                          extra=mqtt_section(port, **mqtt_options) + trust_section(trusted))
    cfg = load_config(cfg_path)
    store = Store(cfg.store_path)
    hub = Hub(cfg, store, key=hub_key(hub_id))
    sounders = []
    if sirens:
        from hubd.sensors.gpio import make_pin_factory
        from hubd.sensors.sirens import Siren

        factory = make_pin_factory("mock")
        for sc in cfg.sirens:
            s = Siren(sc, factory)
            hub.add_sounder(s)
            sounders.append(s)
        # As the daemon wires it (hubd/daemon.py _start_sensors).
        hub.add_status_provider("sirens", lambda: {s.name: {"on": s.is_on} for s in sounders})
    processor = CommandProcessor(hub)
    link = MqttLink(cfg, hub, processor)
    link.RECONNECT_MIN = 0.2
    link.RECONNECT_MAX = 2.0
    hub.start()
    if start:
        link.start()
        wait_for(lambda: link.status()["connected"], 15, message=f"{hub_id} connected")
    return LocalHub(hub, link, store, processor, sounders)


def assert_valid(name: str, payload: Any) -> None:
    errors = contract.problems(name, payload)
    assert not errors, f"{name} payload does not match its schema: {errors}\n{payload}"


def undelivered(store: Store) -> int:
    return store.outbox_stats().get("mqtt", {}).get("depth", 0)

