"""streamproc: real-time arterial-pressure stream processor (decision support, never orders)."""

__version__ = "0.1.0"
