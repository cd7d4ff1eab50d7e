"""`hubd demo`: the page opens, a button can be pressed from a plain CLI in another terminal."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import HUBD, REPO, hub_config, wait_for


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no hub installed: the demo's runtime directory under tmp."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    env.pop("HUBD_CONFIG", None)
    env.pop("HUBD_SOCKET", None)
    (tmp_path / "xdg").mkdir(exist_ok=True)
    return env


@contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_demo_runs_and_plain_cli_reaches_it(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
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

        def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            # no -c, no env: the demo's socket is found by default
            return subprocess.run([sys.executable, "-m", "hubd.cli", *args], capture_output=True, text=True,
                                  env=env, cwd=REPO, timeout=60, input=stdin)

        if Path("/etc/hubd/hub.toml").exists():  # a real install on this machine would take precedence
            env["HUBD_SOCKET"] = str(tmp_path / "xdg" / "hubd-demo" / "control.sock")
        assert cli("press", "gate").returncode == 0
        out = cli("alerts")
        assert "demo-hub:1" in out.stdout and "Market gate" in out.stdout
        assert urllib.request.urlopen(url, timeout=10).status == 200
        assert cli("ack", "demo-hub:1").returncode == 0
        assert "acknowledged" in cli("alerts").stdout

        # Accounts too are the running demo's (as `hubd user --help` says): a viewer scrapes /metrics.
        if not Path("/etc/hubd/hub.toml").exists():
            added = cli("user", "add", "vic", "--role", "viewer", "--password-stdin",
                        stdin="vic-password-1\n")
            assert added.returncode == 0, added.stderr
            listed = cli("user", "list")
            assert listed.returncode == 0, listed.stderr
            assert re.search(r"^vic\s+viewer$", listed.stdout, re.M) and "manager" in listed.stdout
            auth = base64.b64encode(b"vic:vic-password-1").decode()
            metrics = urllib.request.urlopen(urllib.request.Request(
                url + "metrics", headers={"Authorization": f"Basic {auth}"}), timeout=10)
            assert metrics.status == 200 and b"hubd_" in metrics.read()
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(10) == 0


def test_demo_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with taken_port() as port:
        r = subprocess.run([*HUBD, "demo", "--state-dir", str(tmp_path / "st"), "--port", str(port)],
                           capture_output=True, text=True, env=demo_env(tmp_path), cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--port 0" in line, line


def test_demo_without_port_takes_a_free_one_when_the_default_is_taken(tmp_path: Path) -> None:
    with taken_port() as port:
        # The default port made one that is taken here (8080 may be free or not on this machine).
        code = ("import sys; import hubd.demo, hubd.cli; hubd.demo.DEFAULT_PORT = int(sys.argv[1]); "
                "sys.exit(hubd.cli.main(sys.argv[2:]))")
        log = tmp_path / "demo.log"
        with open(log, "w") as out:
            demo = subprocess.Popen([sys.executable, "-c", code, str(port), "demo", "--state-dir",
                                     str(tmp_path / "st")], stdout=out, stderr=subprocess.STDOUT,
                                    env=demo_env(tmp_path), cwd=REPO)
        try:
            text = wait_for(lambda: "Page:" in log.read_text() and log.read_text(), 30,
                            message=lambda: f"demo banner in {log.read_text()}")
            assert f"port {port} on 127.0.0.1 is already in use; taking a free port instead" in text
            url = re.search(r"Page:\s+(\S+)", text).group(1)
            assert f":{port}/" not in url
            assert urllib.request.urlopen(url, timeout=10).status == 200
        finally:
            demo.send_signal(signal.SIGINT)
            assert demo.wait(10) == 0


def test_a_daemon_whose_page_port_is_taken_says_so_in_one_line(tmp_path: Path) -> None:
    # Between the demo's look at the port and the daemon's bind another program may take it.
    with taken_port() as port:
        r = subprocess.run([*HUBD, "run", "-c", str(hub_config(tmp_path, web_port=port))],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    assert f"cannot start: the page cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
