"""A browser dashboard for the central station: beds, alarms, acknowledgements.

:func:`create_app` builds the Starlette application (an MQTT bridge, the
Server-Sent Events feed, the JSON API and the static page);
:func:`serve_dashboard` serves it with uvicorn until stopped. What the page
shows is decision support for clinicians, never orders.
"""

from __future__ import annotations

from streamproc.apps.dashboard.app import MqttBridge, bind_socket, create_app, serve_dashboard
from streamproc.apps.dashboard.events import EventHub
from streamproc.apps.dashboard.state import DashboardState

__all__ = [
    "DashboardState",
    "EventHub",
    "MqttBridge",
    "bind_socket",
    "create_app",
    "serve_dashboard",
]
