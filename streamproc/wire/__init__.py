"""streamproc.wire."""
