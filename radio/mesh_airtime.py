"""LoRa airtime of a Meshtastic packet, and the duty-cycle budget that spends it.

The formula is Semtech's (AN1200.13) for an explicit header and CRC.  A Meshtastic
packet on air is a 16-byte header plus the encrypted ``Data`` protobuf: the payload
with its field tag and length (2 bytes) and the port number (1 byte of tag, 1-2 of
varint).  Presets are the firmware's.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Modem:
    name: str
    sf: int
    bw_hz: int
    cr: int  # coding rate 4/(4+cr)
    preamble: int = 16


PRESETS = {
    "LONG_FAST": Modem("LongFast", 11, 250_000, 1),
    "LONG_SLOW": Modem("LongSlow", 12, 125_000, 4),
    "MEDIUM_FAST": Modem("MediumFast", 9, 250_000, 1),
    "SHORT_FAST": Modem("ShortFast", 7, 250_000, 1),
}
LONG_FAST = PRESETS["LONG_FAST"]
MESH_HEADER = 16


def data_overhead(port: int) -> int:
    """Bytes the Data protobuf adds around a payload on ``port``."""
    return 2 + 1 + (1 if port < 128 else 2)


def lora_airtime(phy_bytes: int, modem: Modem = LONG_FAST) -> float:
    """Seconds on air for ``phy_bytes`` bytes of LoRa payload."""
    tsym = (1 << modem.sf) / modem.bw_hz
    de = 1 if tsym > 0.016 else 0  # low data rate optimisation
    num = 8 * phy_bytes - 4 * modem.sf + 28 + 16
    n_payload = 8 + max(math.ceil(num / (4 * (modem.sf - 2 * de))) * (modem.cr + 4), 0)
    return (modem.preamble + 4.25 + n_payload) * tsym


def packet_airtime(payload_len: int, port: int = 287, modem: Modem = LONG_FAST) -> float:
    """Seconds on air for one Meshtastic packet carrying ``payload_len`` bytes on ``port``."""
    return lora_airtime(MESH_HEADER + data_overhead(port) + payload_len, modem)


class AirtimeBudget:
    """This hub's own transmissions over a sliding window, against its duty cycle.

    Traffic classes take turns by how full the window is: beacons only below half the
    budget, retries and receipts below 90 %, an alert's first transmission up to the
    whole of it.  So routine traffic can never crowd out an alert, and nothing takes
    the hub past its duty cycle."""

    LIMITS = {"beacon": 0.5, "retry": 0.9, "receipt": 0.9, "text": 0.9, "alert": 1.0}

    def __init__(self, duty_cycle: float, window: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.duty_cycle = duty_cycle
        self.window = window
        self.clock = clock
        self._spent: deque[tuple[float, float]] = deque()
        self._total = 0.0

    @property
    def budget(self) -> float:
        return self.duty_cycle * self.window

    def used(self) -> float:
        now = self.clock()
        while self._spent and self._spent[0][0] < now - self.window:
            self._total -= self._spent.popleft()[1]
        return max(self._total, 0.0)

    def allows(self, cls: str, airtime: float) -> bool:
        return self.used() + airtime <= self.budget * self.LIMITS[cls]

    def spend(self, airtime: float) -> None:
        self._spent.append((self.clock(), airtime))
        self._total += airtime

    def fraction(self) -> float:
        return self.used() / self.budget if self.budget else 1.0
