"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.broker import MosquittoBroker, find_mosquitto, shipped_broker

# -- a real Mosquitto (tests/system/broker.py) -----------------------------------------


@pytest.fixture(scope="session")
def mosquitto_bin() -> Path:
    """The ``mosquitto`` executable; the broker tests are skipped only if it is absent."""
    found = find_mosquitto()
    if found is None:
        pytest.skip(
            "mosquitto binary not found (not on PATH, not in /usr/sbin, MOSQUITTO_BIN unset): "
            "install mosquitto to run the broker tests (CI does)"
        )
    return found


@pytest.fixture
def broker(mosquitto_bin: Path, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto on a free port of 127.0.0.1, always stopped (or killed) at teardown."""
    instance = MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path / "mosquitto")
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


@pytest.fixture
def secure_broker(mosquitto_bin: Path, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with the shipped config, password file and ACL (and throwaway certificates)."""
    instance = shipped_broker(tmp_path, binary=mosquitto_bin)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()
