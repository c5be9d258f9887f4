"""Fault injection: a real Mosquitto and real ``streamproc run`` processes, broken on purpose."""
