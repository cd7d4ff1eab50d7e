"""A simulated INA219 behind an SMBus-like object: what the tests put where ``smbus2.SMBus``
would be.

It is the chip as its datasheet (TI SBOS448) describes it, not our driver turned round: a
register file of 16-bit registers sent most significant byte first, the power-on values of
Table 4 (configuration 0x399F, the rest 0), and the two equations by which the chip itself
derives its current and power registers from the shunt and bus voltage registers and the
calibration (section 8.5.1):

    Current = (Shunt voltage register x Calibration) / 4096
    Power   = (Current register x Bus voltage register (bits 15-3)) / 5000

Tests set the measured registers (shunt and bus voltage) as raw register values.
"""

from __future__ import annotations

from collections.abc import Sequence

POR_CONFIG = 0x399F


def _signed(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


class FakeINA219Bus:
    """An I2C bus with one INA219 at ``address``; ``fail`` makes every transfer fail as a
    missing or unpowered chip does (OSError 121, Remote I/O error)."""

    def __init__(self, address: int = 0x40, *, shunt: int = 0, bus: int = 0):
        self.address = address
        self.registers = {0: POR_CONFIG, 1: shunt, 2: bus, 3: 0, 4: 0, 5: 0}
        self.writes: list[tuple[int, int, list[int]]] = []
        self.fail = False
        self.closed = False

    def reset(self) -> None:
        """A power-on reset (a brown-out): every register back to its power-on value."""
        self.registers.update({0: POR_CONFIG, 3: 0, 4: 0, 5: 0})

    def set_measured(self, *, shunt: int | None = None, bus: int | None = None) -> None:
        if shunt is not None:
            self.registers[1] = shunt
        if bus is not None:
            self.registers[2] = bus

    def _check(self, address: int) -> None:
        if self.fail or address != self.address:
            raise OSError(121, "Remote I/O error")

    def _derived(self) -> None:
        current = (_signed(self.registers[1]) * self.registers[5]) // 4096 if self.registers[5] else 0
        self.registers[4] = current & 0xFFFF
        self.registers[3] = (abs(current) * (self.registers[2] >> 3)) // 5000 & 0xFFFF

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        self._check(i2c_addr)
        assert length == 2, "INA219 registers are two bytes"
        self._derived()
        value = self.registers[register]
        return [value >> 8, value & 0xFF]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        self._check(i2c_addr)
        assert register in (0, 5), f"register {register} is read-only"
        self.writes.append((i2c_addr, register, list(data)))
        value = (data[0] << 8) | data[1]
        if register == 0 and value & 0x8000:  # RST: a reset, the bit clears itself
            self.reset()
            return
        self.registers[register] = value & (0xFFFE if register == 5 else 0xFFFF)

    def close(self) -> None:
        self.closed = True
