"""One connection to a Meshtastic radio, with timeouts around every library call.

The ``meshtastic`` library blocks in places a daemon cannot afford: building an
interface waits up to 30 s for the radio's configuration, ``sendData`` spins while the
radio's queue is full, ``close()`` joins a reader thread and can hang.  ``Radio``
builds the interface in a helper thread, makes every call on its own writer thread
and waits for it with a timeout, and closes in the background.  A call that times out
is reported as ``RadioError``; the link then drops this Radio and builds a new one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

log = logging.getLogger("hubd.radio.mesh")


class RadioError(Exception):
    """The radio cannot be reached, or did not answer in time."""


def _open_interface(connection: str, timeout: float) -> Any:
    if connection.startswith("tcp:"):
        from meshtastic.tcp_interface import TCPInterface

        host, _, port = connection[4:].rpartition(":")
        return TCPInterface(host, portNumber=int(port), timeout=max(int(timeout), 1))
    if connection.startswith("serial:"):
        from meshtastic.serial_interface import SerialInterface

        # devPath must be given: without it the library scans ports and may sys.exit().
        return SerialInterface(devPath=connection[len("serial:"):], timeout=max(int(timeout), 1))
    raise RadioError(f"unknown radio connection {connection!r}")


class Radio:
    """A connected meshtastic interface and the one thread that writes to it."""

    def __init__(self, iface: Any, connection: str):
        self.iface = iface
        self.connection = connection
        self.node_num: int = iface.myInfo.my_node_num
        self.node_id = f"!{self.node_num:08x}"
        try:
            self.hop_limit = int(iface.localNode.localConfig.lora.hop_limit)
        except Exception:
            self.hop_limit = 3
        rx = getattr(iface, "_rxThread", None)
        if rx is not None:
            rx.name = "hubd-mesh-reader"
        self._calls: queue.SimpleQueue[tuple[Callable[[Any], Any], Future] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="hubd-mesh-tx", daemon=True)
        self._writer.start()
        self.closed = False

    @classmethod
    def open(cls, connection: str, *, timeout: float, stop: threading.Event) -> Radio:
        """Connect; raise RadioError on failure, after ``timeout`` + 35 s at most, or when stopped."""
        result: dict[str, Any] = {}
        done = threading.Event()
        abandoned = threading.Event()

        def build() -> None:
            try:
                result["iface"] = _open_interface(connection, timeout)
            except BaseException as e:  # noqa: BLE001 - the library may even raise SystemExit
                result["error"] = e
            done.set()
            if abandoned.is_set() and "iface" in result:
                _close_quietly(result["iface"], 5.0)

        threading.Thread(target=build, name="hubd-mesh-connect", daemon=True).start()
        # The library's own wait for the configuration is 30 s whatever its timeout says.
        deadline = timeout + 35.0
        waited = 0.0
        while not done.wait(0.2):
            waited += 0.2
            if stop.is_set() or waited >= deadline:
                abandoned.set()
                raise RadioError("stopped while connecting" if stop.is_set() else
                                 f"no answer from the radio within {deadline:.0f} s")
        if "error" in result:
            e = result["error"]
            raise RadioError(f"{type(e).__name__}: {e}".rstrip(": "))
        iface = result["iface"]
        if getattr(iface, "myInfo", None) is None:
            _close_quietly(iface, 5.0)
            raise RadioError("the radio sent no node information")
        return cls(iface, connection)

    # --- calls ------------------------------------------------------------------------------

    def call(self, fn: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(iface)`` on the writer thread; RadioError if it fails or takes too long."""
        if self.closed:
            raise RadioError("radio connection closed")
        fut: Future = Future()
        self._calls.put((fn, fut))
        try:
            return fut.result(timeout)
        except FutureTimeout:
            # A send stuck waiting for queue space: let the library's loop run dry.
            self.iface.queueStatus = None
            raise RadioError(f"the radio did not take a packet within {timeout:.0f} s") from None
        except RadioError:
            raise
        except BaseException as e:  # noqa: BLE001
            raise RadioError(f"{type(e).__name__}: {e}") from None

    def _write(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self.iface))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    # --- health -----------------------------------------------------------------------------

    def activity_marker(self) -> int:
        """Changes whenever the radio reports its queue (it does after every packet we send)."""
        return id(getattr(self.iface, "queueStatus", None))

    def reader_alive(self) -> bool:
        rx = getattr(self.iface, "_rxThread", None)
        return rx is None or rx.is_alive()

    def forget_response(self, packet_id: int) -> None:
        """Drop the library's response handler for a packet (it never expires them)."""
        try:
            self.iface.responseHandlers.pop(packet_id, None)
        except Exception:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Close in the background; give up waiting after ``timeout`` (close() can hang)."""
        if self.closed:
            return
        self.closed = True
        self._calls.put(None)
        _close_quietly(self.iface, timeout)


def _close_quietly(iface: Any, timeout: float) -> None:
    def close() -> None:
        try:
            # Unconfirmed packets would be re-sent by close(), each waiting for queue space.
            iface.queue.clear()
            iface.queueStatus = None
        except Exception:
            pass
        try:
            iface.close()
        except BaseException as e:  # noqa: BLE001
            log.debug("closing the radio interface: %s", e)

    t = threading.Thread(target=close, name="hubd-mesh-close", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        log.warning("the radio interface did not close within %.0f s; abandoning it", timeout)
