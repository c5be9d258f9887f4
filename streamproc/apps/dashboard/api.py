"""The JSON API that reads, and the account: ``/api/state``, ``/api/kinds``, ``/api/me``,
``/api/login``, ``/api/logout`` and ``/healthz``. The one write, ``/api/ack``, is :mod:`.ack`.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streamproc import __version__
from streamproc.apps.dashboard.auth import AuthError
from streamproc.apps.dashboard.events import EventHub
from streamproc.apps.dashboard.kinds import catalog
from streamproc.apps.dashboard.security import Guard
from streamproc.apps.dashboard.state import DashboardState
from streamproc.apps.dashboard.web import error, read_json, refused

__all__ = ["MAX_LOGIN_BYTES", "Api"]

#: Largest ``POST /api/login`` body read.
MAX_LOGIN_BYTES: Final = 4096


class Api:
    """The read endpoints and the sign-in/out ones, over the state, the hub and the guard."""

    def __init__(self, state: DashboardState, hub: EventHub, guard: Guard) -> None:
        self.state = state
        self.hub = hub
        self.guard = guard

    async def snapshot(self, request: Request) -> Response:
        """``GET /api/state``: the snapshot, for a reader."""
        try:
            self.guard.reader(request)
        except AuthError as exc:
            return refused(exc, request)
        return JSONResponse(self.state.snapshot(), headers={"cache-control": "no-store"})

    @staticmethod
    async def kinds(_request: Request) -> Response:
        """The alarm kinds, priorities, triggers and audiences the page shows (kinds.py)."""
        return JSONResponse(catalog(), headers={"cache-control": "no-cache"})

    async def me(self, request: Request) -> Response:
        """``GET /api/me``: who is signed in, what they may do, how one signs in."""
        try:
            identity = self.guard.who(request)
        except AuthError as exc:
            return refused(exc, request)
        config = self.guard.config
        body = {
            "user": None if identity is None else identity.name,
            "method": None if identity is None else identity.method,
            "can_read": identity is not None or config.public_read,
            "can_write": identity is not None,
            "methods": list(config.methods),
            "public_read": config.public_read,
        }
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def login(self, request: Request) -> Response:
        """``POST /api/login``: name and password, from the page's own Origin."""
        try:
            self.guard.same_origin(request)
        except AuthError as exc:
            return refused(exc, request)
        body = await read_json(request, MAX_LOGIN_BYTES)
        if isinstance(body, JSONResponse):
            return body
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return error(400, "username and password are required strings", "username")
        try:
            identity = await asyncio.to_thread(self.guard.authn.login, name, password)
        except AuthError as exc:
            return refused(exc, request)
        response = JSONResponse({"ok": True, "user": identity.name, "method": identity.method})
        return self.guard.sign_in(response, identity, request)

    async def logout(self, request: Request) -> Response:
        """``POST /api/logout``: the session cookie cleared."""
        try:
            self.guard.same_origin(request)
        except AuthError as exc:
            return refused(exc, request)
        response = JSONResponse({"ok": True})
        response.headers.append(
            "set-cookie",
            self.guard.authn.cookie_header("", https=self.guard.https(request), clear=True),
        )
        return response

    async def healthz(self, _request: Request) -> Response:
        """``GET /healthz``: 200 when connected to the broker, 503 when not."""
        state, hub = self.state, self.hub
        body = {
            "status": "ok" if state.connected else "degraded",
            "broker_connected": state.connected,
            "broker_error": state.error,
            "clients": len(hub),
            "clients_dropped": hub.dropped_total,
            "alarms": len(state.alarms),
            "beds": len(state.summaries),
            "instances": len(state.statuses),
            "ignored_messages": state.ignored,
            "version": __version__,
        }
        return JSONResponse(body, status_code=200 if state.connected else 503)
