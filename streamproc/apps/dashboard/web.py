"""What every route answers with: JSON errors, refusals (logged), bounded JSON bodies."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

from streamproc.apps.dashboard.auth import AuthError
from streamproc.shell.logs import get_logger

__all__ = ["error", "printable", "read_json", "refused"]

log = get_logger("streamproc.apps.dashboard")


def error(status: int, message: str, field: str | None) -> JSONResponse:
    """The JSON error every route answers with: ``{"error", "field"}``."""
    return JSONResponse({"error": message, "field": field}, status_code=status)


def refused(exc: AuthError, request: Request) -> JSONResponse:
    """A request refused by :mod:`~streamproc.apps.dashboard.auth`: logged, then answered."""
    client = request.client.host if request.client else None
    log.warning(
        "dashboard_refused",
        status=exc.status,
        reason=exc.reason,
        path=request.url.path,
        client=client,
    )
    headers = {"www-authenticate": 'Cookie realm="streamproc"'} if exc.status == 401 else None
    return JSONResponse(
        {"error": exc.reason, "field": exc.field}, status_code=exc.status, headers=headers
    )


async def read_json(request: Request, limit: int) -> dict[str, Any] | JSONResponse:
    """The request's JSON object body, or the error response saying what is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error(415, "send the body as application/json", "content-type")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return error(413, f"the body must be at most {limit} bytes", "body")
    try:
        body = msgspec.json.decode(bytes(raw))
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object", "body")
    return body


def printable(value: str) -> bool:
    """Printable, and without leading or trailing blanks."""
    return value.isprintable() and value.strip() == value
