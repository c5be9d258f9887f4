"""``POST /api/ack``: the signed-in user acknowledges an open alarm.

Who and from where are checked before the body is read; the acknowledgement is
published (QoS 1) by the bridge, the processor decides what it means and its new
alarm state comes back through the bridge.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streamproc.apps.dashboard.auth import AuthError, Identity
from streamproc.apps.dashboard.security import Guard
from streamproc.apps.dashboard.state import DashboardState, NotConnectedError
from streamproc.apps.dashboard.web import error, printable, read_json, refused
from streamproc.core.protocol.messages import BedId, InvalidMessageError
from streamproc.wire.topics import TopicError, inbound_topic

__all__ = ["MAX_ACK_BYTES", "Acknowledge", "PublishAck"]

#: Largest ``POST /api/ack`` body read.
MAX_ACK_BYTES: Final = 4096
_MAX_ALARM_ID: Final = 200


class PublishAck(Protocol):
    """The bridge's :meth:`~streamproc.apps.dashboard.app.MqttBridge.publish_ack`."""

    async def __call__(
        self, bed: BedId, alarm_id: str, by: str, *, method: str | None = None
    ) -> tuple[str, dict[str, Any]]: ...


class Acknowledge:
    """The acknowledgement route: checks who, what and whether it is open; then publishes."""

    def __init__(self, state: DashboardState, guard: Guard, publish: PublishAck, root: str) -> None:
        self.state = state
        self.guard = guard
        self.publish = publish
        self.root = root

    async def post(self, request: Request) -> Response:
        """202 with the published topic and payload, or the error saying why not."""
        # who, from where: before the body is even read
        try:
            identity = self.guard.writer(request, "sign in to acknowledge")
        except AuthError as exc:
            return refused(exc, request)
        body = await read_json(request, MAX_ACK_BYTES)
        if isinstance(body, JSONResponse):
            return body
        if "by" in body:
            forged = AuthError(403, "the acknowledgement is by the signed-in user: no 'by'", "by")
            return refused(forged, request)
        target = self._target(body)
        if isinstance(target, JSONResponse):
            return target
        return await self._publish(*target, identity)

    def _target(self, body: dict[str, Any]) -> tuple[BedId, str] | JSONResponse:
        """The bed and alarm id the body names, or the 400 saying what is wrong."""
        for name in ("alarm_id", "unit", "bed"):
            if not isinstance(body.get(name), str):
                return error(400, f"{name} is required and must be a string", name)
        alarm_id: str = body["alarm_id"]
        if not (0 < len(alarm_id) <= _MAX_ALARM_ID and printable(alarm_id)):
            return error(
                400, f"alarm_id must be 1 to {_MAX_ALARM_ID} printable characters", "alarm_id"
            )
        try:
            bed = BedId(body["unit"], body["bed"])
            inbound_topic(self.root, bed, "ack")
        except (InvalidMessageError, TopicError) as exc:
            field = exc.field or "unit"
            return error(400, f"{field} must match [A-Za-z0-9_-]{{1,64}}", field)
        return bed, alarm_id

    async def _publish(self, bed: BedId, alarm_id: str, identity: Identity) -> Response:
        """Publish the acknowledgement of an open alarm: 202, or 503/409 saying why not."""
        if not self.state.connected:
            return error(503, "the dashboard is not connected to the broker", None)
        if self.state.open_alarm(alarm_id, bed) is None:
            return error(409, "no open alarm with this alarm_id on this bed", "alarm_id")
        try:
            topic, payload = await self.publish(
                bed, alarm_id, identity.name, method=identity.method
            )
        except NotConnectedError as exc:
            return error(503, str(exc), None)
        return JSONResponse({"ok": True, "topic": topic, "payload": payload}, status_code=202)
