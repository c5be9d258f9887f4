"""The service reports how far behind the gateways it is (no broker needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamproc.shell.config import load_config
from streamproc.shell.service import Service
from streamproc.shell.service.clock import Clock
from streamproc.shell.service.ingress import LAG_WARN_S
from streamproc.shell.service.queues import Arrived

NOW = 1_800_000_000.0


def _chunk(t0: float) -> bytes:
    samples = np.round(80 + 20 * np.sin(np.arange(125) / 125 * 2 * np.pi), 2).tolist()
    return json.dumps({"t0": t0, "fs": 125.0, "samples": samples}).encode()


@pytest.fixture
def service() -> Service:
    cfg = load_config(
        environ={}, overrides={"service.broker": "mqtt://127.0.0.1:1", "service.audit_db": ""}
    )
    return Service(cfg, clock=Clock(wall=lambda: NOW))


class TestIngressLag:
    """ingress_lag_seconds = the processor's clock minus the newest waveform data processed."""

    def test_current_data_lags_little(self, service: Service) -> None:
        """Chunks that end just before now: lag about one chunk, no warning."""
        batch = [Arrived(f"icu/w1/b{i}/abp", _chunk(NOW - 1.5), NOW - 0.1) for i in range(3)]
        service.ingress.process_batch(batch)
        assert service.ingress.lag_s == pytest.approx(1.5 - 124 / 125, abs=1e-6)  # newest sample
        assert service.metrics.value("ingress_lag_seconds") == pytest.approx(service.ingress.lag_s)
        assert service.healthy()[1]["lag_s"] == pytest.approx(0.508, abs=1e-3)

    def test_backlog_shows_and_is_logged(self, service: Service) -> None:
        """Data 40 s old (a backlog in the broker): the gauge says 40 s and a warning names it."""
        old = NOW - 41.0
        batch = [Arrived("icu/w1/b1/abp", _chunk(old), NOW - 0.01)]
        service.ingress.process_batch(batch)
        assert service.ingress.lag_s > LAG_WARN_S
        assert service.metrics.value("ingress_lag_seconds") == pytest.approx(41.0 - 124 / 125)
        # the falling_behind warning went out, now
        assert service.ingress._lag_warned_at == NOW  # noqa: SLF001 - when it went out: no public view

    def test_only_waveform_counts(self, service: Service) -> None:
        """A batch without waveform data leaves the gauge where it was."""
        service.ingress.process_batch([Arrived("icu/w1/b1/abp", _chunk(NOW - 3.0), NOW)])
        before = service.ingress.lag_s
        body = json.dumps({"drug": "norepinephrine", "rate": 0.1, "unit": "mcg/kg/min", "ts": NOW})
        service.ingress.process_batch([Arrived("icu/w1/b1/infusion", body.encode(), NOW)])
        assert service.ingress.lag_s == before
