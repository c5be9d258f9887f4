"""The page: ``GET /`` (and the token sign-in address) and ``GET /static/{name}``.

The files are served from the package (no build step, nothing external).
"""

from __future__ import annotations

import importlib.resources
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from streamproc.apps.dashboard.security import Guard
from streamproc.apps.dashboard.web import error
from streamproc.shell.logs import get_logger

__all__ = ["STATIC_FILES", "Pages"]

log = get_logger("streamproc.apps.dashboard")

#: The page's files, served from the package (no build step, nothing external): the
#: page, its ES modules (``main.js`` imports the others) and its style.
STATIC_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    **dict.fromkeys(
        ("main.js", "api.js", "account.js", "alarms.js", "render.js", "dom.js", "state.js"),
        "text/javascript; charset=utf-8",
    ),
    "style.css": "text/css; charset=utf-8",
}


def _load_static() -> dict[str, bytes]:
    folder = importlib.resources.files("streamproc.apps.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}


class Pages:
    """The page and its files, read once from the package."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.static = _load_static()

    def asset(self, name: str) -> Response:
        return Response(
            self.static[name],
            media_type=STATIC_FILES[name],
            headers={"cache-control": "no-cache"},
        )

    async def index(self, request: Request) -> Response:
        """``GET /``: the page; with ``?token=``, sign in and come back to ``/``."""
        token = request.query_params.get("token")
        if token is None:
            return self.asset("index.html")
        identity = self.guard.authn.check_token(token)
        if identity is None:
            log.warning("dashboard_refused", status=401, reason="wrong token", path="/")
            return PlainTextResponse(
                "Wrong or expired token: open the address the dashboard server printed.",
                status_code=401,
            )
        # the token leaves the address bar (and the history) at once, as Jupyter does
        response = Response(status_code=303, headers={"location": "/"})
        return self.guard.sign_in(response, identity, request)

    async def static_file(self, request: Request) -> Response:
        """``GET /static/{name}``: one of :data:`STATIC_FILES` (not the page itself)."""
        name = request.path_params["name"]
        if name not in STATIC_FILES or name == "index.html":
            return error(404, "no such file", "name")
        return self.asset(name)
