"""``hubd doctor`` on a good and on broken installations, and the clock's sync flag."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HUBD, REPO, HubProcess, Mosquitto, free_port, hub_config, wait_for

from hubd import clock


def doctor(config: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*HUBD, "doctor", "-c", str(config), "--timeout", "5", *extra], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**os.environ, **(env or {})})


def checks(config: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict]]:
    r = doctor(config, "--json", env=env)
    out = json.loads(r.stdout)
    return r.returncode, {c["name"]: c for c in out["checks"]}


def test_good_install(tmp_path: Path, mosquitto: Mosquitto, hub_processes: list[HubProcess]) -> None:
    cfg = hub_config(tmp_path, web=False, extra=f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n')
    hub = HubProcess(cfg)
    hub_processes.append(hub)
    hub.start()
    rc, c = checks(cfg)
    assert rc == 0, c
    for name in ("config", "pins", "broker", "disk", "store"):
        assert c[name]["status"] == "ok", c[name]
    assert c["daemon"]["detail"].startswith("running"), c["daemon"]
    assert c["radio"]["status"] == "skip"
    assert c["clock"]["status"] in ("ok", "warn")
    text = doctor(cfg, env={"HUBD_CLOCK_SYNCED": "1"})
    assert text.returncode == 0 and "needs fixing" not in text.stdout, text.stdout


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.fail(f"this test mounts a tiny tmpfs and needs root with CAP_SYS_ADMIN: {r.stderr.strip()}")
    subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'filler'}", "bs=4k", "status=none"], check=False)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_broken_install(tmp_path: Path, full_fs: Path) -> None:
    key = tmp_path / "mesh.key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    closed = free_port()
    cfg = hub_config(tmp_path, web=False, extra=(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {closed}\n\n'
        f'[mesh]\nconnection = "serial:/dev/ttyUSB-hubd-test-missing"\nkey_file = "{key}"\n'))
    rc, c = checks(cfg)
    assert rc == 1
    assert c["config"]["status"] == "ok"
    assert c["daemon"]["status"] == "warn" and "not running" in c["daemon"]["detail"]
    assert c["broker"]["status"] == "FAIL" and str(closed) in c["broker"]["detail"]
    assert c["radio"]["status"] == "FAIL" and "not present" in c["radio"]["detail"]
    assert c["disk"]["status"] == "FAIL" and "MB free" in c["disk"]["detail"]
    for name in ("broker", "radio", "disk"):
        assert c[name]["fix"], c[name]
    text = doctor(cfg)
    assert text.returncode == 1
    assert "3 problem(s)" in text.stdout and "(radio, broker, disk)" in text.stdout, text.stdout
    assert text.stdout.count("fix: ") >= 3


def test_invalid_config(tmp_path: Path) -> None:
    cfg = hub_config(tmp_path, web=False, buttons='[[buttons]]\nname = "a"\npin = 17\n\n'
                                                  '[[sirens]]\nname = "s"\npin = 17\n')
    rc, c = checks(cfg)
    assert rc == 1
    assert c["config"]["status"] == "FAIL" and "already used" in c["config"]["detail"]
    assert "hubd check-config" in c["config"]["fix"]
    missing = doctor(tmp_path / "nope.toml")
    assert missing.returncode == 1 and "cannot read" in missing.stdout


def test_gpio_missing_is_reported(tmp_path: Path) -> None:
    """A hub configured for real GPIO on a machine without a GPIO chip cannot work."""
    if any(Path("/dev").glob("gpiochip*")):
        pytest.skip("this machine has a GPIO chip; the check then reads its lines instead")
    cfg = hub_config(tmp_path, web=False)
    cfg.write_text(cfg.read_text().replace('pin_factory = "mock"', 'pin_factory = "lgpio"'))
    rc, c = checks(cfg)
    assert rc == 1 and c["pins"]["status"] == "FAIL" and "gpiochip" in c["pins"]["detail"]
    assert "mock" in c["pins"]["fix"]


# --- the clock ---------------------------------------------------------------------------------

def test_clock_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBD_CLOCK_SYNCED", "1")
    assert clock.check()[0] is True
    # A clock reading before this software existed is never synchronised.
    assert clock.check(now=86400.0) == (False, "the clock reads 1970-01-02, before this software")
    monkeypatch.setenv("HUBD_CLOCK_SYNCED", "0")
    assert clock.check()[0] is False
    monkeypatch.delenv("HUBD_CLOCK_SYNCED")
    assert clock.kernel_synced() in (True, False, None)
    assert clock.check()[0] == (clock.TIMESYNC_FLAG.exists() or bool(clock.kernel_synced()))


def test_clock_watch_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBD_CLOCK_SYNCED", "1")
    watch = clock.ClockWatch(ttl=3600)
    assert watch() is True
    monkeypatch.setenv("HUBD_CLOCK_SYNCED", "0")
    assert watch() is True  # cached
    assert clock.ClockWatch(ttl=0)() is False


@pytest.mark.parametrize("synced", ["0", "1"])
def test_events_carry_the_clock_flag(tmp_path: Path, synced: str, hub_processes: list[HubProcess]) -> None:
    hub = HubProcess(hub_config(tmp_path, web=False), env={"HUBD_CLOCK_SYNCED": synced})
    hub_processes.append(hub)
    hub.start()
    assert hub.cli("press", "gate").returncode == 0
    wait_for(lambda: hub.cli_json("alerts")["result"], 20, message="alert raised")
    status = hub.cli_json("status")["result"]
    assert status["clock_synced"] is (synced == "1")
    assert ("CLOCK NOT SYNCED" in hub.cli("status").stdout) is (synced == "0")
    db = sqlite3.connect(tmp_path / "state" / "hubd.db")
    flags = {row[0]: row[1] for row in db.execute("SELECT type, clock_synced FROM events")}
    db.close()
    assert flags["alert.raised"] == int(synced), flags


def test_a_missing_config_is_named_once(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "hub.toml"
    rc, c = checks(missing)
    assert rc == 1
    assert c["config"]["status"] == "FAIL"
    assert c["config"]["detail"] == f"{missing}: cannot read: No such file or directory", c["config"]
    text = doctor(missing)
    assert f"config  {missing}: cannot read" in text.stdout
    assert f"{missing}: {missing}" not in text.stdout
