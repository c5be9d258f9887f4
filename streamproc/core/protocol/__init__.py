"""streamproc.core.protocol."""
