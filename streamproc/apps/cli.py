"""The ``streamproc`` command line."""

from __future__ import annotations

# Light imports only: `streamproc --help`, `config` and `audit` take no numba, scipy
# or core loops (tests/shell/test_warm.py); each command imports what it runs.
import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from streamproc import __version__
from streamproc.shell.config import ConfigError, ServiceSettings, default_toml, load_config

if TYPE_CHECKING:
    from streamproc.apps.dashboard.auth import AuthConfig
    from streamproc.shell.warm import Kernels

__all__ = ["main"]

DISCLAIMER_LINE = (
    "streamproc alarms are decision support for clinicians, never orders: confirm at the bedside."
)


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    yield from fh


def _start_kernels(on_ready: Callable[[Kernels], None] | None = None) -> Kernels | None:
    """The compiled loops, or the interpreted ones while they compile (``STREAMPROC_JIT``).

    None (after a message) for an unknown ``STREAMPROC_JIT``.
    """
    from streamproc.shell.warm import JitModeError, start  # noqa: PLC0415 - numba only here

    try:
        return start(on_ready=on_ready)
    except JitModeError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return None


def _cmd_replay(args: argparse.Namespace) -> int:
    from streamproc.apps.replay import replay_lines  # noqa: PLC0415 - the core: replay only

    try:
        config = load_config(args.config, assignments=args.set)
    except ConfigError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 2
    kernels = _start_kernels()
    if kernels is None:
        return 2
    out = sys.stdout.buffer

    def emit(line: bytes) -> None:
        out.write(line)
        out.write(b"\n")

    try:
        if args.file == "-":
            summary = replay_lines(_lines(sys.stdin.buffer), config, emit)
        else:
            path = Path(args.file)
            if not path.is_file():
                print(f"streamproc: replay: no such file: {path}", file=sys.stderr)
                return 2
            with path.open("rb") as fh:
                summary = replay_lines(_lines(fh), config, emit)
        out.flush()
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    print(summary.render(), file=sys.stderr)
    if kernels.mode != "compiled":
        print(f"replay: {kernels.describe()}", file=sys.stderr)
    print(DISCLAIMER_LINE, file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - only the commands that run a loop need it

    import structlog  # noqa: PLC0415

    from streamproc.shell.logs import configure_logging  # noqa: PLC0415 - only the service needs it
    from streamproc.shell.service import run_service  # noqa: PLC0415 - keeps `replay` start-up light

    overrides: dict[str, object] = {}
    if args.broker:
        overrides["service.broker"] = args.broker
    if args.metrics_port is not None:
        overrides["service.metrics_port"] = args.metrics_port
    if args.metrics_host is not None:
        overrides["service.metrics_host"] = args.metrics_host
    if args.units:
        overrides["service.units"] = args.units
    if args.shard:
        overrides["service.shard"] = args.shard
    try:
        config = load_config(args.config, assignments=args.set, overrides=overrides)
        configure_logging(level=args.log_level)
        log = structlog.get_logger("streamproc.shell.warm")

        def ready(kernels: Kernels) -> None:
            log.info("kernels_compiled", error=kernels.error)

        kernels = _start_kernels(ready)
        if kernels is None:
            return 2
        if not kernels.compiled:
            log.info("kernels_interpreted", reason="numba cache incomplete: compiling aside")
        return asyncio.run(run_service(config))
    except ConfigError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in the service
        return 130


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from streamproc.apps.demo import run_demo  # noqa: PLC0415 - keeps other commands light
    from streamproc.shell.config import parse_broker_url  # noqa: PLC0415

    if args.broker:
        try:
            parse_broker_url(args.broker)
        except ConfigError as exc:
            print(f"streamproc: demo: {exc}", file=sys.stderr)
            return 2
    if _start_kernels() is None:
        return 2
    live = None if not args.no_live else False
    try:
        return asyncio.run(
            run_demo(
                broker_url=args.broker,
                embedded=args.embedded,
                speed=args.speed,
                live=live,
                linger_s=args.linger,
                handle_signals=True,
                dashboard_port=None if args.no_dashboard else args.dashboard_port,
            )
        )
    except KeyboardInterrupt:
        print("streamproc demo: stopped", file=sys.stderr)
        return 130


def _dashboard_auth(args: argparse.Namespace) -> AuthConfig:
    """The dashboard's AuthConfig from the options and STREAMPROC_DASHBOARD_* variables."""
    import secrets  # noqa: PLC0415

    from streamproc.apps.dashboard.auth import (  # noqa: PLC0415 - web stack only here
        DEFAULT_HOSTS,
        AuthConfig,
        parse_hosts,
    )

    users = args.users or os.environ.get("STREAMPROC_DASHBOARD_USERS") or None
    token = os.environ.get("STREAMPROC_DASHBOARD_TOKEN") or None
    if args.no_token:
        token = None
    elif token is None and users is None and args.proxy_header is None:
        # nothing else configured: a single-user token, printed in the page address
        token = secrets.token_urlsafe(24)
    hosts = parse_hosts(args.allowed_host)
    if not hosts:
        hosts = DEFAULT_HOSTS
        if args.host not in ("0.0.0.0", "::", *DEFAULT_HOSTS):  # noqa: S104 - compared, not bound
            hosts = (*hosts, args.host)
    return AuthConfig(
        users_file=Path(users) if users else None,
        token=token,
        token_identity=args.station,
        proxy_header=args.proxy_header,
        trusted_proxies=tuple(parse_hosts(args.trusted_proxy)),
        public_read=args.public_read,
        allowed_hosts=hosts,
        secure_cookies=args.secure_cookies,
        secret=os.environ.get("STREAMPROC_DASHBOARD_SECRET", ""),
        session_s=args.session_hours * 3600.0,
    )


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from streamproc.apps.dashboard import serve_dashboard  # noqa: PLC0415 - web stack only here
    from streamproc.shell.logs import configure_logging  # noqa: PLC0415

    def ready(url: str) -> None:
        print(f"streamproc dashboard: {url} (broker {args.broker}). {DISCLAIMER_LINE}", flush=True)

    try:
        auth = _dashboard_auth(args)
        configure_logging(level=args.log_level)
        asyncio.run(
            serve_dashboard(
                args.broker,
                host=args.host,
                port=args.port,
                root=args.root,
                station=args.station,
                mqtt_version=args.mqtt_version,
                username=args.username,
                password=os.environ.get("STREAMPROC_DASHBOARD_PASSWORD") or None,
                on_ready=ready,
                handle_signals=True,
                auth=auth,
                tls_ca=args.tls_ca,
            )
        )
    except ValueError as exc:  # ConfigError, CredentialsError, a bad root, station or option
        print(f"streamproc: dashboard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"streamproc: dashboard: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_dashboard_user(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from streamproc.apps.dashboard.auth import (  # noqa: PLC0415
        CredentialsError,
        add_user,
        remove_user,
    )

    path = Path(args.file)
    try:
        if args.delete:
            if not remove_user(path, args.name):
                print(
                    f"streamproc: dashboard-user: no user {args.name!r} in {path}", file=sys.stderr
                )
                return 1
            print(f"{path}: removed {args.name}")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                print("streamproc: dashboard-user: the passwords differ", file=sys.stderr)
                return 2
        new = add_user(path, args.name, password)
    except (CredentialsError, ValueError) as exc:
        print(f"streamproc: dashboard-user: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {'added' if new else 'changed the password of'} {args.name}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.check is not None:
        try:
            load_config(args.check, environ={})
        except ConfigError as exc:
            print(f"streamproc: {exc}", file=sys.stderr)
            return 2
        print(f"{args.check}: valid")
        return 0
    sys.stdout.write(default_toml())
    return 0


def _parse_since(text: str) -> float:
    """``--since``: epoch seconds, or an ISO-8601 time (UTC when it has no offset)."""
    try:
        value = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected epoch seconds or an ISO-8601 time, got {text!r}"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite time, got {text!r}")
    return value


def _parse_bed(text: str) -> tuple[str, str | None]:
    """``--bed``: ``UNIT/BED``, or ``UNIT`` for every bed of a unit."""
    from streamproc.core.protocol.messages import IDENT_RE  # noqa: PLC0415 - `audit --bed` only

    unit, _, bed = text.partition("/")
    for part in (unit, bed) if bed or "/" in text else (unit,):
        if not IDENT_RE.fullmatch(part):
            raise argparse.ArgumentTypeError(
                f"expected UNIT/BED (each [A-Za-z0-9_-]{{1,64}}), got {text!r}"
            )
    return unit, bed or None


def _cmd_audit(args: argparse.Namespace) -> int:
    from streamproc.shell.audit import AuditError, AuditLog, format_table, row_json  # noqa: PLC0415

    path = Path(args.db)
    if not path.is_file():
        print(f"streamproc: audit: no such file: {path}", file=sys.stderr)
        return 2
    unit, bed = args.bed if args.bed is not None else (None, None)
    try:
        with AuditLog(path, readonly=True) as log:
            rows = log.query(unit=unit, bed=bed, since=args.since, kind=args.kind, limit=args.limit)
    except AuditError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for row in rows:
            print(row_json(row))
    elif rows:
        print(format_table(rows))
    else:
        print(f"streamproc: audit: no matching transitions in {path}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from streamproc.apps.evaluation.command import run_command  # noqa: PLC0415 - keeps other commands light

    return run_command(args)


def build_parser(*, evaluate: bool = True) -> argparse.ArgumentParser:
    """The command line; ``evaluate=False`` leaves out ``evaluate``'s options (and imports)."""
    parser = argparse.ArgumentParser(
        prog="streamproc",
        description="Arterial-pressure stream processor: sustained hypotension on "
        "norepinephrine, as decision-support alarms. " + DISCLAIMER_LINE,
    )
    parser.add_argument("--version", action="version", version=f"streamproc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rp = sub.add_parser(
        "replay",
        help="run the engine over a recording (JSON Lines) and print the alarm messages",
        description="Replays a recording with the clock taken from the data. Alarm messages "
        "go to stdout as JSON Lines ({topic, payload}); a summary goes to stderr. Malformed "
        "lines are counted, never fatal.",
    )
    rp.add_argument("file", help="recording file, or - for standard input")
    rp.add_argument("--config", help="TOML settings file (defaults: the protocol's)")
    rp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set hypotension.hold_s=90 (repeatable)",
    )
    rp.set_defaults(func=_cmd_replay)

    rn = sub.add_parser(
        "run",
        help="the live service: consume a broker's inbound topics, publish alarm state",
        description="Subscribes to {root}/+/+/{abp,vitals,infusion,patient,labs,ack} and "
        "publishes each alarm transition to {root}/{unit}/{bed}/alarms/{kind} (QoS 1, "
        "retained). Settings: --config, then STREAMPROC_* variables, then the options here.",
    )
    rn.add_argument("--config", help="TOML settings file")
    rn.add_argument("--broker", help="mqtt://host:port or mqtts://host:port (STREAMPROC_BROKER)")
    rn.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    rn.add_argument(
        "--metrics-host",
        help="address /metrics and /healthz listen on (default 127.0.0.1, the loopback only; "
        "STREAMPROC_METRICS_HOST)",
    )
    rn.add_argument(
        "--units",
        help="comma-separated care units this instance serves (default all); the broker "
        "then delivers only these units (STREAMPROC_UNITS)",
    )
    rn.add_argument(
        "--shard",
        metavar="I/N",
        help="serve only the care units that shard I of N owns (rendezvous hash over unit "
        "ids; STREAMPROC_SHARD). With --units, the owned ones among them; without, every "
        "instance reads all units and drops the others. See docs/scaling.md",
    )
    rn.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable)",
    )
    rn.add_argument("--log-level", default="info", help="debug, info, warning or error")
    rn.set_defaults(func=_cmd_run)

    dm = sub.add_parser(
        "demo",
        help="a six-bed ward on a private broker with the service and a live view",
        description="Starts a private broker on a free port of 127.0.0.1 (the system's "
        "mosquitto, else amqtt in-process) unless --broker is given, the service, and the "
        "simulator with six beds (the 60/40 patient on norepinephrine first), accelerated, "
        "and shows the beds and their alarms until the scenarios end or Ctrl-C.",
    )
    dm.add_argument("--broker", help="use this broker instead of a private one")
    dm.add_argument(
        "--embedded",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="which private broker (default: mosquitto if installed, else amqtt)",
    )
    dm.add_argument("--speed", type=float, default=10.0, help="simulation speed (default 10x)")
    dm.add_argument("--linger", type=float, default=5.0, help="seconds to stay after the end")
    dm.add_argument(
        "--dashboard-port",
        type=int,
        default=8080,
        help="serve the nursing-station dashboard here (0: a free port; default 8080, or a "
        "free port when 8080 is taken)",
    )
    dm.add_argument("--no-dashboard", action="store_true", help="no web dashboard")
    dm.add_argument(
        "--no-live",
        action="store_true",
        help="print alarm lines instead of the live table (default when not a TTY)",
    )
    dm.set_defaults(func=_cmd_demo)

    db = sub.add_parser(
        "dashboard",
        help="the central-station web page: beds, alarms, acknowledgements (SSE over MQTT)",
        description="Serves a web dashboard that reads the retained alarm, summary and status "
        "topics from the broker and streams them to browsers (Server-Sent Events); its "
        "Acknowledge buttons publish {root}/{unit}/{bed}/ack. Password: "
        "STREAMPROC_DASHBOARD_PASSWORD. " + DISCLAIMER_LINE,
    )
    db.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    db.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0: any)")
    db.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    db.add_argument("--root", default="icu", help="topic root (default icu)")
    db.add_argument(
        "--station",
        default="station-1",
        help="the name a token sign-in acknowledges as (default station-1)",
    )
    db.add_argument(
        "--mqtt-version",
        type=int,
        choices=(4, 5),
        default=5,
        help="5 (MQTT 5, default) or 4 (MQTT 3.1.1, e.g. amqtt)",
    )
    db.add_argument("--username", help="broker user name (password: STREAMPROC_DASHBOARD_PASSWORD)")
    db.add_argument("--tls-ca", metavar="FILE", help="CA certificate of the broker (mqtts://)")
    sign_in = db.add_argument_group(
        "who may watch and acknowledge (docs/dashboard.md); with none of --users, "
        "--proxy-header or STREAMPROC_DASHBOARD_TOKEN, a random token is printed in the address"
    )
    sign_in.add_argument(
        "--users",
        metavar="FILE",
        help="credentials file (NAME:argon2 hash lines; `streamproc dashboard-user` adds "
        "users): password sign-in (STREAMPROC_DASHBOARD_USERS)",
    )
    sign_in.add_argument(
        "--no-token",
        action="store_true",
        help="no token sign-in, even without another method (STREAMPROC_DASHBOARD_TOKEN "
        "sets a fixed token)",
    )
    sign_in.add_argument(
        "--proxy-header",
        metavar="NAME",
        help="header naming the user, set by a single-sign-on proxy (e.g. X-Forwarded-User); "
        "needs --trusted-proxy",
    )
    sign_in.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDR",
        help="address or network the proxy header is believed from (repeatable)",
    )
    sign_in.add_argument(
        "--public-read",
        action="store_true",
        help="anyone who reaches the page may watch (never acknowledge); off by default",
    )
    sign_in.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="host name browsers use for this server (repeatable; default 127.0.0.1, "
        "localhost, ::1 and --host): any other Host header is refused (DNS rebinding)",
    )
    sign_in.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (served over https by a proxy in front)",
    )
    sign_in.add_argument(
        "--session-hours",
        type=float,
        default=12.0,
        help="how long a sign-in lasts (default 12 h); STREAMPROC_DASHBOARD_SECRET keeps "
        "sessions across restarts",
    )
    db.add_argument("--log-level", default="info", help="debug, info, warning or error")
    db.set_defaults(func=_cmd_dashboard)

    du = sub.add_parser(
        "dashboard-user",
        help="add a dashboard user (or change its password) in a credentials file",
        description="Hashes the password (argon2id) into FILE (created 0600 if missing), one "
        "NAME:HASH line per user. The password is asked twice on the terminal, or read from "
        "one line of standard input with --password-stdin. The dashboard rereads the file "
        "when it changes.",
    )
    du.add_argument("file", help="credentials file (streamproc dashboard --users FILE)")
    du.add_argument("name", help="the user name acknowledgements will carry")
    du.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    du.add_argument("--delete", action="store_true", help="remove the user instead")
    du.set_defaults(func=_cmd_dashboard_user)

    cf = sub.add_parser("config", help="print the default settings, or check a file")
    cf.add_argument("--check", metavar="FILE", help="validate a TOML settings file")
    cf.set_defaults(func=_cmd_config)

    au = sub.add_parser(
        "audit",
        help="print the recorded alarm transitions (the audit trail)",
        description="Reads the audit database (read-only) and prints its alarm transitions "
        "in the order they were recorded, as a table or as JSON Lines.",
    )
    au.add_argument(
        "--db",
        default=ServiceSettings().audit_db,
        metavar="FILE",
        help="audit database (default: %(default)s)",
    )
    au.add_argument(
        "--bed", type=_parse_bed, metavar="UNIT/BED", help="one bed (or UNIT: a whole unit)"
    )
    au.add_argument(
        "--since",
        type=_parse_since,
        metavar="T",
        help="transitions with data time at or after T: epoch seconds or ISO-8601 "
        "(UTC if no offset)",
    )
    au.add_argument("--kind", metavar="K", help="one alarm kind, e.g. hypotension")
    au.add_argument("--limit", type=int, metavar="N", help="at most N transitions (the first)")
    au.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    au.set_defaults(func=_cmd_audit)

    ev = sub.add_parser(
        "evaluate",
        help="score the alarms of recordings with ground truth: sensitivity, false alarms, latency",
        description="Replays recordings with known truth (NAME.jsonl + NAME.truth.json from "
        "python -m simulators.evalset, scenario TOML files, or labels TOML files naming a real "
        "WFDB record) through the replay engine, and reports sensitivity, false alarms per "
        "bed-day, detection latency, time in alarm, technical alarms and re-announcements, "
        "per scenario, per profile and overall. See docs/evaluation.md.",
    )
    if evaluate:
        from streamproc.apps.evaluation.command import add_arguments  # noqa: PLC0415 - the core, numba

        add_arguments(ev)
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # (evaluate's options come with the whole core: only for that command)
    args = build_parser(evaluate="evaluate" in argv).parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
