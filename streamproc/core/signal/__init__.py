"""streamproc.core.signal."""
