"""Sirens driven through gpiozero output devices."""

from __future__ import annotations

import logging

from gpiozero import DigitalOutputDevice, Factory

from hubd.config import SirenConfig

log = logging.getLogger("hubd.sensors.siren")


class Siren:
    """One siren on a relay or driver; never blocks the caller."""

    def __init__(self, config: SirenConfig, pin_factory: Factory | None = None):
        self.config = config
        self.name = config.name
        self.device = DigitalOutputDevice(config.pin, active_high=config.active_high, initial_value=False,
                                          pin_factory=pin_factory)

    @property
    def is_on(self) -> bool:
        return bool(self.device.value)

    def sound(self, kind: str, level: int) -> None:
        self.device.on()

    def silence(self) -> None:
        self.device.off()

    def chirp(self) -> None:
        self.device.blink(on_time=0.2, off_time=0.1, n=1, background=True)

    def health(self) -> dict[str, object]:
        return {"status": "ok", "on": self.is_on}

    def close(self) -> None:
        self.device.close()
