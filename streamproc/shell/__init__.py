"""streamproc.shell."""
