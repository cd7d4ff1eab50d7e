"""Power sensors: a mains-fail input, a battery monitor on I2C, the Raspberry Pi firmware's
under-voltage flags, and the thread that reads them for the core (``hubd.power``).

* :class:`MainsInput` is one GPIO line (gpiozero) that reads active while the mains has failed.
* :class:`INA219` is the current and voltage monitor on most Pi UPS boards (TI INA219,
  datasheet SBOS448), spoken to through an SMBus object (``smbus2``); the register maths
  are the functions beside it.  :class:`BatteryMonitor` opens the bus and turns its readings
  into the battery's voltage and current.
* :class:`FirmwareFlags` reads ``get_throttled`` (the firmware's flags, which the kernel's
  Raspberry Pi firmware driver exposes in sysfs).
* :class:`PowerMonitor` is the daemon's ``power`` component: the ``hubd-power`` thread reads
  every source each ``poll_interval`` (and at once on a mains edge) and hands the reading to
  the core's :class:`~hubd.power.PowerSupervisor`.  A source that cannot be read is a faulty
  component (``power:mains``, ``power:battery``, ``power:firmware``); the others go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gpiozero import Factory

from hubd.config import BatteryConfig, Config, MainsConfig
from hubd.lifecycle import Hub
from hubd.power import PowerReading, PowerSupervisor
from hubd.sensors.gpio import InputLine

log = logging.getLogger("hubd.sensors.power")

# --- INA219 registers and their maths (datasheet SBOS448) -------------------------------------

REG_CONFIG = 0x00
REG_SHUNT_VOLTAGE = 0x01
REG_BUS_VOLTAGE = 0x02
REG_POWER = 0x03
REG_CURRENT = 0x04
REG_CALIBRATION = 0x05

#: Shunt voltage register: 10 µV a bit, two's complement whatever the PGA range.
SHUNT_LSB = 10e-6
#: Bus voltage register: bits 15-3, 4 mV a bit; bit 1 conversion ready, bit 0 math overflow.
BUS_LSB = 0.004
#: Cal = trunc(0.04096 / (Current_LSB * R_shunt)); Power_LSB = 20 * Current_LSB.
CALIBRATION_SCALE = 0.04096
POWER_LSB_PER_CURRENT_LSB = 20
#: PGA setting (PG bits 12-11) for each shunt voltage range, volts.
SHUNT_RANGES = {0.04: 0b00, 0.08: 0b01, 0.16: 0b10, 0.32: 0b11}
#: ADC setting (BADC bits 10-7, SADC bits 6-3): one 12-bit sample, or the mean of 32 (17 ms).
ADC_12BIT = 0b0011
ADC_12BIT_32_SAMPLES = 0b1101
#: MODE bits 2-0: shunt and bus, continuous.
MODE_CONTINUOUS = 0b111


def config_word(bus_range: int, shunt_range: float, bus_adc: int, shunt_adc: int, mode: int) -> int:
    """The configuration register: BRNG (bit 13: 0 = 16 V, 1 = 32 V), PG, BADC, SADC, MODE."""
    if bus_range not in (16, 32):
        raise ValueError(f"bus range {bus_range} V: the INA219 measures up to 16 or 32 V")
    brng = 1 if bus_range == 32 else 0
    return (brng << 13) | (SHUNT_RANGES[shunt_range] << 11) | (bus_adc << 7) | (shunt_adc << 3) | mode


def calibration(current_lsb: float, shunt_ohms: float) -> int:
    """The calibration register for a current LSB (amperes a bit) and a shunt (ohms)."""
    value = int(CALIBRATION_SCALE / (current_lsb * shunt_ohms))
    if not 0 < value <= 0xFFFE:
        raise ValueError(f"calibration {value} out of range: choose another current LSB")
    return value & 0xFFFE  # bit 0 is not used


def _signed(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


def shunt_voltage(raw: int) -> float:
    """Volts across the shunt, from the shunt voltage register."""
    return _signed(raw) * SHUNT_LSB


def bus_voltage(raw: int) -> tuple[float, bool, bool]:
    """(volts, conversion ready, math overflow) from the bus voltage register."""
    return (raw >> 3) * BUS_LSB, bool(raw & 0b10), bool(raw & 0b01)


def current(raw: int, current_lsb: float) -> float:
    """Amperes from the current register (signed)."""
    return _signed(raw) * current_lsb


def power(raw: int, current_lsb: float) -> float:
    """Watts from the power register (unsigned)."""
    return raw * POWER_LSB_PER_CURRENT_LSB * current_lsb


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` the monitor uses (tests give a simulated device here)."""

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class INA219Reading:
    bus_voltage: float
    shunt_voltage: float
    current: float
    power: float
    overflow: bool


class INA219:
    """One INA219 at ``address`` on ``bus``, configured for a shunt and a largest current.

    By default the shunt range is the smallest that holds ``max_current``, the bus range
    16 V, each reading the mean of 32 conversions, and the current LSB ``max_current / 32768``
    (the finest the datasheet allows).  A chip that lost its settings (a reset, a brown-out)
    is configured again at the next reading."""

    def __init__(self, bus: SMBusLike, address: int = 0x40, *, shunt_ohms: float = 0.1,
                 max_current: float = 3.2, bus_range: int = 16, shunt_range: float | None = None,
                 current_lsb: float | None = None, adc: int = ADC_12BIT_32_SAMPLES):
        self.bus = bus
        self.address = address
        if shunt_range is None:
            needed = max_current * shunt_ohms
            shunt_range = next((r for r in sorted(SHUNT_RANGES) if r >= needed - 1e-9), None)
            if shunt_range is None:
                raise ValueError(f"{max_current:g} A through {shunt_ohms:g} ohm is beyond the 320 mV range")
        self.current_lsb = current_lsb if current_lsb is not None else max_current / 32768
        self.calibration = calibration(self.current_lsb, shunt_ohms)
        self.config = config_word(bus_range, shunt_range, adc, adc, MODE_CONTINUOUS)
        self.configure()

    def configure(self) -> None:
        self._write(REG_CONFIG, self.config)
        self._write(REG_CALIBRATION, self.calibration)

    def read(self) -> INA219Reading:
        if self._read(REG_CALIBRATION) != self.calibration:
            log.warning("INA219 at 0x%02x lost its calibration (reset?): configuring it again", self.address)
            self.configure()
        volts, _, overflow = bus_voltage(self._read(REG_BUS_VOLTAGE))
        return INA219Reading(bus_voltage=volts, shunt_voltage=shunt_voltage(self._read(REG_SHUNT_VOLTAGE)),
                             current=current(self._read(REG_CURRENT), self.current_lsb),
                             power=power(self._read(REG_POWER), self.current_lsb), overflow=overflow)

    def _read(self, register: int) -> int:
        # Registers are 16 bits, most significant byte first (SMBus words are the other way round).
        hi, lo = self.bus.read_i2c_block_data(self.address, register, 2)
        return (hi << 8) | lo

    def _write(self, register: int, value: int) -> None:
        self.bus.write_i2c_block_data(self.address, register, [(value >> 8) & 0xFF, value & 0xFF])


def open_i2c_bus(number: int) -> SMBusLike:
    """``/dev/i2c-<number>`` through smbus2."""
    from smbus2 import SMBus

    return SMBus(number)


class BatteryMonitor:
    """The battery's voltage and current from a monitor on I2C; the bus is opened at the first
    reading and again after an error."""

    def __init__(self, config: BatteryConfig, open_bus: Callable[[int], SMBusLike] | None = None):
        self.config = config
        self._open_bus = open_bus or open_i2c_bus
        self._bus: SMBusLike | None = None
        self._chip: INA219 | None = None

    def read(self) -> tuple[float, float]:
        """(volts, amperes positive while charging); raises OSError if the monitor does not answer."""
        cfg = self.config
        try:
            if self._chip is None:
                self._bus = self._open_bus(cfg.bus)
                bus_range = 16 if cfg.full_voltage <= 16 else 32
                self._chip = INA219(self._bus, cfg.address, shunt_ohms=cfg.shunt_ohms,
                                    max_current=cfg.max_current, bus_range=bus_range)
            r = self._chip.read()
        except OSError:
            self.close()
            raise
        return r.bus_voltage, r.current if cfg.charge_positive else -r.current

    def close(self) -> None:
        bus, self._bus, self._chip = self._bus, None, None
        if bus is not None:
            try:
                bus.close()
            except OSError:
                pass


# --- the firmware's flags ---------------------------------------------------------------------

#: get_throttled bits 0-3 say what holds now; bits 16-19 the same "has occurred since boot".
THROTTLED_FLAGS = {0: "undervoltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit"}
OCCURRED_SHIFT = 16


def parse_throttled(text: str) -> int:
    """The flags from the sysfs file ("50005") or vcgencmd ("throttled=0x50005")."""
    return int(text.strip().removeprefix("throttled=").strip(), 16)


def throttled_flags(value: int, *, occurred: bool = False) -> tuple[str, ...]:
    """The names of the flags set now (or, with ``occurred``, since boot)."""
    shift = OCCURRED_SHIFT if occurred else 0
    return tuple(name for bit, name in THROTTLED_FLAGS.items() if value >> (bit + shift) & 1)


class FirmwareFlags:
    """The Raspberry Pi firmware's ``get_throttled`` value, read from a file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> int:
        """Raises OSError or ValueError when the file is missing or unreadable."""
        return parse_throttled(self.path.read_text())


# --- inputs and the thread --------------------------------------------------------------------

class MainsInput:
    """The mains-fail input: ``failed`` while the line is active."""

    def __init__(self, config: MainsConfig, pin_factory: Factory | None = None,
                 on_change: Callable[[bool], None] | None = None):
        self.config = config
        self.line = InputLine(config.pin, pull_up=config.pull_up, active_high=config.active_high,
                              on_change=on_change or (lambda _: None), pin_factory=pin_factory)

    @property
    def failed(self) -> bool:
        return self.line.is_active

    def press(self, hold: float = 0.2) -> None:
        """Cut the mains on a mock pin for ``hold`` seconds (``hubd press mains``)."""
        self.line.drive(True)
        threading.Event().wait(hold)
        self.line.drive(False)

    def close(self) -> None:
        self.line.close()


class PowerMonitor:
    """The ``power`` component: reads the configured sources and feeds the supervisor."""

    def __init__(self, config: Config, supervisor: PowerSupervisor, hub: Hub,
                 pin_factory: Factory | None = None, *, open_bus: Callable[[int], SMBusLike] | None = None):
        assert config.power is not None
        self.config = config.power
        self.supervisor = supervisor
        self.hub = hub
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.mains: MainsInput | None = None
        self.battery = BatteryMonitor(self.config.battery, open_bus) if self.config.battery else None
        self.firmware = FirmwareFlags(self.config.throttled.path) if self.config.throttled else None
        if self.config.mains is not None:
            try:
                self.mains = MainsInput(self.config.mains, pin_factory, on_change=lambda _: self._wake.set())
            except Exception as e:
                log.exception("mains input on pin %d cannot start", self.config.mains.pin)
                hub.set_health("power:mains", "fault", f"cannot start on pin {self.config.mains.pin}: {e}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hubd-power", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.mains is not None:
            self.mains.close()
        if self.battery is not None:
            self.battery.close()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def read(self) -> PowerReading:
        """One reading of every source; a source that fails is reported and left out."""
        mains_failed = voltage = current = undervoltage = None
        flags: tuple[str, ...] = ()
        if self.mains is not None:
            mains_failed = self.mains.failed
            self.hub.set_health("power:mains", "ok")
        if self.battery is not None:
            try:
                voltage, current = self.battery.read()
            except OSError as e:
                cfg = self.config.battery
                assert cfg is not None
                where = f"the {cfg.chip} at 0x{cfg.address:02x} on /dev/i2c-{cfg.bus}"
                self.hub.set_health("power:battery", "fault", f"no answer from {where}: {e}")
            else:
                self.hub.set_health("power:battery", "ok")
        if self.firmware is not None:
            try:
                value = self.firmware.read()
            except (OSError, ValueError) as e:
                self.hub.set_health("power:firmware", "fault", f"cannot read {self.firmware.path}: {e}")
            else:
                flags = throttled_flags(value)
                undervoltage = "undervoltage" in flags
                self.hub.set_health("power:firmware", "ok")
        return PowerReading(mains_failed=mains_failed, battery_voltage=voltage, battery_current=current,
                            undervoltage=undervoltage, throttled=flags)

    def _run(self) -> None:
        clock = self.supervisor.clock
        while not self._stopping.is_set():
            try:
                self.supervisor.update(self.read())
            except Exception:
                log.exception("power reading failed; trying again")
            wait = self.config.poll_interval
            due = self.supervisor.due()
            if due is not None:
                wait = min(wait, max(0.0, due - clock.monotonic()) + 0.01)
            self._wake.wait(wait)
            self._wake.clear()
