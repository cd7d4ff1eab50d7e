"""``hubd demo --hubs N``: several daemons on a simulated mesh that see each other's alerts."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from support import HUBD, REPO, wait_for


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "rt"), "PYTHONUNBUFFERED": "1"}
    env.pop("HUBD_CONFIG", None)
    (tmp_path / "rt").mkdir(exist_ok=True)
    return env


def run_demo(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """A demo expected to end by itself; one that does not is killed with its hubs."""
    demo = subprocess.Popen([*HUBD, "demo", *args], env=demo_env(tmp_path), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.communicate()
        raise AssertionError(f"the demo still ran after {timeout} s") from None
    return subprocess.CompletedProcess(demo.args, demo.returncode, out, err)


def test_demo_with_three_hubs(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    state = tmp_path / "state"
    out = open(tmp_path / "demo.out", "wb")  # noqa: SIM115
    demo = subprocess.Popen([*HUBD, "demo", "--hubs", "3", "--port", "0", "--state-dir", str(state)],
                            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

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

        # Each simulated radio's port is printed: the one its hub's meshtastic TCPInterface uses (and
        # `meshtastic --host 127.0.0.1:PORT --info` too; not run here: a radio serves one client,
        # and the hub, put off, would take it back in the middle of it).
        banner = (tmp_path / "demo.out").read_text()
        radios = [int(p) for p in re.findall(r"radio: meshtastic --host 127\.0\.0\.1:(\d+) --info", banner)]
        assert radios == [int(re.search(r'connection = "tcp:127\.0\.0\.1:(\d+)"',
                                        (state / f"hub-{i}" / "demo.toml").read_text()).group(1))
                          for i in (1, 2, 3)], banner
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)  # the demo and its hubs
            out.close()
    assert demo.returncode == 0


def test_a_hub_that_cannot_start_stops_the_demo_with_its_reason(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "hub-2").mkdir(parents=True)
    with open(state / "hub-2" / "hubd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another hubd" holds hub-2's state directory
        r = run_demo(tmp_path, "--hubs", "3", "--port", "0", "--state-dir", str(state), timeout=120)
    assert r.returncode == 1
    assert "hub-2 did not start (exited (1))" in r.stderr, r.stderr
    assert f"another hubd is running on {state / 'hub-2'}" in r.stderr, r.stderr
    assert str(state / "hub-2" / "hubd.log") in r.stderr
    assert "hubd press gate" not in r.stdout, "no advice to use a hub that is not there"
    assert "Traceback" not in r.stderr


def test_mesh_demo_on_a_taken_port_says_which_hub_and_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = run_demo(tmp_path, "--hubs", "2", "--port", str(taken), "--state-dir", str(tmp_path / "state"),
                     timeout=60)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert f"port {taken} on 127.0.0.1 (hub 1's page) is already in use" in line and "--port 0" in line, line
