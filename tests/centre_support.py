"""Test support for the centre: a store on SQLite or on PostgreSQL (a database of the test's
own, made and dropped here), enrolled hubs, and envelopes as hubs send them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hubd import contract

#: The PostgreSQL server the centre's tests use (a local service, trust auth). Only its
#: maintenance database is touched, to create and drop each test's own database.
POSTGRES = os.environ.get("HUBD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES, connect_timeout=3):
            return None
    except psycopg.Error as e:
        return f"PostgreSQL at {POSTGRES} is not reachable: {e}"


@contextmanager
def postgres_database(server: str = POSTGRES) -> Iterator[str]:
    """A fresh database with a random name on ``server``; its SQLAlchemy URL. Dropped after."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"centre_test_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(drivername="postgresql+psycopg", database=name) \
            .render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    """A store URL of ``kind`` (sqlite or postgresql) for one test."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'centre.db'}"
        return
    why = postgres_reachable()
    if why:
        pytest.skip(why)
    with postgres_database() as url:
        yield url


ALERT_DEFAULTS: dict[str, Any] = {"kind": "panic", "source": "gate", "zone": "Market gate", "outcome": None,
                                  "silent": False, "severity": 1}


def alert_event(hub: str, seq: int, transition: str = "raised", *, level: int = 0, ward: str = "ward-7",
                time: float = 1_763_712_000.0, relayed_by: str | None = None, **alert: Any) -> dict[str, Any]:
    """The envelope of an alert transition as ``hub`` sends it (contract v1)."""
    state = {"raised": "raised", "escalated": "raised", "acknowledged": "acknowledged",
             "resolved": "resolved", "cancelled": "cancelled"}[transition]
    aid = contract.alert_id(hub, seq)
    body = {**ALERT_DEFAULTS, "id": aid, "hub": hub, "seq": seq, "state": state, "level": level,
            "raised_at": time, "updated_at": time, **alert}
    if transition == "resolved" and body["outcome"] is None:
        body["outcome"] = "genuine"
    env = contract.event_envelope(id=contract.transition_event_id(aid, f"alert.{transition}", level),
                                  type=f"alert.{transition}", time=time, ward=ward, hub=hub,
                                  actor="button:gate", data={}, alert=body)
    if relayed_by:
        env["relayed_by"] = relayed_by
    return env


def routine_event(hub: str, n: int, type: str = "siren.test", *, ward: str = "ward-7",
                  time: float = 1_763_712_000.0) -> dict[str, Any]:
    return contract.event_envelope(id=contract.routine_event_id(hub, n), type=type, time=time, ward=ward,
                                   hub=hub, actor="system", data={})


def status(hub: str, *, ward: str = "ward-7", time: float = 1_763_712_000.0,
           online: bool = True) -> dict[str, Any]:
    if not online:
        return contract.offline_payload(ward, hub, "connection lost")
    return contract.status_payload(hub=hub, ward=ward, time=time, name=f"Hub {hub}", version="0.1.0",
                                   uptime=10.0, clock_synced=True, components={}, outbox={}, open_alerts=0)


ROOT = "safercom/v1"
ROOT_V2 = "safercom/v2"

#: Signing keys of test hubs, made once per hub id.
_KEYS: dict[str, Any] = {}


def hub_key(hub: str) -> Any:
    """The test's signing key of ``hub`` (the same for the whole test run)."""
    if hub not in _KEYS:
        _KEYS[hub] = contract.generate_private_key()
    return _KEYS[hub]


def public_key(hub: str) -> str:
    return contract.public_key_text(hub_key(hub))


def signed(envelope: dict[str, Any], *, relayed_by: str | None = None, path: str | None = None,
           key: Any = None) -> dict[str, Any]:
    """A version 2 envelope from a version 1 one (same ids and alert), signed by its hub."""
    v2 = contract.event_envelope_v2(id=envelope["id"], type=envelope["type"], time=envelope["time"],
                                    ward=envelope["ward"], hub=envelope["hub"], actor=envelope["actor"],
                                    data=envelope["data"], alert=envelope.get("alert"))
    out = contract.sign("event", v2, key or hub_key(envelope["hub"]))
    if relayed_by:
        out["relayed_by"] = relayed_by
    if path:
        out["path"] = path
    return out


def attested(envelope: dict[str, Any], by: str) -> dict[str, Any]:
    """A version 2 envelope rebuilt by ``by`` from a mesh frame: attested, not signed."""
    v2 = contract.event_envelope_v2(id=envelope["id"], type=envelope["type"], time=envelope["time"],
                                    ward=envelope["ward"], hub=envelope["hub"], actor=envelope["actor"],
                                    data=envelope["data"], alert=envelope.get("alert"))
    return {**contract.attest(v2, by, hub_key(by)), "relayed_by": by, "path": "mesh"}


def signed_status(hub: str, *, seq: int, ward: str = "ward-7", time: float = 1_763_712_000.0,
                  connected_at: float = 1_763_711_000.0) -> dict[str, Any]:
    payload = contract.status_payload_v2(hub=hub, ward=ward, seq=seq, time=time, report_every=30,
                                         connected_at=connected_at, name=f"Hub {hub}", version="0.2.0",
                                         uptime=5.0, clock_synced=True, components={}, outbox={},
                                         open_alerts=0)
    return contract.sign("status", payload, hub_key(hub))


def signed_will(hub: str, *, ward: str = "ward-7", connected_at: float = 1_763_711_000.0) -> dict[str, Any]:
    return contract.sign("status", contract.will_payload_v2(hub=hub, ward=ward, connected_at=connected_at),
                         hub_key(hub))


def centre_config(tmp: Path, port: int, url: str, *, supervision: dict[str, Any] | None = None,
                  web: dict[str, Any] | None = None, commands: dict[str, Any] | None = None,
                  mqtt: dict[str, Any] | None = None) -> Any:
    """A centre configuration for a test: its own state and runtime dirs, the test's broker."""
    from hubd.centre.config import parse_config

    tmp.mkdir(parents=True, exist_ok=True)
    return parse_config({
        "centre": {"name": "Test centre", "state_dir": str(tmp / "state"), "runtime_dir": str(tmp / "run")},
        "store": {"url": url},
        "mqtt": {"port": port, "client_id": f"centre-{secrets.token_hex(3)}", **(mqtt or {})},
        "supervision": supervision or {},
        "commands": commands or {},
        "web": {"enabled": False, "port": 0, **(web or {})},
    })


class FakeHubs:
    """One paho client that publishes as any hub (as hubs and relays do) and records the
    receipts and commands sent to every hub; ``answer`` makes it reply to commands."""

    def __init__(self, port: int, *, answer: bool = False):
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.receipts: list[dict[str, Any]] = []
        self.commands: list[tuple[str, dict[str, Any], Any]] = []
        self.answer = answer
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hubs-{secrets.token_hex(4)}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()
        topics = [(f"{r}/+/+/{leaf}", 1) for r in (ROOT, ROOT_V2) for leaf in ("receipt", "cmd")]
        self.client.on_connect = lambda c, *a: c.subscribe(topics)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        assert subscribed.wait(10), "fake hubs could not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import json

        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        payload = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/receipt"):
                self.receipts.append(payload)
                return
            self.commands.append((msg.topic, payload, msg.properties))
        if self.answer:
            hub = msg.topic.split("/")[-2]
            result = {"ok": True, "result": {"done": payload["cmd"]}}
            if payload.get("v") == 2:
                unsigned = contract.reply_payload_v2(hub=hub, command_id=payload["id"], time=1.0,
                                                     reply=result)
                reply = contract.sign("reply", unsigned, hub_key(hub))
            else:
                reply = contract.reply_payload(hub, payload["id"], result)
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData
            client.publish(msg.properties.ResponseTopic, json.dumps(reply), qos=1, properties=props)

    def publish(self, hub: str, leaf: str, payload: Any, *, ward: str = "ward-7", retain: bool = False,
                qos: int = 1, root: str | None = None) -> None:
        """On ``root``, or the root of the payload's version (version 1 for bytes)."""
        import json

        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if root is None:
            root = ROOT_V2 if isinstance(payload, dict) and payload.get("v") == 2 else ROOT
        self.client.publish(f"{root}/{ward}/{hub}/{leaf}", raw, qos=qos, retain=retain).wait_for_publish(10)

    def receipted(self) -> set[str]:
        """Every event id some receipt named."""
        with self._lock:
            return {i for r in self.receipts for i in r["ids"]}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


PG_BIN = Path(os.environ.get("HUBD_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresServer:
    """A PostgreSQL server of the test's own (initdb and pg_ctl on a free port, its own data
    directory), which the test may stop and start; never the machine's shared service.
    As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self, port: int):
        import pwd
        import tempfile

        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="centre-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        import subprocess

        r = subprocess.run([*self._user, *cmd], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                  "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``mode`` immediate: as a crash (recovery from the WAL at the next start)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        import shutil

        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class CentreProcess:
    """``hubd centre run`` as a subprocess that a test can ``kill -9`` and start again."""

    def __init__(self, config: Path):
        self.config = config
        self.log = config.parent / "centre.log"
        self.proc: Any = None

    def start(self) -> CentreProcess:
        import subprocess
        import sys

        self._logf = open(self.log, "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "hubd.cli", "centre", "run", "-c", str(self.config)]
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._logf.close()

    def stop(self) -> None:
        import signal

        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()
        if hasattr(self, "_logf"):
            self._logf.close()


def write_centre_config(tmp: Path, *, port: int, url: str, client_id: str, report_every: float = 90,
                        web: bool = False) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "centre.toml"
    path.write_text(f"""\
[centre]
name = "Test centre"
state_dir = "{tmp / 'state'}"
runtime_dir = "{tmp / 'run'}"

[store]
url = "{url}"

[mqtt]
port = {port}
client_id = "{client_id}"

[supervision]
report_every = {report_every}

[web]
enabled = {str(web).lower()}
port = 0
""")
    return path
