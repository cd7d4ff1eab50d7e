"""The centre's accounts: operators and supervisors act on alerts, supervisors also enrol
hubs, viewers look. There is no default account and no default password: the first is
made with ``hubd centre user add NAME --role supervisor``.

Passwords are stored as werkzeug's salted hashes. Each account has a session epoch that
moves on every password change and on removal, which ends its web sessions at once
(``hubd.web.auth`` reads it on every request).
"""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from hubd.centre import tables
from hubd.centre.store import Store
from hubd.web.auth import Account

ROLES = ("operator", "supervisor", "viewer")
#: Roles that may act on alerts and command hubs.
CHANGE_ROLES = frozenset({"operator", "supervisor"})
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MIN_PASSWORD = 10
#: Checked against when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password")


class AccountError(Exception):
    """Refused; the message says why."""


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")


class Accounts:
    """``hubd.web.auth.Accounts`` over the centre's store, and their management."""

    def __init__(self, store: Store):
        self.store = store

    def add(self, name: str, password: str, role: str) -> None:
        if not NAME_RE.fullmatch(name):
            raise AccountError("user name: 1-32 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        _check_password(password)
        with self.store.write() as conn:
            if conn.execute(sa.select(tables.users.c.name).where(tables.users.c.name == name)).first():
                raise AccountError(f"user {name!r} exists; use 'hubd centre user passwd {name}'")
            conn.execute(tables.users.insert().values(name=name, role=role, created_at=time.time(),
                                                      password_hash=generate_password_hash(password)))

    def passwd(self, name: str, password: str) -> None:
        _check_password(password)
        u = tables.users.c
        with self.store.write() as conn:
            if conn.execute(tables.users.update().where(u.name == name).values(
                    password_hash=generate_password_hash(password), epoch=u.epoch + 1)).rowcount == 0:
                raise AccountError(f"no user {name!r}")

    def remove(self, name: str) -> None:
        with self.store.write() as conn:
            if conn.execute(tables.users.delete().where(tables.users.c.name == name)).rowcount == 0:
                raise AccountError(f"no user {name!r}")

    def list(self) -> list[dict[str, Any]]:
        u = tables.users.c
        with self.store.read() as conn:
            rows = conn.execute(sa.select(u.name, u.role, u.created_at).order_by(u.name))
            return [dict(r._mapping) for r in rows]

    # -- hubd.web.auth.Accounts ---------------------------------------------------------------

    def verify(self, name: str, password: str) -> str | None:
        u = tables.users.c
        with self.store.read() as conn:
            found = conn.execute(sa.select(u.role, u.password_hash).where(u.name == name)).first()
        if found is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        return found.role if check_password_hash(found.password_hash, password) else None

    def account(self, name: str) -> Account | None:
        u = tables.users.c
        with self.store.read() as conn:
            found = conn.execute(sa.select(u.role, u.epoch).where(u.name == name)).first()
        return Account(role=found.role, epoch=str(found.epoch)) if found is not None else None

    def end_sessions(self, name: str) -> None:
        u = tables.users.c
        with self.store.write() as conn:
            conn.execute(tables.users.update().where(u.name == name).values(epoch=u.epoch + 1))
