"""Everything on the hub's pins and camera, built from the config: the daemon's
``sensors`` component.

A part that cannot start (a pin in use, a camera missing) is reported as a faulty
component and logged; the rest of the hub runs on.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from gpiozero import Factory

from hubd.config import Config
from hubd.lifecycle import Hub
from hubd.sensors.buttons import PanicButton, tamper_input
from hubd.sensors.gpio import make_pin_factory
from hubd.sensors.sirens import Siren
from hubd.sensors.snapshots import SnapshotTaker
from hubd.timers import Timers

log = logging.getLogger("hubd.sensors")


class Hardware:
    """Buttons, sirens, tamper input and camera of one hub, with their two timer threads."""

    def __init__(self, config: Config, hub: Hub, pin_factory: Factory | None = None):
        self.config = config
        self.hub = hub
        self.factory = pin_factory if pin_factory is not None else make_pin_factory(
            config.hardware.pin_factory)
        # Buttons and sirens have a thread each, so that a siren's report to a slow store
        # never holds up a button's decision, nor the reverse.
        self.button_timers = Timers("buttons")
        self.siren_timers = Timers("sirens")
        self.buttons: dict[str, PanicButton] = {}
        self.sirens: list[Siren] = []
        self.tamper: PanicButton | None = None
        self.camera: SnapshotTaker | None = None

    def start(self) -> None:
        hub, cfg = self.hub, self.config
        for sc in cfg.sirens:
            component = f"siren:{sc.name}"
            try:
                siren = Siren(sc, self.factory, timers=self.siren_timers, on_event=self._siren_event(sc.name),
                              on_health=functools.partial(hub.set_health, component))
            except Exception as e:
                log.exception("siren %s on pin %d cannot start", sc.name, sc.pin)
                hub.set_health(component, "fault", f"cannot start on pin {sc.pin}: {e}")
                continue
            self.sirens.append(siren)
            hub.add_sounder(siren)
            hub.set_health(component, "ok")
        for bc in cfg.buttons:
            try:
                self.buttons[bc.name] = PanicButton(bc, hub, self.factory, timers=self.button_timers)
            except Exception as e:
                log.exception("button %s on pin %d cannot start", bc.name, bc.pin)
                hub.set_health(f"button:{bc.name}", "fault", f"cannot start on pin {bc.pin}: {e}")
        if cfg.hardware.tamper is not None:
            try:
                self.tamper = tamper_input(cfg.hardware.tamper, hub, self.factory, timers=self.button_timers)
            except Exception as e:
                log.exception("tamper input cannot start")
                hub.set_health("tamper", "fault", f"cannot start on pin {cfg.hardware.tamper.pin}: {e}")
        self.button_timers.start()
        self.siren_timers.start()
        if cfg.camera.backend != "none":
            self.camera = SnapshotTaker(hub, cfg.camera, cfg.state_dir)
            self.camera.start()

    def _siren_event(self, name: str) -> Any:
        def report(type: str, data: dict[str, Any]) -> None:
            self.hub.record(type, actor=f"siren:{name}", data=data)
        return report

    def alive(self) -> bool:
        return (self.button_timers.alive() and self.siren_timers.alive()
                and (self.camera is None or self.camera.alive()))

    def stop(self) -> None:
        if self.camera is not None:
            self.camera.stop()
        self.button_timers.stop()
        self.siren_timers.stop()
        for b in [*self.buttons.values(), *([self.tamper] if self.tamper else [])]:
            try:
                b.close()
            except Exception:
                log.exception("closing %s", b.component)
        for s in self.sirens:
            try:
                s.close()
            except Exception:
                log.exception("closing siren %s", s.name)

    # --- status providers ---------------------------------------------------------------

    def siren_status(self) -> dict[str, Any]:
        return {s.name: s.status() for s in self.sirens}

    def tamper_status(self) -> dict[str, Any]:
        """The enclosure: ``open`` while the switch reads open (or its wire is cut), and the
        tamper alert still open, if any (the ``tamper`` object of the status)."""
        if self.tamper is None:
            return {"open": None, "alert": None}
        s = self.tamper.status()
        return {"open": s["active"], "alert": s["open_alert"]}

    def button_status(self) -> dict[str, Any]:
        out = {name: b.status() for name, b in self.buttons.items()}
        if self.tamper is not None:
            out["tamper"] = self.tamper.status()
        return out
