"""What an app built on ``hubd.web`` allows, and how it names itself.

The shared login, session and error code read everything app-specific from one
``Policy``: which endpoints need no login, which roles may change state, where a
user lands after logging in, the Basic-auth realm, the cookie and the names shown.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The login endpoints of the shared ``auth`` blueprint: public in every app.
LOGIN_ENDPOINTS = frozenset({"auth.login", "auth.login_post", "auth.api_login"})
#: Its logout endpoints: any logged-in role may call them.
LOGOUT_ENDPOINTS = frozenset({"auth.logout", "auth.api_logout"})


@dataclass(frozen=True)
class Policy:
    """Default deny: every endpoint not in ``public`` needs a login; every unsafe request
    needs a CSRF token and one of ``change_roles``, unless its endpoint is in
    ``any_role_unsafe`` (an endpoint there checks the role itself, if it must)."""

    #: Endpoint a user lands on after logging in (and the error page's way back).
    home: str
    public: frozenset[str] = LOGIN_ENDPOINTS | {"static"}
    #: Every role an account may have (English nouns: refusals say "only managers ...").
    roles: tuple[str, ...] = ("manager", "viewer")
    change_roles: frozenset[str] = frozenset({"manager"})
    any_role_unsafe: frozenset[str] = LOGOUT_ENDPOINTS
    #: URLs answered for machines: a missing login is a JSON 401 there, not a redirect to
    #: the login form, and errors are JSON.  Prefixes, and whole paths.
    api_prefixes: tuple[str, ...] = ("/api/",)
    api_paths: frozenset[str] = frozenset()
    realm: str = "hubd"
    cookie_name: str = "hubd_session"
    #: The software's name (after every page title) and this installation's (the brand).
    app_name: str = "hubd"
    brand: str = "hubd"
    login_template: str = "login.html"

    def is_api(self, path: str) -> bool:
        return path.startswith(self.api_prefixes) or path in self.api_paths

    def may_change(self, role: str) -> bool:
        return role in self.change_roles

    def change_refused(self, name: str, role: str) -> str:
        """Why this user may not change state."""
        who = " or ".join(f"{r}s" for r in sorted(self.change_roles))
        return f"user {name} is a {role}: only {who} can change state"
