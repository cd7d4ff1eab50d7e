"""Cameras: one small interface, ``capture_jpeg() -> bytes``, and three backends.

* ``picamera2`` — the Pi's camera.  Imported lazily: it comes from Raspberry Pi OS
  (``apt install python3-picamera2``, venv made with ``--system-site-packages``),
  never from pip.
* ``opencv`` — a USB camera through OpenCV/V4L2 (the optional extra ``hubd[opencv]``).
* ``generated`` — a drawn frame with the hub, time and a counter, for machines
  without a camera (the demo, tests, CI).

:func:`open_camera` turns a backend that cannot start into a clear
:class:`CameraError` message and, if configured, the fallback backend.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Protocol

from hubd.config import CameraConfig

log = logging.getLogger("hubd.sensors.camera")


class CameraError(Exception):
    """A camera could not start or could not take a picture; the message says why."""


class Camera(Protocol):
    name: str

    def capture_jpeg(self) -> bytes: ...

    def close(self) -> None: ...


class GeneratedCamera:
    """A frame drawn with Pillow: the hub's label, the time and a frame counter."""

    name = "generated"

    def __init__(self, width: int = 640, height: int = 480, label: str = "hubd"):
        from PIL import Image, ImageDraw  # noqa: F401  (fail here, at start, if Pillow is missing)

        self.width, self.height, self.label = width, height, label
        self.frames = 0

    def capture_jpeg(self) -> bytes:
        from PIL import Image, ImageDraw

        self.frames += 1
        img = Image.new("RGB", (self.width, self.height), (32, 48, 64))
        draw = ImageDraw.Draw(img)
        # A moving bar, so consecutive frames differ the way a real scene would.
        x = (self.frames * 37) % max(1, self.width)
        draw.rectangle([x, 0, min(self.width, x + self.width // 8), self.height], fill=(200, 80, 40))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        draw.text((10, 10), f"{self.label}  {stamp}  #{self.frames}", fill=(255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        return buf.getvalue()

    def close(self) -> None:
        pass


class OpenCVCamera:
    """A V4L2 camera (``/dev/video<device>``) through OpenCV."""

    name = "opencv"

    def __init__(self, device: int = 0, width: int = 640, height: int = 480):
        try:
            import cv2
        except ImportError as e:
            raise CameraError(f"opencv backend: cannot import cv2 ({e}); install the extra: "
                              f"pip install 'hubd[opencv]'") from None
        self._cv2 = cv2
        self.device = device
        self._cap = cv2.VideoCapture(device)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"opencv backend: cannot open /dev/video{device} (no camera, or no permission: "
                              f"is the user in the 'video' group?)")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def capture_jpeg(self) -> bytes:
        ok, frame = self._cap.read()
        if not ok:
            raise CameraError(f"opencv backend: no frame from /dev/video{self.device}")
        ok, buf = self._cv2.imencode(".jpg", frame)
        if not ok:
            raise CameraError("opencv backend: JPEG encoding failed")
        return buf.tobytes()

    def close(self) -> None:
        self._cap.release()


class Picamera2Camera:
    """The Raspberry Pi camera through picamera2 (libcamera)."""

    name = "picamera2"

    def __init__(self, width: int = 640, height: int = 480):
        try:
            from picamera2 import Picamera2
        except Exception as e:  # ImportError, or libcamera's own errors on import
            raise CameraError(f"picamera2 backend: cannot import picamera2 ({e}); on Raspberry Pi OS run "
                              f"'apt install python3-picamera2' and make the venv with "
                              f"--system-site-packages") from None
        try:
            self._cam = Picamera2()
            self._cam.configure(self._cam.create_still_configuration(main={"size": (width, height)}))
            self._cam.start()
        except Exception as e:
            raise CameraError(f"picamera2 backend: the camera did not start ({e}); is it connected and "
                              f"enabled, and not used by another program?") from None

    def capture_jpeg(self) -> bytes:
        buf = io.BytesIO()
        try:
            self._cam.capture_file(buf, format="jpeg")
        except Exception as e:
            raise CameraError(f"picamera2 backend: capture failed ({e})") from None
        return buf.getvalue()

    def close(self) -> None:
        try:
            self._cam.stop()
        finally:
            self._cam.close()


def make_camera(backend: str, config: CameraConfig, label: str = "hubd") -> Camera:
    """Start one backend; raise CameraError saying why it cannot."""
    try:
        if backend == "generated":
            return GeneratedCamera(config.width, config.height, label)
        if backend == "opencv":
            return OpenCVCamera(config.device, config.width, config.height)
        if backend == "picamera2":
            return Picamera2Camera(config.width, config.height)
    except CameraError:
        raise
    except Exception as e:  # a backend must never take the daemon down
        raise CameraError(f"{backend} backend: {type(e).__name__}: {e}") from None
    raise CameraError(f"unknown camera backend {backend!r}")


def open_camera(config: CameraConfig, label: str = "hubd") -> tuple[Camera | None, str]:
    """The configured camera, or its fallback; and the error that made the fallback necessary.

    Returns ``(camera, "")`` when the configured backend started, ``(fallback, error)``
    when it did not but the fallback did, and ``(None, error)`` when nothing works."""
    if config.backend == "none":
        return None, ""
    try:
        return make_camera(config.backend, config, label), ""
    except CameraError as e:
        error = str(e)
    log.error("camera: %s", error)
    if config.fallback == "none" or config.fallback == config.backend:
        return None, error
    try:
        camera = make_camera(config.fallback, config, label)
    except CameraError as e:
        return None, f"{error}; fallback: {e}"
    log.warning("camera: using the %s backend instead", config.fallback)
    return camera, f"{error}; using the {config.fallback} backend instead"

