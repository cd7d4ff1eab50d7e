"""The centre's configuration: ``centre.toml`` read into frozen dataclasses.

Every key is checked when the file is read, and a mistake is refused with a message that
names the key (``[mqtt] port: expected an integer from 1 to 65535, got 'x'``); an unknown
key is a mistake too (a typo must not silently leave a default in force). ``example.toml``
beside this module is the annotated reference.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hubd.contract import WARD_PATTERN

EXAMPLE = Path(__file__).with_name("example.toml")


class ConfigError(Exception):
    """The configuration is wrong; the message says which key and why."""


@dataclass(frozen=True)
class CentreSection:
    #: Shown on the page and in the CLI.
    name: str = "E-telligence centre"
    #: The SQLite store, the web secret and snapshots live here.
    state_dir: Path = Path("/var/lib/hubd-centre")
    #: The control socket lives here.
    runtime_dir: Path = Path("/run/hubd-centre")
    #: The centre's Ed25519 signing key (receipts, commands); None: ``<state_dir>/centre.key``.
    key_file: Path | None = None


@dataclass(frozen=True)
class StoreConfig:
    #: SQLAlchemy URL; empty: SQLite at ``<state_dir>/centre.db``.
    url: str = ""
    #: For PostgreSQL: a file holding the password (kept out of the URL and the config).
    password_file: Path | None = None


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    #: The topic root of contract version 2 (signed), and of version 1 (unsigned, read during
    #: the migration only; empty: not read).
    root: str = "safercom/v2"
    root_v1: str = "safercom/v1"
    client_id: str = "hubd-centre"
    #: How long the broker keeps the centre's session (and queues for it) while it is away.
    session_expiry: int = 7 * 24 * 3600
    keepalive: int = 30
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    #: Messages the broker may have in flight to the centre, not yet acknowledged (each is
    #: acknowledged only after it is committed).
    receive_maximum: int = 1000
    #: Larger snapshots are quarantined unread (events, statuses and replies have the
    #: contract's own bounds).
    max_snapshot_bytes: int = 2 * 1024 * 1024


@dataclass(frozen=True)
class SupervisionConfig:
    #: A hub not heard for this long (seconds) is "silent" (EN 50136-1 DP4: 90 s; SP6: 20 s).
    report_every: float = 90.0
    #: Per ward; a hub's own (in the registry) wins over its ward's.
    wards: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: After a hub's Last Will (or its clean "stopped"), its direct path counts as lost this
    #: much later, unless it is heard again: the Will speeds detection, it is not relied on.
    will_grace: float = 15.0
    #: Clock skews larger than this (seconds) are flagged.
    skew_warn: float = 5.0


@dataclass(frozen=True)
class CommandsConfig:
    #: A command with no reply after this many seconds is marked timed out.
    timeout: float = 30.0


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 8090
    threads: int = 16
    session_hours: float = 12.0
    max_streams: int = 32
    heartbeat: float = 15.0
    stream_max_age: float = 3600.0
    login_max_failures: int = 5
    login_lockout: float = 300.0


@dataclass(frozen=True)
class SnapshotsConfig:
    #: Snapshots older than this are deleted (0: kept for ever).
    keep_days: float = 30.0


@dataclass(frozen=True)
class CentreConfig:
    centre: CentreSection = field(default_factory=CentreSection)
    store: StoreConfig = field(default_factory=StoreConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    snapshots: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    #: The file it was read from (None when built in code).
    path: Path | None = None

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{(self.centre.state_dir / 'centre.db').resolve()}"

    @property
    def roots(self) -> dict[str, int]:
        """The topic roots the centre reads, and the contract version of each."""
        return {self.mqtt.root: 2, **({self.mqtt.root_v1: 1} if self.mqtt.root_v1 else {})}

    @property
    def key_file(self) -> Path:
        return self.centre.key_file or self.centre.state_dir / "centre.key"

    @property
    def control_socket(self) -> Path:
        return self.centre.runtime_dir / "control.sock"

    @property
    def snapshot_dir(self) -> Path:
        return self.centre.state_dir / "snapshots"

    @property
    def secret_file(self) -> Path:
        return self.centre.state_dir / "web.secret"

    def store_password(self) -> str | None:
        return _read_secret(self.store.password_file, "[store] password_file")

    def mqtt_password(self) -> str | None:
        return _read_secret(self.mqtt.password_file, "[mqtt] password_file")


def _read_secret(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text("utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None


class _Section:
    """One table of the file, read key by key; ``done`` refuses the keys nobody read."""

    def __init__(self, name: str, raw: Any, base: Path):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}]: expected a table, got {type(raw).__name__}")
        self.name = name
        self.raw = raw
        self.base = base
        self.read: set[str] = set()

    def _get(self, key: str) -> Any:
        self.read.add(key)
        return self.raw.get(key)

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"[{self.name}] {key}: expected {expected}, got {value!r}")

    def text(self, key: str, default: str, pattern: str | None = None, what: str = "a string") -> str:
        v = self._get(key)
        if v is None:
            return default
        if not isinstance(v, str) or (pattern is not None and not re.fullmatch(pattern, v)):
            raise self.fail(key, what, v)
        return v

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self._get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(key, f"an integer from {lo} to {hi}", v)
        return v

    def real(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self._get(key)
        if v is None:
            return default
        return self.number(key, v, lo, hi)

    def number(self, key: str, v: Any, lo: float, hi: float) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self.fail(key, f"a number from {lo:g} to {hi:g}", v)
        return float(v)

    def flag(self, key: str, default: bool) -> bool:
        v = self._get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(key, "true or false", v)
        return v

    def path(self, key: str, default: Path | None) -> Path | None:
        v = self._get(key)
        if v is None or v == "":
            return default
        if not isinstance(v, str):
            raise self.fail(key, "a path", v)
        p = Path(v).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def table(self, key: str) -> dict[str, Any]:
        v = self._get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(key, "a table", v)
        return v

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.read)
        if unknown:
            raise ConfigError(f"[{self.name}] {unknown[0]}: unknown key "
                              f"(known: {', '.join(sorted(self.read))})")


REPORT_MIN, REPORT_MAX = 1.0, 25 * 3600.0
MIB = 1024 * 1024


def parse_config(raw: Mapping[str, Any], *, base: Path = Path("."), path: Path | None = None) -> CentreConfig:
    """The configuration from a parsed TOML document; relative paths are taken from ``base``."""
    known = {"centre", "store", "mqtt", "supervision", "commands", "web", "snapshots"}
    for name in raw:
        if name not in known:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(sorted(known))})")

    s = _Section("centre", raw.get("centre"), base)
    state_dir = s.path("state_dir", CentreSection.state_dir)
    runtime_dir = s.path("runtime_dir", CentreSection.runtime_dir)
    assert state_dir is not None and runtime_dir is not None
    centre = CentreSection(name=s.text("name", CentreSection.name), state_dir=state_dir,
                           runtime_dir=runtime_dir, key_file=s.path("key_file", None))
    s.done()

    s = _Section("store", raw.get("store"), base)
    url = s.text("url", "", r"|(sqlite|postgresql|postgresql\+psycopg|postgres)://.*",
                "a URL: sqlite:///<path> or postgresql://<user>@<host>/<database> (or empty)")
    store = StoreConfig(url=url, password_file=s.path("password_file", None))
    s.done()

    s = _Section("mqtt", raw.get("mqtt"), base)
    levels = r"[^/#+\s]+(/[^/#+\s]+)*"
    root = s.text("root", MqttConfig.root, levels, "topic levels without wildcards or empty levels, "
                  "e.g. 'safercom/v2'")
    root_v1 = s.text("root_v1", MqttConfig.root_v1, f"|{levels}",
                     "topic levels (or empty), e.g. 'safercom/v1'")
    if root_v1 == root:
        raise ConfigError(f"[mqtt] root_v1: {root_v1!r} is also the version 2 root; give another, or empty")
    mqtt = MqttConfig(
        host=s.text("host", MqttConfig.host, r"\S+", "a host name or address"),
        port=s.integer("port", MqttConfig.port, 1, 65535),
        root=root,
        root_v1=root_v1,
        client_id=s.text("client_id", MqttConfig.client_id, r"[A-Za-z0-9_-]{1,64}",
                        "1-64 letters, digits, '_' or '-'"),
        session_expiry=s.integer("session_expiry", MqttConfig.session_expiry, 60, 2**32 - 1),
        keepalive=s.integer("keepalive", MqttConfig.keepalive, 5, 3600),
        username=s.text("username", ""),
        password_file=s.path("password_file", None),
        ca_file=s.path("ca_file", None),
        certfile=s.path("certfile", None),
        keyfile=s.path("keyfile", None),
        receive_maximum=s.integer("receive_maximum", MqttConfig.receive_maximum, 1, 65535),
        max_snapshot_bytes=s.integer("max_snapshot_bytes", MqttConfig.max_snapshot_bytes, 1024, 64 * MIB),
    )
    s.done()

    s = _Section("supervision", raw.get("supervision"), base)
    wards_raw = s.table("wards")
    wards = {}
    for ward, seconds in wards_raw.items():
        if not re.fullmatch(WARD_PATTERN, ward):
            raise ConfigError(f"[supervision] wards: {ward!r} is not a ward id ({WARD_PATTERN})")
        wards[ward] = s.number(f"wards.{ward}", seconds, REPORT_MIN, REPORT_MAX)
    supervision = SupervisionConfig(
        report_every=s.real("report_every", SupervisionConfig.report_every, REPORT_MIN, REPORT_MAX),
        wards=MappingProxyType(wards),
        will_grace=s.real("will_grace", SupervisionConfig.will_grace, 0, REPORT_MAX),
        skew_warn=s.real("skew_warn", SupervisionConfig.skew_warn, 0, 86400),
    )
    s.done()

    s = _Section("commands", raw.get("commands"), base)
    commands = CommandsConfig(timeout=s.real("timeout", CommandsConfig.timeout, 1, 3600))
    s.done()

    s = _Section("web", raw.get("web"), base)
    web = WebConfig(
        enabled=s.flag("enabled", WebConfig.enabled),
        bind=s.text("bind", WebConfig.bind, r"\S+", "an address to listen on"),
        port=s.integer("port", WebConfig.port, 0, 65535),
        threads=s.integer("threads", WebConfig.threads, 4, 256),
        session_hours=s.real("session_hours", WebConfig.session_hours, 0.1, 24 * 30),
        max_streams=s.integer("max_streams", WebConfig.max_streams, 1, 1000),
        heartbeat=s.real("heartbeat", WebConfig.heartbeat, 0.1, 300),
        stream_max_age=s.real("stream_max_age", WebConfig.stream_max_age, 1, 86400),
        login_max_failures=s.integer("login_max_failures", WebConfig.login_max_failures, 1, 1000),
        login_lockout=s.real("login_lockout", WebConfig.login_lockout, 1, 86400),
    )
    s.done()

    s = _Section("snapshots", raw.get("snapshots"), base)
    snapshots = SnapshotsConfig(keep_days=s.real("keep_days", SnapshotsConfig.keep_days, 0, 36500))
    s.done()

    return CentreConfig(centre=centre, store=store, mqtt=mqtt, supervision=supervision, commands=commands,
                        web=web, snapshots=snapshots, path=path)


def load_config(path: Path | str) -> CentreConfig:
    """Read and check ``path``; ConfigError naming the file and the key when it is wrong."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return parse_config(raw, base=path.resolve().parent, path=path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

