"""The control socket: newline-delimited JSON commands over a UNIX socket.

The CLI on the same machine talks to the running daemon through it.  The socket is
mode 0660 in the runtime directory; the actor of each command is the local user
name of the peer (SO_PEERCRED), so the audit log says who typed it.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any

from hubd.commands import CommandProcessor

log = logging.getLogger("hubd.control")

MAX_REQUEST = 64 * 1024


def _peer_user(sock: socket.socket) -> str:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "unknown"


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        actor = f"cli:{_peer_user(self.connection)}"
        try:
            line = self.rfile.readline(MAX_REQUEST + 1)
        except OSError:
            return
        if not line:
            return
        if len(line) > MAX_REQUEST:
            reply: dict[str, Any] = {"ok": False, "error": {"code": "too_large",
                                                            "message": "request over 64 KiB"}}
        else:
            try:
                request = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                reply = {"ok": False, "error": {"code": "bad_json", "message": f"not JSON: {e}"}}
            else:
                reply = server.processor.execute(request, actor)
        try:
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, processor: CommandProcessor):
        self.processor = processor
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_socket():
            self.path.unlink()  # left by a killed daemon; the pid lock guards against two daemons
        old = os.umask(0o117)
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="hubd-control", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            self.path.unlink()
        except OSError:
            pass


class ControlError(Exception):
    """The daemon could not be reached."""


def send_command(path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one command to the daemon and return its reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no hubd is running here (no socket at {path})") from None
        except ConnectionRefusedError:
            raise ControlError(f"hubd is not answering at {path} (stale socket?)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as root or join the hubd group") from None
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"hubd did not answer within {timeout:.0f} s") from None
    finally:
        s.close()
    if not data:
        raise ControlError("hubd closed the connection without answering")
    return json.loads(data)
