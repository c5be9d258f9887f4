"""End to end in a real browser: broker, the real service, the dashboard, headless Chromium.

A real Mosquitto, ``streamproc run`` (the service) and ``streamproc dashboard``
(the web server) run as child processes; a gateway publishes the 60/40 patient
on norepinephrine (bed03) and a few other beds so the page looks like a ward.
Headless Chromium (the system's, driven by Playwright) opens the page; the
test waits for bed03's HIGH hypotension alarm with its vasopressin step, takes
a screenshot, acknowledges by mouse and by keyboard, and checks on the broker
that the service moved the alarm to ``acknowledged`` by the page's station.
Then it stops the service and expects the offline banner.

Skipped only when ``/usr/bin/chromium`` is absent (CI installs it: ``.ci/run``).
The screenshot goes to ``test-artifacts/dashboard.png``; with
``STREAMPROC_UPDATE_DOCS=1`` also to ``docs/dashboard.png``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from simulators.scenario import load_scenario, merge, scenario_dir
from tests.broker import MosquittoBroker, Subscriber
from tests.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
DOCS_SHOT = REPO / "docs" / "dashboard.png"
DOCS_MAX_BYTES = 300_000
#: The ward on screen: the headline patient first, then beds that show the other kinds.
WARD = ("ne_60_40", "stable", "advisory_dopamine", "profile_trauma", "artifacts")
STATION = "icu-desk-3"  # typed into the page's settings: acknowledgements carry it

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"{CHROMIUM} not found: install the Debian package 'chromium' to run the "
    "dashboard's browser test (CI does, through .ci/run)",
)


class DashboardProcess:
    """``python -m streamproc dashboard --port 0`` as a child process."""

    def __init__(self, broker: MosquittoBroker, workdir: Path, station: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = workdir / "dashboard.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "streamproc",
                "dashboard",
                "--broker",
                broker.url,
                "--port",
                "0",
                "--station",
                station,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "http://" not in line:
            self.close()
            raise RuntimeError(f"dashboard did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = line.split()[2]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def ward(
    broker: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str, DashboardProcess]]:
    """The service and the dashboard on the test broker; yields (service, page URL, dashboard)."""
    service = ServiceProcess(broker, tmp_path, instance="icu-proc-1").start()
    try:
        dashboard = DashboardProcess(broker, tmp_path, station="central-1")
        try:
            yield service, dashboard.url, dashboard
        finally:
            dashboard.close()
    finally:
        service.close()


def _publish_ward(broker: MosquittoBroker) -> None:
    now = time.time()
    scenarios = []
    for name in WARD:
        sc = load_scenario(scenario_dir() / f"{name}.toml")
        scenarios.append(dataclasses.replace(sc, t0=now - sc.duration_s))
    gateway = Publisher(broker)
    try:
        gateway.send(merge(*scenarios))
    finally:
        gateway.close()


def _screenshot(page: Page, name: str, *, docs: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), animations="disabled")
    if docs and os.environ.get("STREAMPROC_UPDATE_DOCS") == "1":
        data = path.read_bytes()
        if len(data) > DOCS_MAX_BYTES:
            from PIL import Image  # noqa: PLC0415 - only to shrink the docs copy

            with Image.open(path) as img:
                img.convert("RGB").quantize(colors=128).save(DOCS_SHOT, optimize=True)
        else:
            DOCS_SHOT.write_bytes(data)
        assert DOCS_SHOT.stat().st_size < DOCS_MAX_BYTES
    return path


class TestDashboardInBrowser:
    def test_alarm_ack_and_offline_end_to_end(
        self, broker: MosquittoBroker, ward: tuple[ServiceProcess, str, DashboardProcess]
    ) -> None:
        """The 60/40 patient on NE shows HIGH with vasopressin; ack by click and key; offline."""
        service, url, _ = ward
        with (
            Subscriber(broker, "icu/+/+/alarms/#", qos=1) as alarms,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1920, "height": 1080})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url)
                expect(page.locator("#conn")).to_contain_text("Live", timeout=10_000)
                disclaimer = page.get_by_text(
                    "Decision support only, not an order: confirm at the bedside."
                )
                expect(disclaimer).to_be_visible()

                # the station this browser acknowledges as: settings, kept in localStorage
                page.locator("#settings > summary").click()
                expect(page.locator("#station")).to_have_value("central-1")
                page.locator("#station").fill(STATION)
                page.get_by_role("button", name="Save").click()
                expect(page.locator("#settings-note")).to_contain_text(STATION)
                page.locator("#settings > summary").click()  # closed again

                _publish_ward(broker)

                bed03 = page.locator('[data-bed="ward7/bed03"]')
                hypo = bed03.locator('li.alarm[data-kind="hypotension"]')
                expect(hypo).to_have_attribute("data-priority", "high", timeout=30_000)
                expect(hypo).to_have_attribute("data-state", "active")
                expect(hypo).to_contain_text("vasopressin 0.03 U/min")
                expect(hypo.locator(".badge-word")).to_have_text("HIGH")  # not colour alone
                expect(hypo.locator(".mark")).to_have_text("!!!")
                expect(hypo).to_contain_text("Check first")
                expect(page.locator("#announcer")).to_contain_text(
                    "High priority alarm, ward7 bed03", timeout=5_000
                )
                spark = bed03.locator("svg.spark")
                assert "MAP trend" in (spark.get_attribute("aria-label") or "")
                advisory = page.locator(
                    '[data-bed="ward7/bed14"] li.alarm[data-kind="advisory_dopamine"]'
                )
                expect(advisory).to_have_attribute("data-state", "active", timeout=15_000)
                expect(page.locator('[data-bed="ward7/bed18"]')).to_contain_text("norepinephrine")
                page.wait_for_timeout(500)  # let the last summaries land
                shot = _screenshot(page, "dashboard.png", docs=True)
                assert shot.stat().st_size > 10_000

                # acknowledge: the advisory with the mouse, the hypotension with the keyboard
                advisory.get_by_role("button", name="Acknowledge").click()
                ack_button = hypo.get_by_role("button", name="Acknowledge")
                ack_button.focus()
                expect(ack_button).to_be_focused()
                page.keyboard.press("Enter")

                acked = alarm(
                    alarms.wait_for(
                        is_alarm("hypotension", state="acknowledged", acknowledged_by=STATION),
                        timeout=15,
                    )
                )
                assert acked["bed"] == "bed03"
                assert acked["priority"] == "high"
                alarms.wait_for(
                    is_alarm("advisory_dopamine", state="acknowledged", acknowledged_by=STATION),
                    timeout=15,
                )
                expect(hypo).to_have_attribute("data-state", "acknowledged", timeout=10_000)
                expect(hypo).to_contain_text(f"ACKNOWLEDGED by {STATION}")
                expect(hypo.get_by_role("button", name="Acknowledge")).to_have_count(0)
                expect(hypo).to_be_focused()  # the keyboard stays on the alarm
                _screenshot(page, "dashboard-acknowledged.png")

                # the processor stops: retained status offline -> banner
                expect(page.locator(".banner-offline")).to_have_count(0)
                assert service.terminate() == 0
                banner = page.locator(".banner-offline")
                expect(banner).to_contain_text("OFFLINE", timeout=15_000)
                expect(banner).to_contain_text("icu-proc-1")
                _screenshot(page, "dashboard-offline.png")
                assert errors == []
            finally:
                browser.close()

    def test_tablet_layout_and_feed_banners(
        self, broker: MosquittoBroker, ward: tuple[ServiceProcess, str, DashboardProcess]
    ) -> None:
        """On a tablet (820x1180): no sideways scroll; a stalled feed and a lost broker are flagged."""
        _, url, dashboard = ward
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 820, "height": 1180})
                page.goto(url)
                expect(page.locator("#conn")).to_contain_text("Live", timeout=10_000)
                expect(
                    page.get_by_text("Decision support only, not an order: confirm at the bedside.")
                ).to_be_visible()
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0
                expect(page.locator(".banner")).to_have_count(0)

                # the dashboard server hangs (sockets open, nothing sent): > 15 s -> stalled
                dashboard.proc.send_signal(signal.SIGSTOP)
                try:
                    expect(page.locator("#banner-feed")).to_contain_text(
                        "Live feed stalled", timeout=25_000
                    )
                finally:
                    dashboard.proc.send_signal(signal.SIGCONT)

                # the broker goes away: the bridge says so at once
                broker.stop()
                expect(page.locator("#banner-broker")).to_contain_text(
                    "disconnected from the MQTT broker", timeout=10_000
                )
                expect(page.locator("#conn")).to_contain_text("Broker: disconnected")
                _screenshot(page, "dashboard-tablet-broker-lost.png")
            finally:
                browser.close()
