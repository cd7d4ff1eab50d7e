"""`hubd demo`: the page opens, a button can be pressed from a plain CLI in another terminal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from support import REPO, wait_for


def test_demo_runs_and_plain_cli_reaches_it(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    env.pop("HUBD_CONFIG", None)
    env.pop("HUBD_SOCKET", None)
    (tmp_path / "xdg").mkdir()
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "hubd.cli", "demo",
                                 "--state-dir", str(tmp_path / "st"),
                                 "--port", "0"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        text = wait_for(lambda: "Page:" in log.read_text() and log.read_text(), 30, message="demo banner")
        url, user, password = re.search(r"Page:\s+(\S+)\s+log in as (\S+) / (\S+)", text).groups()
        assert user == "manager" and len(password) >= 12
        assert oct((tmp_path / "st" / "demo-password").stat().st_mode & 0o777) == "0o600"

        def cli(*args: str) -> subprocess.CompletedProcess:
            # no -c, no env: the demo's socket is found by default
            return subprocess.run([sys.executable, "-m", "hubd.cli", *args], capture_output=True, text=True,
                                  env=env, cwd=REPO, timeout=60)

        if Path("/etc/hubd/hub.toml").exists():  # a real install on this machine would take precedence
            env["HUBD_SOCKET"] = str(tmp_path / "xdg" / "hubd-demo" / "control.sock")
        assert cli("press", "gate").returncode == 0
        out = cli("alerts")
        assert "demo-hub:1" in out.stdout and "Market gate" in out.stdout
        assert urllib.request.urlopen(url, timeout=10).status == 200
        assert cli("ack", "demo-hub:1").returncode == 0
        assert "acknowledged" in cli("alerts").stdout
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(10) == 0
