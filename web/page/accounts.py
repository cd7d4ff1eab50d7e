"""The hub's users (``hubd.users``) as the page's ``Accounts``."""

from __future__ import annotations

from hubd.store import Store
from hubd.users import Users
from hubd.web.auth import Account


class UserAccounts:
    """``hubd.web.auth.Accounts`` over the users in the hub's store."""

    def __init__(self, store: Store):
        self.users = Users(store)

    def verify(self, name: str, password: str) -> str | None:
        return self.users.verify(name, password)

    def account(self, name: str) -> Account | None:
        found = self.users.session_epoch(name)
        return Account(role=found[0], epoch=found[1]) if found else None

    def end_sessions(self, name: str) -> None:
        self.users.end_sessions(name)
