"""The control socket: newline-delimited JSON commands over a UNIX socket.

The CLI on the same machine talks to the running daemon through it.  The socket is
mode 0660 in the runtime directory (created 0700 when hubd makes it, refused when someone
else owns it); the actor of each command is the local user name of the peer
(SO_PEERCRED), so the audit log says who typed it, and the CLI in turn talks only to a
daemon running as the directory's owner.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any

from hubd.commands import CommandProcessor
from hubd.private import NotPrivate, check_dir, owner_name, private_dir

log = logging.getLogger("hubd.control")

MAX_REQUEST = 64 * 1024


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[1]


def _peer_user(sock: socket.socket) -> str:
    uid = _peer_uid(sock)
    return "unknown" if uid is None else owner_name(uid)


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
        # Created 0700 if missing; refused if someone else owns it (a fake socket planted in
        # /tmp/hubd-<uid>/ would answer the CLI) or may write in it.
        private_dir(self.path.parent)
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


def hub_owners(state_dir: Path) -> frozenset[int]:
    """Whose daemon a CLI may talk to besides its own user's: root and the owner of the hub's
    state directory (the hubd user under systemd)."""
    try:
        return frozenset({0, Path(state_dir).stat().st_uid})
    except OSError:
        return frozenset({0})


class ControlError(Exception):
    """The daemon could not be reached."""


def send_command(path: Path, request: dict[str, Any], timeout: float = 30.0, *,
                 trusted_owners: frozenset[int] = frozenset({0})) -> dict[str, Any]:
    """Send one command to the daemon and return its reply.

    Only to a daemon this user may trust: the socket's directory must belong to this user or
    to one of ``trusted_owners`` (root; the hub's own user, owner of its state directory) and be
    writable by no one else, and the process answering must run as that directory's owner or
    as root. Otherwise another local user could answer the CLI with a socket of their own."""
    path = Path(path)
    try:
        directory = check_dir(path.parent, trusted_owners=trusted_owners)
    except NotPrivate as e:
        if "does not exist" in str(e):
            raise ControlError(f"no hubd is running here (no socket at {path})") from None
        raise ControlError(f"refusing the control socket {path}: {e}") from None
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
        peer = _peer_uid(s)
        if peer is not None and peer not in (directory.st_uid, 0):
            raise ControlError(f"refusing the control socket {path}: it is answered by {owner_name(peer)}, "
                               f"not by {owner_name(directory.st_uid)}, whose directory it is in")
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
