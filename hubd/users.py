"""Accounts for the page: managers change state, viewers only look.

Passwords are stored as werkzeug's salted hashes; there is no default account and
no default password.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Literal

from werkzeug.security import check_password_hash, generate_password_hash

from hubd.store import Store

Role = Literal["manager", "viewer"]
ROLES = ("manager", "viewer")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MIN_PASSWORD = 10


class UserError(Exception):
    pass


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")


class Users:
    def __init__(self, store: Store):
        self.store = store

    def add(self, name: str, password: str, role: Role = "manager") -> None:
        if not NAME_RE.match(name):
            raise UserError("user name: 1-32 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        _check_password(password)
        if self.role(name) is not None:
            raise UserError(f"user {name!r} exists; use 'hubd user passwd {name}'")
        with self.store.transaction() as conn:
            conn.execute("INSERT INTO users(name, role, password_hash, created_at) VALUES (?,?,?,?)",
                         (name, role, generate_password_hash(password), time.time()))

    def passwd(self, name: str, password: str) -> None:
        _check_password(password)
        with self.store.transaction() as conn:
            if conn.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                            (generate_password_hash(password), name)).rowcount == 0:
                raise UserError(f"no user {name!r}")

    def remove(self, name: str) -> None:
        with self.store.transaction() as conn:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UserError(f"no user {name!r}")

    def role(self, name: str) -> str | None:
        rows = self.store.query("SELECT role FROM users WHERE name = ?", (name,))
        return rows[0]["role"] if rows else None

    def _credentials(self, name: str) -> dict[str, str] | None:
        rows = self.store.query("SELECT role, password_hash FROM users WHERE name = ?", (name,))
        return rows[0] if rows else None

    def verify(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None."""
        found = self._credentials(name)
        if found is None:
            check_password_hash(generate_password_hash("x"), password)  # same time either way
            return None
        return found["role"] if check_password_hash(found["password_hash"], password) else None

    def session_epoch(self, name: str) -> tuple[str, str] | None:
        """(role, session epoch) of a user, or None if there is none.  The epoch is a
        fingerprint of the password hash: a new password ends the user's page sessions."""
        found = self._credentials(name)
        if found is None:
            return None
        return found["role"], hashlib.sha256(found["password_hash"].encode()).hexdigest()[:16]

    def list(self) -> list[dict[str, object]]:
        return self.store.query("SELECT name, role, created_at FROM users ORDER BY name")
