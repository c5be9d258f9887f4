"""Who may do what, checked on every request: Host, Origin, the signed-in user.

The two middlewares check every request before any route sees it: :class:`HostCheck`
refuses a ``Host`` that is not an allowed name (DNS rebinding) and
:class:`SecurityHeaders` adds a strict Content-Security-Policy to every response.
:class:`Guard` is what the routes ask: who is there, may they read, may they write.
The decisions themselves are :class:`~streamproc.apps.dashboard.auth.Authenticator`'s.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamproc.apps.dashboard.auth import AuthConfig, Authenticator, AuthError, Identity
from streamproc.apps.dashboard.web import error
from streamproc.shell.logs import get_logger

__all__ = ["Guard", "HostCheck", "SecurityHeaders"]

log = get_logger("streamproc.apps.dashboard")

_SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        (
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Adds a strict Content-Security-Policy (and friends) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Refuses (403) every request whose ``Host`` is not an allowed name (DNS rebinding)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = None
            for name, value in scope.get("headers", ()):
                if name == b"host":
                    host = value.decode("latin-1")
                    break
            try:
                self.auth.check_host(host)
            except AuthError as exc:
                log.warning("dashboard_refused", status=exc.status, reason=exc.reason)
                await error(exc.status, exc.reason, exc.field)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Guard:
    """The routes' questions about a request; each refusal is an :class:`AuthError`."""

    def __init__(self, authn: Authenticator) -> None:
        self.authn = authn
        self.config: AuthConfig = authn.config

    def who(self, request: Request) -> Identity | None:
        """The signed-in identity, ``None`` for nobody; raises on a forged one."""
        client = request.client.host if request.client else None
        return self.authn.identify(request.headers, request.cookies, client)

    def reader(self, request: Request) -> Identity | None:
        """The identity of a request that may read (``None`` if open reading); raises 401."""
        identity = self.who(request)
        if identity is None and not self.config.public_read:
            raise AuthError(401, "sign in to see the ward", None)
        return identity

    def same_origin(self, request: Request) -> None:
        """Raises 403 unless the request comes from the page's own ``Origin``."""
        self.authn.check_origin(request.headers.get("origin"), request.headers.get("host"))

    def writer(self, request: Request, refusal: str) -> Identity:
        """The signed-in user of a request from the page's own Origin; raises 403 or 401."""
        self.same_origin(request)
        identity = self.who(request)
        if identity is None:
            raise AuthError(401, refusal, None)
        return identity

    @staticmethod
    def https(request: Request) -> bool:
        return request.url.scheme == "https"

    def sign_in(self, response: Response, identity: Identity, request: Request) -> Response:
        """``response`` with the session cookie of ``identity`` set (and the sign-in logged)."""
        cookie = self.authn.cookie_header(
            self.authn.session_cookie(identity), https=self.https(request)
        )
        response.headers.append("set-cookie", cookie)
        log.info("dashboard_signed_in", user=identity.name, method=identity.method)
        return response
