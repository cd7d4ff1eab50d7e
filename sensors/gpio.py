"""Choosing gpiozero's pin factory from configuration: the only hardware difference
between a simulated hub and a Pi."""

from __future__ import annotations

from gpiozero import Factory


def make_pin_factory(name: str) -> Factory | None:
    """Return the pin factory for ``hardware.pin_factory``; None lets gpiozero choose (auto)."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    return None


def is_simulated(factory: Factory | None) -> bool:
    from gpiozero.pins.mock import MockFactory

    return isinstance(factory, MockFactory)
