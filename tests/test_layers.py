"""The layering contracts in pyproject.toml cover every module they are meant to.

tests/check-layers runs import-linter on those contracts; this test makes sure a new module of
the core cannot slip past them by not being listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The only modules of hubd/ that may know every part: the daemon's wiring and the command line.
WIRING = {"hubd.daemon", "hubd.cli", "hubd.demo", "hubd.doctor"}


def _contracts() -> dict[str, dict]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c for c in data["tool"]["importlinter"]["contracts"]}


def test_every_core_module_is_held_to_the_core_contract() -> None:
    listed = set(_contracts()["core"]["source_modules"])
    modules = {f"hubd.{p.stem}" for p in (ROOT / "hubd").glob("*.py") if p.stem != "__init__"}
    missing = sorted(modules - listed - WIRING)
    assert not missing, f"add these core modules to the 'core' contract in pyproject.toml: {missing}"
    assert not listed & WIRING


def test_the_shared_packages_may_import_nothing_of_the_hub() -> None:
    core = set(_contracts()["core"]["source_modules"])
    for shared in ("contract", "web", "centre"):
        forbidden = set(_contracts()[shared]["forbidden_modules"])
        assert core <= forbidden, f"{shared}: forbid {sorted(core - forbidden)}"
        assert {"hubd.sensors", "hubd.radio"} <= forbidden


def test_every_shared_web_module_is_held_to_the_web_contract() -> None:
    listed = set(_contracts()["web"]["source_modules"])
    modules = {f"hubd.web.{p.stem}" for p in (ROOT / "web").glob("*.py") if p.stem != "__init__"}
    assert modules == listed, "list every module of web/ (not web/page/) in the 'web' contract"
