"""``hubd doctor``: check an installation and say what to fix.

Each check answers ok, warn (works, but degraded) or FAIL (the hub cannot do its job),
with a line saying how to fix it.  The command exits non-zero when anything failed, so
it fits in scripts and in the installer's own messages.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import json
import os
import shutil
import socket
import sqlite3
import stat
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hubd.config import Config, ConfigError, is_loopback, load_config

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

#: Free space on the state file system below which the hub is broken, or degraded.
DISK_FAIL_BYTES = 50 * 1024 * 1024
DISK_WARN_BYTES = 500 * 1024 * 1024


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


# --- the individual checks ---------------------------------------------------------------------

def check_config(path: Path) -> tuple[Check, Config | None]:
    try:
        cfg = load_config(path)
    except ConfigError as e:
        detail = "; ".join(e.errors)
        if not detail.startswith(f"{path}:"):  # a file's problems say the file; a key's do not
            detail = f"{path}: {detail}"
        return Check("config", FAIL, detail,
                     f"edit {path} (every key is explained in the example), then: "
                     f"hubd check-config {path}"), None
    return Check("config", OK, f"{path} is valid: hub {cfg.hub.ward}/{cfg.hub.id}, {len(cfg.buttons)} "
                               f"button(s), {len(cfg.sirens)} siren(s)"), cfg


def check_daemon(cfg: Config, timeout: float) -> tuple[Check, dict[str, Any] | None]:
    from hubd.control import ControlError, hub_owners, send_command

    try:
        reply = send_command(cfg.control_socket, {"cmd": "status"}, timeout=timeout,
                             trusted_owners=hub_owners(cfg.state_dir))
    except (ControlError, OSError) as e:
        return Check("daemon", WARN, f"not running (no answer on {cfg.control_socket}: {e})",
                     "sudo systemctl start hubd; if it does not stay up: journalctl -u hubd -n 50"), None
    if not reply.get("ok"):
        return Check("daemon", FAIL, f"answers with an error: {reply.get('error')}",
                     "sudo systemctl restart hubd; journalctl -u hubd -n 50"), None
    status = reply["result"]
    faults = [f"{name}: {h['reason'] or h['status']}" for name, h in status.get("components", {}).items()
              if h.get("status") == "fault"]
    if faults:
        return Check("daemon", WARN, f"running, up {status.get('uptime', 0):.0f} s, with faults: "
                     + "; ".join(faults), "see `hubd status` and the checks below"), status
    return Check("daemon", OK, f"running, up {status.get('uptime', 0):.0f} s, every component ok"), status


# struct gpiochip_info and struct gpio_v2_line_info (linux/gpio.h), read by ioctl.
_GPIO_GET_CHIPINFO = 0x8044B401
_GPIO_V2_GET_LINEINFO = 0xC100B405
_GPIO_V2_LINE_FLAG_USED = 1


class _ChipInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 32), ("label", ctypes.c_char * 32), ("lines", ctypes.c_uint32)]


class _LineInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 32), ("consumer", ctypes.c_char * 32), ("offset", ctypes.c_uint32),
                ("num_attrs", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("attrs", ctypes.c_uint8 * (16 * 10)), ("padding", ctypes.c_uint32 * 4)]


def _header_chip() -> tuple[str, int] | None:
    """The GPIO chip of the 40-pin header (Pi 5: pinctrl-rp1; earlier: pinctrl-bcm2xxx)."""
    best = None
    for dev in sorted(glob.glob("/dev/gpiochip*")):
        try:
            fd = os.open(dev, os.O_RDONLY)
        except OSError:
            continue
        try:
            info = _ChipInfo()
            fcntl.ioctl(fd, _GPIO_GET_CHIPINFO, info)
        except OSError:
            continue
        finally:
            os.close(fd)
        label = info.label.decode(errors="replace")
        if label.startswith(("pinctrl-rp1", "pinctrl-bcm")):
            return dev, info.lines
        best = best or (dev, info.lines)
    return best


def check_pins(cfg: Config, daemon_running: bool) -> Check:
    if cfg.hardware.pin_factory == "mock":
        return Check("pins", OK, "simulated (pin_factory = \"mock\"): no GPIO to check")
    pins = [(b.pin, f"button {b.name}") for b in cfg.buttons]
    pins += [(s.pin, f"siren {s.name}") for s in cfg.sirens]
    pins += [(s.feedback_pin, f"siren {s.name} feedback") for s in cfg.sirens if s.feedback_pin is not None]
    if cfg.hardware.tamper:
        pins.append((cfg.hardware.tamper.pin, "tamper"))
    chip = _header_chip()
    if chip is None:
        return Check("pins", FAIL, "no GPIO chip (/dev/gpiochip*) found or readable",
                     "on a Raspberry Pi: add the hubd user to the gpio group (install.sh does); elsewhere "
                     "set pin_factory = \"mock\" in [hardware] for a simulated hub")
    dev, lines = chip
    if not os.access(dev, os.R_OK | os.W_OK):
        return Check("pins", FAIL, f"{dev} is not readable and writable by this user",
                     "run hubd doctor with sudo, and add the hubd user to the gpio group")
    busy = []
    fd = os.open(dev, os.O_RDONLY)
    try:
        for pin, what in pins:
            if pin >= lines:
                busy.append(f"pin {pin} ({what}) does not exist on {dev} ({lines} lines)")
                continue
            info = _LineInfo(offset=pin)
            fcntl.ioctl(fd, _GPIO_V2_GET_LINEINFO, info)
            if info.flags & _GPIO_V2_LINE_FLAG_USED and not daemon_running:
                consumer = info.consumer.decode(errors="replace") or "?"
                busy.append(f"pin {pin} ({what}) is in use by {consumer}")
    finally:
        os.close(fd)
    if busy:
        return Check("pins", FAIL, "; ".join(busy),
                     "stop the program holding the pin (or a dtoverlay claiming it), or pick a free pin")
    held = " (held by the running hubd)" if daemon_running else ""
    return Check("pins", OK, f"{len(pins)} pin(s) on {dev} free{held}")


def _tcp(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return str(e) or type(e).__name__


def check_radio(cfg: Config, timeout: float) -> Check:
    if cfg.mesh is None:
        return Check("radio", SKIP, "no [mesh] configured")
    kind, _, where = cfg.mesh.connection.partition(":")
    if kind == "tcp":
        host, _, port = where.rpartition(":")
        err = _tcp(host, int(port), timeout)
        if err:
            return Check("radio", FAIL, f"cannot connect to the radio at {where}: {err}",
                         "check the radio's network address and that its TCP API is enabled")
        return Check("radio", OK, f"radio answers at {where}")
    path = Path(where)
    if not path.exists():
        present = sorted(glob.glob("/dev/serial/by-id/*")) or sorted(glob.glob("/dev/tty[UA][SC][BM]*"))
        return Check("radio", FAIL, f"radio device {path} is not present"
                     + (f" (present: {', '.join(present)})" if present else " (no USB serial device at all)"),
                     "plug the radio in (a data cable, not a charge-only one) and name it in [mesh] "
                     "connection by its stable /dev/serial/by-id/ path")
    if not stat.S_ISCHR(path.stat().st_mode):
        return Check("radio", FAIL, f"{path} is not a serial device", "check [mesh] connection")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("radio", FAIL, f"{path} is not readable and writable by this user",
                     "run with sudo; the hubd user needs the dialout group (install.sh adds it)")
    return Check("radio", OK, f"radio device {path} present")


def check_broker(cfg: Config, timeout: float) -> Check:
    m = cfg.mqtt
    if m is None:
        return Check("broker", SKIP, "no [mqtt] configured")
    where = f"{m.host}:{m.port}"
    err = _tcp(m.host, m.port, timeout)
    if err:
        return Check("broker", FAIL, f"cannot connect to {where}: {err}",
                     "check [mqtt] host and port, the network (ping the server), and that the broker runs")
    result = _mqtt_connect(cfg, timeout)
    if result:
        return Check("broker", FAIL, f"{where} refuses this hub: {result}",
                     "check [mqtt] username, password_file, tls and ca_file against the broker's settings")
    if not m.tls and not is_loopback(m.host):
        return Check("broker", WARN, f"{where} accepts this hub, without TLS (insecure = true): the broker "
                     "password, commands and alerts cross the network in clear",
                     "set [mqtt] tls = true and ca_file (and remove insecure)")
    return Check("broker", OK, f"{where} accepts this hub's MQTT connection")


def check_trust(cfg: Config) -> Check:
    """Whom the hub believes (contract version 2): its key, the centre's, its neighbours'."""
    if cfg.mqtt is None:
        return Check("trust", SKIP, "no [mqtt] configured")
    problems = []
    if not cfg.signing_key_path.exists():
        problems.append(f"no signing key at {cfg.signing_key_path} (the daemon makes one on its first start)")
    if not cfg.trust.centre:
        problems.append("no [trust] centre key: no command over MQTT is executed")
    unknown = [n for n in cfg.mqtt.neighbours if n not in cfg.trust.hubs]
    if unknown:
        problems.append(f"neighbours without a key in [trust] hubs (nothing they say is believed): "
                        f"{', '.join(unknown)}")
    if problems:
        return Check("trust", WARN, "; ".join(problems),
                     "hubd keys init (then enrol `hubd keys show` at the centre and the neighbours); put the "
                     "centre's and the neighbours' public keys in [trust]")
    return Check("trust", OK, f"signing key, the centre's key and {len(cfg.trust.hubs)} hub key(s)")


def _mqtt_connect(cfg: Config, timeout: float) -> str | None:
    """A real MQTT CONNECT with the hub's credentials and TLS; None when accepted."""
    import paho.mqtt.client as mqtt

    m = cfg.mqtt
    assert m is not None
    proto = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{cfg.hub.id}-doctor", protocol=proto)
    outcome: list[str | None] = []
    done = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        outcome.append(None if not reason.is_failure else str(reason))
        done.set()

    client.on_connect = on_connect
    try:
        if m.username:
            password = Path(m.password_file).read_text().strip() if m.password_file else None
            client.username_pw_set(m.username, password)
        if m.tls:
            client.tls_set(ca_certs=m.ca_file or None, certfile=m.cert_file or None,
                           keyfile=m.key_file or None)
        client.connect(m.host, m.port, keepalive=max(5, int(timeout) + 5))
        client.loop_start()
        if not done.wait(timeout):
            return f"no CONNACK within {timeout:.0f} s"
        return outcome[0]
    except Exception as e:  # TLS and socket errors come in many types; all mean "refused"
        return f"{type(e).__name__}: {e}"
    finally:
        try:
            client.disconnect()
            client.loop_stop()
        except Exception:
            pass


def check_clock() -> Check:
    from hubd.clock import check

    synced, reason = check()
    if synced:
        return Check("clock", OK, f"synchronised ({reason})")
    return Check("clock", WARN, f"not synchronised: {reason}; events are marked unsynchronised",
                 "give the hub network access to an NTP server (timedatectl set-ntp true; "
                 "timedatectl timesync-status), or fit an RTC")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(state_dir: Path) -> Check:
    where = _existing(state_dir)
    try:
        vfs = os.statvfs(where)
        free = shutil.disk_usage(where).free
    except OSError as e:
        return Check("disk", FAIL, f"cannot inspect {where}: {e}", "check the SD card and its mount")
    mb = free / 1024 / 1024
    if vfs.f_flag & os.ST_RDONLY:
        return Check("disk", FAIL, f"{where} is on a read-only file system",
                     "the SD card may be failing: check `dmesg`, back up /var/lib/hubd and replace the card")
    if free < DISK_FAIL_BYTES:
        return Check("disk", FAIL, f"only {mb:.1f} MB free for {state_dir}: alerts may not be saved",
                     "free space: sudo journalctl --vacuum-size=50M; sudo apt-get clean; lower "
                     "[camera] max_total_mb or [store] retention_days")
    if free < DISK_WARN_BYTES:
        return Check("disk", WARN, f"{mb:.0f} MB free for {state_dir}",
                     "free space soon: sudo journalctl --vacuum-size=50M; sudo apt-get clean")
    return Check("disk", OK, f"{mb:.0f} MB free for {state_dir}")


def check_store(cfg: Config) -> Check:
    from hubd.store import SCHEMA_VERSION, read_schema_version

    path = cfg.store_path
    if not path.exists():
        return Check("store", OK, f"{path} not created yet (the daemon creates it on first start)")
    try:
        version = read_schema_version(path)
    except sqlite3.Error as e:
        return Check("store", FAIL, f"cannot read {path}: {e}",
                     "check the file's owner (hubd) and the SD card; move a damaged file aside to "
                     "start afresh")
    if version > SCHEMA_VERSION:
        return Check("store", FAIL, f"{path} has schema {version}, newer than this hubd ({SCHEMA_VERSION})",
                     "install the newer hubd again (it wrote this store)")
    return Check("store", OK, f"{path} readable, schema {version}"
                 + (" (migrated on next start)" if version < SCHEMA_VERSION else ""))


# --- running them ------------------------------------------------------------------------------

def run_checks(config_path: Path, timeout: float = 5.0) -> list[Check]:
    checks = []
    config_check, cfg = check_config(config_path)
    checks.append(config_check)
    if cfg is None:
        try:  # secret files unreadable: the rest can still be checked
            cfg = load_config(config_path, check_files=False)
        except ConfigError:
            cfg = None
    if cfg is not None:
        daemon, status = check_daemon(cfg, timeout)
        checks.append(daemon)
        checks.append(check_pins(cfg, status is not None))
        checks.append(check_radio(cfg, timeout))
        checks.append(check_broker(cfg, timeout))
        checks.append(check_trust(cfg))
    checks.append(check_clock())
    if cfg is not None:
        checks.append(check_disk(cfg.state_dir))
        checks.append(check_store(cfg))
    return checks


def report(checks: list[Check], config_path: Path, as_json: bool = False) -> int:
    """Print the checks; return the exit status (1 when anything failed)."""
    failed = [c for c in checks if c.status == FAIL]
    warned = [c for c in checks if c.status == WARN]
    if as_json:
        print(json.dumps({"config": str(config_path), "ok": not failed,
                          "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failed else 0
    print(f"hubd doctor: {config_path}")
    for c in checks:
        print(f"  {c.status:<5} {c.name:<7} {c.detail}")
        if c.fix and c.status in (FAIL, WARN):
            print(f"  {'':<5} {'':<7} fix: {c.fix}")
    if failed:
        print(f"{len(failed)} problem(s), {len(warned)} warning(s): the hub needs fixing "
              f"({', '.join(c.name for c in failed)}).")
    elif warned:
        print(f"no problems, {len(warned)} warning(s).")
    else:
        print("everything is fine.")
    return 1 if failed else 0
