"""Who is at the dashboard: sign-in, sessions, and the checks every request passes.

Three ways to be someone, any of which a site may enable:

- **Password**: a credentials file of ``name:argon2-hash`` lines (argon2id,
  :mod:`argon2`; ``streamproc dashboard-user FILE NAME`` adds one). ``POST
  /api/login`` checks the password and sets a signed session cookie.
- **Token** (the single-user demo, as Jupyter does): the server prints the page
  address with ``?token=...``; opening it sets the session cookie (the identity
  is the server's station name) and redirects to the bare address.
- **Single-sign-on proxy**: a configured request header (e.g.
  ``X-Forwarded-User``) names the user, believed only from configured proxy
  addresses. The same header from anywhere else is refused (403): it is a forgery.

The session cookie is signed (:mod:`itsdangerous`, HMAC), ``HttpOnly``,
``SameSite=Strict`` and ``Secure`` when the page is served over https; it holds
the identity and how it was established, and expires after ``session_s``.

Every request's ``Host`` must be one of the allowed host names (a DNS
rebinding page arrives with its own name); every ``POST`` must carry an
``Origin`` of that same host (a cross-site request forgery carries another, or
none). The acknowledging identity is the signed-in one: a body that names its
own ``by`` is refused.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = [
    "COOKIE",
    "DEFAULT_HOSTS",
    "AuthConfig",
    "AuthError",
    "Authenticator",
    "CredentialsError",
    "Identity",
    "add_user",
    "read_users",
    "remove_user",
]

#: The session cookie's name.
COOKIE: Final = "streamproc_session"
#: Host names accepted when none are configured: the loopback ones.
DEFAULT_HOSTS: Final = ("127.0.0.1", "localhost", "::1")
#: An identity goes into the ack's ``by``: at most this long, printable.
MAX_IDENTITY: Final = 64
#: Failed sign-ins for one name within ``LOCKOUT_S`` before it is refused (429).
MAX_FAILURES: Final = 5
LOCKOUT_S: Final = 300.0

_hasher: Final = PasswordHasher()


class AuthError(Exception):
    """A request is refused: ``status`` (401, 403, 429) and a reason for the caller."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.field = field
        super().__init__(f"{status}: {reason}")


class CredentialsError(ValueError):
    """The credentials file cannot be used (the operator's fault): names the file and line."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"credentials file {where}: {reason}")


def valid_identity(name: str) -> bool:
    """1 to 64 printable characters, no surrounding spaces, no ``:``."""
    return (
        0 < len(name) <= MAX_IDENTITY
        and name.isprintable()
        and name.strip() == name
        and ":" not in name
    )


# --------------------------------------------------------------------------- credentials


def read_users(path: Path) -> dict[str, str]:
    """``name -> argon2 hash`` from a credentials file (``#`` comments, blank lines).

    Raises:
        CredentialsError: the file is missing, or a line is not ``name:$argon2...``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(path, f"cannot be read ({exc.strerror})") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not valid_identity(name) or not hashed.startswith("$argon2"):
            raise CredentialsError(path, "expected NAME:$argon2id$... (one user a line)", number)
        if name in users:
            raise CredentialsError(path, f"user {name!r} is listed twice", number)
        users[name] = hashed
    return users


def _write_users(path: Path, users: Mapping[str, str]) -> None:
    body = "".join(f"{name}:{hashed}\n" for name, hashed in users.items())
    header = "# streamproc dashboard users: NAME:ARGON2ID-HASH (streamproc dashboard-user)\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def add_user(path: Path, name: str, password: str) -> bool:
    """Add ``name`` (or change its password); True if it was new. The file is kept 0600."""
    if not valid_identity(name):
        raise ValueError(f"user name must be 1 to {MAX_IDENTITY} printable characters, no ':'")
    if len(password) < 8:
        raise ValueError("the password must have at least 8 characters")
    users = read_users(path) if path.exists() else {}
    new = name not in users
    users[name] = _hasher.hash(password)
    _write_users(path, users)
    return new


def remove_user(path: Path, name: str) -> bool:
    """Remove ``name``; True if it was there."""
    users = read_users(path)
    if users.pop(name, None) is None:
        return False
    _write_users(path, users)
    return True


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True, slots=True)
class AuthConfig:
    """How the dashboard knows who is there. Closed unless a field opens it.

    Attributes:
        users_file: credentials file for password sign-in (``None``: no passwords).
        token: the single-user token (``None``: no token sign-in).
        token_identity: who a token sign-in acknowledges as (the station's name).
        proxy_header: request header naming the user, set by a single-sign-on proxy.
        trusted_proxies: addresses (or networks) that header is believed from.
        public_read: anyone who reaches the page may watch (never acknowledge).
        allowed_hosts: host names the ``Host`` header may carry (port ignored).
        secure_cookies: mark the cookie ``Secure`` even when the request looks like
            plain http (a TLS-terminating proxy in front).
        secret: the key sessions are signed with (random per start when empty:
            a restart signs everyone out).
        session_s: how long a session lasts.
    """

    users_file: Path | None = None
    token: str | None = None
    token_identity: str = "station-1"  # noqa: S105 - a name, not a secret
    proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    public_read: bool = False
    allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS
    secure_cookies: bool = False
    secret: str = ""
    session_s: float = 12 * 3600.0

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the dashboard token must have at least 16 characters")
        if not valid_identity(self.token_identity):
            raise ValueError(f"token identity {self.token_identity!r} is not a valid name")
        if self.proxy_header is not None and not self.trusted_proxies:
            raise ValueError("a proxy header needs the proxies it is trusted from")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted proxy {proxy!r} is not an address or network") from None
        if not self.allowed_hosts:
            raise ValueError("at least one allowed host name is needed")
        if self.session_s <= 0:
            raise ValueError("session_s must be > 0")

    @property
    def methods(self) -> tuple[str, ...]:
        """The sign-in methods enabled, for the page: password, token, proxy."""
        out = []
        if self.users_file is not None:
            out.append("password")
        if self.token is not None:
            out.append("token")
        if self.proxy_header is not None:
            out.append("proxy")
        return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: the name acknowledgements carry, and how it was established."""

    name: str
    method: str  # "password", "token" or "proxy"


def _host_name(host_header: str) -> str:
    """``Host`` without its port (``[::1]:8080`` -> ``::1``), lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class Authenticator:
    """Applies an :class:`AuthConfig` to requests (framework-free: headers in, identity out)."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        secret = config.secret or secrets.token_urlsafe(32)
        self._signer = URLSafeTimedSerializer(secret, salt="streamproc.apps.dashboard.session")
        self._hosts = frozenset(h.strip("[]").lower() for h in config.allowed_hosts)
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies)
        self._header = config.proxy_header.lower() if config.proxy_header else None
        self._users: dict[str, str] = {}
        self._users_mtime: float | None = None
        self._failures: dict[str, list[float]] = {}
        # a fixed hash to verify against for unknown names: the same work either way
        self._dummy = _hasher.hash(secrets.token_urlsafe(16))
        if config.users_file is not None:
            self._load_users()  # a broken file stops the start, not the first sign-in

    # -- checks every request passes -------------------------------------------

    def check_host(self, host_header: str | None) -> None:
        """The ``Host`` names this server (DNS rebinding protection)."""
        if not host_header or _host_name(host_header) not in self._hosts:
            raise AuthError(
                403,
                "this dashboard is not served under that host name (see its --allowed-host)",
                "host",
            )

    def check_origin(self, origin: str | None, host_header: str | None) -> None:
        """A write comes from this server's own page (CSRF protection)."""
        if not origin or origin == "null":
            raise AuthError(403, "a write needs the page's Origin header", "origin")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not host_header:
            raise AuthError(403, "cross-site request refused", "origin")
        if parts.netloc.lower() != host_header.strip().lower():
            raise AuthError(403, "cross-site request refused", "origin")

    # -- identity ----------------------------------------------------------------

    def _trusted(self, client_ip: str | None) -> bool:
        if client_ip is None:
            return False
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in net for net in self._proxies)

    def identify(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client_ip: str | None
    ) -> Identity | None:
        """Who is asking (``None``: nobody signed in).

        Raises:
            AuthError: a proxy identity header from an address that is not a proxy
                (403), or a malformed one from a proxy (403).
        """
        if self._header is not None:
            claimed = headers.get(self._header)
            if claimed is not None:
                if not self._trusted(client_ip):
                    raise AuthError(
                        403, f"{self.config.proxy_header} is only taken from the proxy", "header"
                    )
                if not valid_identity(claimed):
                    raise AuthError(403, f"{self.config.proxy_header} is not a valid name")
                return Identity(claimed, "proxy")
        raw = cookies.get(COOKIE)
        if raw:
            try:
                data = self._signer.loads(raw, max_age=int(self.config.session_s))
            except BadSignature:
                return None
            if (
                isinstance(data, dict)
                and isinstance(data.get("u"), str)
                and data.get("m") in self.config.methods
                and valid_identity(data["u"])
            ):
                if data["m"] == "password" and data["u"] not in self._current_users():
                    return None  # removed from the file: the session ends
                return Identity(data["u"], data["m"])
        return None

    def session_cookie(self, identity: Identity) -> str:
        """The signed cookie value for ``identity``."""
        return self._signer.dumps({"u": identity.name, "m": identity.method})

    def cookie_header(self, value: str, *, https: bool, clear: bool = False) -> str:
        """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, Secure over https."""
        max_age = 0 if clear else int(self.config.session_s)
        parts = [f"{COOKIE}={'' if clear else value}", "Path=/", f"Max-Age={max_age}"]
        parts += ["HttpOnly", "SameSite=Strict"]
        if https or self.config.secure_cookies:
            parts.append("Secure")
        return "; ".join(parts)

    # -- sign-in -------------------------------------------------------------------

    def check_token(self, token: str) -> Identity | None:
        """The token sign-in's identity, if ``token`` is the server's (constant time)."""
        expected = self.config.token
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return Identity(self.config.token_identity, "token")

    def _load_users(self) -> None:
        path = self.config.users_file
        assert path is not None  # noqa: S101 - only called with a file configured
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise CredentialsError(path, f"cannot be read ({exc.strerror})") from None
        if mtime != self._users_mtime:
            self._users = read_users(path)
            self._users_mtime = mtime

    def _current_users(self) -> Mapping[str, str]:
        """The credentials file's users, reread when it changed (added or removed users)."""
        if self.config.users_file is None:
            return {}
        try:
            self._load_users()
        except CredentialsError:
            return self._users  # a file being rewritten: keep the last good one
        return self._users

    def login(self, name: str, password: str, now: float | None = None) -> Identity:
        """Check a password sign-in.

        Raises:
            AuthError: 401 wrong name or password (the same answer for both), 403
                no password sign-in here, 429 too many failures for this name.
        """
        if self.config.users_file is None:
            raise AuthError(403, "password sign-in is not enabled on this dashboard")
        t = time.monotonic() if now is None else now
        recent = [f for f in self._failures.get(name, []) if t - f < LOCKOUT_S]
        if len(recent) >= MAX_FAILURES:
            raise AuthError(429, "too many failed sign-ins: wait a few minutes", "username")
        hashed = self._current_users().get(name)
        try:
            _hasher.verify(hashed or self._dummy, password)
            if hashed is None:
                raise VerifyMismatchError
        except (VerificationError, InvalidHashError):
            recent.append(t)
            if len(self._failures) > 10_000:
                self._failures.clear()  # bounded: a flood of names cannot grow memory
            self._failures[name] = recent
            raise AuthError(401, "wrong user name or password", "password") from None
        self._failures.pop(name, None)
        return Identity(name, "password")


def parse_hosts(values: Iterable[str]) -> tuple[str, ...]:
    """``--allowed-host`` values (comma-separated allowed), lower case, no brackets."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            host = part.strip().strip("[]").lower()
            if host:
                out.append(host)
    return tuple(out)
