"""The centre's control socket: one JSON request per line over a UNIX socket, for the
command line on the same machine (``hubd centre ack``, ``resolve``, ``command``, ``status``).

The socket lives in the centre's runtime directory, which is made private (0700) and must be
owned by the centre's user: another local user can neither plant a socket there nor talk to
it. Who asked is the peer's user name (SO_PEERCRED), recorded as ``cli:<user>``.
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
from typing import TYPE_CHECKING, Any

from hubd.centre.operations import Operations

if TYPE_CHECKING:
    from hubd.centre.service import Centre

log = logging.getLogger("hubd.centre.control")

MAX_REQUEST = 64 * 1024


class ControlError(Exception):
    """The running centre could not be reached; the message says why."""


def private_dir(path: Path) -> Path:
    """``path`` made 0700 if new; ControlError unless it is ours and closed to others."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise ControlError(f"{path} belongs to uid {st.st_uid}, not to this user: refusing to use it")
    if st.st_mode & 0o022:
        raise ControlError(f"{path} is writable by others (mode {st.st_mode & 0o777:o}): chmod 700 {path}")
    return path


def _peer_user(sock: socket.socket) -> str:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "unknown"


class _Handler(socketserver.StreamRequestHandler):
    timeout = 90

    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        try:
            line = self.rfile.readline(MAX_REQUEST + 1)
        except OSError:
            return
        if not line:
            return
        reply: dict[str, Any]
        if len(line) > MAX_REQUEST:
            reply = {"ok": False, "error": {"code": "too_large", "message": "request over 64 KiB"}}
        else:
            try:
                request = json.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                reply = {"ok": False, "error": {"code": "bad_json", "message": f"not JSON: {e}"}}
            else:
                reply = server.ops.execute(request, f"cli:{_peer_user(self.connection)}")
        try:
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, centre: Centre):
        self.ops = Operations(centre)
        self.path = Path(path)
        private_dir(self.path.parent)
        if self.path.exists() or self.path.is_socket():
            self.path.unlink()  # left by a killed centre
        old = os.umask(0o177)
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(old)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="centre-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            self.path.unlink()
        except OSError:
            pass


def request(path: Path, payload: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
    """One request to the running centre; ControlError when it cannot be reached."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no centre is running here (no socket at {path}); start it with "
                               "'hubd centre run -c centre.toml'") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as the centre's user") from None
        s.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"the centre did not answer within {timeout:.0f} s") from None
    finally:
        s.close()
    if not data:
        raise ControlError("the centre closed the connection without answering")
    return json.loads(data)
