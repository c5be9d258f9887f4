"""streamproc.apps.evaluation."""
