"""Cold start: process start to data taken, with numba's cache empty and complete.

    python benchmarks/bench_coldstart.py [--runs 3] [--only help,first,replay,service]
        [--python PATH]
    python benchmarks/bench_coldstart.py --only container --image streamproc [--runs 3]

Each figure is the median of ``--runs`` runs (wall time; the CPU time of the
process beside it where it is one process):

- ``help``: ``python -m streamproc --help`` (and ``python -c pass``, the floor);
- ``first``: a process that starts as ``replay`` does, to its first ``abp``
  chunk taken: its CPU time then (the interpreter's start included);
- ``replay``: ``python -m streamproc replay`` of the 60/40 scenario (4 min of
  data), cold (a new, empty ``NUMBA_CACHE_DIR`` per run: a fresh install) and
  warm (a complete cache; also with ``NUMBA_CPU_NAME=generic``, as the Docker
  image builds and runs it);
- ``service``: ``python -m streamproc run`` against its own Mosquitto on a free
  port: seconds to ``/healthz`` 200 and to the first ``abp`` chunk processed
  (``streamproc_processing_latency_seconds_count`` >= 1), while a gateway sends
  one 1-s chunk every 0.1 s from the start; cold and warm as above;
- ``container``: the same for a new container of the shipped image (``docker run``,
  host network; build it first: ``docker build -t streamproc .``), timed from
  ``docker run``; its numba cache is the one the image built.

A cold run leaves its compiling child process behind (by design: it fills the
cache for the next start); this script makes itself their subreaper (Linux) and
ends each such child by its pid after the run, so runs do not overlap. Timing
figures go to benchmarks/README.md ("Cold start"), never into tests.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))  # for tests.system (the Mosquitto and service launchers)

from simulators.scenario import load_scenario, render, scenario_dir, to_jsonl  # noqa: E402
from tests.system.broker import MosquittoBroker, free_port  # noqa: E402
from tests.system.service_helpers import ServiceProcess  # noqa: E402

_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Orphaned grandchildren (the compiling children) become our children (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


#: Our children that are not orphans to end (the broker).
_KEEP: set[int] = set()


def _end_orphans() -> None:
    """End the processes re-parented to us (our runs' compiling children), by pid."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        pid = int(entry.name)
        if ppid == me and pid not in _KEEP:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _env(cache: Path | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NUMBA_CPU_NAME", None)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    env.update(extra)
    return env


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall and CPU (user + sys) seconds of one command, and its stderr."""
    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.run(cmd, env=env, capture_output=True, check=True)  # noqa: S603
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, proc.stderr


def _warm_cache(python: str, cache: Path, **extra: str) -> None:
    subprocess.run(  # noqa: S603
        [python, "-m", "streamproc.shell.warm"],
        env=_env(cache, **extra),
        stdout=subprocess.DEVNULL,
        check=True,
    )


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


def bench_help(python: str, runs: int) -> None:
    for label, cmd in (
        ("python -c pass", [python, "-c", "pass"]),
        ("streamproc --help", [python, "-m", "streamproc", "--help"]),
    ):
        walls, cpus = [], []
        for _ in range(runs):
            wall, cpu, _err = _timed(cmd, _env(None))
            walls.append(wall)
            cpus.append(cpu)
        print(f"{label:<34} wall {_median(walls)}; CPU {statistics.median(cpus):.2f} s")


def bench_replay(python: str, runs: int, tmp: Path, warm: Path, generic: Path) -> None:
    rec = tmp / "ne_60_40.jsonl"
    rec.write_bytes(to_jsonl(render(load_scenario(scenario_dir() / "ne_60_40.toml"))))
    cmd = [python, "-m", "streamproc", "replay", str(rec)]
    cases: list[tuple[str, Path | None, dict[str, str]]] = [
        ("replay, cold (empty cache)", None, {}),
        ("replay, warm (complete cache)", warm, {}),
        ("replay, warm, NUMBA_CPU_NAME=generic", generic, {"NUMBA_CPU_NAME": "generic"}),
    ]
    for label, cache, extra in cases:
        walls, cpus, modes = [], [], set()
        for i in range(runs):
            run_cache = cache if cache is not None else tmp / f"cold-replay-{i}"
            wall, cpu, err = _timed(cmd, _env(run_cache, **extra))
            _end_orphans()
            walls.append(wall)
            cpus.append(cpu)
            modes.add("interpreted" if b"interpreted loops" in err else "compiled")
        print(
            f"{label:<34} wall {_median(walls)}; CPU {statistics.median(cpus):.2f} s; "
            f"loops at start: {'/'.join(sorted(modes))}"
        )


#: In the timed process: seconds (CPU of the process, wall) from its start to the
#: first ``abp`` chunk taken, through ``streamproc replay``'s own path.
_FIRST_CHUNK = """
import json, sys, time
from streamproc.shell import warm
from streamproc.shell.config import load_config
from streamproc.apps.replay import Replayer
kernels = warm.start()
lines = open(sys.argv[1], "rb").read().splitlines()
Replayer(load_config(environ={}), lambda line: None).feed_lines(lines[:3])
print(json.dumps({"cpu": time.process_time(), "mode": kernels.mode}))
if kernels.proc is not None:
    kernels.proc.kill()
    kernels.proc.wait()
"""


def bench_first_chunk(python: str, runs: int, tmp: Path, warm: Path, generic: Path) -> None:
    rec = tmp / "ne_60_40.jsonl"
    rec.write_bytes(to_jsonl(render(load_scenario(scenario_dir() / "ne_60_40.toml"))))
    cases: list[tuple[str, Path | None, dict[str, str]]] = [
        ("first chunk, cold (empty cache)", None, {}),
        ("first chunk, warm (complete cache)", warm, {}),
        ("first chunk, warm, generic", generic, {"NUMBA_CPU_NAME": "generic"}),
    ]
    for label, cache, extra in cases:
        walls, cpus, modes = [], [], set()
        for i in range(runs):
            run_cache = cache if cache is not None else tmp / f"cold-first-{i}"
            t0 = time.perf_counter()
            proc = subprocess.run(  # noqa: S603
                [python, "-c", _FIRST_CHUNK, str(rec)],
                env=_env(run_cache, **extra),
                capture_output=True,
                check=True,
            )
            wall = time.perf_counter() - t0
            _end_orphans()
            got = json.loads(proc.stdout)
            walls.append(wall)
            cpus.append(got["cpu"])
            modes.add(got["mode"])
        print(
            f"{label:<34} wall {_median(walls)} (incl. exit); CPU to the chunk "
            f"{statistics.median(cpus):.2f} s; loops: {'/'.join(sorted(modes))}"
        )


def _abp(t0: float) -> bytes:
    samples = [80.0 + 40.0 * max(0.0, ((i % 100) / 100.0) - 0.7) for i in range(125)]
    return json.dumps({"t0": t0, "fs": 125.0, "samples": samples}).encode()


@contextlib.contextmanager
def _gateway(broker: MosquittoBroker, name: str) -> Iterator[None]:
    """A gateway sending one 1-s ``abp`` chunk every 0.1 s (QoS 1) while the block runs."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    stop = threading.Event()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    pub.connect(broker.host, broker.port)
    pub.loop_start()

    def send() -> None:
        t = time.time() - 5.0
        while not stop.is_set():
            pub.publish("icu/ward1/bed1/abp", _abp(t), qos=1)
            t += 1.0
            stop.wait(0.1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join()
        pub.loop_stop()
        pub.disconnect()


def _watch(port: int, pid: int, t_start: float) -> tuple[float, float, float, float]:
    """Seconds from ``t_start`` to /healthz 200 and to a chunk processed on ``port`` (NaN:
    not within 120 s), and the CPU seconds process ``pid`` had used at each."""
    healthy = first = cpu_healthy = cpu_first = math.nan
    deadline = t_start + 120.0
    while time.perf_counter() < deadline and (math.isnan(healthy) or math.isnan(first)):
        now = time.perf_counter() - t_start
        if math.isnan(healthy) and _get(port, "/healthz") is not None:
            healthy, cpu_healthy = now, _cpu(pid)
        if math.isnan(first) and _processed(_get(port, "/metrics") or ""):
            first, cpu_first = now, _cpu(pid)
        time.sleep(0.02)
    return healthy, first, cpu_healthy, cpu_first


def _service_once(
    python: str, broker: MosquittoBroker, workdir: Path, env: dict[str, str]
) -> tuple[float, float, float, float]:
    """Seconds from spawning ``streamproc run`` to /healthz 200 and to a chunk processed
    (wall), and the CPU seconds the service had used at each."""
    # the deployed defaults: instance streamproc-1 and a 1-s tick (ServiceProcess's own are
    # a test's); the audit database is ServiceProcess's, in workdir
    env = {"STREAMPROC_TICK_S": "1.0", **env}
    env.pop("STREAMPROC_AUDIT_DB", None)
    svc = ServiceProcess(broker, workdir, env=env, instance="streamproc-1", python=python)
    with _gateway(broker, f"gw-{svc.metrics_port}"):
        t_start = time.perf_counter()
        proc = svc.start(wait=False).proc
        if proc is None:  # pragma: no cover - start() always spawns the process
            raise RuntimeError("streamproc run was not started")
        try:
            return _watch(svc.metrics_port, proc.pid, t_start)
        finally:
            svc.terminate(timeout=20)
            _end_orphans()


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(port: int, path: str) -> str | None:
    """The body of a 200 answer from the service's HTTP port, else None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
            return str(resp.read().decode()) if resp.status == 200 else None
    except OSError:
        return None


def _processed(metrics: str) -> bool:
    """Whether /metrics says a message has been processed."""
    for line in metrics.splitlines():
        if line.startswith("streamproc_processing_latency_seconds_count"):
            return float(line.split()[-1]) >= 1
    return False


def bench_service(python: str, runs: int, tmp: Path, warm: Path, generic: Path) -> None:
    cases: list[tuple[str, Path | None, dict[str, str]]] = [
        ("service, cold (empty cache)", None, {}),
        ("service, warm (complete cache)", warm, {}),
        ("service, warm, generic (the image)", generic, {"NUMBA_CPU_NAME": "generic"}),
    ]
    with MosquittoBroker() as broker:
        if broker.pid is not None:
            _KEEP.add(broker.pid)
        for label, cache, extra in cases:
            healthy, first, cpu_h, cpu_f = [], [], [], []
            for i in range(runs):
                run_cache = cache if cache is not None else tmp / f"cold-service-{i}"
                workdir = Path(tempfile.mkdtemp(dir=tmp))
                h, f, ch, cf = _service_once(python, broker, workdir, _env(run_cache, **extra))
                healthy.append(h)
                first.append(f)
                cpu_h.append(ch)
                cpu_f.append(cf)
            print(
                f"{label:<34} /healthz 200 {_median(healthy)}; "
                f"service CPU then {statistics.median(cpu_h):.2f} s"
            )
            print(
                f"{'':<34} first chunk   {_median(first)}; "
                f"service CPU then {statistics.median(cpu_f):.2f} s"
            )


def _container_once(image: str, broker: MosquittoBroker) -> tuple[float, float, float, float]:
    """As :func:`_service_once`, for a new container of ``image`` (``docker run``, host
    network): seconds from ``docker run`` to /healthz 200 and to a chunk processed, and the
    CPU seconds the container's service had used then."""
    port = free_port()
    name = f"streamproc-coldstart-{port}"
    cmd = [
        "docker", "run", "--rm", "--detach", "--network", "host", "--name", name,
        "-e", "STREAMPROC_TICK_S=1.0",
        image, "run", "--broker", f"mqtt://{broker.host}:{broker.port}",
        "--metrics-port", str(port),
    ]  # fmt: skip
    with _gateway(broker, f"gw-{port}"):
        t_start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our own argv
        try:
            pid_text = subprocess.run(  # noqa: S603
                ["docker", "inspect", "--format", "{{.State.Pid}}", name],  # noqa: S607
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            return _watch(port, int(pid_text or 0), t_start)
        finally:
            subprocess.run(  # noqa: S603
                ["docker", "rm", "--force", name],  # noqa: S607
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


def bench_container(image: str, runs: int) -> None:
    """New containers of the shipped image (its numba cache built at image build)."""
    healthy, first, cpu_h, cpu_f = [], [], [], []
    with MosquittoBroker() as broker:
        if broker.pid is not None:
            _KEEP.add(broker.pid)
        for _ in range(runs):
            h, f, ch, cf = _container_once(image, broker)
            healthy.append(h)
            first.append(f)
            cpu_h.append(ch)
            cpu_f.append(cf)
    label = f"new container of {image}"
    print(f"{label:<34} /healthz 200 {_median(healthy)}; service CPU then {_median(cpu_h)}")
    print(f"{'':<34} first chunk   {_median(first)}; service CPU then {_median(cpu_f)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="help,first,replay,service")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to time")
    parser.add_argument(
        "--image",
        default="streamproc",
        help="the image of --only container (docker build -t streamproc .)",
    )
    parser.add_argument(
        "--caches", help="keep the complete caches here (reused by the next run) [temporary]"
    )
    args = parser.parse_args()
    _become_subreaper()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="coldstart-") as name:
        tmp = Path(name)
        caches = Path(args.caches) if args.caches else tmp
        warm, generic = caches / "warm-cache", caches / "generic-cache"
        if only & {"first", "replay", "service"}:  # (compiles once, loads if complete)
            _warm_cache(args.python, warm)
            _warm_cache(args.python, generic, NUMBA_CPU_NAME="generic")
        if "help" in only:
            bench_help(args.python, args.runs)
        if "first" in only:
            bench_first_chunk(args.python, args.runs, tmp, warm, generic)
        if "replay" in only:
            bench_replay(args.python, args.runs, tmp, warm, generic)
        if "service" in only:
            bench_service(args.python, args.runs, tmp, warm, generic)
        if "container" in only:
            bench_container(args.image, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
