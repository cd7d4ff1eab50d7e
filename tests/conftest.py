"""Fixtures shared by every suite (see tests/support.py for the helpers)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sensors_rig import Rig  # noqa: E402
from support import HubProcess, Mosquitto  # noqa: E402

# Mock pins everywhere in the tests: no test may touch real GPIO.
os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, killed after the test."""
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture
def hub_processes() -> Iterator[list[HubProcess]]:
    """Register HubProcess objects here; they are stopped after the test."""
    procs: list[HubProcess] = []
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def make(tmp_path: Path) -> Iterator:
    """Build in-process sensor rigs (store, hub, mock pins, manual clock); closed after the test."""
    rigs: list[Rig] = []

    def build(**kw) -> Rig:
        rig = Rig(tmp_path / f"rig{len(rigs)}", **kw)
        rigs.append(rig)
        return rig

    yield build
    for r in rigs:
        r.close()
