"""Logins, sessions, roles and CSRF tokens, for any app built on ``hubd.web``.

Default deny (see ``Policy``): every endpoint needs a logged-in user unless the policy
makes it public; every state-changing request (POST and friends) needs a CSRF token and
a role that may change state, unless the policy lets any role call it.  The session
cookie is signed, HttpOnly and SameSite=Strict; it names the user and the account's
session epoch, and the role and epoch are read from the app's ``Accounts`` on every
request, so removing a user, or anything that moves the epoch (a new password, a logout:
``Accounts.end_sessions``), ends every session of that account at once, on the server: an
old cookie and its CSRF token are worth nothing after it.  HTTP Basic credentials are
accepted on safe methods only (``/metrics`` scrapers, scripts), never for changes.

Failed logins slow guessing per address and per account (``Throttle``, ``Auth._wait``) but
never lock the account's owner out from another address.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for

from hubd.web.body import json_body
from hubd.web.errors import ApiError
from hubd.web.policy import Policy

log = logging.getLogger("hubd.web.auth")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"

bp = Blueprint("auth", __name__)


@dataclass(frozen=True)
class Account:
    """What a session needs to know of an account on every request."""

    role: str
    #: Opaque; a session stays valid while its account's epoch is the one it started with.
    epoch: str


class Accounts(Protocol):
    """The app's user accounts, as the login and the sessions see them."""

    def verify(self, name: str, password: str) -> str | None:
        """The account's role if the password is right, else None (taking as long either way)."""
        ...

    def account(self, name: str) -> Account | None:
        """The account's role and session epoch, or None if there is no such account."""
        ...

    def end_sessions(self, name: str) -> None:
        """Move the account's session epoch: every session of it ends (a logout)."""
        ...


@dataclass(frozen=True)
class User:
    """The user of the current request."""

    name: str
    role: str


@dataclass(frozen=True)
class LoginSettings:
    session_hours: float = 12.0
    #: Failed logins per address within ``lockout`` seconds before logins from it are refused.
    #: Per account, four times as many make it "under attack": then an address that failed on
    #: it waits the window out, and any other address may try once every ``pace`` seconds.
    max_failures: int = 5
    lockout: float = 300.0
    pace: float = 2.0


class Throttle:
    """Refuses logins for a while after repeated failures from one address or for one name.

    A sliding window: ``limit`` failures within ``window`` seconds block the key until
    the oldest of them is ``window`` seconds old.  Keys are kept in a bounded LRU."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._turns: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, limits: dict[str, int]) -> float:
        """Seconds until a login may be tried for these keys (0 when allowed)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, limit in limits.items():
                q = self._recent(key, now)
                if len(q) >= limit:
                    wait = max(wait, q[-limit] + self.window - now)
        return wait

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                q = self._fails.pop(key, None) or deque(maxlen=1000)
                q.append(now)
                self._fails[key] = q
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._fails.pop(key, None)

    def count(self, key: str) -> int:
        """Failures of ``key`` within the window."""
        with self._lock:
            return len(self._recent(key, self.clock()))

    def take_turn(self, key: str, pace: float) -> float:
        """0 and a turn taken if ``key`` has had none for ``pace`` seconds, else the seconds
        until the next one."""
        now = self.clock()
        with self._lock:
            last = self._turns.get(key)
            if last is not None and now - last < pace:
                return last + pace - now
            self._turns[key] = now
            while len(self._turns) > self.max_keys:
                self._turns.popitem(last=False)
            return 0.0


class Auth:
    """Logins and sessions over the app's accounts, by the app's policy."""

    def __init__(self, accounts: Accounts, policy: Policy, settings: LoginSettings):
        self.accounts = accounts
        self.policy = policy
        self.settings = settings
        self.throttle = Throttle(settings.lockout)

    def _wait(self, name: str, addr: str) -> float:
        """Seconds before a login for ``name`` from ``addr`` may be tried (0: now).

        Per address, ``max_failures`` within the window block it. Per account, four times as
        many (from any addresses) put it under attack; then an address that has failed on it
        waits the window out, and every other address gets one try each ``pace`` seconds: a
        guesser with many addresses is slowed to that pace, and the account's owner, at
        another address, still gets in (after a few seconds at most). Nothing locks it."""
        n = self.settings.max_failures
        account = f"name:{name.lower()}"
        limits = {f"addr:{addr}": n}
        under_attack = self.throttle.count(account) >= 4 * n
        if under_attack:
            limits[f"{account}|addr:{addr}"] = 1
        wait = self.throttle.retry_after(limits)
        if wait <= 0 and under_attack:
            wait = self.throttle.take_turn(account, self.settings.pace)
        return wait

    def check_password(self, name: str, password: str, addr: str) -> User:
        """The user for these credentials, or ApiError 401/429 saying why not."""
        account = f"name:{name.lower()}"
        wait = self._wait(name, addr)
        if wait > 0:
            log.warning("login for %r from %s refused: too many failures", name, addr)
            raise ApiError("throttled", f"too many failed logins; try again in {int(wait) + 1} s",
                           headers={"Retry-After": str(int(wait) + 1)})
        role = self.accounts.verify(name, password) if name and password else None
        if role is None:
            self.throttle.failed([f"addr:{addr}", account, f"{account}|addr:{addr}"])
            log.warning("failed login for %r from %s", name, addr)
            raise ApiError("unauthenticated", "wrong user name or password")
        self.throttle.succeeded([account, f"{account}|addr:{addr}"])
        log.info("login %s (%s) from %s", name, role, addr)
        return User(name, role)

    def start_session(self, user: User) -> str:
        account = self.accounts.account(user.name)
        if account is None:  # removed between the password check and now
            raise ApiError("unauthenticated", "wrong user name or password")
        session.clear()
        session.permanent = True
        session["user"] = user.name
        session["epoch"] = account.epoch
        session["t"] = time.time()
        session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    def session_user(self) -> User | None:
        name = session.get("user")
        if not isinstance(name, str):
            return None
        account = self.accounts.account(name)
        too_old = time.time() - float(session.get("t", 0)) > self.settings.session_hours * 3600
        if account is None or not hmac.compare_digest(account.epoch, str(session.get("epoch", ""))) \
                or too_old:
            session.clear()
            return None
        return User(name, account.role)

    def basic_user(self) -> User | None:
        a = request.authorization
        if a is None or a.type != "basic" or not a.username:
            return None
        return self.check_password(a.username, a.password or "", request.remote_addr or "?")


def auth() -> Auth:
    return current_app.extensions["hubd.auth"]


def session_owner() -> str | None:
    """Who holds this request's login: its session (each login is its own), or the account of
    HTTP Basic credentials; None for nobody."""
    if isinstance(session.get("csrf"), str) and session.get("user"):
        return f"session:{session['csrf']}"
    user = current_user()
    return f"basic:{user.name}" if user is not None else None


def current_user() -> User | None:
    return g.get("user")


def may_change() -> bool:
    """Whether the current user's role may change state."""
    user = current_user()
    return user is not None and auth().policy.may_change(user.role)


def require_change(user: User) -> None:
    """ApiError 403 unless this user's role may change state (for endpoints the policy lets
    any role call, that decide per request)."""
    if not auth().policy.may_change(user.role):
        raise ApiError("forbidden", auth().policy.change_refused(user.name, user.role))


def csrf_token() -> str:
    """The session's CSRF token (created on first use, e.g. on the login form)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        raise ApiError("csrf", f"cross-site request from {origin} refused")


def _check_csrf() -> None:
    _check_origin()
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = request.form.get("csrf_token")
    expected = session.get("csrf")
    if not expected:
        raise ApiError("csrf", "no session: log in again (the session cookie is missing or expired)")
    if not sent:
        raise ApiError("csrf", f"missing CSRF token: send the {CSRF_HEADER} header (GET /api/me gives it)"
                               " or the form's csrf_token field")
    if not hmac.compare_digest(str(sent), str(expected)):
        raise ApiError("csrf", "wrong CSRF token: reload the page and try again")


def _enforce() -> Any:
    """before_request: who is asking, and may they?"""
    g.user = None
    a = auth()
    endpoint = request.endpoint or ""
    unsafe = request.method not in SAFE_METHODS
    user = a.session_user()
    if user is None and not unsafe and request.authorization is not None:
        user = a.basic_user()
    g.user = user
    if endpoint in a.policy.public or not endpoint:
        return None  # unknown URLs fall through to a clear 404
    if user is None:
        if not unsafe and not a.policy.is_api(request.path):
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        challenge = {"WWW-Authenticate": f'Basic realm="{a.policy.realm}"'}
        raise ApiError("unauthenticated", "log in first (POST /api/login, or the page's login form)",
                       headers=None if unsafe else challenge)
    if unsafe:
        _check_csrf()
        if endpoint not in a.policy.any_role_unsafe:
            require_change(user)
    return None


def safe_next(target: str | None) -> str:
    """Where to go after a login or a form: ``target`` if it is a path on this site, else home."""
    home = url_for(auth().policy.home)
    if not target:
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return home
    return target


@bp.get("/login")
def login() -> Any:
    if current_user() is not None:
        return redirect(safe_next(request.args.get("next")))
    return render_template(auth().policy.login_template, next=request.args.get("next", ""), error=None)


@bp.post("/login")
def login_post() -> Any:
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    nxt = request.form.get("next", "")
    try:
        _check_csrf()
        user = auth().check_password(name, password, request.remote_addr or "?")
        auth().start_session(user)
    except ApiError as e:
        resp = current_app.make_response((render_template(auth().policy.login_template, next=nxt,
                                                          error=e.message, username=name), e.status))
        for k, v in e.headers.items():
            resp.headers[k] = v
        return resp
    return redirect(safe_next(nxt), code=303)


def _end_sessions() -> None:
    """Log out: every session of this account ends on the server (its epoch moves), not only
    this browser's cookie."""
    user = current_user()
    if user is not None:
        auth().accounts.end_sessions(user.name)
        log.info("logout %s: every session of the account ended", user.name)
    session.clear()


@bp.post("/logout")
def logout() -> Any:
    _end_sessions()
    return redirect(url_for("auth.login"), code=303)


@bp.post("/api/login")
def api_login() -> Any:
    _check_origin()
    body = json_body()
    name, password = body.get("user"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError("bad_request", "expected {\"user\": string, \"password\": string}")
    user = auth().check_password(name, password, request.remote_addr or "?")
    token = auth().start_session(user)
    return {"user": user.name, "role": user.role, "csrf_token": token}


@bp.post("/api/logout")
def api_logout() -> Any:
    _end_sessions()
    return {"ok": True}


@bp.get("/api/me")
def me() -> Any:
    user = current_user()
    assert user is not None
    return {"user": user.name, "role": user.role, "csrf_token": csrf_token()}


def init_app(app: Flask, accounts: Accounts, policy: Policy, settings: LoginSettings) -> None:
    app.extensions["hubd.auth"] = Auth(accounts, policy, settings)
    app.before_request(_enforce)
    app.register_blueprint(bp)
    app.jinja_env.globals.update(csrf_token=csrf_token, current_user=current_user, may_change=may_change)

