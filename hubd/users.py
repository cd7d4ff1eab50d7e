"""Accounts for the page: managers change state, viewers only look.

Passwords are stored as werkzeug's salted hashes; there is no default account and
no default password.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

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
        if not self.store.add_user(name, role, generate_password_hash(password)):
            raise UserError(f"user {name!r} exists; use 'hubd user passwd {name}'")

    def passwd(self, name: str, password: str) -> None:
        _check_password(password)
        if not self.store.set_password_hash(name, generate_password_hash(password)):
            raise UserError(f"no user {name!r}")

    def remove(self, name: str) -> None:
        if not self.store.remove_user(name):
            raise UserError(f"no user {name!r}")

    def role(self, name: str) -> str | None:
        user = self.store.get_user(name)
        return user["role"] if user else None

    def verify(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None."""
        user = self.store.get_user(name)
        if user is None:
            check_password_hash(generate_password_hash("x"), password)  # same time either way
            return None
        return user["role"] if check_password_hash(user["password_hash"], password) else None

    def session_epoch(self, name: str) -> tuple[str, str] | None:
        """(role, session epoch) of a user, or None if there is none.  The epoch is a
        fingerprint of the password hash and a counter in the store: a new password, or
        ``end_sessions`` (a logout), ends every page session of the user."""
        user = self.store.get_user(name)
        if user is None:
            return None
        fingerprint = hashlib.sha256(user["password_hash"].encode()).hexdigest()[:16]
        return user["role"], f"{fingerprint}.{user['session_epoch']}"

    def end_sessions(self, name: str) -> None:
        """End every page session of a user (on the server: their cookies stop working)."""
        self.store.bump_session_epoch(name)

    def list(self) -> list[dict[str, Any]]:
        return self.store.users()
