"""Serving a Flask app with waitress inside the daemon."""

from __future__ import annotations

import logging
import threading
import time
import warnings

from flask import Flask
from waitress.server import create_server

from hubd.web import live as live_streams

log = logging.getLogger("hubd.web")


class WebServer:
    """waitress in one named thread (its workers are its own pool)."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = 16):
        self.app = app
        # send_bytes=1: flush every write at once, so a live event is not held back in
        # waitress's output buffer until ~18 kB or the next loop tick.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "send_bytes", DeprecationWarning)
            self._server = create_server(app, host=host, port=port, threads=threads,
                                         ident="hubd", channel_timeout=60, send_bytes=1)
        self.port = self._server.effective_port
        self.host = host
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hubd-web", daemon=True)
        self._thread.start()
        log.info("page on http://%s:%s/", self.host, self.port)

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:  # closed during shutdown
            pass

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        live = self.app.extensions.get(live_streams.EXTENSION)
        if live is not None:
            live.close()  # ends open streams so their worker threads return
            deadline = time.monotonic() + 2.0
            # Let them finish writing before the sockets close under them.
            while live.open_streams and time.monotonic() < deadline:
                time.sleep(0.02)
        self._server.close()
        if self._thread:
            self._thread.join(timeout=2)
