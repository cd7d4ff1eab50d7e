"""The suite's own report: a failure ends the run with the test's name and why, in full."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import REPO

FAILING = '''
import pytest


def test_a_name_so_long_that_an_eighty_column_summary_has_no_room_left_for_the_reason():
    heartbeats = 1079
    assert heartbeats >= 1080, "too few heartbeats"


@pytest.fixture
def broken():
    raise RuntimeError("the fixture broke")


def test_with_a_broken_fixture(broken):
    pass
'''


def test_the_run_ends_with_each_failure_and_its_reason(tmp_path: Path) -> None:
    (tmp_path / "test_failing.py").write_text(FAILING)
    # tests/conftest.py as a plugin, as every run of the suite has it; CI's log is 80 columns.
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO / "tests")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_failing.py")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    tail = r.stdout[r.stdout.rindex("short test summary info"):]
    long_name = ("test_failing.py::"
                 "test_a_name_so_long_that_an_eighty_column_summary_has_no_room_left_for_the_reason")
    assert long_name in tail, tail
    assert "AssertionError: too few heartbeats" in tail and "assert 1079 >= 1080" in tail, tail
    assert "test_failing.py::test_with_a_broken_fixture [in setup]" in tail, tail
    assert "RuntimeError: the fixture broke" in tail, tail
