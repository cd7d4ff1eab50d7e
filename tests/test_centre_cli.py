"""``hubd centre``: the configuration checked key by key, the registry and accounts from the
command line, and a running centre (a subprocess) reached through its control socket; the
systemd unit hardened like the hub's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from centre_support import FakeHubs, alert_event
from support import HUBD, REPO, Mosquitto, free_port, wait_for

from hubd.centre.config import EXAMPLE, ConfigError, load_config, parse_config

UNIT = REPO / "systemd" / "hubd-centre.service"


def centre_cli(*args: str, config: Path | None = None, stdin: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    extra = ["-c", str(config)] if config else []
    return subprocess.run([*HUBD, "centre", *args, *extra], capture_output=True, text=True, timeout=timeout,
                          input=stdin, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def write_config(tmp: Path, port: int = 1883, web_port: int = 0) -> Path:
    path = tmp / "centre.toml"
    path.write_text(textwrap.dedent(f"""\
        [centre]
        name = "CLI centre"
        state_dir = "{tmp / 'state'}"
        runtime_dir = "{tmp / 'run'}"

        [mqtt]
        port = {port}
        client_id = "centre-cli-{tmp.name[-8:]}"

        [web]
        port = {web_port}
        """))
    return path


def test_the_example_config_is_valid_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.supervision.report_every == 90
    assert cfg.roots == {"safercom/v2": 2, "safercom/v1": 1}
    text = EXAMPLE.read_text()
    for section in ("centre", "store", "mqtt", "supervision", "commands", "web", "snapshots"):
        assert f"[{section}]" in text


@pytest.mark.parametrize(("raw", "message"), [
    ({"mqtt": {"port": "x"}}, "[mqtt] port: expected an integer from 1 to 65535, got 'x'"),
    ({"mqtt": {"prot": 1}}, "[mqtt] prot: unknown key"),
    ({"supervision": {"report_every": 0}}, "[supervision] report_every: expected a number from 1 to 90000"),
    ({"supervision": {"wards": {"bad ward": 20}}}, "[supervision] wards: 'bad ward' is not a ward id"),
    ({"store": {"url": "mysql://x"}}, "[store] url: expected a URL"),
    ({"web": {"enabled": "yes"}}, "[web] enabled: expected true or false"),
    ({"centre": {"nme": "x"}}, "[centre] nme: unknown key"),
    ({"centr": {}}, "[centr]: unknown section"),
    ({"mqtt": {"root_v1": "safercom/v2"}}, "[mqtt] root_v1: 'safercom/v2' is also the version 2 root"),
    ({"mqtt": {"root": "a/+/b"}}, "[mqtt] root: expected topic levels"),
])
def test_config_mistakes_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert message in str(e.value)


def test_defaults(tmp_path: Path) -> None:
    cfg = parse_config({"centre": {"state_dir": "s"}, "supervision": {"wards": {"ward-7": 20}}},
                       base=tmp_path)
    assert cfg.store_url == f"sqlite:///{tmp_path / 's' / 'centre.db'}"
    assert cfg.supervision.wards == {"ward-7": 20.0} and cfg.commands.timeout == 30


def test_registry_and_accounts_from_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    r = centre_cli("hub", "add", "hub-1", "--ward", "ward-7", "--name", "Market", "--lat", "9.05",
                   "--lon", "7.49", "--json", config=config)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["enrolled_by"].startswith("cli:")
    r = centre_cli("hub", "add", "hub-1", "--ward", "ward-7", config=config)
    assert r.returncode == 2 and "already enrolled" in r.stderr
    r = centre_cli("hub", "add", "hub-2", "--ward", "ward-7", "--lat", "9.0", config=config)
    assert r.returncode == 2 and "both latitude and longitude" in r.stderr
    listed = json.loads(centre_cli("hub", "list", "--json", config=config).stdout)
    assert [h["id"] for h in listed] == ["hub-1"] and listed[0]["lat"] == 9.05
    assert "Market" in centre_cli("hubs", config=config).stdout
    assert centre_cli("hub", "remove", "hub-1", config=config).returncode == 0
    assert centre_cli("hub", "remove", "hub-1", config=config).returncode == 2

    r = centre_cli("user", "add", "sam", "--role", "supervisor", "--password-stdin", config=config,
                   stdin="short\n")
    assert r.returncode == 2 and "too short" in r.stderr
    r = centre_cli("user", "add", "sam", "--role", "supervisor", "--password-stdin", config=config,
                   stdin="a long enough password\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(centre_cli("user", "list", "--json", config=config).stdout)[0]["role"] == "supervisor"
    assert json.loads(centre_cli("alerts", "--json", config=config).stdout) == []
    r = centre_cli("ack", "hub-1:1", config=config)
    assert r.returncode == 2 and "no centre is running" in r.stderr
    r = centre_cli("alerts", config=tmp_path / "missing.toml")
    assert r.returncode == 2 and "no configuration" in r.stderr

    r = centre_cli("keys", "show", config=config)
    assert r.returncode == 2 and "hubd centre keys init" in r.stderr
    r = centre_cli("keys", "init", "--json", config=config)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)["public_key"]
    assert made.startswith("ed25519:") and (tmp_path / "state" / "centre.key").stat().st_mode & 0o777 == 0o600
    assert centre_cli("keys", "init", config=config).returncode == 2  # never overwritten
    assert made in centre_cli("keys", config=config).stdout


def test_a_running_centre_through_its_control_socket(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path, mosquitto.port, free_port())
    assert centre_cli("hub", "add", "hub-1", "--ward", "ward-7", config=config).returncode == 0
    log = open(tmp_path / "centre.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*HUBD, "centre", "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    hubs = FakeHubs(mosquitto.port, answer=True)
    try:
        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "centre.log").read_text()
            r = centre_cli("status", "--json", config=config)
            return r.returncode == 0 and json.loads(r.stdout)["connected"]

        wait_for(up, 30, message="the centre running")
        # Enrolled while it runs: it is told at once.
        assert centre_cli("hub", "add", "hub-2", "--ward", "ward-7", config=config).returncode == 0
        hubs.publish("hub-2", "events", alert_event("hub-2", 3))
        wait_for(lambda: json.loads(centre_cli("alerts", "--json", config=config).stdout), 15,
                 message="the alert at the centre")
        r = centre_cli("ack", "hub-2:3", "--json", config=config)
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stdout)
        assert done["state"] == "replied" and done["by"].startswith("cli:")
        assert hubs.commands[-1][1]["cmd"] == "ack"
        r = centre_cli("command", "hub-2", "siren_test", config=config)
        assert r.returncode == 0 and "done" in r.stdout
        assert "hub-2" in centre_cli("hubs", config=config).stdout
        events = json.loads(centre_cli("events", "--json", "--hub", "hub-2", config=config).stdout)
        assert events[0]["id"] == "hub-2:3:raised:0"
        assert "hub-2:3" in centre_cli("alerts", config=config).stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "running: broker" in (tmp_path / "centre.log").read_text()
    finally:
        hubs.close()
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_the_unit_is_hardened_like_the_hubs() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=always", "StartLimitIntervalSec=0", "ProtectSystem=strict",
                 "StateDirectory=hubd-centre", "RuntimeDirectory=hubd-centre", "NoNewPrivileges=yes",
                 "PrivateDevices=yes", "User=hubd-centre", "UMask=0077",
                 "ExecStart=/opt/hubd/bin/hubd centre run -c /etc/hubd/centre.toml"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for hubd-centre\.service: ([0-9.]+)", r.stdout + r.stderr)
    if m is None:
        pytest.skip("systemd-analyze security is not available here")
    assert float(m.group(1)) <= 2.0, r.stdout
