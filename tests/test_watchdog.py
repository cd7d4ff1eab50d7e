"""systemd's watchdog protocol, with the test in systemd's place.

The test binds a unix datagram socket and passes it as ``NOTIFY_SOCKET`` with a small
``WATCHDOG_USEC``, exactly as systemd does for ``Type=notify`` + ``WatchdogSec=``.  It
then makes the core hang through a command only the test's own runner has (``test_hang``
in hung_core.py: a store write stuck as on a dying SD card, holding the core's lock) and
checks that ``WATCHDOG=1`` stops, so systemd would kill and restart the daemon.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HubProcess, hub_config, wait_for

from hubd.control import send_command


class NotifySocket:
    """Collects sd_notify datagrams like systemd's notify socket."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def having(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        return [m for _, m in list(self.messages)
                if key in m and (value is None or m[key].startswith(value))]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def test_ready_watchdog_and_stop_on_hung_core(tmp_path: Path, notify: NotifySocket,
                                              hub_processes: list[HubProcess]) -> None:
    cfg = hub_config(tmp_path / "hub", web=False)
    hub = HubProcess(cfg, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"},
                     command=[sys.executable, str(Path(__file__).parent / "hung_core.py"), str(cfg), "4"])
    hub_processes.append(hub)
    hub.start()

    ready = wait_for(lambda: notify.having("READY", "1"), 20, message="READY=1")
    assert ready[0].get("MAINPID") == str(hub.proc.pid)
    wait_for(lambda: len(notify.having("WATCHDOG", "1")) >= 4, 30, message="regular WATCHDOG=1")
    assert not notify.having("STATUS", "stalled")

    reply = send_command(tmp_path / "hub" / "run" / "control.sock", {"cmd": "test_hang"}, timeout=30)
    assert reply["ok"], reply

    # The daemon notices the hung core and stops feeding the watchdog, saying why.
    wait_for(lambda: notify.having("STATUS", "stalled"), 60, message="STATUS=stalled")
    stalled_at = next(t for t, m in notify.messages if m.get("STATUS", "").startswith("stalled"))
    assert "core" in notify.having("STATUS", "stalled")[0]["STATUS"]
    # ...and keeps not feeding it while the core stays hung (several more checks pass).
    wait_for(lambda: len(notify.having("STATUS", "stalled")) >= 5, 60, message="more stalled checks")
    late = [m for t, m in list(notify.messages) if t > stalled_at and m.get("WATCHDOG") == "1"]
    assert late == [], "WATCHDOG=1 was sent after the core hung"
    assert "not feeding the watchdog: core" in hub.log.read_text()

    # A clean stop still works and says so.
    assert hub.terminate(timeout=30) == 0
    wait_for(lambda: notify.having("STOPPING", "1"), 10, message="STOPPING=1")


def test_the_daemon_has_no_test_commands(tmp_path: Path, hub_processes: list[HubProcess]) -> None:
    hub = HubProcess(hub_config(tmp_path, web=False))
    hub_processes.append(hub)
    hub.start()
    reply = send_command(tmp_path / "run" / "control.sock", {"cmd": "test_hang"}, timeout=30)
    assert not reply["ok"] and reply["error"]["code"] == "unknown_command"
