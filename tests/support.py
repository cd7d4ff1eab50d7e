"""Test support shared by every suite: free ports, a real Mosquitto, hub configs, and
``hubd run`` subprocesses that tests can press, query and ``kill -9``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HUBD = [sys.executable, "-m", "hubd.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             message: str | Callable[[], str] = "condition") -> Any:
    """Poll until predicate() is truthy; return its value or fail with ``message`` (a callable
    message is evaluated at the timeout, so it can say what was still missing then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)


class Mosquitto:
    """A real mosquitto broker on a free loopback port, owned by the test."""

    def __init__(self, workdir: Path, *, extra_conf: str = "", port: int | None = None,
                 persistence: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        persist = (f"persistence true\npersistence_location {self.workdir}/\n" if persistence
                   else "persistence false\n")
        # As root, mosquitto drops to its own user and then cannot write its log or persistence
        # file here; a broker that silently keeps nothing would make the tests lie.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(user + textwrap.dedent(f"""\
            listener {self.port} 127.0.0.1
            allow_anonymous true
            {persist}log_dest file {self.log}
            log_type error
            log_type warning
            log_type notice
            max_queued_messages 0
            """) + extra_conf)
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str:
        path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(path).exists():
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        return path

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                if self.proc.poll() is not None:
                    text = self.log.read_text() if self.log.exists() else ""
                    raise RuntimeError(f"mosquitto exited: {text}") from None
                return False

        wait_for(listening, 10, message=f"mosquitto on port {self.port}")
        return self

    def kill(self) -> None:
        """kill -9: the broker vanishes without a goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


def hub_config(tmp: Path, *, hub_id: str = "hub-1", ward: str = "ward-7", web_port: int = 0,
               web: bool = True, extra: str = "", buttons: str | None = None,
               protocol: str = "cancel_window = 30\nescalation = [60, 180, 600]") -> Path:
    """Write a mock-pin hub config under ``tmp`` and return its path."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    if buttons is None:
        buttons = textwrap.dedent("""\
            [[buttons]]
            name = "gate"
            pin = 17
            zone = "Market gate"
            kind = "panic"

            [[buttons]]
            name = "clinic"
            pin = 22
            zone = "Clinic"
            kind = "medical"

            [[sirens]]
            name = "main"
            pin = 27
            """)
    text = textwrap.dedent(f"""\
        [hub]
        ward = "{ward}"
        id = "{hub_id}"
        name = "Test hub {hub_id}"
        state_dir = "{tmp / 'state'}"
        runtime_dir = "{tmp / 'run'}"

        [hardware]
        pin_factory = "mock"
        boot_grace = 0

        [camera]
        backend = "none"

        [web]
        enabled = {str(web).lower()}
        bind = "127.0.0.1"
        port = {web_port}

        [protocol]
        """) + protocol + "\n\n" + buttons + "\n" + extra
    path = tmp / "hub.toml"
    path.write_text(text)
    return path


class HubProcess:
    """A ``hubd run`` subprocess with mock pins (or ``command``, a program that runs the daemon
    another way: see hung_core.py)."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None, command: list[str] | None = None):
        self.config = Path(config)
        self.command = command or [*HUBD, "run", "-c", str(self.config)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if "NOTIFY_SOCKET" not in (env or {}):
            self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen | None = None
        self.log = self.config.parent / "hubd.log"

    def start(self, wait: bool = True) -> HubProcess:
        self._logf = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT,
                                     cwd=REPO)
        if wait:
            wait_for(self._ready, 20, message=f"hubd ready ({self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"hubd exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return self.cli_json("status")["ok"]
        except Exception:
            return False

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*HUBD, *args, "-c", str(self.config)], capture_output=True, text=True,
                              timeout=timeout, env=self.env, cwd=REPO)

    def cli_json(self, *args: str) -> dict[str, Any]:
        out = self.cli(*args, "--json")
        return json.loads(out.stdout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                pass
        if hasattr(self, "_logf"):
            self._logf.close()


class ManualClock:
    """Time that moves only when the test says so (a ``hubd.clock.Clock``).

    ``now`` is the monotonic time, and the wall time too until ``jump`` moves the wall
    clock alone (as NTP's first answer does).  Calling it gives ``now``, for the sensors'
    timers, which take a monotonic ``() -> float``."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start
        self.wall_offset = 0.0

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    def monotonic(self) -> float:
        return self.now

    def jump(self, seconds: float) -> None:
        """Move the wall clock alone."""
        self.wall_offset += seconds


class ShiftedClock:
    """The system's clocks, both ``shift`` seconds ahead (to step past a window at once)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def time(self) -> float:
        return time.time() + self.shift

    def monotonic(self) -> float:
        return time.monotonic() + self.shift


def local_hub(tmp: Path, *, cancel_window: float = 30, escalation: tuple[float, ...] = (60, 180, 600),
              clock: Any = None, extra: dict | None = None, hub_id: str = "h1"):
    """An in-process Hub on a real SQLite file (no hardware, timers not started); ``clock``
    is a ``hubd.clock.Clock`` for both (the system's by default)."""
    from hubd.clock import SYSTEM_CLOCK
    from hubd.config import parse_config
    from hubd.lifecycle import Hub
    from hubd.store import Store

    cfg = parse_config({"hub": {"ward": "w", "id": hub_id, "state_dir": str(tmp)},
                        "protocol": {"cancel_window": cancel_window, "escalation": list(escalation)},
                        **(extra or {})}, check_files=False)
    clock = clock or SYSTEM_CLOCK
    store = Store(cfg.store_path, clock=clock)
    return Hub(cfg, store, clock=clock), store
