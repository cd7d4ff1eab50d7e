"""The centre as one service: its parts wired together, started and stopped in order.

Parts: the store, the supervisor, commands, the ingest (MQTT), the web API and page, the
control socket for the command line, and one ``centre-tick`` thread that runs the
supervisor's checks, command timeouts, registry reloads and retention. Threads are few and
named; every one stops within a bounded time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hubd.centre import tables
from hubd.centre.clock import SYSTEM_CLOCK, Clock
from hubd.centre.commands import Commands
from hubd.centre.config import CentreConfig
from hubd.centre.ingest import Ingest
from hubd.centre.keys import load_or_create
from hubd.centre.store import Store, is_transient
from hubd.centre.supervision import Supervisor

log = logging.getLogger("hubd.centre")

#: Feed rows older than this are pruned (the live stream's resume window).
FEED_KEEP = 7 * 86400.0
#: Quarantined messages are kept this long (a flood of garbage must not fill the disk for good).
QUARANTINE_KEEP = 30 * 86400.0


class Centre:
    """Everything the running centre is."""

    TICK = 0.5
    RELOAD_EVERY = 30.0
    RETENTION_EVERY = 3600.0

    def __init__(self, config: CentreConfig, *, clock: Clock = SYSTEM_CLOCK, store: Store | None = None):
        self.config = config
        self.clock = clock
        self.store = store or Store.open(config.store_url, password=config.store_password())
        self.key = load_or_create(config.key_file)
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self.supervisor = Supervisor(self.store, config.supervision, clock=clock, publish=self._feed)
        self.commands = Commands(self.store, config.roots, config.commands.timeout, self.key, clock=clock)
        self.commands.on_feed = self._feed
        self.ingest = Ingest(config, self.store, self.supervisor, self.commands, self.key, clock=clock,
                             on_feed=self._feed)
        self.commands.publish = self.ingest.publish
        self.started_at = clock.time()
        self._stop = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self.web: Any = None
        self.control: Any = None

    # -- the live feed --------------------------------------------------------------------------

    def listen(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call ``listener`` with every committed feed message (the live stream, metrics)."""
        self._listeners.append(listener)

    def _feed(self, messages: list[dict[str, Any]]) -> None:
        for listener in self._listeners:
            try:
                listener(messages)
            except Exception:
                log.exception("a feed listener failed")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, *, web: bool | None = None, control: bool = True) -> None:
        self.commands.start()
        self.ingest.start()
        self._tick_thread = threading.Thread(target=self._tick, name="centre-tick", daemon=True)
        self._tick_thread.start()
        if web if web is not None else self.config.web.enabled:
            from hubd.centre.api import serve

            self.web = serve(self)
        if control:
            from hubd.centre.control import ControlServer

            self.control = ControlServer(self.config.control_socket, self)
            self.control.start()

    def stop(self) -> None:
        self._stop.set()
        if self.control is not None:
            self.control.stop()
        if self.web is not None:
            self.web.stop()
        self.ingest.stop()
        if self._tick_thread is not None:
            self._tick_thread.join(5)
        self.store.close()

    def alive(self) -> bool:
        parts = [self.ingest.alive(), self._tick_thread is not None and self._tick_thread.is_alive()]
        if self.web is not None:
            parts.append(self.web.alive())
        return all(parts)

    def reload_registry(self) -> None:
        self.ingest.reload_registry()

    def _tick(self) -> None:
        mono = self.clock.monotonic
        next_reload = mono() + self.RELOAD_EVERY
        next_retention = mono() + 60.0
        while not self._stop.wait(self.TICK):
            try:
                self.supervisor.check()
                self.commands.expire()
                if mono() >= next_reload:
                    next_reload = mono() + self.RELOAD_EVERY
                    self.reload_registry()
                if mono() >= next_retention:
                    next_retention = mono() + self.RETENTION_EVERY
                    self.retention()
            except Exception as e:
                if is_transient(e):
                    log.warning("tick: the store is not answering (%s)", type(e).__name__)
                else:
                    log.exception("tick failed; going on")

    def retention(self) -> None:
        """Delete snapshots past ``[snapshots] keep_days``, old feed rows and old quarantine."""
        now = self.clock.time()
        with self.store.write() as conn:
            conn.execute(tables.feed.delete().where(tables.feed.c.at < now - FEED_KEEP))
            q = tables.quarantine
            conn.execute(q.delete().where(q.c.received_at < now - QUARANTINE_KEEP))
        days = self.config.snapshots.keep_days
        if days <= 0:
            return
        cutoff = now - days * 86400
        s = tables.snapshots
        with self.store.read() as conn:
            old = conn.execute(sa.select(s.c.id, s.c.path).where(s.c.received_at < cutoff)).all()
        for row in old:
            try:
                Path(row.path).unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot delete snapshot %s: %s", row.path, e.strerror)
                continue
            with self.store.write() as conn:
                conn.execute(s.delete().where(s.c.id == row.id))
        if old:
            log.info("deleted %d snapshots older than %g days", len(old), days)

    # -- run until told to stop ----------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: tell systemd we are ready, and keep its watchdog fed while
        every part is alive."""
        notify("READY=1")
        interval = watchdog_interval()
        while not stop.wait(interval or 1.0):
            if interval and self.alive():
                notify("WATCHDOG=1")
        notify("STOPPING=1")


def notify(state: str) -> None:
    """sd_notify(3): one datagram to ``$NOTIFY_SOCKET`` (nothing outside systemd)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.sendto(state.encode(), addr)
    except OSError as e:
        log.warning("sd_notify %s failed: %s", state, e)


def watchdog_interval() -> float | None:
    """Half of systemd's ``WatchdogSec``, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None

