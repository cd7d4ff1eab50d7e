"""``hubd demo``: a complete simulated hub on any Linux machine.

The same daemon as on a Pi; only the pin factory (gpiozero's mock pins) and the
camera backend (a generated frame) differ, by configuration.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from hubd.cli import demo_runtime_dir
from hubd.config import ConfigError, load_config

DEMO_CONFIG = """\
# Written by `hubd demo`: a simulated hub (mock pins, generated camera frame).
[hub]
ward = "demo-ward"
id = "demo-hub"
name = "Demo hub"
location = "Your laptop"
state_dir = "{state_dir}"
runtime_dir = "{runtime_dir}"

[hardware]
pin_factory = "mock"
boot_grace = 0

[[buttons]]
name = "gate"
pin = 17
zone = "Market gate"
kind = "panic"

[[buttons]]
name = "clinic"
pin = 22
zone = "Clinic door"
kind = "medical"

[[buttons]]
name = "store"
pin = 23
zone = "Grain store"
kind = "fire"

[[sirens]]
name = "main"
pin = 27
max_on = 60

[camera]
backend = "generated"

[web]
bind = "{bind}"
port = {port}

[protocol]
cancel_window = 30
escalation = [60, 180, 600]
{mqtt}"""


def write_demo_config(state_dir: Path, *, bind: str, port: int, mqtt: str | None) -> Path:
    mqtt_section = ""
    if mqtt:
        host, _, mport = mqtt.rpartition(":")
        mqtt_section = f'\n[mqtt]\nhost = "{host or mqtt}"\nport = {int(mport) if host else 1883}\n'
    path = state_dir / "demo.toml"
    path.write_text(DEMO_CONFIG.format(state_dir=state_dir, runtime_dir=demo_runtime_dir(), bind=bind,
                                       port=port, mqtt=mqtt_section))
    return path


def _demo_account(cfg_path: Path, state_dir: Path) -> tuple[str, str]:
    """A manager account with a generated password (there is never a default one)."""
    from hubd.store import Store
    from hubd.users import Users

    cfg = load_config(cfg_path)
    store = Store(cfg.store_path)
    users = Users(store)
    secret = state_dir / "demo-password"
    try:
        if users.role("manager") is None or not secret.exists():
            password = secrets.token_urlsafe(12)
            if users.role("manager") is None:
                users.add("manager", password, "manager")
            else:
                users.passwd("manager", password)
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password)
        return "manager", secret.read_text()
    finally:
        store.close()


def run_demo(args: argparse.Namespace) -> int:
    from hubd.daemon import run, setup_logging

    setup_logging(args.log_level)
    state_dir = Path(args.state_dir or Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))
                     / "hubd-demo").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_demo_config(state_dir, bind=args.bind, port=args.port, mqtt=args.mqtt)
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        print(f"hubd demo: {'; '.join(e.errors)}", file=sys.stderr)
        return 2
    user, password = _demo_account(cfg_path, state_dir)

    def announce(daemon) -> None:  # noqa: ANN001
        buttons = ", ".join(daemon.buttons)
        print(f"""
  hubd demo is running (simulated hardware, state in {state_dir}).

  Page:     http://{args.bind}:{daemon.web_port}/   log in as {user} / {password}
  Press:    hubd press gate            (buttons: {buttons}; --hold SECONDS to hold)
  Look:     hubd alerts     hubd status     hubd events
  Act:      hubd ack demo-hub:1     hubd resolve demo-hub:1 --outcome genuine
  Stop:     Ctrl-C
""", flush=True)

    return run(cfg, on_ready=announce)
