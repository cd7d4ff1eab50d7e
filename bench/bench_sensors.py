"""Sensor benchmarks on gpiozero mock pins, in one process with a real SQLite store.

1. press -> siren on, hold_time 0, against a bare gpiozero baseline measured in the
   same run: ``button.when_pressed = buzzer.on``.  Both are timed the same way: the
   siren pin's own state log (``MockPin.states``) from just before the button pin is
   driven to the moment the siren pin changed.
2. The delay a snapshot adds to the alert path: press -> alert committed (the hub's
   listener after the SQLite commit) with the camera on (generated 640x480 JPEG per
   alert, written, fsync'd, row and event added) versus off, in alternating blocks.

Run: python bench/bench_sensors.py   (prints a table and a final JSON line for bench/run)
"""

from __future__ import annotations

import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import pct, report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_hub(tmp: str, *, mqtt: bool) -> Any:
    from hubd.config import parse_config
    from hubd.lifecycle import Hub
    from hubd.store import Store

    data: dict[str, Any] = {
        "hub": {"ward": "w", "id": "bench", "state_dir": tmp},
        "hardware": {"pin_factory": "mock", "boot_grace": 0},
        "buttons": [{"name": "gate", "pin": 17, "hold_time": 0, "debounce": 0}],
        "sirens": [{"name": "main", "pin": 27, "max_on": 3600}],
        "camera": {"backend": "generated", "width": 640, "height": 480, "burst": 1},
        "protocol": {"cancel_window": 600, "escalation": [3600]},
    }
    if mqtt:
        data["mqtt"] = {"host": "127.0.0.1"}  # one outbox row per event, as on a real hub
    cfg = parse_config(data, check_files=False)
    return Hub(cfg, Store(cfg.store_path))


def press_to_siren(n: int) -> tuple[list[float], list[float]]:
    """Microseconds from driving the button pin to the siren pin going on: hubd, bare gpiozero."""
    from gpiozero import Button, DigitalOutputDevice
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from hubd.sensors.buttons import PanicButton
    from hubd.sensors.sirens import Siren
    from hubd.timers import Timers

    # The bare baseline.
    bf = MockFactory(pin_class=MockPWMPin)
    button, buzzer = Button(17, pin_factory=bf), DigitalOutputDevice(27, pin_factory=bf)
    button.when_pressed = buzzer.on
    bpin, bsiren = bf.pin(17), bf.pin(27)
    base = []

    with tempfile.TemporaryDirectory() as tmp:
        hub = make_hub(tmp, mqtt=False)
        factory = MockFactory(pin_class=MockPWMPin)
        timers = Timers("bench-sirens")
        timers.start()
        siren = Siren(hub.config.sirens[0], factory, timers=timers)
        hub.add_sounder(siren)
        panic = PanicButton(hub.config.buttons[0], hub, factory, timers=timers)
        pin, spin = factory.pin(17), factory.pin(27)
        ours = []
        for i in range(2 * n):
            if i % 2 == 0:  # interleave, so drift on a shared machine hits both alike
                bsiren.clear_states()
                bpin.drive_low()
                base.append(bsiren.states[1].timestamp * 1e6)
                bpin.drive_high()
                buzzer.off()
            else:
                spin.clear_states()
                pin.drive_low()
                ours.append(spin.states[1].timestamp * 1e6)
                pin.drive_high()
                alert = panic.open_alert
                assert alert is not None
                hub.cancel(alert.id, "bench")  # closes it (and silences) so the next press raises anew
                assert not siren.is_on
        panic.close()
        siren.close()
        timers.stop()
        hub.store.close()
    button.close()
    buzzer.close()
    return ours, base


def press_to_commit(n_blocks: int, per_block: int) -> tuple[list[float], list[float], int]:
    """Milliseconds from press to alert committed, camera off and on (alternating blocks)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from hubd.sensors.buttons import PanicButton
    from hubd.sensors.snapshots import SnapshotTaker
    from hubd.timers import Timers

    off: list[float] = []
    on: list[float] = []
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        hub = make_hub(tmp, mqtt=True)
        factory = MockFactory(pin_class=MockPWMPin)
        timers = Timers("bench-buttons")
        timers.start()
        panic = PanicButton(hub.config.buttons[0], hub, factory, timers=timers)
        camera = SnapshotTaker(hub, hub.config.camera, Path(tmp))
        camera.start()
        camera.wait_ready(20)
        committed: list[float] = []

        def on_event(event: Any, envelope: dict) -> None:
            if event.type == "alert.raised":
                committed.append(time.perf_counter())

        hub.subscribe(on_event)
        pin = factory.pin(17)
        for block in range(2 * n_blocks):
            camera_on = block % 2 == 1
            camera.enabled = camera_on
            out = on if camera_on else off
            for _ in range(per_block):
                t0 = time.perf_counter()
                pin.drive_low()
                out.append((committed[-1] - t0) * 1000)
                pin.drive_high()
                hub.cancel(panic.open_alert.id, "bench")
                # A random gap, so that the next press lands at every phase of a snapshot in progress.
                time.sleep(rng.uniform(0, 0.02))
            if camera_on:
                deadline = time.monotonic() + 30
                while camera.status()["waiting"] and time.monotonic() < deadline:
                    time.sleep(0.01)
        camera.stop()
        taken = camera.taken
        panic.close()
        timers.stop()
        hub.store.close()
    return off, on, taken


def main() -> None:
    logging.getLogger("hubd").setLevel(logging.ERROR)
    ours, base = press_to_siren(1500)
    off, on, taken = press_to_commit(8, 50)
    rows = [
        {"figure": "press -> siren p50 (hold 0)", "value": round(statistics.median(ours), 1), "unit": "us",
         "target": "", "baseline": round(statistics.median(base), 1),
         "ratio": round(statistics.median(ours) / statistics.median(base), 2)},
        {"figure": "press -> siren p99 (hold 0)", "value": round(pct(ours, 99), 1), "unit": "us",
         "target": "ratio <= 3", "baseline": round(pct(base, 99), 1),
         "ratio": round(pct(ours, 99) / pct(base, 99), 2)},
        {"figure": "press -> committed p50, camera on", "value": round(statistics.median(on), 3),
         "unit": "ms",
         "target": "", "baseline": round(statistics.median(off), 3),
         "ratio": round(statistics.median(on) / statistics.median(off), 2)},
        {"figure": "press -> committed p99, camera on", "value": round(pct(on, 99), 3), "unit": "ms",
         "target": "no measurable delay", "baseline": round(pct(off, 99), 3),
         "ratio": round(pct(on, 99) / pct(off, 99), 2)},
        {"figure": "snapshots taken during the camera-on blocks", "value": taken, "unit": "",
         "target": f"= {len(on)}", "baseline": "", "ratio": ""},
    ]
    report("sensors", rows)


if __name__ == "__main__":
    main()
