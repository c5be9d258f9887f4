"""streamproc.apps."""
