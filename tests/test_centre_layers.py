"""The centre talks to hubs only through the wire contract and serves with the shared web
plumbing: loading every module of it loads nothing else of hubd (not the hub's core, links,
sensors or page)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

from support import REPO

import hubd.centre


def test_the_centre_loads_nothing_of_the_hub() -> None:
    modules = sorted(f"hubd.centre.{m.name}" for m in pkgutil.walk_packages(hubd.centre.__path__)
                     if not m.name.startswith("migrations"))
    code = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('hubd'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         check=True).stdout
    loaded = set(json.loads(out))
    allowed = ("hubd.centre", "hubd.contract", "hubd.web")
    assert "hubd.centre.api" in loaded and "hubd.centre.cli" in loaded
    assert {m for m in loaded if m != "hubd" and not m.startswith(allowed)} == set()
    assert not any(m.startswith("hubd.web.page") for m in loaded)
