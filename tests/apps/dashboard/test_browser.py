"""End to end in a real browser: broker, the real service, the dashboard, headless Chromium.

A real Mosquitto, ``streamproc run`` (the service) and ``streamproc dashboard``
(the web server) run as child processes; a gateway publishes the 60/40 patient
on norepinephrine (bed03) and a few other beds so the page looks like a ward.
Headless Chromium (the system's, driven by Playwright) opens the page; the
test signs in with a user name and password (a credentials file made with
``streamproc dashboard-user``), waits for bed03's HIGH hypotension alarm with
its vasopressin step, takes a screenshot, acknowledges by mouse and by
keyboard, and checks on the broker that the service moved the alarm to
``acknowledged`` by the signed-in user. A page of another origin that posts an
acknowledgement with the browser's cookies changes nothing. Then it stops the
service and expects the offline banner. The tablet test signs in with the
token address the server prints (the demo's way). The kinds test adds an alarm kind
to the server's table only (``streamproc/apps/dashboard/kinds.py``, in a dashboard run
in this process) and finds it named and grouped on the page.

Skipped only when ``/usr/bin/chromium`` is absent (CI installs it: ``.ci/run``).
The screenshot goes to ``test-artifacts/dashboard.png``; with
``STREAMPROC_UPDATE_DOCS=1`` also to ``docs/dashboard.png``.
"""

from __future__ import annotations

import dataclasses
import json
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
from streamproc.apps.dashboard import kinds
from streamproc.apps.dashboard.auth import COOKIE, add_user
from tests.apps.dashboard.test_app import DashboardServer, alarm_payload, put
from tests.system.broker import MosquittoBroker, Subscriber
from tests.system.service_helpers import Publisher, ServiceProcess, alarm, is_alarm

REPO = Path(__file__).resolve().parents[3]
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
USER = "nurse.ada"  # signs in on the page: acknowledgements carry it
PASSWORD = "ada-at-the-central-station"  # noqa: S105 - the test user's

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"{CHROMIUM} not found: install the Debian package 'chromium' to run the "
    "dashboard's browser test (CI does, through .ci/run)",
)


class DashboardProcess:
    """``python -m streamproc dashboard --port 0`` as a child process."""

    def __init__(
        self, broker: MosquittoBroker, workdir: Path, station: str, users: Path | None = None
    ) -> None:
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
                *(["--users", str(users)] if users is not None else []),
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
        #: the printed address (with ?token=... when token sign-in is on)
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
def token_ward(
    broker: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str, DashboardProcess]]:
    """As ``ward``, the dashboard signed in to by its printed token address."""
    service = ServiceProcess(broker, tmp_path, instance="icu-proc-1").start()
    try:
        dashboard = DashboardProcess(broker, tmp_path, station="central-1")
        try:
            assert "?token=" in dashboard.url
            yield service, dashboard.url, dashboard
        finally:
            dashboard.close()
    finally:
        service.close()


@pytest.fixture
def ward(
    broker: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str, DashboardProcess]]:
    """The service and the dashboard on the test broker; yields (service, page URL, dashboard)."""
    users = tmp_path / "dashboard-users"
    add_user(users, USER, PASSWORD)
    service = ServiceProcess(broker, tmp_path, instance="icu-proc-1").start()
    try:
        dashboard = DashboardProcess(broker, tmp_path, station="central-1", users=users)
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
        """Sign in; the 60/40 patient on NE shows HIGH with vasopressin; ack by click and
        key, by the signed-in user; a cross-origin page cannot ack; offline."""
        service, url, _ = ward
        with (
            Subscriber(broker, "icu/+/+/alarms/#", qos=1) as alarms,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                assert "?token=" not in url  # password sign-in only
                page.goto(url)
                disclaimer = page.get_by_text(
                    "Decision support only, not an order: confirm at the bedside."
                )
                expect(disclaimer).to_be_visible()

                # not signed in: no data, the sign-in form; a wrong password is said so
                expect(page.locator("#signin")).to_be_visible()
                expect(page.locator("#conn")).not_to_contain_text("Live")
                page.get_by_label("User name").fill(USER)
                page.get_by_label("Password").fill("not-the-password")
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("#signin-note")).to_contain_text("wrong user name or password")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("#signin")).to_be_hidden()
                expect(page.locator("#whoami")).to_have_text(f"Signed in as {USER}")
                expect(page.locator("#conn")).to_contain_text("Live", timeout=10_000)
                cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
                assert cookie["httpOnly"]
                assert cookie["sameSite"] == "Strict"

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
                        is_alarm("hypotension", state="acknowledged", acknowledged_by=USER),
                        timeout=15,
                    )
                )
                assert acked["bed"] == "bed03"
                assert acked["priority"] == "high"
                alarms.wait_for(
                    is_alarm("advisory_dopamine", state="acknowledged", acknowledged_by=USER),
                    timeout=15,
                )
                expect(hypo).to_have_attribute("data-state", "acknowledged", timeout=10_000)
                expect(hypo).to_contain_text(f"ACKNOWLEDGED by {USER}")
                expect(hypo.get_by_role("button", name="Acknowledge")).to_have_count(0)
                expect(hypo).to_be_focused()  # the keyboard stays on the alarm
                _screenshot(page, "dashboard-acknowledged.png")

                # a page of another origin (the service's health endpoint: another port,
                # the same site, so the browser does send the session cookie) posts an
                # acknowledgement of another open alarm: refused twice over (its Origin is
                # not the page's, and without a CORS preflight, which the server never
                # grants, it cannot send JSON); tests/apps/dashboard/test_auth.py checks each
                other = page.context.new_page()
                other.goto(f"http://127.0.0.1:{service.metrics_port}/healthz")
                open_alarm = next(
                    alarm(m)
                    for m in reversed(alarms.messages)
                    if alarm(m)["state"] == "active" and alarm(m)["bed"] != "bed03"
                )
                status = other.evaluate(
                    """async ([base, body]) => {
                        const r = await fetch(base + "api/ack", {
                            method: "POST", mode: "no-cors", credentials: "include",
                            headers: {"content-type": "text/plain"}, body });
                        return r.type; }""",
                    [
                        url,
                        json.dumps(
                            {
                                "alarm_id": open_alarm["alarm_id"],
                                "unit": open_alarm["unit"],
                                "bed": open_alarm["bed"],
                            }
                        ),
                    ],
                )
                assert status == "opaque"  # sent; the answer (403) is not the page's to read
                other.close()
                time.sleep(1.0)
                assert not [
                    m
                    for m in alarms.messages
                    if alarm(m)["alarm_id"] == open_alarm["alarm_id"]
                    and alarm(m)["state"] == "acknowledged"
                ]

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
        self, broker: MosquittoBroker, token_ward: tuple[ServiceProcess, str, DashboardProcess]
    ) -> None:
        """On a tablet (820x1180), signed in by the printed token address: no sideways
        scroll; a stalled feed and a lost broker are flagged."""
        _, url, dashboard = token_ward
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 820, "height": 1180})
                # the bare address (no token): no data, the hint to open the printed one
                page.goto(url.split("?", 1)[0])
                expect(page.locator("#signin-token")).to_be_visible()
                expect(page.locator("#signin-form")).to_be_hidden()  # no passwords here
                page.goto(url)
                assert "token" not in page.url  # the token left the address bar at once
                expect(page.locator("#conn")).to_contain_text("Live", timeout=10_000)
                expect(page.locator("#whoami")).to_have_text("Signed in as central-1")
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


class TestKindsFromTheServer:
    def test_a_new_kind_needs_no_javascript(
        self, broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A kind added to the server's table (kinds.py) and a label changed there show on
        the page as the server says (name, technical group, badge): the page's scripts keep
        no list of kinds of their own."""
        new = "abp_transducer_moved"
        labels = {new: "Transducer moved", "hypotension": "Hypotension (the server's words)"}
        monkeypatch.setattr(kinds, "LABELS", {**kinds.LABELS, **labels})
        monkeypatch.setattr(kinds, "GROUPS", {**kinds.GROUPS, new: "technical"})
        put(broker, f"icu/ward7/bed05/alarms/{new}", alarm_payload("ward7", "bed05", new))
        put(broker, "icu/ward7/bed03/alarms/hypotension", alarm_payload("ward7", "bed03"))
        server = DashboardServer(broker.url, station="central-1", sign_in=False).start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    page.goto(server.printed_url)
                    bed05 = page.locator('[data-bed="ward7/bed05"]')
                    moved = bed05.locator(f'.group-technical li.alarm[data-kind="{new}"]')
                    expect(moved.locator(".alarm-title")).to_have_text(
                        "Transducer moved", timeout=10_000
                    )
                    expect(moved.locator(".badge-word")).to_have_text("TECHNICAL")
                    hypo = page.locator(
                        '[data-bed="ward7/bed03"] li.alarm[data-kind="hypotension"]'
                    )
                    expect(hypo.locator(".alarm-title")).to_have_text(
                        "Hypotension (the server's words)"
                    )
                    expect(hypo.locator(".badge-word")).to_have_text("HIGH")
                    expect(page.locator("#strip-list")).to_contain_text("Transducer moved")
                    assert errors == []
                finally:
                    browser.close()
        finally:
            server.stop()
