"""The daemon's wiring: the one module that knows every part.

Threads (``ps -L`` shows them): the main thread (signals and the watchdog),
``hubd-timers`` (the core's timers: escalation, store retries, heartbeat and
housekeeping), ``hubd-control`` (CLI socket), ``hubd-web`` (waitress and its worker
pool), and one thread per link and per sensor helper that the adapters name themselves.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hubd import __version__, contract
from hubd.clock import SYSTEM_CLOCK, Clock, ClockWatch
from hubd.commands import Command, CommandProcessor
from hubd.config import Config
from hubd.control import ControlServer
from hubd.identity import load_or_init_key
from hubd.lifecycle import Hub
from hubd.notify import sd_notify, watchdog_interval
from hubd.private import NotPrivate, private_dir, private_file
from hubd.store import Store

log = logging.getLogger("hubd")

#: Seconds between the core's heartbeats (``Hub.ping`` on the timer thread).
HEARTBEAT_SECONDS = 2.0
#: The core heartbeat must have answered within this many seconds for WATCHDOG=1 to be sent.
CORE_STALE_AFTER = 15.0


class Component(Protocol):
    """A part the daemon starts, watches and stops (links, servers)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def alive(self) -> bool: ...


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr: with journald's priority prefixes under systemd, with time otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        prio = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                logging.CRITICAL: 2}

        class _Journal(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return f"<{prio.get(record.levelno, 6)}>{record.name}: {super().format(record)}"

        handler.setFormatter(_Journal("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("waitress.queue").setLevel(logging.WARNING)


class AlreadyRunning(Exception):
    pass


class CannotStart(Exception):
    """A start failure whose message says everything (logged without a traceback)."""


@dataclass
class Daemon:
    """A running hub: config, store, core, sensors, links, page and control socket."""

    config: Config
    components: dict[str, Component] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    #: The one clock of every part (wall time for events, monotonic for timers).
    clock: Clock = SYSTEM_CLOCK
    #: Seconds without an answer from the core after which the watchdog is no longer fed.
    core_stale_after: float = CORE_STALE_AFTER

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._core_beat = self.clock.monotonic()
        self.web_port: int | None = None
        self.buttons: dict[str, Any] = {}
        #: What ``hubd press NAME`` can drive on mock pins: the buttons, ``tamper`` and ``mains``.
        self.pressable: dict[str, Any] = {}
        self.sirens: list[Any] = []

    # --- building -------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        private_dir(cfg.state_dir, tighten=True)  # store, keys, secrets: 0700 even outside systemd
        self._lock_state_dir()
        self.store = Store(cfg.store_path, clock=self.clock)
        self.hub = Hub(cfg, self.store, clock=self.clock, clock_synced=ClockWatch(),
                       key=load_or_init_key(cfg))
        self.processor = CommandProcessor(self.hub)
        self._start_sensors()
        self._start_links()
        self.hub.start()
        self._start_power()
        self.hub.timers.every(HEARTBEAT_SECONDS, self._heartbeat)
        self.hub.timers.every(6 * 3600, self._prune)
        self._start_web()
        control = ControlServer(cfg.control_socket, self.processor)
        control.start()
        self.components["control"] = control
        log.info("hubd %s ready: hub %s/%s, control socket %s", __version__, cfg.hub.ward, cfg.hub.id,
                 cfg.control_socket)

    def _lock_state_dir(self) -> None:
        self._lockfile = open(self.config.state_dir / "hubd.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"another hubd is running on {self.config.state_dir}") from None
        self._lockfile.write(str(os.getpid()))
        self._lockfile.flush()

    def _start_sensors(self) -> None:
        """Buttons, sirens, tamper input and camera (``hubd.sensors.hardware``): one component."""
        from hubd.sensors.gpio import is_simulated
        from hubd.sensors.hardware import Hardware

        hardware = Hardware(self.config, self.hub)
        self.components["sensors"] = hardware
        hardware.start()
        self.buttons = hardware.buttons
        self.pressable.update(hardware.buttons)
        self.sirens = hardware.sirens
        self.hub.add_status_provider("sirens", hardware.siren_status)
        self.hub.add_status_provider("buttons", hardware.button_status)
        if hardware.tamper is not None:
            self.pressable["tamper"] = hardware.tamper
            self.hub.add_status_provider("tamper", hardware.tamper_status)
        if hardware.camera is not None:
            self.hub.add_status_provider("camera", hardware.camera.status)
        if is_simulated(hardware.factory):
            self._register_press()

    def _register_press(self) -> None:
        def press(args: dict[str, Any], actor: str) -> dict[str, Any]:
            from hubd.commands import CommandError

            button = self.pressable.get(args["button"])
            if button is None:
                raise CommandError(f"no button {args['button']!r}; buttons: "
                                   + ", ".join(sorted(self.pressable)), code="not_found")
            button.press(args.get("hold", 0.2))
            return {"pressed": args["button"], "hold": args.get("hold", 0.2)}

        self.processor.register(Command(
            "press", press, {"button": {"type": "string"},
                             "hold": {"type": "number", "minimum": 0, "maximum": 120}},
            ("button",), summary="Press a simulated button, open the enclosure (tamper) or cut the mains "
                                 "(mains) for hold seconds (mock pins only)"))

    def _start_power(self) -> None:
        """Mains, battery and the Pi's supply (``hubd.power``, ``hubd.sensors.power``), when configured."""
        if self.config.power is None:
            return
        from hubd.power import PowerSupervisor
        from hubd.sensors.gpio import is_simulated
        from hubd.sensors.power import PowerMonitor

        supervisor = PowerSupervisor(self.config, self.hub, clock=self.clock)
        publish_status = getattr(self.components.get("mqtt"), "publish_status", None)
        if publish_status is not None:
            supervisor.on_change.append(publish_status)  # the retained status says it at once
        factory = getattr(self.components.get("sensors"), "factory", None)
        monitor = PowerMonitor(self.config, supervisor, self.hub, factory)
        self.components["power"] = monitor
        self.hub.add_status_provider("power", supervisor.status)
        supervisor.start()
        monitor.start()
        if monitor.mains is not None and is_simulated(factory):
            self.pressable["mains"] = monitor.mains

    def _start_links(self) -> None:
        """The MQTT and mesh links, when configured; a hub without them works locally.

        A link is a Component with ``status() -> dict``; it drains its destination's outbox
        rows (``store.pending``) and feeds heard events to ``hub.ingest_remote``."""
        links: dict[str, Any] = {}
        if self.config.mqtt is not None:
            from hubd.radio.mqtt import MqttLink

            links["mqtt"] = MqttLink(self.config, self.hub, self.processor, clock=self.clock)
        if self.config.mesh is not None:
            from hubd.radio.mesh import MeshLink

            links["mesh"] = MeshLink(self.config, self.hub, self.processor, clock=self.clock)
        for name, link in links.items():
            self.components[name] = link
            self.hub.add_status_provider(name, link.status)
            link.start()

    def _start_web(self) -> None:
        if not self.config.web.enabled:
            return
        from hubd.web.page.app import create_app
        from hubd.web.server import WebServer

        app = create_app(self.hub, self.processor, secret_key=self._secret_key())
        bind, port = self.config.web.bind, self.config.web.port
        try:
            web = WebServer(app, bind, port, self.config.web.threads)
        except OSError as e:  # the port taken, or an address this machine does not have
            raise CannotStart(f"the page cannot listen on {bind}:{port}: {e.strerror or e}; "
                              f"set another [web] port (or stop the program using it)") from e
        web.start()
        self.web_port = web.port
        self.components["web"] = web

    def _secret_key(self) -> bytes:
        path = self.config.state_dir / "secret_key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        private_file(path, create=False)  # one made before hubd kept it so
        return path.read_bytes()

    # --- running --------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Proves the timer thread, the core lock and the store all answer."""
        if self.hub.ping():
            self._core_beat = self.clock.monotonic()

    def _prune(self) -> None:
        now = self.clock.time()
        cutoff = now - self.config.store.retention_days * 86400
        horizon = contract.command_horizon(self.store.newest_command(), now, self.hub.clock_synced(),
                                           self.config.trust.command_window)
        n = self.store.prune(cutoff, commands_horizon=horizon)
        if n:
            log.info("pruned %d events older than %d days", n, self.config.store.retention_days)

    def healthy(self) -> list[str]:
        """Names of the parts that are not alive (empty when all are)."""
        dead = [name for name, c in self.components.items() if not c.alive()]
        if self.clock.monotonic() - self._core_beat > self.core_stale_after:
            dead.append("core")
        return dead

    def run_forever(self) -> None:
        """Block until SIGTERM/SIGINT; feed systemd's watchdog while every part is alive."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        sd_notify(f"READY=1\nSTATUS=hub {self.config.hub.id} running\nMAINPID={os.getpid()}")
        interval = min(watchdog_interval() or 5.0, 5.0)
        while not self._stop.wait(interval):
            dead = self.healthy()
            if dead:
                log.error("not feeding the watchdog: %s not alive", ", ".join(dead))
                sd_notify(f"STATUS=stalled: {', '.join(dead)}")
            else:
                sd_notify("WATCHDOG=1")
        sd_notify("STOPPING=1")
        self.stop()

    def stop(self) -> None:
        """Stop whatever was started (also after a failed start), newest first."""
        log.info("stopping")
        for name, comp in reversed(list(self.components.items())):
            try:
                comp.stop()
            except Exception:
                log.exception("stopping %s", name)
        if hasattr(self, "hub"):
            self.hub.stop()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("closing")
        if hasattr(self, "store"):
            self.store.close()
        log.info("stopped")


def run(config: Config, *, on_ready: Callable[[Daemon], None] | None = None,
        core_stale_after: float = CORE_STALE_AFTER) -> int:
    """Run a daemon until signalled; the CLI's ``hubd run`` and ``hubd demo``."""
    daemon = Daemon(config, core_stale_after=core_stale_after)
    try:
        daemon.start()
    except (AlreadyRunning, NotPrivate, contract.KeyFileError) as e:
        log.error("cannot start: %s", e)
        daemon.stop()
        return 1
    except CannotStart as e:
        log.error("cannot start: %s", e)
        daemon.stop()
        return 1
    except Exception as e:
        log.exception("cannot start: %s", e)
        daemon.stop()
        return 1
    if on_ready:
        on_ready(daemon)
    daemon.run_forever()
    return 0
