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


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """End with each failed test's name and why, untruncated, whatever the terminal's width (CI
    logs are 80 columns: pytest's own short summary then cuts the reason off)."""
    yield
    failed = terminalreporter.stats.get("failed", []) + terminalreporter.stats.get("error", [])
    if not failed:
        return
    terminalreporter.section("what failed, and why", sep="=", red=True, bold=True)
    for report in failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        why = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1:]
        lines = [line.strip() for line in str(why).splitlines() if line.strip()]
        where = f" ({crash.path}:{crash.lineno})" if crash is not None else ""
        stage = "" if report.when == "call" else f" [in {report.when}]"
        terminalreporter.line(f"{report.nodeid}{stage}{where}")
        for line in lines[:6]:
            terminalreporter.line(f"    {line[:300]}")
