"""``hubd demo --hubs N``: several daemons on a simulated mesh that see each other's alerts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from support import HUBD, REPO, wait_for


def test_demo_with_three_hubs(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt"), "PYTHONUNBUFFERED": "1"}
    env.pop("HUBD_CONFIG", None)
    (tmp_path / "rt").mkdir()
    state = tmp_path / "state"
    out = open(tmp_path / "demo.out", "wb")  # noqa: SIM115
    demo = subprocess.Popen([*HUBD, "demo", "--hubs", "3", "--port", "0", "--state-dir", str(state)],
                            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def cli(*args: str) -> dict:
        done = subprocess.run([*HUBD, *args, "--json"], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        return json.loads(done.stdout) if done.stdout.strip() else {"ok": False}

    hub3 = ("-c", str(state / "hub-3" / "demo.toml"))
    try:
        wait_for(lambda: "Press a button" in (tmp_path / "demo.out").read_text(), 60, interval=0.3,
                 message="the demo's banner")
        assert cli("status")["result"]["hub"] == "hub-1"  # plain CLI commands reach hub 1
        # In the chain hub-1 - hub-2 - hub-3, hub-3 hears hub-2 directly (hub-1 only through it).
        wait_for(lambda: any(n["hub"] == "hub-2" and n["hops"] == 0
                             for n in cli("status", *hub3)["result"]["links"]["mesh"]["neighbours"]),
                 60, interval=0.5, message="hub-3 hears its neighbour hub-2")
        assert cli("press", "gate")["ok"]
        alerts = wait_for(lambda: [a for a in cli("alerts", *hub3)["result"] if a["id"] == "hub-1:1"], 60,
                          interval=0.5, message="hub-1's alert at hub-3, two hops away")
        assert alerts[0]["remote"]
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        finally:
            if demo.poll() is None:
                demo.kill()
            out.close()
    assert demo.returncode == 0
