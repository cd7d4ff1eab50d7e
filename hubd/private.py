"""Directories and files only their owner may use: the state directory, the store, secrets,
and the runtime directory of the control socket.

Under systemd the unit's ``UMask=0077`` and ``StateDirectoryMode=0700`` already make them so;
``hubd demo``, a hand-started ``hubd run`` and the CLI make them so themselves, whatever the
umask. A directory someone else owns is never used: in a shared place such as ``/tmp`` another
local user could have made it first, to plant a fake control socket or read what is written
there.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path


class NotPrivate(Exception):
    """A directory or file that others own or may change; the message says how to fix it."""


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def private_dir(path: Path, *, tighten: bool = False, trusted_owners: frozenset[int] = frozenset()) -> Path:
    """``path`` as a directory of this user's: the missing parts are created 0700; an existing
    one must belong to this user (or to one of ``trusted_owners``) and be writable by nobody
    else, or NotPrivate says why. With ``tighten``, one of this user's is made 0700 (the state
    directory; not the runtime directory, which systemd makes 0750 so that the hubd group's
    technicians reach the control socket)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    parent = os.lstat(probe if missing else path.parent)
    if parent.st_uid not in {os.geteuid(), 0, *trusted_owners}:
        # /tmp/hubd-<uid> made by someone else: they could swap what is made inside it.
        raise NotPrivate(f"{probe if missing else path.parent} belongs to {owner_name(parent.st_uid)}: "
                         f"another user made it. Remove it (as root), or set [hub] runtime_dir / state_dir "
                         "to a directory of yours")
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
    st = check_dir(path, trusted_owners=trusted_owners)
    if tighten and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def check_dir(path: Path, *, trusted_owners: frozenset[int] = frozenset()) -> os.stat_result:
    """The ``lstat`` of a directory this user may trust: a real directory (not a link), owned by
    this user or one of ``trusted_owners``, writable by no one else. NotPrivate otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotPrivate(f"{path} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotPrivate(f"{path} is not a directory (a symbolic link, or a file, in its place): "
                         "remove it, or set [hub] runtime_dir / state_dir elsewhere")
    me = os.geteuid()
    if st.st_uid != me and st.st_uid not in trusted_owners:
        raise NotPrivate(f"{path} belongs to {owner_name(st.st_uid)}, not to {owner_name(me)}: another "
                         "user made it, and could have planted a fake control socket or read what is put "
                         f"there. Remove it (as root: rm -r {path}), or set [hub] runtime_dir to a directory "
                         "of yours")
    if st.st_mode & 0o022:
        raise NotPrivate(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): run "
                         f"chmod 700 {path}")
    return st


def private_file(path: Path, *, create: bool = True) -> None:
    """Make sure ``path`` (created empty if missing, with ``create``) is readable and writable by
    its owner only."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:
        return
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
