"""Shared set-up of the atheris targets: run from the repository as
``python tests/fuzz_targets/<target>.py [libFuzzer options]`` (``pip install atheris`` first)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))


def run(test_one_input, setup=None) -> None:  # noqa: ANN001
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris")
    if setup is not None:
        setup()
    atheris.instrument_all()  # coverage feedback from the hubd code (and the libraries) loaded by now
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
