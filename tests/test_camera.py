"""Camera: the generated-frame backend end to end (alert -> JPEG on disk -> row -> event),
capture off the alert path, retention, and backends that cannot start."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sensors_rig import Rig
from support import wait_for

from hubd.config import CameraConfig
from hubd.sensors.camera import GeneratedCamera, open_camera
from hubd.sensors.snapshots import SnapshotTaker


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, buttons=[{"name": "gate", "pin": 17, "zone": "Gate"}])
    yield r
    r.close()


@pytest.fixture
def takers() -> Iterator[list[SnapshotTaker]]:
    started: list[SnapshotTaker] = []
    yield started
    for t in started:
        t.stop()


def start_taker(rig: Rig, takers: list, config: CameraConfig, **kw) -> SnapshotTaker:
    taker = SnapshotTaker(rig.hub, config, rig.config.state_dir, **kw)
    taker.start()
    takers.append(taker)
    assert taker.wait_ready(20)
    return taker


def test_an_alert_gets_its_snapshots_on_disk_with_rows_and_events(rig: Rig, takers) -> None:
    start_taker(rig, takers, CameraConfig(backend="generated", width=320, height=240, burst=2,
                                          burst_interval=0.05))
    assert rig.health("camera") == ("ok", "")
    rig.press("gate", 0.3)
    [alert] = rig.alerts()
    rows = wait_for(lambda: len(rig.store.snapshots(alert.id)) == 2 and rig.store.snapshots(alert.id), 20,
                    message="two snapshots")
    events = wait_for(lambda: len(rig.events("alert.snapshot")) == 2 and rig.events("alert.snapshot"), 20,
                      message="two snapshot events")
    for row, event in zip(rows, events, strict=True):
        path = rig.config.state_dir / row["path"]
        assert row["path"].startswith("snapshots/") and path.is_file()
        data = path.read_bytes()
        assert data[:2] == b"\xff\xd8" and len(data) == row["size"]
        with Image.open(io.BytesIO(data)) as img:
            assert (img.format, img.size) == ("JPEG", (320, 240))
        # The exact shape the MQTT link and the page rely on.
        assert event["actor"] == "camera" and event["alert_id"] == alert.id
        assert event["data"] == {"snapshot_id": row["id"], "path": row["path"], "size": row["size"]}


def test_only_this_hubs_alerts_get_snapshots(rig: Rig, takers) -> None:
    taker = start_taker(rig, takers, CameraConfig(backend="generated", width=64, height=48))
    remote = {"v": 1, "id": "hub-9:e1", "type": "alert.raised", "time": rig.clock(), "ward": "ward-7",
              "hub": "hub-9", "actor": "gate", "data": {},
              "alert": {"id": "hub-9:1", "hub": "hub-9", "seq": 1, "kind": "panic", "source": "gate",
                        "zone": "", "state": "raised", "outcome": None, "level": 0, "silent": False,
                        "raised_at": rig.clock(), "updated_at": rig.clock(), "remote": False,
                        "relayed_by": None, "extra": {}, "severity": 1}}
    assert rig.hub.ingest_remote(remote, via="mqtt", trust="signed")
    local = rig.hub.raise_alert("gate", "panic")
    wait_for(lambda: taker.taken == 1, 20, message="local snapshot")
    assert [s["alert_id"] for s in rig.store.snapshots()] == [local.id]


class BlockingCamera:
    """Our own Camera interface, with a capture that waits until the test lets it go."""

    name = "blocking"

    def __init__(self) -> None:
        self.go = threading.Event()
        self.entered = threading.Event()
        self.frames = GeneratedCamera(64, 48)

    def capture_jpeg(self) -> bytes:
        self.entered.set()
        self.go.wait(30)
        return self.frames.capture_jpeg()

    def close(self) -> None:
        self.go.set()


def test_a_slow_capture_never_delays_the_alert_or_the_siren(rig: Rig, takers) -> None:
    cam = BlockingCamera()
    taker = start_taker(rig, takers, CameraConfig(backend="generated"), opener=lambda c, label: (cam, ""))
    first = rig.hub.raise_alert("gate", "panic")
    assert cam.entered.wait(10)  # the camera is busy with the first alert ...
    rig.hub.acknowledge(first.id, "m")
    rig.hub.resolve(first.id, "test", "m")
    rig.press("gate", 0.3)       # ... and the next alert still sounds and commits at once
    assert rig.siren.is_on
    assert [a.state for a in rig.alerts()] == ["resolved", "raised"]
    assert taker.taken == 0
    cam.go.set()
    wait_for(lambda: taker.taken == 2, 20, message="both snapshots once the camera answers")


def write_snapshot(rig: Rig, alert_id: str, age_days: float, size: int) -> int:
    rel = f"snapshots/{alert_id.replace(':', '_')}-{age_days}.jpg"
    path = rig.config.state_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8" + b"\0" * (size - 2))
    return rig.store.add_snapshot(alert_id, rel, rig.clock() - age_days * 86400, size)


def test_retention_prunes_by_age_then_by_total_size_oldest_first(rig: Rig) -> None:
    mb = 1024 * 1024
    taker = SnapshotTaker(rig.hub, CameraConfig(backend="generated", retention_days=30, max_total_mb=2),
                          rig.config.state_dir, clock=rig.clock)
    ids = {age: write_snapshot(rig, f"hub-1:{i}", age, mb) for i, age in enumerate((40, 31, 20, 10, 5, 1))}
    assert taker.prune() == 4  # 40 and 31 days old; then 20 and 10 to get under 2 MB
    kept = rig.store.snapshots()
    assert [r["id"] for r in kept] == [ids[5], ids[1]]
    on_disk = sorted(p.name for p in (rig.config.state_dir / "snapshots").iterdir())
    assert on_disk == sorted(Path(r["path"]).name for r in kept)
    assert taker.prune() == 0


def test_retention_days_zero_keeps_old_snapshots(rig: Rig) -> None:
    taker = SnapshotTaker(rig.hub, CameraConfig(backend="generated", retention_days=0, max_total_mb=5),
                          rig.config.state_dir, clock=rig.clock)
    write_snapshot(rig, "hub-1:1", 4000, 1000)
    assert taker.prune() == 0 and len(rig.store.snapshots()) == 1


def test_missing_picamera2_is_a_clear_error_and_falls_back(rig: Rig, takers, monkeypatch) -> None:
    # Make `import picamera2` fail the way it does on any machine without Raspberry Pi OS's package.
    monkeypatch.setitem(sys.modules, "picamera2", None)
    config = CameraConfig(backend="picamera2", fallback="generated", width=64, height=48)
    camera, error = open_camera(config)
    assert camera is not None and camera.name == "generated"
    assert "picamera2 backend: cannot import picamera2" in error
    assert "apt install python3-picamera2" in error and "using the generated backend instead" in error
    camera.close()

    taker = start_taker(rig, takers, config)
    status, reason = rig.health("camera")
    assert status == "fault" and "cannot import picamera2" in reason
    assert rig.events("component.fault")[-1]["data"]["component"] == "camera"
    rig.hub.raise_alert("gate", "panic")
    wait_for(lambda: taker.taken == 1, 20, message="a snapshot from the fallback")
    assert taker.status()["backend"] == "generated" and taker.status()["configured"] == "picamera2"


def test_without_a_fallback_a_broken_camera_is_a_fault_and_alerts_go_on(rig: Rig, takers,
                                                                        monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    taker = start_taker(rig, takers, CameraConfig(backend="picamera2", fallback="none"))
    assert rig.health("camera")[0] == "fault"
    alert = rig.hub.raise_alert("gate", "panic")
    assert rig.siren.is_on and rig.hub.get_alert(alert.id).state == "raised"
    assert taker.alive() and taker.status()["backend"] is None
    assert rig.store.snapshots() == []


def test_an_opencv_camera_that_is_not_there_falls_back(rig: Rig) -> None:
    camera, error = open_camera(CameraConfig(backend="opencv", device=63, fallback="generated"))
    assert camera is not None and camera.name == "generated"
    # Either OpenCV (the optional extra) is not installed, or there is no /dev/video63.
    assert error.startswith("opencv backend: ") and ("cannot import cv2" in error or "/dev/video63" in error)
