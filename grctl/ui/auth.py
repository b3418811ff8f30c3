"""Who may use the web UI and what guards each request: authentication, sessions, CSRF, headers.

The layers of `grctl.ui.app`, outermost first:

1. `SecurityHeaders`: CSP (no script, no frames, forms only to this origin), no-referrer,
   nosniff on every response, errors included.
2. Starlette's `TrustedHostMiddleware`: on loopback only the loopback names are served, so a
   DNS-rebinding page (attacker.example resolving to 127.0.0.1) gets a 400.
3. `Sessions`: a random session id in an HttpOnly, SameSite=Strict cookie; the session holds the
   CSRF token every state-changing form carries, and the user after a token sign-in.
4. Starlette's `AuthenticationMiddleware` with `UiAuthBackend`: the mode of `UiAuth`
   (none on loopback; a bearer token, basic credentials, or a trusted proxy's user header).

`check_post` is called by every POST handler: same-origin (Origin, else Referer, and
Sec-Fetch-Site) and the session's CSRF token, compared in constant time.

May import: the standard library, starlette, `grctl.errors`, `grctl.settings` (never the client or the CLI).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    SimpleUser,
)
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grctl import settings
from grctl.errors import GrctlError, InvalidArgumentError

AuthMode = Literal["none", "token", "basic", "proxy"]

SESSION_COOKIE = "grctl_ui_session"
#: A session lives a working day; after that the browser signs in again (token) or gets a new CSRF token.
SESSION_TTL_S = 12 * 3600
#: Sessions kept in memory at most (the oldest go first): bounds what a flood of cookieless requests costs.
MAX_SESSIONS = 10_000
#: scrypt parameters of `hash_password` (RFC 7914's interactive-login figures: ~50 ms, 16 MiB).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Paths served without signing in (the sign-in form itself).
PUBLIC_PATHS = frozenset({"/login"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
#: No script at all, styles inline only, forms post only here, no framing, no referrer.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def is_loopback(host: str) -> bool:
    """True if `host` (an address or name to bind) reaches this machine only."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of a password for a users file: ``scrypt$N$r$p$<salt hex>$<hash hex>``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _check_password(password: str, stored: str) -> bool:
    _, n, r, p, salt, want = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got, bytes.fromhex(want))


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class UiAuth:
    """Who may use the UI, and whether it may act.

    Build one with `none`, `from_token`, `from_users_file` or `from_proxy`.

    Attributes:
        mode: ``none`` (loopback only), ``token``, ``basic`` or ``proxy``.
        read_only: no action buttons; every action request is refused with 403.
        token_sha256: the SHA-256 of the bearer token (the clear token is not kept).
        users: user name -> scrypt record (`hash_password`), for basic credentials.
        proxy_header: the header an authenticating proxy puts the user's name in.
        trusted_proxies: the addresses that header is believed from.
    """

    mode: AuthMode = "none"
    read_only: bool = False
    token_sha256: bytes | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    proxy_header: str | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def none(cls, *, read_only: bool = False) -> UiAuth:
        """No sign-in: for a UI bound to loopback (CSRF and origin checks still apply)."""
        return cls("none", read_only)

    @classmethod
    def from_token(cls, token: str, *, read_only: bool = False) -> UiAuth:
        """A bearer token; ``sha256:<hex>`` gives its hash instead of the token itself.

        Raises:
            InvalidArgumentError: an empty or short token, or a bad hash.
        """
        token = token.strip()
        if token.startswith("sha256:"):
            try:
                digest = bytes.fromhex(token.removeprefix("sha256:"))
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise InvalidArgumentError("the token's hash must be sha256:<64 hex digits>", argument="token")
            return cls("token", read_only, token_sha256=digest)
        if len(token) < 16:
            raise InvalidArgumentError(
                "the UI token is shorter than 16 characters: make one with `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`",
                argument="token",
            )
        return cls("token", read_only, token_sha256=_token_digest(token))

    @classmethod
    def from_users_file(cls, path: Path, *, read_only: bool = False) -> UiAuth:
        """Basic credentials from a file of ``user:scrypt$...`` lines (`grctl ui --hash-password USER`).

        Raises:
            InvalidArgumentError: an unreadable file, or a line that is not ``user:scrypt$N$r$p$salt$hash``.
        """
        try:
            text = path.read_text()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read the users file {path}: {exc.strerror}", argument="users") from None
        users: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, _, stored = line.partition(":")
            parts = stored.split("$")
            if not user or len(parts) != 6 or parts[0] != "scrypt" or not all(parts[1:]):
                raise InvalidArgumentError(
                    f"{path} line {number} is not 'user:scrypt$N$r$p$salt$hash': make lines with "
                    f"`grctl ui --hash-password USER` (clear passwords are not accepted)",
                    argument="users",
                )
            users[user] = stored
        if not users:
            raise InvalidArgumentError(f"the users file {path} names no user", argument="users")
        return cls("basic", read_only, users=users)

    @classmethod
    def from_proxy(cls, header: str, trusted: Iterable[str], *, read_only: bool = False) -> UiAuth:
        """Trust `header` as the user's name, from the `trusted` proxy addresses (CIDR or single) only.

        Raises:
            InvalidArgumentError: no trusted address, or one that is not an address or network.
        """
        nets = []
        for item in trusted:
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise InvalidArgumentError(
                    f"--trusted-proxy {item!r} is not an address or network (e.g. 10.0.0.5 or 10.0.0.0/24)",
                    argument="trusted_proxy",
                ) from None
        if not nets:
            raise InvalidArgumentError(
                "--proxy-user-header needs --trusted-proxy ADDRESS: the header is believed only from the proxy",
                argument="trusted_proxy",
            )
        return cls("proxy", read_only, proxy_header=header.lower(), trusted_proxies=tuple(nets))


@dataclass(slots=True)
class Session:
    """One browser's session: its CSRF token and, after a token sign-in, its user."""

    sid: str
    csrf: str
    created: float
    user: str | None = None


class SessionStore:
    """Sessions in memory (a restart of `grctl ui` signs everyone out, which is fine for an operator tool)."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, sid: str | None) -> Session | None:
        """The live session of `sid`, or None."""
        s = self._sessions.get(sid) if sid else None
        if s is not None and time.monotonic() - s.created > SESSION_TTL_S:
            self._sessions.pop(s.sid, None)
            return None
        return s

    def new(self, user: str | None = None) -> Session:
        """A fresh session (a new id and CSRF token)."""
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic(), user)
        self._sessions[s.sid] = s
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return s

    def drop(self, sid: str) -> None:
        """End a session (sign out)."""
        self._sessions.pop(sid, None)


class Sessions:
    """ASGI layer: puts the browser's `Session` in ``scope["grctl.session"]``, issuing the cookie when new."""

    def __init__(self, app: ASGIApp, store: SessionStore) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        session = self.store.get(conn.cookies.get(SESSION_COOKIE))
        fresh = session is None
        scope["grctl.session"] = session if session is not None else self.store.new()

        async def send_with_cookie(message: Message) -> None:
            current: Session = scope["grctl.session"]
            if message["type"] == "http.response.start" and (fresh or current is not session):
                secure = "; Secure" if conn.url.scheme == "https" else ""
                cookie = f"{SESSION_COOKIE}={current.sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_S}"
                MutableHeaders(scope=message).append("set-cookie", cookie + secure)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class SecurityHeaders:
    """ASGI layer: the security headers on every response."""

    HEADERS = (
        ("content-security-policy", CSP),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class UiAuthBackend(AuthenticationBackend):
    """Starlette authentication backend of `UiAuth`: the request's user, or `AuthenticationError`."""

    def __init__(self, auth: UiAuth) -> None:
        self.auth = auth
        # Basic credentials come with every request and scrypt costs ~50 ms: remember the ones
        # that matched, keyed by a keyed hash (never the password itself).
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """The signed-in user of `conn` (None: anonymous, allowed in mode none and on the sign-in page)."""
        a = self.auth
        if a.mode == "none":
            return None
        if a.mode == "proxy":
            return self._from_proxy(conn)
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        user: str | None = None
        if a.mode == "token":
            if scheme.lower() == "bearer" and value:
                if not self.token_matches(value.strip()):
                    raise AuthenticationError("the bearer token is wrong")
                user = "token"
            else:
                session: Session | None = conn.scope.get("grctl.session")
                user = session.user if session is not None else None
        elif a.mode == "basic" and scheme.lower() == "basic" and value:
            user = self._basic_user(value.strip())
            if user is None:
                raise AuthenticationError("the user name or password is wrong")
        if user is None:
            if conn.url.path in PUBLIC_PATHS:
                return None
            raise AuthenticationError("sign in first")
        return AuthCredentials(["authenticated"]), SimpleUser(user)

    def token_matches(self, token: str) -> bool:
        """True if `token` is the UI's token (its SHA-256 compared in constant time)."""
        assert self.auth.token_sha256 is not None
        return hmac.compare_digest(_token_digest(token), self.auth.token_sha256)

    def _basic_user(self, value: str) -> str | None:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        mark = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if mark in self._verified:
            return user
        # An unknown user costs the same scrypt as a known one (no timing hint of who exists).
        stored = self.auth.users.get(user, hash_password("", salt=b"\0" * 16))
        if not _check_password(password, stored) or user not in self.auth.users:
            return None
        self._verified.add(mark)
        return user

    def _from_proxy(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        peer = conn.client.host if conn.client else ""
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            addr = None
        if addr is None or not any(addr in net for net in self.auth.trusted_proxies):
            raise AuthenticationError(f"requests must come through the authenticating proxy, not from {peer or '?'}")
        assert self.auth.proxy_header is not None
        user = conn.headers.get(self.auth.proxy_header, "").strip()
        if not user:
            raise AuthenticationError(f"the proxy sent no {self.auth.proxy_header} header")
        return AuthCredentials(["authenticated"]), SimpleUser(user)


class Refused(GrctlError):
    """A state-changing request that failed the origin or CSRF check (a 403 page with `message`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def session_of(request: Request) -> Session:
    """The request's session (set by `Sessions`)."""
    session: Session = request.scope["grctl.session"]
    return session


def check_post(request: Request, form: Mapping[str, object]) -> None:
    """Refuse a state-changing request from another origin or without this session's CSRF token.

    Raises:
        Refused: the reason, for the 403 page.
    """
    host = request.headers.get("host", "")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        # The browser's own word on where the request came from. With Referrer-Policy
        # no-referrer a browser sends "Origin: null" even for its own forms, so when it says
        # same-origin the Origin header adds nothing.
        if fetch_site not in ("same-origin", "none"):
            raise Refused(f"the request came from another site (Sec-Fetch-Site: {fetch_site}); nothing was done")
    else:
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc != host):
            raise Refused(f"the request came from {origin}, not from this UI ({host}); nothing was done")
    token = form.get("csrf")
    if not isinstance(token, str) or not token:
        raise Refused("the form carries no CSRF token (reload the page and try again); nothing was done")
    if not hmac.compare_digest(token.encode(), session_of(request).csrf.encode()):
        raise Refused("the form's CSRF token is not this session's (reload the page and try again); nothing was done")


def token_from_env_or_file(token_file: Path | None) -> str | None:
    """The UI token: the file's content, else ``GRCTL_UI_TOKEN``, else None.

    Raises:
        InvalidArgumentError: the file cannot be read.
    """
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot read the token file {token_file}: {exc.strerror}", argument="token_file"
            ) from None
    return settings.ui_token()
