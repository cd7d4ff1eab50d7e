"""Chaos scenarios for a whole ward: N daemons, a broker, the simulated mesh, the centre.

Each asserts zero lost alerts (every raised alert, with its final state, at the centre and
at every neighbour that should hear it), no false alerts, and bounded memory.  CI runs
them sized by default (5 hubs, 1,000 presses, a 60 s broker outage); run them bigger by
hand, e.g. ``HUBD_CHAOS_HUBS=20 HUBD_CHAOS_PRESSES=10000 .venv/bin/pytest tests/system``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from .harness import Ward, Workload, check_ward, env_int

HUBS = env_int("HUBD_CHAOS_HUBS", 5)
PRESSES = env_int("HUBD_CHAOS_PRESSES", 1000)
OUTAGE = env_int("HUBD_CHAOS_OUTAGE", 60)


@pytest.fixture
def wards() -> Iterator[list[Ward]]:
    made: list[Ward] = []
    yield made
    for w in made:
        w.stop()


def start(wards: list[Ward], ward: Ward) -> Ward:
    wards.append(ward)
    return ward.start()


@pytest.mark.timeout(900)
def test_a_thousand_presses_at_random_times(tmp_path: Path, wards: list[Ward]) -> None:
    ward = start(wards, Ward(tmp_path, HUBS))
    work = Workload(ward, PRESSES, mean_gap=0.05).start()
    work.join(timeout=600)
    assert sum(len(v) for v in work.raised.values()) == PRESSES
    check_ward(ward, work)
    ward.assert_memory_bounded()
