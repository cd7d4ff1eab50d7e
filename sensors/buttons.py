"""Panic buttons read through gpiozero."""

from __future__ import annotations

import logging
import threading

from gpiozero import Button, Factory

from hubd.config import ButtonConfig
from hubd.lifecycle import Hub

log = logging.getLogger("hubd.sensors.button")


class PanicButton:
    """A panic button that raises an alert on its hub when pressed."""

    def __init__(self, config: ButtonConfig, hub: Hub, pin_factory: Factory | None = None):
        self.config = config
        self.name = config.name
        self.hub = hub
        self._lock = threading.Lock()
        self.device = Button(config.pin, pull_up=config.pull_up if config.pull_up else None,
                             active_state=None if config.pull_up else config.active_high,
                             pin_factory=pin_factory)
        self.component = f"button:{self.name}"
        if self.device.is_pressed:
            hub.set_health(self.component, "fault", "input active at start (stuck or shorted?)")
        else:
            hub.set_health(self.component, "ok")
        self.device.when_pressed = self._pressed

    def _pressed(self) -> None:
        with self._lock:
            open_alert = next((a for a in self.hub.store.alerts(open_only=True, remote=False, source=self.name)),
                              None)
            if open_alert is not None:
                self.hub.record("alert.pressed_again", actor=self.component, alert_id=open_alert.id)
                return
            self.hub.raise_alert(self.name, self.config.kind, self.config.zone, actor=self.component)

    def press(self, hold: float = 0.2) -> None:
        """Simulate a press on a mock pin (``hubd press``)."""
        pin = self.device.pin
        active_low = self.device.pull_up
        (pin.drive_low if active_low else pin.drive_high)()
        threading.Event().wait(hold)
        (pin.drive_high if active_low else pin.drive_low)()

    def close(self) -> None:
        self.device.close()
