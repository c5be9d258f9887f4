"""``streamproc demo``: a small ward, a broker, the service and a live view, in one command.

With no ``--broker``, a private broker is started on a free port of
127.0.0.1: the system's ``mosquitto`` when it is installed, otherwise amqtt
in-process (MQTT 3.1.1, anonymous, bound to 127.0.0.1 only). The simulator
publishes six beds, accelerated; the service (the same code as ``streamproc
run``) decides; the view shows what a subscriber reads on the alarm topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import aiomqtt
import msgspec

from streamproc.core.protocol.escalation import DISCLAIMER
from streamproc.shell.config import StreamprocConfig, load_config
from streamproc.shell.logs import configure_logging
from streamproc.shell.service import Service
from streamproc.wire.topics import TopicError, alarms_filter, parse_alarm_topic, parse_inbound

__all__ = ["DEMO_WARD", "DemoBroker", "run_demo"]

#: The demo ward: (scenario file, bed id). The 60/40 patient on NE comes first.
DEMO_WARD: Final = (
    ("ne_60_40", "bed03"),
    ("ne_60_40_vasopressin_response", "bed04"),
    ("profile_trauma", "bed05"),
    ("artifacts", "bed06"),
    ("stable", "bed07"),
    ("advisory_dopamine", "bed08"),
)
DEMO_UNIT: Final = "demo"
#: The bundled scenario files (``config/scenarios`` of this checkout).
SCENARIOS: Final = Path(__file__).resolve().parents[2] / "config" / "scenarios"
_PRIORITY_STYLE: Final = {"high": "bold white on red", "medium": "black on yellow", "low": "cyan"}
_PRIORITY_MARK: Final = {"high": "!!!", "medium": "!!", "low": "!"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """The system's mosquitto binary, if installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()),
        None,
    )


def _port_or_free(port: int) -> int:
    """``port`` when it can be bound on 127.0.0.1, else 0 (any free port)."""
    if port == 0:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


class DemoBroker:
    """A private broker for the demo: the system's mosquitto, or amqtt in-process."""

    def __init__(self, kind: str = "auto") -> None:
        if kind not in ("auto", "mosquitto", "amqtt"):
            raise ValueError(f"broker kind must be auto, mosquitto or amqtt, got {kind!r}")
        binary = find_mosquitto() if kind in ("auto", "mosquitto") else None
        if kind == "mosquitto" and binary is None:
            raise RuntimeError("mosquitto is not installed; use --embedded amqtt")
        self.kind = "mosquitto" if binary else "amqtt"
        self.binary = binary
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._amqtt: Any = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def mqtt_version(self) -> int:
        return 5 if self.kind == "mosquitto" else 4  # amqtt speaks MQTT 3.1.1

    async def start(self) -> None:
        if self.kind == "mosquitto":
            if self.binary is None:  # pragma: no cover - kind is mosquitto only with a binary
                raise RuntimeError("no mosquitto binary")
            self._dir = tempfile.TemporaryDirectory(prefix="streamproc-demo-")
            conf = Path(self._dir.name) / "mosquitto.conf"
            lines = [
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                "persistence false",
                "set_tcp_nodelay true",
                "log_dest none",
            ]
            conf.write_text("\n".join(lines) + "\n")
            self._proc = subprocess.Popen(  # noqa: S603 - the system's mosquitto, our config
                [self.binary, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            from amqtt.broker import Broker  # noqa: PLC0415 - only when no mosquitto

            logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # its chatter is not ours

            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
            self._amqtt = Broker(config)
            await self._amqtt.start()  # listening once it returns
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"demo broker ({self.kind}) did not start on port {self.port}")

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
        if self._amqtt is not None:
            await self._amqtt.shutdown()
        if self._dir is not None:
            self._dir.cleanup()


@dataclass(slots=True)
class WardView:
    """What the demo shows: each bed's latest alarm states (as published) and MAP."""

    beds: list[tuple[str, str, str]]  # (bed, scenario, description)
    alarms: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    sim_time: float = 0.0
    done: bool = False

    def on_alarm(self, payload: dict[str, Any], wall: float) -> None:
        key = (str(payload.get("bed")), str(payload.get("kind")))
        self.alarms[key] = payload
        self.first_seen.setdefault(str(payload.get("alarm_id")), wall)

    def open_alarms(self, bed: str) -> list[dict[str, Any]]:
        rank = {"high": 0, "medium": 1, "low": 2}
        found = [p for (b, _), p in self.alarms.items() if b == bed and p["state"] != "cleared"]
        return sorted(found, key=lambda p: rank.get(p["priority"], 3))


def _line(payload: dict[str, Any]) -> str:
    """One alarm as a plain text line (for logs and non-terminal output)."""
    text = (
        f"[{payload['priority'].upper():6}] {payload['unit']}/{payload['bed']} "
        f"{payload['kind']} {payload['state']}"
    )
    if payload["kind"] == "hypotension":
        text += f" {payload['metric'].upper()} {payload['value']} (target {payload['target']})"
        if payload["state"] != "cleared":
            text += f" -> {payload['recommendation']}"
    elif payload.get("reason") and payload["state"] != "cleared":
        text += f": {payload['reason']}"
    return text


def _render(view: WardView, service: Service, speed: float, broker: str) -> Any:
    from rich.console import Group  # noqa: PLC0415 - rich only for the terminal view
    from rich.panel import Panel  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    status = {m.bed.bed: m.status() for m in service.engine.beds()}
    table = Table(expand=True, title=f"streamproc demo: ward '{DEMO_UNIT}' ({broker}, x{speed:g})")
    table.add_column("bed", no_wrap=True)
    table.add_column("scenario")
    table.add_column("MAP", justify="right")
    table.add_column("SBP/DBP", justify="right")
    table.add_column("target", justify="right")
    table.add_column("alarms")
    advice = []
    for bed, scenario, _ in view.beds:
        st = status.get(bed)
        mp = f"{st.map:.0f}" if st and st.map is not None else "-"
        bp = f"{st.sbp:.0f}/{st.dbp:.0f}" if st and st.sbp and st.dbp else "-"
        target = f"{st.metric.upper()} {st.target:.0f}" if st else "-"
        cell = Text()
        for p in view.open_alarms(bed):
            mark = _PRIORITY_MARK.get(p["priority"], "")
            cell.append(f"{mark} {p['kind']} ({p['state']}) ", style=_PRIORITY_STYLE[p["priority"]])
            if p["kind"] == "hypotension":
                advice.append(
                    Text(f"{bed}: {p['recommendation']}", style=_PRIORITY_STYLE[p["priority"]])
                )
        table.add_row(bed, scenario, mp, bp, target, cell if cell else Text("ok", style="green"))
    footer = Text(
        f"simulated {view.sim_time:5.0f} s, {view.sent} messages sent"
        + ("  (finished)" if view.done else "")
        + f"\n{DISCLAIMER}  Ctrl-C to stop.",
        style="dim",
    )
    parts: list[Any] = [table]
    if advice:
        parts.append(Panel(Group(*advice), title="recommended next step"))
    parts.append(footer)
    return Group(*parts)


async def _watch(
    url: str,
    root: str,
    version: int,
    view: WardView,
    *,
    emit: Callable[[str], None] | None,
    subscribed: asyncio.Event | None = None,
) -> None:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    proto = aiomqtt.ProtocolVersion.V5 if version == 5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(host, int(port), protocol=proto) as client:
        await client.subscribe(alarms_filter(root, DEMO_UNIT), qos=1)
        if subscribed is not None:
            subscribed.set()
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray) or not payload:
                continue
            try:
                parse_alarm_topic(str(message.topic), root)
            except TopicError:
                continue  # amqtt may deliver other retained topics to a wildcard
            data = msgspec.json.decode(payload)
            if not isinstance(data, dict) or "priority" not in data:
                continue
            view.on_alarm(data, time.monotonic())
            if emit is not None:
                emit(_line(data))


async def _simulate(
    url: str,
    version: int,
    speed: float,
    view: WardView,
    lines: list[tuple[float, dict[str, Any]]],
    *,
    root: str,
) -> None:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    proto = aiomqtt.ProtocolVersion.V5 if version == 5 else aiomqtt.ProtocolVersion.V311
    enc = msgspec.json.Encoder()
    async with aiomqtt.Client(host, int(port), protocol=proto) as client:
        start = time.monotonic()
        for t, line in lines:
            due = start + t / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = parse_inbound(line["topic"], root).kind
            await client.publish(
                line["topic"],
                enc.encode(line["payload"]),
                qos=1,
                retain=kind in ("patient", "infusion"),
            )
            view.sent += 1
            view.sim_time = t
    view.done = True


def build_ward(
    t0: float, root: str = "icu"
) -> tuple[list[tuple[str, str, str]], list[tuple[float, dict[str, Any]]]]:
    """The demo's beds and their recording lines, timed in scenario seconds.

    The waveforms are the simulator's, and ``simulators/`` depends on streamproc,
    never the reverse: the ward is rendered by the simulator as its own process
    (``python -m simulators.scenario --timed``); the demo publishes the lines.
    """
    files = [SCENARIOS / f"{name}.toml" for name, _ in DEMO_WARD]
    argv = [sys.executable, "-m", "simulators.scenario", *map(str, files), "--timed"]
    argv += ["--unit", DEMO_UNIT, "--t0", repr(t0), "--root", root]
    for _, bed in DEMO_WARD:
        argv += ["--bed", bed]
    done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603 - our simulator
    if done.returncode != 0:
        raise RuntimeError(f"the simulator could not render the demo ward: {done.stderr!r}")
    decoder = msgspec.json.Decoder(tuple[float, dict[str, Any]])
    lines = [decoder.decode(raw) for raw in done.stdout.splitlines()]
    beds = [
        (bed, name, _description(path)) for (name, bed), path in zip(DEMO_WARD, files, strict=True)
    ]
    return beds, lines


def _description(path: Path) -> str:
    with path.open("rb") as fh:
        return str(tomllib.load(fh).get("description", ""))


async def _bridge_subscribed(page: str) -> None:
    """Return once the dashboard's MQTT bridge has subscribed (its ``/healthz`` is 200)."""
    where = urllib.parse.urlsplit(page)
    request = f"GET /healthz HTTP/1.1\r\nHost: {where.netloc}\r\nConnection: close\r\n\r\n"
    while True:
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        writer.write(request.encode())
        status = await reader.readline()
        writer.close()
        await writer.wait_closed()
        if status.split()[1:2] == [b"200"]:
            return
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _broker(url: str | None, kind: str) -> AsyncIterator[tuple[str, int, str]]:
    if url:
        yield url, 5, "external broker"
        return
    broker = DemoBroker(kind)
    await broker.start()
    try:
        yield broker.url, broker.mqtt_version, f"private {broker.kind} on 127.0.0.1:{broker.port}"
    finally:
        await broker.stop()


async def run_demo(
    *,
    broker_url: str | None = None,
    embedded: str = "auto",
    speed: float = 10.0,
    live: bool | None = None,
    linger_s: float = 5.0,
    out: TextIO | None = None,
    dashboard_port: int | None = 8080,
    handle_signals: bool = False,
) -> int:
    """Run the demo until the ward's scenarios end (plus ``linger_s``), Ctrl-C or SIGTERM.

    ``dashboard_port``: serve the nursing-station dashboard there (0: a free
    port; ``None``: no dashboard). With ``handle_signals``, SIGINT/SIGTERM end
    the demo cleanly (service offline, private broker stopped).
    """
    out = out or sys.stdout
    live = out.isatty() if live is None else live
    configure_logging(level="warning", stream=sys.stderr)
    finished = asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, finished.set)
    async with _broker(broker_url, embedded) as (url, version, described):
        tmp = tempfile.TemporaryDirectory(prefix="streamproc-demo-")
        overrides: dict[str, object] = {
            "service.broker": url,
            "service.mqtt_version": version,
            "service.instance": "demo",
            "service.audit_db": str(Path(tmp.name) / "audit.sqlite3"),
            "service.tick_s": 0.5,
        }
        base = load_config(environ={}, overrides=overrides)
        t0 = time.time()
        beds, lines = build_ward(t0, base.service.root)
        # accelerated, the ward's data runs ahead of the clock (by up to its whole
        # span): the clock-skew guard must not refuse the demo's own last minutes
        span = max((t for t, _ in lines), default=0.0)
        overrides["service.max_future_s"] = base.service.max_future_s + span
        config: StreamprocConfig = load_config(environ={}, overrides=overrides)
        service = Service(config)
        root = config.service.root
        view = WardView(beds)

        def emit(text: str) -> None:
            print(text, file=out, flush=True)

        print(
            f"streamproc demo: {len(beds)} beds on {described}, speed x{speed:g}",
            file=out,
            flush=True,
        )
        print(DISCLAIMER, file=out, flush=True)
        print(
            f"watch it: mosquitto_sub -L '{url}/{root}/{DEMO_UNIT}/+/alarms/#' -v",
            file=out,
            flush=True,
        )
        from streamproc.apps.dashboard import serve_dashboard  # noqa: PLC0415 - the web stack

        dash_stop = asyncio.Event()
        try:
            # the clients connect one after another, each once the one before has subscribed
            # (service, dashboard bridge, watcher, then the gateway): amqtt 0.12 walks its
            # subscription table across awaits while a client connects, and drops that
            # client if another one subscribes meanwhile
            async with asyncio.TaskGroup() as tg:
                svc_task = tg.create_task(service.run(), name="service")
                await asyncio.wait_for(service.connected.wait(), 30)
                if dashboard_port is not None:
                    dash_ready = asyncio.Event()

                    dash_page: list[str] = []

                    def ready(page: str) -> None:
                        emit(f"dashboard: {page}")
                        dash_page.append(page)
                        dash_ready.set()

                    tg.create_task(
                        serve_dashboard(
                            url,
                            port=dashboard_port,
                            mqtt_version=version,
                            stop=dash_stop,
                            on_ready=ready,
                            station="demo-station",
                        ),
                        name="dashboard",
                    )
                    await asyncio.wait_for(dash_ready.wait(), 30)
                    await asyncio.wait_for(_bridge_subscribed(dash_page[0]), 30)
                watching = asyncio.Event()
                watch = tg.create_task(
                    _watch(
                        url, root, version, view, emit=None if live else emit, subscribed=watching
                    ),
                    name="watch",
                )
                # the gateway connects once the watcher has subscribed: no alarm is missed
                await asyncio.wait_for(watching.wait(), 30)
                sim = tg.create_task(
                    _simulate(url, version, speed, view, lines, root=root), name="simulator"
                )

                async def until(done: Callable[[], bool], step: Callable[[], None]) -> None:
                    while not done() and not finished.is_set():
                        step()
                        await asyncio.sleep(0.25)

                end: list[float] = []

                def lingered() -> bool:
                    if not view.done:
                        return False
                    end.append(end[0] if end else time.monotonic() + linger_s)
                    return time.monotonic() >= end[0]

                if live:
                    from rich.console import Console  # noqa: PLC0415
                    from rich.live import Live  # noqa: PLC0415

                    console = Console(file=out)
                    with Live(console=console, refresh_per_second=4, screen=False) as lv:
                        await until(
                            lingered, lambda: lv.update(_render(view, service, speed, described))
                        )
                else:
                    await until(lingered, lambda: None)
                sim.cancel()
                watch.cancel()
                dash_stop.set()
                service.stop()
                await svc_task
        except* KeyboardInterrupt:  # pragma: no cover - interactive
            service.stop()
        finally:
            tmp.cleanup()
    opened = [p for p in view.alarms.values() if p["state"] != "cleared"]
    print(
        f"demo finished: {view.sent} messages, {len(view.alarms)} alarm topics, "
        f"{len(opened)} open at the end",
        file=out,
        flush=True,
    )
    return 0
