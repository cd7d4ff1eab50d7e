"""A hub on a test bench: a real Store (SQLite file) and Hub in-process, gpiozero's mock
pins, and a manual clock that drives every sensor deadline, so the rules are tested
exactly and without sleeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin
from support import ManualClock

from hubd.config import Config, parse_config
from hubd.lifecycle import Hub
from hubd.sensors.buttons import PanicButton, tamper_input
from hubd.sensors.sirens import Siren
from hubd.store import Store
from hubd.timers import Timers


class Rig:
    def __init__(self, tmp: Path, *, buttons: list[dict[str, Any]] | None = None,
                 sirens: list[dict[str, Any]] | None = None, hardware: dict[str, Any] | None = None,
                 protocol: dict[str, Any] | None = None, mqtt: bool = True, start: bool = True):
        data: dict[str, Any] = {
            "hub": {"ward": "ward-7", "id": "hub-1", "state_dir": str(tmp / "state")},
            "hardware": {"pin_factory": "mock", "boot_grace": 0, **(hardware or {})},
            "buttons": buttons if buttons is not None else [{"name": "gate", "pin": 17, "zone": "Gate"}],
            "sirens": sirens if sirens is not None else [{"name": "main", "pin": 27}],
            "camera": {"backend": "none"},
            "protocol": {"cancel_window": 30, "escalation": [3600, 7200], **(protocol or {})},
        }
        if mqtt:  # a destination, so that every event also gets an outbox row ("the centre is told")
            data["mqtt"] = {"host": "127.0.0.1"}
        self.config: Config = parse_config(data, check_files=False)
        self.clock = ManualClock()
        self.store = Store(self.config.store_path)
        self.hub = Hub(self.config, self.store, clock=self.clock)
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.timers = Timers("test", self.clock)
        self.sirens = [Siren(sc, self.factory, timers=self.timers, clock=self.clock,
                             on_event=lambda t, d, n=sc.name: self.hub.record(t, actor=f"siren:{n}", data=d),
                             on_health=lambda s, r, n=sc.name: self.hub.set_health(f"siren:{n}", s, r))
                       for sc in self.config.sirens]
        for s in self.sirens:
            self.hub.add_sounder(s)
            self.hub.set_health(f"siren:{s.name}", "ok")
        self.buttons: dict[str, PanicButton] = {}
        self.tamper: PanicButton | None = None
        if start:
            self.start_inputs()

    def start_inputs(self) -> None:
        kw = {"timers": self.timers, "clock": self.clock}
        for bc in self.config.buttons:
            self.buttons[bc.name] = PanicButton(bc, self.hub, self.factory, **kw)
        if self.config.hardware.tamper:
            self.tamper = tamper_input(self.config.hardware.tamper, self.hub, self.factory, **kw)

    # --- driving --------------------------------------------------------------------------

    def advance(self, seconds: float, step: float = 0.01) -> None:
        """Let ``seconds`` pass, running every deadline on time."""
        end = self.clock.now + seconds
        while True:
            nxt = self.timers.next_due()
            if nxt is None or nxt > end:
                break
            self.clock.now = max(self.clock.now, nxt)
            self.timers.run_due()
        self.clock.now = end
        self.timers.run_due()

    def drive(self, button: str, active: bool) -> None:
        b = self.tamper if button == "tamper" else self.buttons[button]
        assert b is not None
        b.line.drive(active)

    def press(self, button: str, hold: float, *, settle: float = 0.2) -> None:
        """Press for ``hold`` seconds, release, and let the debounce settle."""
        self.drive(button, True)
        self.advance(hold)
        self.drive(button, False)
        self.advance(settle)

    # --- reading --------------------------------------------------------------------------

    @property
    def siren(self) -> Siren:
        return self.sirens[0]

    def alerts(self) -> list[Any]:
        return list(reversed(self.store.alerts(limit=1000)))

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.store.events(limit=10_000) if type is None or e["type"] == type]

    def health(self, component: str) -> tuple[str, str]:
        h = self.hub.health[component]
        return h.status, h.reason

    def close(self) -> None:
        for b in [*self.buttons.values(), *([self.tamper] if self.tamper else [])]:
            b.close()
        for s in self.sirens:
            s.close()
        self.store.close()
