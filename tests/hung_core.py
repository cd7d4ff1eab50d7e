"""``hubd run`` for test_watchdog, with one more command: ``test_hang``.

``test_hang`` makes the next store write stick, as a write to a dying SD card does, and
starts one (an event recorded by a worker thread): that worker then holds the core's
lock, every core operation blocks, and the watchdog must stop being fed.  The write is
let go when the daemon stops, so that a clean stop still works.

Usage: ``python tests/hung_core.py CONFIG CORE_STALE_AFTER``
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from hubd.commands import Command
from hubd.config import load_config
from hubd.daemon import Daemon, run, setup_logging


def add_test_hang(daemon: Daemon) -> None:
    stopping = threading.Event()
    stop = daemon.stop

    def stop_and_let_go() -> None:
        stopping.set()
        stop()

    daemon.stop = stop_and_let_go  # type: ignore[method-assign]

    def hang(args: dict[str, Any], actor: str) -> dict[str, Any]:
        stuck = threading.Event()
        append_event = daemon.store.append_event

        def stuck_append_event(*a: Any, **kw: Any) -> Any:
            stuck.set()
            stopping.wait()
            return append_event(*a, **kw)

        daemon.store.append_event = stuck_append_event  # type: ignore[method-assign]
        threading.Thread(target=daemon.hub.record, args=("test.hang",), kwargs={"actor": actor},
                         name="test-hang", daemon=True).start()
        if not stuck.wait(10):
            raise RuntimeError("the stuck write did not start")
        return {"hanging": "core"}

    daemon.processor.register(Command("test_hang", hang, {}, summary="Hang the core (tests only)"))


def main() -> int:
    setup_logging("INFO")
    return run(load_config(Path(sys.argv[1])), on_ready=add_test_hang, core_stale_after=float(sys.argv[2]))


if __name__ == "__main__":
    sys.exit(main())
