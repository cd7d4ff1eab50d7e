"""``hubd demo``: a complete simulated hub on any Linux machine.

The same daemon as on a Pi; only the pin factory (gpiozero's mock pins) and the
camera backend (a generated frame) differ, by configuration.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hubd.cli import demo_config_link, demo_runtime_dir
from hubd.config import Config, ConfigError, is_loopback, load_config

#: The page's port when ``--port`` is not given (the next ones for the other hubs of ``--hubs N``).
DEFAULT_PORT = 8080

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


class PortTaken(Exception):
    """A page port asked for with ``--port`` is in use; the message says which and what to do."""


def port_taken(bind: str, port: int) -> bool:
    """Whether another program listens on ``bind:port`` (tried as waitress binds: SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return False  # not an address of this machine: the daemon says so when it starts
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def page_ports(bind: str, asked: int | None, count: int) -> list[int]:
    """The page port of each of ``count`` hubs; 0 stands for a free one.

    ``--port N`` asks for N, N+1, ... and a taken one is an error naming it (PortTaken).
    Without ``--port``, DEFAULT_PORT, DEFAULT_PORT+1, ... are used where free, and a
    free port, said so on stderr, where not."""
    if asked == 0:
        return [0] * count
    first = DEFAULT_PORT if asked is None else asked
    ports = []
    for number, port in enumerate(range(first, first + count), start=1):
        if not port_taken(bind, port):
            ports.append(port)
            continue
        which = "" if count == 1 else f" (hub {number}'s page)"
        if asked is not None:
            raise PortTaken(f"port {port} on {bind}{which} is already in use (another program, or a demo "
                            f"still running?); use --port 0 to take free ports, or another --port")
        print(f"hubd demo: port {port} on {bind}{which} is already in use; taking a free port instead "
              f"(--port N to choose one)", file=sys.stderr)
        ports.append(0)
    return ports


@contextmanager
def config_linked(cfg_path: Path) -> Iterator[None]:
    """While the demo runs, link its config where the CLI's local commands look for it
    (``hubd user`` and ``hubd doctor`` without ``-c``: ``hubd.cli.demo_config_link``)."""
    link = demo_config_link()
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(cfg_path)
    tmp.replace(link)
    try:
        yield
    finally:
        try:
            if link.readlink() == cfg_path:  # not if another demo has taken its place since
                link.unlink()
        except OSError:
            pass


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
    try:
        [port] = page_ports(args.bind, args.port, 1)
    except PortTaken as e:
        print(f"hubd demo: {e}", file=sys.stderr)
        return 2
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = write_demo_config(state_dir, bind=args.bind, port=port, mqtt=args.mqtt,
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

    with config_linked(cfg_path):
        return run(cfg, on_ready=announce)


# --- several hubs on a simulated mesh (`hubd demo --hubs N`) -------------------------------

MESH_SECTION = """
[mesh]
connection = "tcp:127.0.0.1:{port}"
key_file = "{key_file}"
beacon_interval = 60
neighbour_timeout = 300
"""


#: A log line saying why a hub stopped: ERROR or CRITICAL, plain or with journald's prefix.
_FAILURE_LINE = re.compile(r"^(?:\S+ \S+ (?:ERROR|CRITICAL)\s+|<[0-3]>)[\w.]+: (.+)$")


@dataclass
class DemoHub:
    """One running hub of the mesh demo: its own ``hubd run`` process, config, page, radio and log."""

    number: int
    config: Config
    config_path: Path
    port: int
    radio_port: int
    user: str
    password: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    #: Where this run's part of the log (opened for appending) begins.
    log_start: int

    @property
    def log_path(self) -> Path:
        return Path(self.log.name)

    def state(self) -> str:
        return "running" if self.proc.poll() is None else f"exited ({self.proc.returncode})"

    def cause(self) -> str:
        """Why the hub stopped, from its log: the last error it logged in this run."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            lines = f.read().decode("utf-8", "replace").splitlines()
        for line in reversed(lines):
            m = _FAILURE_LINE.match(line)
            if m:
                return m.group(1)
        last = next((line for line in reversed(lines) if line.strip()), "")
        return last or f"it exited with status {self.proc.returncode} and logged nothing"

    def stop(self) -> None:
        """Wait for the process to end (terminated first by the caller), kill it if it will not."""
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _report_stopped(hubs: list[DemoHub], when: str) -> None:
    for h in hubs:
        print(f"hubd demo: hub-{h.number} {when} ({h.state()}): {h.cause()}\n"
              f"  its log: {h.log_path}", file=sys.stderr)
    print("hubd demo: stopping the demo", file=sys.stderr, flush=True)


def run_mesh_demo(args: argparse.Namespace) -> int:
    """N daemons, each with its own store, page and control socket, whose simulated radios
    form a chain on a simulated air (real LongFast airtime): each hub's page shows the
    others' alerts.  Hub 1's control socket is the usual demo one, so plain CLI commands
    reach it; the others are reached with ``-c <their config>``.  If a hub fails to start,
    or stops, the demo stops and says why (from that hub's log)."""
    import signal
    import threading
    import time

    from hubd.control import ControlError, send_command
    from hubd.radio.frames import write_key
    from hubd.radio.meshsim import SimAir

    n = args.hubs
    try:
        ports = page_ports(args.bind, args.port, n)
    except PortTaken as e:
        print(f"hubd demo: {e}", file=sys.stderr)
        return 2
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
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for i, (node, port) in enumerate(zip(nodes, ports, strict=True), start=1):
            state_dir = state_dirs[f"hub-{i}"]
            cfg_path = write_demo_config(state_dir, bind=args.bind, port=port or _free_port(),
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
                return 2
            user, password = _demo_account(cfg_path, state_dir)
            log = open(state_dir / "hubd.log", "ab")  # noqa: SIM115 - closed when the demo ends
            proc = subprocess.Popen([sys.executable, "-m", "hubd.cli", "run", "-c", str(cfg_path),
                                     "--log-level", args.log_level], stdout=log, stderr=subprocess.STDOUT)
            hubs.append(DemoHub(i, cfg, cfg_path, cfg.web.port, node.port, user, password, proc, log,
                                log.tell()))

        ready: set[int] = set()
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline and len(ready) < n:
            if any(h.proc.poll() is not None for h in hubs):
                break
            for h in hubs:
                if h.number not in ready:
                    try:
                        if send_command(h.config.control_socket, {"cmd": "status"}, timeout=2)["ok"]:
                            ready.add(h.number)
                    except (ControlError, OSError):
                        pass
            time.sleep(0.2)
        failed = [h for h in hubs if h.proc.poll() is not None]
        if failed:
            _report_stopped(failed, "did not start")
            return 1
        if stop.is_set():
            return 0
        print(_banner(args, base, hubs), flush=True)
        with config_linked(hubs[0].config_path):
            while not stop.wait(1.0):
                stopped = [h for h in hubs if h.proc.poll() is not None]
                if stopped:
                    _report_stopped(stopped, "stopped")
                    return 1
        return 0
    finally:
        for h in hubs:
            if h.proc.poll() is None:
                h.proc.terminate()
        for h in hubs:
            h.stop()
        air.stop()


def _banner(args: argparse.Namespace, base: Path, hubs: list[DemoHub]) -> str:
    lines = [f"\n  hubd demo: {len(hubs)} hubs on a simulated LoRa mesh (a chain; state in {base}).\n"]
    for h in hubs:
        flag = "" if h.number == 1 else f" -c {h.config_path}"
        lines.append(f"  hub-{h.number}: http://{args.bind}:{h.port}/  login {h.user} / {h.password}")
        lines.append(f"         hubd press gate{flag}     hubd alerts{flag}")
        lines.append(f"         radio: meshtastic --host 127.0.0.1:{h.radio_port} --info")
        lines.append(f"         log: {h.log_path}")
    lines.append("\n  Press a button on one hub and watch the alert appear on the others' pages."
                 "\n  The simulated radios speak Meshtastic's TCP API: the meshtastic CLI and apps connect"
                 "\n  to them (a radio serves one client at a time, so its hub reconnects after).")
    lines.append("  Stop: Ctrl-C\n")
    return "\n".join(lines)
