"""``hubd`` with a simulated INA219 on its I2C bus, for tests that run the real daemon.

    python tests/power_hub.py BATTERY.json run -c hub.toml

The chip is tests/fake_i2c.py's, put where ``smbus2.SMBus`` would be opened; before each
transfer it takes its measured registers from BATTERY.json, which the test rewrites to move
the battery: ``{"address": 64, "shunt": <raw shunt voltage register>, "bus": <raw bus voltage
register>}`` (optionally ``"fail": true`` for a chip that does not answer).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_i2c import FakeINA219Bus  # noqa: E402

import hubd.sensors.power  # noqa: E402
from hubd.cli import main  # noqa: E402


def battery_state(volts: float, amps: float, shunt_ohms: float = 0.1) -> dict[str, int]:
    """The raw registers an INA219 reads for this battery (bus: bits 15-3 at 4 mV; shunt: 10 uV
    a bit, two's complement), for the test to write."""
    shunt = round(amps * shunt_ohms / 10e-6)
    return {"bus": round(volts / 0.004) << 3, "shunt": shunt & 0xFFFF}


class FileDrivenBus(FakeINA219Bus):
    def __init__(self, state: Path):
        self.state = state
        super().__init__(json.loads(state.read_text()).get("address", 0x40))

    def _follow(self) -> None:
        state = json.loads(self.state.read_text())
        self.fail = bool(state.get("fail"))
        self.set_measured(shunt=state["shunt"], bus=state["bus"])

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        self._follow()
        return super().read_i2c_block_data(i2c_addr, register, length)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        self._follow()
        super().write_i2c_block_data(i2c_addr, register, data)


if __name__ == "__main__":
    state_file = Path(sys.argv[1])
    hubd.sensors.power.open_i2c_bus = lambda number: FileDrivenBus(state_file)
    sys.exit(main(sys.argv[2:]))
