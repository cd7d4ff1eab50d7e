"""Choosing gpiozero's pin factory from configuration (the only hardware difference
between a simulated hub and a Pi), and the input line every sensor reads."""

from __future__ import annotations

import functools
from collections.abc import Callable

from gpiozero import DigitalInputDevice, Factory

#: State changes a simulated pin keeps for tests to look at (gpiozero's mock pins keep every
#: one; a simulated hub's buttons and sirens change state for as long as it runs).
SIMULATED_PIN_HISTORY = 1000


def make_pin_factory(name: str) -> Factory | None:
    """Return the pin factory for ``hardware.pin_factory``; None lets gpiozero choose (auto)."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory(pin_class=_simulated_pin_class())
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    return None


@functools.cache
def _simulated_pin_class() -> type:
    """gpiozero's mock PWM pin, with the last SIMULATED_PIN_HISTORY states kept (in ``states``)."""
    from gpiozero.pins.mock import MockPWMPin

    class SimulatedPin(MockPWMPin):
        def _change_state(self, value: float) -> bool:
            changed = bool(super()._change_state(value))
            if changed and len(self.states) > 2 * SIMULATED_PIN_HISTORY:
                del self.states[:-SIMULATED_PIN_HISTORY]  # now and then: amortised O(1) a change
            return changed

    return SimulatedPin


def is_simulated(factory: Factory | None) -> bool:
    """True when ``factory`` is gpiozero's mock factory (``hubd press`` may drive pins)."""
    from gpiozero.pins.mock import MockFactory

    return isinstance(factory, MockFactory)


class InputLine:
    """One GPIO input that reports its *logical* level: active or not.

    ``pull_up`` enables the internal pull-up.  ``active_high`` says the line reads
    high when active: without a pull-up that is a switch to 3V3 or a driven signal;
    with a pull-up it is a normally-closed switch to ground, which also reads
    active when its wire is cut.  ``on_change(active)`` is called on every edge,
    in whatever thread the pin factory reports edges (for mock pins: the thread
    that drives the pin).
    """

    def __init__(self, pin: int, *, pull_up: bool, active_high: bool, on_change: Callable[[bool], None],
                 pin_factory: Factory | None = None):
        self.active_high = active_high
        if pull_up:
            # gpiozero fixes "active = low" with a pull-up; a normally-closed switch inverts that.
            self.device = DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
            self._invert = active_high
        else:
            self.device = DigitalInputDevice(pin, pull_up=None, active_state=active_high,
                                             pin_factory=pin_factory)
            self._invert = False
        self._on_change = on_change
        self.device.when_activated = self._lo if self._invert else self._hi
        self.device.when_deactivated = self._hi if self._invert else self._lo

    def _hi(self) -> None:
        self._on_change(True)

    def _lo(self) -> None:
        self._on_change(False)

    @property
    def is_active(self) -> bool:
        return bool(self.device.is_active) != self._invert

    def drive(self, active: bool) -> None:
        """Drive a mock pin to the active or inactive level (simulation and tests only)."""
        high = active == self.active_high
        (self.device.pin.drive_high if high else self.device.pin.drive_low)()

    def close(self) -> None:
        self.device.close()
