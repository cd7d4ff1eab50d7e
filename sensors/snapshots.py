"""Snapshots on alerts, taken off the alert path, and their retention.

A hub listener only queues the id of each alert this hub raises; the thread
``hubd-camera`` opens the camera (so a slow or broken camera never delays the
daemon's start) and takes ``burst`` JPEGs per alert at once.  It writes each under
``<state_dir>/snapshots/``, adds its row to the store and records an
``alert.snapshot`` event ``{"snapshot_id", "path", "size"}`` (the MQTT link
publishes the file on ``snapshots/<alert-id>``, the page shows it) as soon as no
alert has been raised for ``QUIET_AFTER_ALERT`` seconds: its fsyncs then never
compete with an alert's own commit, even when several buttons are pressed together.
Old files are pruned by age and by total size, oldest first.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubd.config import CameraConfig
from hubd.lifecycle import Hub
from hubd.model import Event
from hubd.sensors.camera import Camera, CameraError, open_camera

log = logging.getLogger("hubd.sensors.snapshots")

SNAPSHOT_DIR = "snapshots"
#: Alerts waiting for their snapshots at most; more are dropped (and logged).
QUEUE_SIZE = 64
#: Retention also runs this often when no alert comes (seconds).
PRUNE_EVERY = 3600.0
#: Snapshots are written once no alert has been raised for this long (seconds) ...
QUIET_AFTER_ALERT = 0.3
#: ... or once the oldest unwritten one has waited this long.
MAX_DEFER = 5.0
_STOP = object()


@dataclass
class _Frame:
    alert_id: str
    index: int
    jpeg: bytes
    taken_at: float   # wall clock, for the row
    captured: float   # monotonic, for deferral


class SnapshotTaker:
    """Takes snapshots of this hub's alerts on its own thread; reports health as ``camera``."""

    def __init__(self, hub: Hub, config: CameraConfig, state_dir: Path, *,
                 opener: Callable[[CameraConfig, str], tuple[Camera | None, str]] = open_camera,
                 clock: Callable[[], float] = time.time):
        self.hub = hub
        self.config = config
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / SNAPSHOT_DIR
        self.opener = opener
        self.clock = clock
        self.camera: Camera | None = None
        self.error = ""
        self.taken = 0
        self.failed = 0
        self.dropped = 0
        self.last: dict[str, Any] | None = None
        #: False pauses snapshots (alerts raised meanwhile get none).
        self.enabled = True
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[_Frame] = []
        self._last_alert = float("-inf")

    # --- wiring ---------------------------------------------------------------------------

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hub.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="hubd-camera", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self.camera is not None:
            try:
                self.camera.close()
            except Exception:
                log.exception("camera: close failed")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until the camera has been opened (or failed to open)."""
        return self._ready.wait(timeout)

    def _on_event(self, event: Event, envelope: dict[str, Any]) -> None:
        # On the alert path: only a queue put, never I/O.
        if event.type == "alert.raised":
            self._last_alert = time.monotonic()
        if self.enabled and event.type == "alert.raised" and event.hub == self.hub.hub_id and event.alert_id:
            try:
                self._queue.put_nowait(event.alert_id)
            except queue.Full:
                self.dropped += 1
                log.error("camera: %d alerts waiting; no snapshot for %s", QUEUE_SIZE, event.alert_id)

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
        finally:
            self._ready.set()
        self._clean_leftovers()
        self._prune_safely()
        last_prune = time.monotonic()
        while True:
            timeout = 60.0
            if self._pending:
                now = time.monotonic()
                timeout = max(0.0, min(self._last_alert + QUIET_AFTER_ALERT - now,
                                       self._pending[0].captured + MAX_DEFER - now))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP or self._stop.is_set():
                self._write_pending()  # what was captured is kept
                return
            if isinstance(item, str):
                self._capture(item)
                continue  # more alerts may be waiting: capture them all first
            if self._pending and self._may_write():
                self._write_pending()
                self._prune_safely()
                last_prune = time.monotonic()
            elif time.monotonic() - last_prune >= PRUNE_EVERY:
                self._prune_safely()
                last_prune = time.monotonic()

    def _may_write(self) -> bool:
        """Files and rows wait until no alert has been raised for a moment, so that their
        disk writes (an fsync each) never contend with an alert's own commit."""
        now = time.monotonic()
        return (now - self._last_alert >= QUIET_AFTER_ALERT
                or now - self._pending[0].captured >= MAX_DEFER)

    def _open(self) -> None:
        try:
            self.camera, self.error = self.opener(self.config, self.hub.config.hub.name or self.hub.hub_id)
        except Exception as e:  # an opener bug must not kill the thread
            self.camera, self.error = None, f"{type(e).__name__}: {e}"
        if self.error:
            self.hub.set_health("camera", "fault", self.error)
        else:
            self.hub.set_health("camera", "ok")
            log.info("camera: %s backend ready", self.camera.name if self.camera else "?")

    def take(self, alert_id: str) -> list[int]:
        """Capture this alert's burst and write it now (on the calling thread); return the ids."""
        self._capture(alert_id)
        return self._write_pending()

    def _capture(self, alert_id: str) -> None:
        if self.camera is None:
            log.warning("camera: no camera (%s); no snapshot for %s", self.error, alert_id)
            return
        for i in range(self.config.burst):
            if i and self._stop.wait(self.config.burst_interval):
                break
            try:
                jpeg = self.camera.capture_jpeg()
            except Exception as e:
                self.failed += 1
                if not isinstance(e, CameraError):
                    log.exception("camera: snapshot %d of %s failed", i, alert_id)
                self.hub.set_health("camera", "fault", str(e) if isinstance(e, CameraError)
                                    else f"snapshot failed: {type(e).__name__}: {e}")
                continue
            self._pending.append(_Frame(alert_id, i, jpeg, self.clock(), time.monotonic()))

    def _write_pending(self) -> list[int]:
        ids = []
        while self._pending:
            frame = self._pending[0]
            try:
                ids.append(self._write(frame))
            except Exception as e:
                self.failed += 1
                log.exception("camera: cannot save snapshot %d of %s", frame.index, frame.alert_id)
                self.hub.set_health("camera", "fault", f"cannot save a snapshot: {type(e).__name__}: {e}")
            del self._pending[0]
        return ids

    def _write(self, frame: _Frame) -> int:
        name = f"{frame.alert_id.replace(':', '_')}-{int(frame.taken_at * 1000)}-{frame.index}.jpg"
        rel = f"{SNAPSHOT_DIR}/{name}"
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(frame.jpeg)
            f.flush()
            os.fsync(f.fileno())  # the row must never point at an empty file after a power cut
        os.replace(tmp, self.dir / name)
        size = len(frame.jpeg)
        snapshot_id = self.hub.store.add_snapshot(frame.alert_id, rel, frame.taken_at, size)
        self.hub.record("alert.snapshot", actor="camera", alert_id=frame.alert_id,
                        data={"snapshot_id": snapshot_id, "path": rel, "size": size})
        self.taken += 1
        self.last = {"alert_id": frame.alert_id, "snapshot_id": snapshot_id, "path": rel, "size": size,
                     "time": frame.taken_at}
        if not self.error:
            self.hub.set_health("camera", "ok")
        return snapshot_id

    # --- retention ------------------------------------------------------------------------

    def prune(self) -> int:
        """Delete snapshots older than ``retention_days`` and, oldest first, beyond ``max_total_mb``."""
        rows = self.hub.store.snapshots()  # oldest first
        doomed = []
        if self.config.retention_days > 0:
            cutoff = self.clock() - self.config.retention_days * 86400
            doomed = [r for r in rows if r["time"] < cutoff]
            rows = [r for r in rows if r["time"] >= cutoff]
        total, limit = sum(r["size"] for r in rows), self.config.max_total_mb * 1024 * 1024
        for r in rows:
            if total <= limit:
                break
            doomed.append(r)
            total -= r["size"]
        for r in doomed:
            path = self.state_dir / r["path"]
            if path.resolve().is_relative_to(self.dir.resolve()):
                path.unlink(missing_ok=True)
            self.hub.store.delete_snapshot(r["id"])
        if doomed:
            log.info("camera: pruned %d snapshot(s); %.1f MB kept", len(doomed), total / 1024 / 1024)
        return len(doomed)

    def _prune_safely(self) -> None:
        try:
            self.prune()
        except Exception:
            log.exception("camera: pruning snapshots failed")

    def _clean_leftovers(self) -> None:
        """Remove half-written files and files no row refers to (a crash between the two)."""
        try:
            known = {Path(r["path"]).name for r in self.hub.store.snapshots()}
            for p in self.dir.iterdir():
                if p.suffix == ".tmp" or (p.suffix == ".jpg" and p.name not in known):
                    p.unlink(missing_ok=True)
        except Exception:
            log.exception("camera: cleaning the snapshot directory failed")

    def status(self) -> dict[str, Any]:
        return {"backend": self.camera.name if self.camera else None, "configured": self.config.backend,
                "error": self.error, "taken": self.taken, "failed": self.failed, "dropped": self.dropped,
                "waiting": self._queue.qsize() + len(self._pending), "last": self.last}
