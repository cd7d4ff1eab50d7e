"""Hub configuration: one TOML file loaded into frozen dataclasses.

The dataclasses below are the single source of truth.  A JSON Schema is derived
from them (``config_schema()``) and the file is validated against it with
``jsonschema`` so that every error names its key path and what was expected;
checks that a schema cannot express (a pin used twice, a secret file with loose
permissions) follow in ``_cross_check``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shlex
import stat
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema

from hubd.contract import COMMAND_WINDOW, HUB_PATTERN, WARD_PATTERN, ContractError, parse_public_key

ALERT_KINDS = ("panic", "medical", "fire", "intrusion", "tamper", "fault", "test")


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def _meta(doc: str, **schema: Any) -> dict[str, Any]:
    return {"doc": doc, "schema": schema}


@dataclass(frozen=True)
class HubIdentity:
    ward: str = field(metadata=_meta("Ward identifier, used in MQTT topics",
                                     pattern=f"^{WARD_PATTERN}$"))
    id: str = field(metadata=_meta("Hub identifier, unique in the network; prefixes alert ids",
                                   pattern=f"^{HUB_PATTERN}$"))
    name: str = field(default="", metadata=_meta("Display name"))
    location: str = field(default="", metadata=_meta("Where the hub is, in words"))
    state_dir: str = field(default="/var/lib/hubd", metadata=_meta("Store, snapshots, secrets"))
    runtime_dir: str = field(default="", metadata=_meta(
        "Control socket directory; empty means $RUNTIME_DIRECTORY, else <state_dir>/run"))


@dataclass(frozen=True)
class ButtonConfig:
    name: str = field(metadata=_meta("Button name, used by `hubd press`", pattern=r"^[A-Za-z0-9_-]{1,32}$"))
    pin: int = field(metadata=_meta("BCM GPIO number", minimum=0, maximum=53))
    zone: str = field(default="", metadata=_meta("Zone label shown with its alerts"))
    kind: Literal["panic", "medical", "fire", "intrusion", "tamper", "fault", "test"] = field(
        default="panic", metadata=_meta("Alert kind this button raises"))
    pull_up: bool = field(default=True, metadata=_meta("Internal pull-up (button shorts to ground)"))
    active_high: bool = field(default=False, metadata=_meta(
        "True if the line reads high when pressed: without pull_up a switch to 3V3; with pull_up a "
        "normally-closed button to ground, so a cut wire reads as pressed (a fault, never silence)"))
    debounce: float = field(default=0.05, metadata=_meta(
        "Seconds the line must stay released before a press is over (a press counts on its first edge, so "
        "a bounce train is one press)", minimum=0, maximum=5))
    hold_time: float = field(default=0.0, metadata=_meta(
        "Seconds the button must be held before an alert (0 = immediate)", minimum=0, maximum=30))
    silent_presses: int = field(default=0, metadata=_meta(
        "Presses within silent_window that raise a silent (duress) alert; 0 = off", minimum=0, maximum=5))
    silent_window: float = field(default=1.5, metadata=_meta("Seconds for the silent gesture",
                                                             minimum=0.1, maximum=10))
    cancel_hold: float = field(default=2.0, metadata=_meta(
        "Seconds to hold the same button again to cancel its alert inside the cancel window", minimum=0.1,
        maximum=30))
    stuck_after: float = field(default=60.0, metadata=_meta(
        "Seconds active after which the input is a fault (stuck or shorted)", minimum=1, maximum=3600))
    repeat_escalates: bool = field(default=False, metadata=_meta(
        "Pressing again while this button's alert is unacknowledged raises its level (at most every 30 s)"))

    def __post_init__(self) -> None:
        if self.silent_presses and not self.hold_time:
            raise ConfigError([f"buttons: {self.name!r}: silent_presses needs hold_time > 0 (the silent "
                               f"gesture is made of presses shorter than hold_time; with hold_time 0 "
                               f"every press raises a loud alert at once)"])


SirenPattern = Literal["continuous", "pulsed", "fast", "slow", "temporal3", "off"]


def _patterns(doc: str) -> dict[str, Any]:
    return _meta(doc + "; one pattern per escalation level, the last one repeats for higher levels. "
                 "continuous, pulsed (0.5 s on/off), fast (0.2 s), slow (1 s), temporal3 (fire: three "
                 "0.5 s beeps, 1.5 s pause) or off", minItems=1)


@dataclass(frozen=True)
class SirenPatterns:
    panic: tuple[SirenPattern, ...] = field(default=("continuous",), metadata=_patterns("Panic alerts"))
    medical: tuple[SirenPattern, ...] = field(default=("pulsed", "continuous"), metadata=_patterns(
        "Medical alerts"))
    fire: tuple[SirenPattern, ...] = field(default=("temporal3",), metadata=_patterns("Fire alerts"))
    intrusion: tuple[SirenPattern, ...] = field(default=("pulsed", "continuous"), metadata=_patterns(
        "Intrusion alerts"))
    tamper: tuple[SirenPattern, ...] = field(default=("slow", "pulsed"), metadata=_patterns(
        "Tamper alerts"))
    fault: tuple[SirenPattern, ...] = field(default=("off",), metadata=_patterns("Fault alerts"))
    test: tuple[SirenPattern, ...] = field(default=("fast",), metadata=_patterns("Test alerts"))


@dataclass(frozen=True)
class SirenConfig:
    name: str = field(metadata=_meta("Siren name", pattern=r"^[A-Za-z0-9_-]{1,32}$"))
    pin: int = field(metadata=_meta("BCM GPIO number", minimum=0, maximum=53))
    active_high: bool = field(default=True, metadata=_meta("Polarity of the relay/driver"))
    max_on: float = field(default=300.0, metadata=_meta("Seconds after which the siren stops by itself",
                                                        minimum=1, maximum=3600))
    feedback_pin: int | None = field(default=None, metadata=_meta(
        "Optional input that reads active while the siren really sounds", minimum=0, maximum=53))
    feedback_pull_up: bool = field(default=True, metadata=_meta(
        "Feedback with internal pull-up, active low (a relay contact to ground); false: active high, "
        "no pull (a current-sense output)"))
    feedback_delay: float = field(default=0.5, metadata=_meta(
        "Seconds the feedback may lag the drive before it is a fault", minimum=0.05, maximum=10))
    patterns: SirenPatterns = field(default_factory=SirenPatterns, metadata=_meta(
        "Sound per alert kind and escalation level"))


@dataclass(frozen=True)
class TamperConfig:
    pin: int = field(metadata=_meta("BCM GPIO number of the enclosure tamper switch", minimum=0, maximum=53))
    zone: str = field(default="enclosure", metadata=_meta("Zone label"))
    pull_up: bool = field(default=True, metadata=_meta("Internal pull-up"))
    active_high: bool = field(default=True, metadata=_meta(
        "True if the line reads high when the enclosure is open: with pull_up a normally-closed switch "
        "to ground (a cut wire is a tamper too)"))
    kind: Literal["panic", "medical", "fire", "intrusion", "tamper", "fault", "test"] = field(
        default="tamper", metadata=_meta(
            "Alert kind an opening raises; its siren pattern is that kind's in [sirens.patterns] (e.g. "
            "tamper = [\"off\"] for no local sound)"))


@dataclass(frozen=True)
class CameraConfig:
    backend: Literal["none", "generated", "picamera2", "opencv"] = field(
        default="generated", metadata=_meta("Where snapshots come from"))
    fallback: Literal["none", "generated"] = field(
        default="none", metadata=_meta("Backend used when the configured one cannot start"))
    device: int = field(default=0, metadata=_meta("OpenCV/V4L2 device index", minimum=0))
    width: int = field(default=640, metadata=_meta("Frame width", minimum=16, maximum=4096))
    height: int = field(default=480, metadata=_meta("Frame height", minimum=16, maximum=4096))
    burst: int = field(default=1, metadata=_meta("Snapshots per alert", minimum=0, maximum=10))
    burst_interval: float = field(default=0.5, metadata=_meta("Seconds between the snapshots of a burst",
                                                              minimum=0, maximum=60))
    retention_days: float = field(default=30.0, metadata=_meta(
        "Delete snapshots older than this (0 = no age limit)", minimum=0))
    max_total_mb: float = field(default=500.0, metadata=_meta("Keep snapshots under this total size",
                                                              minimum=1))


@dataclass(frozen=True)
class HardwareConfig:
    pin_factory: Literal["auto", "mock", "lgpio", "rpigpio"] = field(
        default="auto", metadata=_meta("gpiozero pin factory; mock simulates every pin"))
    boot_grace: float = field(default=2.0, metadata=_meta(
        "Seconds after start in which an active input is a fault, never an alert", minimum=0, maximum=60))
    tamper: TamperConfig | None = field(default=None, metadata=_meta("Optional enclosure tamper input"))


@dataclass(frozen=True)
class MainsConfig:
    pin: int = field(metadata=_meta(
        "BCM GPIO number of the mains-fail input (a UPS board's power-fail output, or a relay on the "
        "supply)", minimum=0, maximum=53))
    pull_up: bool = field(default=False, metadata=_meta(
        "Internal pull-up (a relay contact to ground); false for a driven logic output"))
    active_high: bool = field(default=True, metadata=_meta(
        "True if the line reads high when the mains has FAILED: a UPS board's power-fail output, or with "
        "pull_up a relay contact that is closed while the mains is on (a cut wire then reads as a failure)"))
    debounce: float = field(default=2.0, metadata=_meta(
        "Seconds the mains must stay failed (or back) before the hub says so: flicker is not an outage",
        minimum=0, maximum=300))


@dataclass(frozen=True)
class BatteryConfig:
    chip: Literal["ina219"] = field(default="ina219", metadata=_meta(
        "Battery monitor: an INA219 current/voltage monitor on I2C (common Pi UPS boards)"))
    bus: int = field(default=1, metadata=_meta("I2C bus number (/dev/i2c-N)", minimum=0, maximum=255))
    address: int = field(default=0x40, metadata=_meta(
        "I2C address of the monitor (INA219: 0x40-0x4F; TOML takes 0x42)", minimum=0x40, maximum=0x4F))
    shunt_ohms: float = field(default=0.1, metadata=_meta(
        "Shunt resistor in ohms (printed on the board; 0.1 on most UPS boards)", exclusiveMinimum=0,
        maximum=10))
    max_current: float = field(default=3.2, metadata=_meta(
        "Largest battery current expected, amperes; sets the monitor's range and resolution",
        exclusiveMinimum=0, maximum=100))
    empty_voltage: float = field(default=3.0, metadata=_meta(
        "Battery voltage read as 0 % (one Li-ion cell: 3.0; two in series: 6.0)", minimum=0, maximum=26))
    full_voltage: float = field(default=4.2, metadata=_meta(
        "Battery voltage read as 100 % (one Li-ion cell: 4.2; two in series: 8.4)", minimum=0, maximum=26))
    capacity_mah: float = field(default=0.0, metadata=_meta(
        "Battery capacity in mAh, for the time left from the current drawn; 0 = estimate it from how fast "
        "the level falls", minimum=0, maximum=1_000_000))
    charge_positive: bool = field(default=True, metadata=_meta(
        "The monitor reads a positive current while the battery charges (false if the board's shunt is "
        "wired the other way)"))
    discharge_threshold: float = field(default=0.05, metadata=_meta(
        "Without a mains input: the hub is on battery while the battery gives more than this, amperes",
        minimum=0, maximum=100))


@dataclass(frozen=True)
class ThrottledConfig:
    path: str = field(default="/sys/devices/platform/soc/soc:firmware/get_throttled", metadata=_meta(
        "The firmware's get_throttled file (hex flags: under-voltage, frequency capped, throttled)"))


@dataclass(frozen=True)
class PowerConfig:
    mains: MainsConfig | None = field(default=None, metadata=_meta("Optional mains-fail input"))
    battery: BatteryConfig | None = field(default=None, metadata=_meta("Optional battery monitor on I2C"))
    throttled: ThrottledConfig | None = field(default=None, metadata=_meta(
        "Optional: the Raspberry Pi's own under-voltage and throttling flags"))
    poll_interval: float = field(default=5.0, metadata=_meta(
        "Seconds between readings of the power sources (a mains edge is read at once)", minimum=0.1,
        maximum=600))
    low_battery: float = field(default=25.0, metadata=_meta(
        "Battery percent, on battery, at which the hub reports power.battery_low (and raises the "
        "low-battery alarm)", minimum=0, maximum=100))
    critical_battery: float = field(default=8.0, metadata=_meta(
        "Battery percent, on battery, at which the hub sends its last status and shuts down cleanly",
        minimum=0, maximum=100))
    low_alarm: bool = field(default=True, metadata=_meta(
        "Raise an alert (alarm_kind, source power:battery) when the battery is low"))
    alarm_kind: Literal["panic", "medical", "fire", "intrusion", "tamper", "fault", "test"] = field(
        default="fault", metadata=_meta("Kind of the low-battery alert; its siren pattern is that kind's"))
    shutdown: bool = field(default=True, metadata=_meta(
        "Shut the machine down at critical_battery (or after shutdown_after on battery)"))
    shutdown_after: float = field(default=0.0, metadata=_meta(
        "Seconds on battery after which the hub shuts down whatever the level (for a UPS without a "
        "battery monitor); 0 = off", minimum=0))
    shutdown_command: str = field(default="systemctl poweroff", metadata=_meta(
        "Command that powers the machine down cleanly (systemd stops hubd first)"))
    shutdown_grace: float = field(default=15.0, metadata=_meta(
        "Seconds to wait for the broker to take the last event before shutting down", minimum=0,
        maximum=300))


@dataclass(frozen=True)
class StoreConfig:
    path: str = field(default="hubd.db", metadata=_meta("SQLite file, relative to state_dir"))
    retention_days: float = field(default=365.0, metadata=_meta(
        "Closed alerts and delivered events older than this are pruned", minimum=1))


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = field(default=True, metadata=_meta("Serve the status page"))
    bind: str = field(default="0.0.0.0", metadata=_meta("Address to listen on"))
    port: int = field(default=8080, metadata=_meta("TCP port (0 picks a free one)", minimum=0, maximum=65535))
    threads: int = field(default=16, metadata=_meta("waitress worker threads", minimum=2, maximum=64))
    max_streams: int = field(default=8, metadata=_meta(
        "Open live (SSE) streams at most; one login may hold half of them", minimum=1, maximum=60))
    heartbeat: float = field(default=15.0, metadata=_meta(
        "Seconds between keep-alive comments on a live stream", minimum=0.05, maximum=300))
    stream_max_age: float = field(default=1800.0, metadata=_meta(
        "Seconds after which a live stream is closed; the browser resumes it by Last-Event-ID",
        minimum=1, maximum=86400))
    session_hours: float = field(default=12.0, metadata=_meta(
        "Hours a login lasts", minimum=0.1, maximum=720))
    login_max_failures: int = field(default=5, metadata=_meta(
        "Failed logins from one address before it is refused for a while; four times as many on one "
        "account (from anywhere) slow that account to one try every 2 s from other addresses (never "
        "locking its owner out)", minimum=1, maximum=100))
    login_lockout: float = field(default=300.0, metadata=_meta(
        "Seconds over which failed logins count, and for which logins are then refused",
        minimum=1, maximum=86400))


@dataclass(frozen=True)
class ProtocolConfig:
    cancel_window: float = field(default=30.0, metadata=_meta(
        "Seconds after raising in which an alert may be cancelled", minimum=0, maximum=600))
    escalation: tuple[float, ...] = field(default=(60.0, 180.0, 600.0), metadata=_meta(
        "Seconds after raising at which an unacknowledged alert goes up one level"))


@dataclass(frozen=True)
class MqttConfig:
    host: str = field(metadata=_meta("Broker host name or address"))
    port: int = field(default=1883, metadata=_meta("Broker port", minimum=1, maximum=65535))
    root: str = field(default="safercom/v2", metadata=_meta(
        "Topic root; topics are <root>/<ward>/<hub>/... (contract version 2)"))
    protocol: Literal["5", "3.1.1"] = field(default="5", metadata=_meta("MQTT protocol version"))
    keepalive: int = field(default=30, metadata=_meta("Keepalive seconds", minimum=5, maximum=600))
    username: str = field(default="", metadata=_meta("User name; empty for none"))
    password_file: str = field(default="", metadata=_meta("File holding the password (mode 0600)"))
    tls: bool = field(default=False, metadata=_meta("Use TLS"))
    insecure: bool = field(default=False, metadata=_meta(
        "Allow a broker that is not on this machine without TLS (passwords and alerts in clear on the "
        "network); refused otherwise"))
    ca_file: str = field(default="", metadata=_meta("CA certificate for TLS"))
    cert_file: str = field(default="", metadata=_meta("Client certificate for TLS (optional)"))
    key_file: str = field(default="", metadata=_meta("Client key for TLS (optional, mode 0600)"))
    max_inflight: int = field(default=20, metadata=_meta("QoS 1 messages in flight", minimum=1, maximum=1000))
    neighbours: tuple[str, ...] = field(default=(), metadata=_meta(
        "Hub ids in this ward whose events to follow (their public keys in [trust] hubs)",
        items={"type": "string", "pattern": f"^{HUB_PATTERN}$"}))
    neighbour_rate: float = field(default=20.0, metadata=_meta(
        "Events per second a neighbour may send on average; more are refused and counted",
        minimum=0.1, maximum=10000))
    neighbour_burst: int = field(default=300, metadata=_meta(
        "Events a neighbour may send at once above its rate (a backlog after an outage)",
        minimum=1, maximum=100000))
    chime_on_neighbour: bool = field(default=False, metadata=_meta(
        "Sound a short chime when a neighbour raises an alert"))
    homeassistant: bool = field(default=False, metadata=_meta("Publish Home Assistant MQTT discovery"))
    cap: bool = field(default=False, metadata=_meta("Publish CAP 1.2 XML for each alert"))


@dataclass(frozen=True)
class MeshConfig:
    connection: str = field(metadata=_meta(
        "Radio: 'serial:/dev/ttyUSB0' or 'tcp:HOST:PORT'", pattern=r"^(serial:/.+|tcp:[^:]+:[0-9]+)$"))
    key_file: str = field(metadata=_meta("File holding the ward's network key (hex or base64, mode 0600)"))
    port_num: int = field(default=287, metadata=_meta("Meshtastic private application port",
                                                      minimum=256, maximum=511))
    channel_index: int = field(default=0, metadata=_meta("Channel for frames and marshal text", minimum=0,
                                                         maximum=7))
    beacon_interval: float = field(default=300.0, metadata=_meta("Seconds between presence beacons",
                                                                 minimum=1))
    neighbour_timeout: float = field(default=1200.0, metadata=_meta(
        "Seconds after which an unheard neighbour is flagged", minimum=2))
    duty_cycle: float = field(default=0.1, metadata=_meta("Fraction of airtime this hub may use",
                                                          minimum=0.001, maximum=1))
    marshals: tuple[str, ...] = field(default=(), metadata=_meta(
        "Node ids (e.g. '!a1b2c3d4') whose 'ACK <code> n' acknowledges an alert, when it comes as a "
        "public-key (PKI) direct message to this hub's radio (Meshtastic firmware 2.5 and later); "
        "when any are listed, alerts are also sent as text (none: no text)",
        items={"type": "string", "pattern": r"^![0-9a-f]{8}$"}))
    marshal_channel_text: bool = field(default=False, metadata=_meta(
        "Also take a marshal's ACK sent as channel text or an unencrypted direct message. WEAKER: its "
        "sender is only the packet's 'from' field, which anyone with the channel key can set"))
    code: str = field(default="", metadata=_meta(
        "Short hub code marshals type in 'ACK <code> <n>' (default: the hub id)",
        pattern=r"^[A-Za-z0-9_-]{0,16}$"))
    uplink: bool = field(default=True, metadata=_meta(
        "Whether this hub relays mesh alerts from hubs without uplink to MQTT"))
    ack_timeout: float = field(default=45.0, metadata=_meta(
        "Seconds to wait for the radio's ACK and the neighbours' receipts before a retry", minimum=0.2))
    retry_initial: float = field(default=15.0, metadata=_meta(
        "First retry delay of an unconfirmed frame; doubles per attempt", minimum=0.1))
    retry_max: float = field(default=600.0, metadata=_meta("Longest retry delay", minimum=0.2))
    reconnect_max: float = field(default=60.0, metadata=_meta(
        "Longest delay between attempts to reconnect to the radio", minimum=0.2))
    watchdog: float = field(default=900.0, metadata=_meta(
        "Seconds of silence from the radio after which it is reconnected", minimum=1))
    replay_window: float = field(default=600.0, metadata=_meta(
        "Seconds a frame may be older than the newest heard from the same node, and, while this hub's "
        "clock is synchronised, older than this hub's clock", minimum=5))


@dataclass(frozen=True)
class TrustConfig:
    hubs: dict[str, str] = field(default_factory=dict, metadata=_meta(
        "Public signing keys of the hubs whose events this hub believes: hub id -> 'ed25519:...' "
        "(`hubd keys show` on that hub). An event about a hub not listed here changes nothing",
        propertyNames={"pattern": f"^{HUB_PATTERN}$"}))
    centre: str = field(default="", metadata=_meta(
        "The centre's public signing key, 'ed25519:...': only commands it signed are executed; "
        "empty: this hub takes no commands over MQTT"))
    command_window: float = field(default=COMMAND_WINDOW, metadata=_meta(
        "Seconds a command's time may differ from this hub's (synchronised) clock", minimum=10,
        maximum=3600))


@dataclass(frozen=True)
class Config:
    hub: HubIdentity = field(metadata=_meta("Who this hub is"))
    hardware: HardwareConfig = field(default_factory=HardwareConfig, metadata=_meta("GPIO"))
    buttons: tuple[ButtonConfig, ...] = field(default=(), metadata=_meta("Panic buttons"))
    sirens: tuple[SirenConfig, ...] = field(default=(), metadata=_meta("Sirens"))
    camera: CameraConfig = field(default_factory=CameraConfig, metadata=_meta("Snapshots"))
    store: StoreConfig = field(default_factory=StoreConfig, metadata=_meta("Event store"))
    web: WebConfig = field(default_factory=WebConfig, metadata=_meta("Status page"))
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig, metadata=_meta("Response protocol"))
    mqtt: MqttConfig | None = field(default=None, metadata=_meta("MQTT link (optional)"))
    mesh: MeshConfig | None = field(default=None, metadata=_meta("Meshtastic mesh link (optional)"))
    power: PowerConfig | None = field(default=None, metadata=_meta(
        "Mains, battery and the Pi's supply: on-battery reports, low-battery alarm, clean shutdown "
        "(optional)"))
    trust: TrustConfig = field(default_factory=TrustConfig, metadata=_meta(
        "Whom this hub believes: neighbours' and the centre's public keys"))

    @property
    def state_dir(self) -> Path:
        return Path(self.hub.state_dir)

    @property
    def store_path(self) -> Path:
        return self.state_dir / self.store.path

    @property
    def runtime_dir(self) -> Path:
        if self.hub.runtime_dir:
            return Path(self.hub.runtime_dir)
        env = os.environ.get("RUNTIME_DIRECTORY")
        if env:
            return Path(env.split(":")[0])
        if Path("/run/hubd").is_dir():  # systemd's RuntimeDirectory=hubd, seen from an SSH shell
            return Path("/run/hubd")
        return self.state_dir / "run"

    @property
    def signing_key_path(self) -> Path:
        """This hub's private signing key (``hubd keys init`` makes it)."""
        return self.state_dir / "signing.key"

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "control.sock"

    def destinations(self) -> tuple[str, ...]:
        """Outbox destinations: one per configured link."""
        out = []
        if self.mqtt is not None:
            out.append("mqtt")
        if self.mesh is not None:
            out.append("mesh")
        return tuple(out)


# --- schema derived from the dataclasses -------------------------------------------------

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _type_schema(inner[0])  # optional: absence is how TOML says None
    if origin is tuple:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_schema(tp)
    raise TypeError(f"no schema for {tp!r}")


def _dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        schema = _type_schema(hints[f.name])
        schema.update(f.metadata.get("schema", {}))
        if f.metadata.get("doc"):
            schema["description"] = f.metadata["doc"]
        props[f.name] = schema
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def config_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file (after TOML parsing)."""
    schema = _dataclass_schema(Config)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hubd configuration"
    return schema


def _build(cls: Any, data: Any) -> Any:
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(cls) if a is not type(None)][0]
        return None if data is None else _build(inner, data)
    if origin is tuple:
        return tuple(_build(typing.get_args(cls)[0], item) for item in data)
    if origin is dict:
        return {k: _build(typing.get_args(cls)[1], v) for k, v in data.items()}
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        return cls(**{k: _build(hints[k], v) for k, v in data.items()})
    if cls is float and isinstance(data, int):
        return float(data)
    return data


def _path(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    v = error.validator
    if v == "required":
        return error.message.replace("is a required property", "is required (missing)")
    if v == "additionalProperties":
        return "unknown key(s): " + error.message.split("(")[-1].rstrip(")").replace(" was unexpected", "")\
            .replace(" were unexpected", "")
    if v == "type":
        return f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if v == "enum":
        return f"expected one of {error.validator_value}, got {error.instance!r}"
    if v == "pattern":
        return f"{error.instance!r} does not match the expected form {error.validator_value}"
    if v in ("minimum", "maximum", "exclusiveMinimum"):
        return f"{error.instance!r} is out of range ({v} {error.validator_value})"
    return error.message


def _bool_is_not_number(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int | float) and not isinstance(instance, bool)


_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "number", _bool_is_not_number).redefine(
    "integer", lambda c, i: isinstance(i, int) and not isinstance(i, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPE_CHECKER)


def _secret_ok(path: str) -> str | None:
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cross_check(cfg: Config, check_files: bool) -> list[str]:
    errors = []
    pins: dict[int, str] = {}

    def claim(pin: int | None, where: str) -> None:
        if pin is None:
            return
        if pin in pins:
            errors.append(f"{where}: pin {pin} is already used by {pins[pin]}")
        else:
            pins[pin] = where

    names: dict[str, str] = {}
    for i, b in enumerate(cfg.buttons):
        claim(b.pin, f"buttons[{i}].pin")
        if b.name in names:
            errors.append(f"buttons[{i}].name: {b.name!r} is already used by {names[b.name]}")
        names.setdefault(b.name, f"buttons[{i}]")
    snames: dict[str, str] = {}
    for i, s in enumerate(cfg.sirens):
        claim(s.pin, f"sirens[{i}].pin")
        claim(s.feedback_pin, f"sirens[{i}].feedback_pin")
        if s.name in snames:
            errors.append(f"sirens[{i}].name: {s.name!r} is already used by {snames[s.name]}")
        snames.setdefault(s.name, f"sirens[{i}]")
    if cfg.hardware.tamper:
        claim(cfg.hardware.tamper.pin, "hardware.tamper.pin")
    if cfg.power:
        errors += _check_power(cfg, claim)
    fitted = {"tamper": cfg.hardware.tamper is not None, "mains": bool(cfg.power and cfg.power.mains)}
    for i, b in enumerate(cfg.buttons):
        if fitted.get(b.name):
            errors.append(f"buttons[{i}].name: {b.name!r} is the name `hubd press` gives "
                          f"{SIMULATED_INPUTS[b.name]}; choose another")
    if cfg.mesh and len(cfg.hub.id) > 16:
        errors.append("hub.id: at most 16 characters when [mesh] is configured (it travels in every frame)")
    if list(cfg.protocol.escalation) != sorted(cfg.protocol.escalation) or any(
            s <= 0 for s in cfg.protocol.escalation):
        errors.append("protocol.escalation: expected increasing positive seconds, e.g. [60, 180, 600]")
    for hub, text in cfg.trust.hubs.items():
        try:
            parse_public_key(text)
        except ContractError as e:
            errors.append(f"trust.hubs.{hub}: {e.message}")
    if cfg.trust.centre:
        try:
            parse_public_key(cfg.trust.centre)
        except ContractError as e:
            errors.append(f"trust.centre: {e.message}")
    if cfg.mqtt and not cfg.mqtt.tls and not cfg.mqtt.insecure and not is_loopback(cfg.mqtt.host):
        errors.append(f"mqtt.host: {cfg.mqtt.host} is not on this machine and tls is off: the broker "
                      "password, commands and alerts would cross the network in clear. Set tls = true (and "
                      "ca_file), or, knowing this, insecure = true")
    if check_files:
        if cfg.mqtt and cfg.mqtt.password_file and (msg := _secret_ok(cfg.mqtt.password_file)):
            errors.append(f"mqtt.password_file: {msg}")
        if cfg.mqtt and cfg.mqtt.tls and cfg.mqtt.ca_file and not Path(cfg.mqtt.ca_file).is_file():
            errors.append(f"mqtt.ca_file: {cfg.mqtt.ca_file} does not exist")
        if cfg.mesh and (msg := _secret_ok(cfg.mesh.key_file)):
            errors.append(f"mesh.key_file: {msg}")
    return errors


#: Names ``hubd press`` gives the inputs that are not buttons.
SIMULATED_INPUTS = {"tamper": "hardware.tamper", "mains": "power.mains"}


def _check_power(cfg: Config, claim: Callable[[int | None, str], None]) -> list[str]:
    power = cfg.power
    assert power is not None
    errors = []
    if power.mains is None and power.battery is None and power.throttled is None:
        errors.append("power: no source configured: add [power.mains], [power.battery] or [power.throttled]")
    if power.mains:
        claim(power.mains.pin, "power.mains.pin")
    if power.critical_battery >= power.low_battery:
        errors.append(f"power.critical_battery: {power.critical_battery:g} % must be below power.low_battery "
                      f"({power.low_battery:g} %)")
    if power.shutdown:
        try:
            argv = shlex.split(power.shutdown_command)
        except ValueError as e:
            argv, reason = [], str(e)
        else:
            reason = "it is empty"
        if not argv:
            errors.append(f"power.shutdown_command: cannot run {power.shutdown_command!r}: {reason}")
    battery = power.battery
    if battery:
        if battery.empty_voltage >= battery.full_voltage:
            errors.append(f"power.battery.empty_voltage: {battery.empty_voltage:g} V must be below "
                          f"full_voltage ({battery.full_voltage:g} V)")
        if battery.max_current * battery.shunt_ohms > 0.32 + 1e-9:
            millivolts = battery.max_current * battery.shunt_ohms * 1000
            errors.append(f"power.battery.max_current: {battery.max_current:g} A through "
                          f"{battery.shunt_ohms:g} ohm is {millivolts:.0f} mV, beyond the monitor's 320 mV "
                          f"shunt range")
    return errors


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None, check_files: bool = True) -> Config:
    """Validate a parsed TOML document and build the Config; raise ConfigError listing every problem.

    Relative paths (state_dir, secret files) are taken relative to ``base_dir``.
    """
    validator = _Validator(config_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        raise ConfigError([f"{_path(e)}: {_describe(e)}" for e in errors])
    if base_dir is not None:
        data = _resolve_paths(data, base_dir)
    cfg = _build(Config, data)
    problems = _cross_check(cfg, check_files)
    if problems:
        raise ConfigError(problems)
    return cfg


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def fix(section: str, keys: tuple[str, ...]) -> None:
        sec = data.get(section)
        if not isinstance(sec, dict):
            return
        for k in keys:
            if sec.get(k) and not os.path.isabs(sec[k]):
                sec[k] = str((base / sec[k]).resolve())

    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    fix("hub", ("state_dir", "runtime_dir"))
    fix("mqtt", ("password_file", "ca_file", "cert_file", "key_file"))
    fix("mesh", ("key_file",))
    return data


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{p}: not valid TOML: {e}"]) from e
    return parse_config(data, base_dir=p.resolve().parent, check_files=check_files)


#: Keys whose values are never shown (secret *files* are: their paths say where to look).
SECRET_WORDS = ("password", "secret", "token", "passphrase")


def hide_secrets(value: Any, key: str = "") -> Any:
    """``value`` with anything under a secret-looking key replaced by "(hidden)"."""
    if isinstance(value, dict):
        return {k: hide_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hide_secrets(v, key) for v in value]
    if value and any(w in key.lower() for w in SECRET_WORDS) and not key.endswith("_file"):
        return "(hidden)"
    return value


def redacted(cfg: Config) -> dict[str, Any]:
    """The configuration as a dict, safe to show: secret file paths kept, nothing secret shown."""
    return hide_secrets(dataclasses.asdict(cfg))
