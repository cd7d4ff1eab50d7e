"""``hubd demo``: a complete simulated hub on any Linux machine.

The same daemon as on a Pi; only the pin factory (gpiozero's mock pins) and the
camera backend (a generated frame) differ, by configuration.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hubd.cli import demo_runtime_dir
from hubd.config import Config, ConfigError, is_loopback, load_config

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


def write_demo_config(state_dir: Path, *, bind: str, port: int, mqtt: str | None, trust: str = "") -> Path:
    mqtt_section = ""
    if mqtt:
        host, _, mport = mqtt.rpartition(":")
        host = host or mqtt
        mqtt_section = f'\n[mqtt]\nhost = "{host}"\nport = {int(mport) if mport.isdigit() else 1883}\n'
        if not is_loopback(host):
            mqtt_section += "insecure = true  # the demo's broker is plain MQTT: never so on a real hub\n"
    path = state_dir / "demo.toml"
    path.write_text(DEMO_CONFIG.format(state_dir=state_dir, runtime_dir=demo_runtime_dir(), bind=bind,
                                       port=port, mqtt=mqtt_section) + trust)
    return path


def demo_keys(base: Path, hubs: dict[str, Path]) -> str:
    """Signing keys for the demo's hubs (each in its state directory) and for a demo centre
    (``<base>/centre.key``), made once; the ``[trust]`` section every demo hub gets: the
    others' public keys and the centre's."""
    from hubd import contract
    from hubd.identity import init_key

    def key(path: Path) -> str:
        return contract.public_key_text(contract.load_private_key(path) if path.exists() else init_key(path))

    centre = key(base / "centre.key")
    public = {hub: key(state_dir / "signing.key") for hub, state_dir in hubs.items()}
    lines = ["", "# Whom this demo hub believes: the demo centre (its key in centre.key) and the other",
             "# demo hubs. A real hub lists its centre's and its neighbours' keys (`hubd keys show`).",
             "[trust]", f'centre = "{centre}"']
    if public:
        lines.append("hubs = { " + ", ".join(f'"{h}" = "{k}"' for h, k in public.items()) + " }")
    return "\n".join(lines) + "\n"


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
    from hubd.daemon import Daemon, run, setup_logging

    setup_logging(args.log_level)
    if getattr(args, "hubs", 1) > 1:
        return run_mesh_demo(args)
    state_dir = Path(args.state_dir or Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))
                     / "hubd-demo").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_demo_config(state_dir, bind=args.bind, port=args.port, mqtt=args.mqtt,
                                 trust=demo_keys(state_dir, {"demo-hub": state_dir}))
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        print(f"hubd demo: {'; '.join(e.errors)}", file=sys.stderr)
        return 2
    user, password = _demo_account(cfg_path, state_dir)

    def announce(daemon: Daemon) -> None:
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


# --- several hubs on a simulated mesh (`hubd demo --hubs N`) -------------------------------

MESH_SECTION = """
[mesh]
connection = "tcp:127.0.0.1:{port}"
key_file = "{key_file}"
beacon_interval = 60
neighbour_timeout = 300
"""


@dataclass
class DemoHub:
    """One running hub of the mesh demo: its own ``hubd run`` process, config, page and log."""

    number: int
    config: Config
    config_path: Path
    port: int
    user: str
    password: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def state(self) -> str:
        return "running" if self.proc.poll() is None else f"exited ({self.proc.returncode})"

    def stop(self) -> None:
        """Wait for the process to end (terminated first by the caller), kill it if it will not."""
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_mesh_demo(args: argparse.Namespace) -> int:
    """N daemons, each with its own store, page and control socket, whose simulated radios
    form a chain on a simulated air (real LongFast airtime): each hub's page shows the
    others' alerts.  Hub 1's control socket is the usual demo one, so plain CLI commands
    reach it; the others are reached with ``-c <their config>``."""
    import signal
    import threading
    import time

    from hubd.control import ControlError, send_command
    from hubd.radio.frames import write_key
    from hubd.radio.meshsim import SimAir

    n = args.hubs
    base = Path(args.state_dir or Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))
                / "hubd-demo-mesh").resolve()
    base.mkdir(parents=True, exist_ok=True)
    key_file = base / "network.key"
    if not key_file.exists():
        write_key(key_file)
    air = SimAir(time_scale=1.0)
    nodes = [air.add_node(hop_limit=3, name=f"hub-{i + 1}") for i in range(n)]
    for a, b in zip(nodes, nodes[1:], strict=False):
        air.link(a, b, loss=args.mesh_loss)
    air.start()
    hubs: list[DemoHub] = []
    state_dirs = {f"hub-{i}": base / f"hub-{i}" for i in range(1, n + 1)}
    for state_dir in state_dirs.values():
        state_dir.mkdir(parents=True, exist_ok=True)
    trust = demo_keys(base, state_dirs)
    for i, node in enumerate(nodes, start=1):
        state_dir = state_dirs[f"hub-{i}"]
        port = args.port + i - 1 if args.port else _free_port()
        cfg_path = write_demo_config(state_dir, bind=args.bind, port=port,
                                     mqtt=args.mqtt if i == 1 else None, trust=trust)
        text = cfg_path.read_text().replace('id = "demo-hub"', f'id = "hub-{i}"').replace(
            'name = "Demo hub"', f'name = "Demo hub {i}"')
        if i > 1:  # only hub 1 answers plain CLI commands
            text = text.replace(f'runtime_dir = "{demo_runtime_dir()}"',
                                f'runtime_dir = "{state_dir / "run"}"')
        cfg_path.write_text(text + MESH_SECTION.format(port=node.port, key_file=key_file))
        try:
            cfg = load_config(cfg_path)
        except ConfigError as e:
            print(f"hubd demo: hub {i}: {'; '.join(e.errors)}", file=sys.stderr)
            air.stop()
            return 2
        user, password = _demo_account(cfg_path, state_dir)
        log = open(state_dir / "hubd.log", "ab")  # noqa: SIM115 - closed when the demo ends
        proc = subprocess.Popen([sys.executable, "-m", "hubd.cli", "run", "-c", str(cfg_path),
                                 "--log-level", args.log_level], stdout=log, stderr=subprocess.STDOUT)
        hubs.append(DemoHub(i, cfg, cfg_path, port, user, password, proc, log))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + 60
    for h in hubs:
        while not stop.is_set() and time.monotonic() < deadline and h.proc.poll() is None:
            try:
                if send_command(h.config.control_socket, {"cmd": "status"}, timeout=2)["ok"]:
                    break
            except (ControlError, OSError):
                pass
            time.sleep(0.2)
    lines = [f"\n  hubd demo: {n} hubs on a simulated LoRa mesh (a chain; state in {base}).\n"]
    for h in hubs:
        flag = "" if h.number == 1 else f" -c {h.config_path}"
        lines.append(f"  hub-{h.number}: http://{args.bind}:{h.port}/  login {h.user} / {h.password}"
                     f"  [{h.state()}]")
        lines.append(f"         hubd press gate{flag}     hubd alerts{flag}")
        lines.append(f"         log: {h.config.state_dir / 'hubd.log'}")
    lines.append("\n  Press a button on one hub and watch the alert appear on the others' pages."
                 "\n  Stop: Ctrl-C\n")
    print("\n".join(lines), flush=True)
    try:
        while not stop.wait(1.0):
            if all(h.proc.poll() is not None for h in hubs):
                break
    finally:
        for h in hubs:
            if h.proc.poll() is None:
                h.proc.terminate()
        for h in hubs:
            h.stop()
        air.stop()
    return 0
