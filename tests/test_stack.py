"""The container stack, checked without Docker: compose file, Dockerfile, Prometheus, Mosquitto.

No Docker engine is needed: ``docker-compose.yml`` and ``prometheus.yml`` are
parsed as YAML, the Dockerfile as text, and the shipped Mosquitto
configuration (``config/mosquitto``) is run by a real ``mosquitto`` through
:class:`tests.broker.MosquittoBroker`, with its password file and ACL copied
to a temporary directory (:func:`shipped_mosquitto_config`). The compose
healthcheck of the broker and the README's TLS recipe are run too.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.broker import MosquittoBroker, Subscriber

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MOSQUITTO_DIR = REPO / "config" / "mosquitto"
MOSQUITTO_README = MOSQUITTO_DIR / "README.md"
PROMETHEUS = REPO / "config" / "prometheus" / "prometheus.yml"

#: The demo credentials of config/mosquitto/passwd (documented there as DEMO ONLY).
DEMO_PASSWORDS = {
    "gateway": "gateway-demo-only",
    "pump": "pump-demo-only",
    "ehr": "ehr-demo-only",
    "processor": "processor-demo-only",
    "dashboard": "dashboard-demo-only",
    "simulator": "simulator-demo-only",
    "healthcheck": "healthcheck-demo-only",
}

#: Where the compose file mounts config/mosquitto and the broker's data volume.
CONTAINER_CONFIG_DIR = "/mosquitto/config"
CONTAINER_CERTS_DIR = "/mosquitto/certs"
TLS_BEGIN = "# --- TLS listener"
TLS_END = "# --- end TLS listener"


# -- helpers (also used by tests/test_broker_security.py) -----------------------


def shipped_mosquitto_config(dest: Path, *, certs: Path | None = None) -> Path:
    """Copy ``config/mosquitto`` to ``dest`` and return the copy's ``mosquitto.conf``.

    ``password_file`` and ``acl_file`` point at the container's paths; the
    copy points them at the copied files (the test harness rewrites the
    listeners, persistence and log itself). With ``certs``, the commented TLS
    listener block is enabled and its certificate paths point into ``certs``.
    """
    shutil.copytree(MOSQUITTO_DIR, dest)
    conf = dest / "mosquitto.conf"
    out: list[str] = []
    rewritten: dict[str, int] = {"password_file": 0, "acl_file": 0}
    in_tls = False
    for raw in conf.read_text().splitlines():
        line = raw
        if raw.startswith(TLS_BEGIN):
            in_tls = True
        elif raw.startswith(TLS_END):
            in_tls = False
        elif in_tls and certs is not None and re.match(r"#[a-z_]+ ", raw):
            line = raw[1:].replace(CONTAINER_CERTS_DIR, str(certs))
        words = line.split()
        if words and words[0] in rewritten:
            name = Path(words[1]).name
            assert words[1] == f"{CONTAINER_CONFIG_DIR}/{name}", line
            line = f"{words[0]} {dest / name}"
            rewritten[words[0]] += 1
        out.append(line)
    assert rewritten == {"password_file": 1, "acl_file": 1}, rewritten
    conf.write_text("\n".join(out) + "\n")
    return conf


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"][name]
    return service


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _interpolation_default(value: str) -> tuple[str, str]:
    """``${VAR:-default}`` → ``(VAR, default)``; anything else fails the test."""
    m = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", value)
    assert m, f"expected ${{VAR:-default}}, got {value!r}"
    return m.group(1), m.group(2)


def _volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes, short or long syntax."""
    mounts = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol.get("source", ""), vol["target"]
        mounts.append((source, target))
    return mounts


def _is_host_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    out = []
    for line in joined:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (relative) out of the build context."""
    ignored = False
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        pat = pat.removeprefix("**/")
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(Path(p).name, pat) for p in prefixes):
            ignored = not negate
    return ignored


def _conf_directives(path: Path) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        words = raw.split(maxsplit=1)
        if words and not words[0].startswith("#"):
            directives.setdefault(words[0], []).append(words[1] if len(words) > 1 else "")
    return directives


def _acl_users(path: Path) -> list[str]:
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith("user ")]


def _start(broker: MosquittoBroker) -> MosquittoBroker:
    """Start, or fail the test with the broker's log tail (a config error shows there)."""
    try:
        return broker.start()
    except Exception as exc:  # noqa: BLE001 - any start failure is reported with the log
        pytest.fail(f"the shipped mosquitto.conf did not start: {exc}\n{broker.log_tail(60)}")


# -- tests -------------------------------------------------------------------------


class TestCompose:
    """docker-compose.yml: the four services and how they are wired."""

    def test_four_services(self) -> None:
        """Broker, processor, simulator and Prometheus, nothing else."""
        assert set(_compose()["services"]) == {"mosquitto", "streamproc", "simulator", "prometheus"}

    def test_images_and_builds(self) -> None:
        """Mosquitto 2 and Prometheus from their images; streamproc and the simulator
        built from this repository into the same local image."""
        assert _service("mosquitto")["image"].startswith("eclipse-mosquitto:2")
        assert _service("prometheus")["image"].startswith("prom/prometheus")
        for name in ("streamproc", "simulator"):
            svc = _service(name)
            build = svc["build"]
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (REPO / context).resolve() == REPO
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (REPO / context / (dockerfile or "Dockerfile")).is_file()
        assert _service("streamproc")["image"] == _service("simulator")["image"]

    def test_streamproc_service(self) -> None:
        """`streamproc run --metrics-port 9108` as the processor user, against the
        compose broker, with its audit database on the audit volume."""
        svc = _service("streamproc")
        assert _compose_command(svc) == ["run", "--metrics-port", "9108"]
        env = _env(svc)
        assert env["STREAMPROC_BROKER"] == "mqtt://mosquitto:1883"
        assert env["STREAMPROC_USERNAME"] == "processor"
        _, default = _interpolation_default(env["STREAMPROC_PASSWORD"])
        assert default == DEMO_PASSWORDS["processor"]
        audit_dir = str(Path(env["STREAMPROC_AUDIT_DB"]).parent)
        assert ("audit-data", audit_dir) in _volume_mounts(svc)

    def test_simulator_service(self) -> None:
        """`streamproc-sim publish` for 12 beds in real time, as the simulator user."""
        svc = _service("simulator")
        assert svc["entrypoint"] in (["streamproc-sim"], "streamproc-sim")
        assert _compose_command(svc) == [
            "publish",
            "--broker",
            "mqtt://mosquitto:1883",
            "--beds",
            "12",
            "--speed",
            "1",
        ]
        env = _env(svc)
        assert env["STREAMPROC_SIM_USERNAME"] == "simulator"
        _, default = _interpolation_default(env["STREAMPROC_SIM_PASSWORD"])
        assert default == DEMO_PASSWORDS["simulator"]

    def test_depends_on_healthy(self) -> None:
        """The processor waits for a healthy broker; the simulator for both, so the
        processor's session exists before the first message."""
        assert _service("streamproc")["depends_on"] == {
            "mosquitto": {"condition": "service_healthy"}
        }
        assert _service("simulator")["depends_on"] == {
            "mosquitto": {"condition": "service_healthy"},
            "streamproc": {"condition": "service_healthy"},
        }
        assert "streamproc" in _service("prometheus")["depends_on"]

    def test_healthchecks(self) -> None:
        """The broker's healthcheck is a real MQTT login; the processor's asks its
        /healthz; the simulator (no /healthz) opts out of the image's."""
        mosq = _service("mosquitto")["healthcheck"]
        assert "mosquitto_sub" in " ".join(mosq["test"])
        proc = " ".join(_service("streamproc")["healthcheck"]["test"])
        assert "http://127.0.0.1:9108/healthz" in proc
        for name in ("mosquitto", "streamproc"):
            check = _service(name)["healthcheck"]
            assert {"interval", "timeout", "retries"} <= set(check)
        assert _service("simulator")["healthcheck"] == {"disable": True}

    def test_named_volumes_declared_and_used(self) -> None:
        """mosquitto-data, audit-data and prometheus-data are declared, each is
        mounted where its service keeps state, and no undeclared one is used."""
        declared = set(_compose().get("volumes") or {})
        assert declared == {"mosquitto-data", "audit-data", "prometheus-data"}
        used = {
            (name, source, target)
            for name, svc in _compose()["services"].items()
            for source, target in _volume_mounts(svc)
            if not _is_host_path(source)
        }
        assert {s for _, s, _ in used} == declared
        assert ("mosquitto", "mosquitto-data", "/mosquitto/data") in used
        assert ("prometheus", "prometheus-data", "/prometheus") in used
        assert ("streamproc", "audit-data", "/data") in used

    def test_host_paths_exist(self) -> None:
        """Every bind mount, build context and Dockerfile the compose file names exists."""
        paths = []
        for svc in _compose()["services"].values():
            paths += [source for source, _ in _volume_mounts(svc) if _is_host_path(source)]
            build = svc.get("build")
            if build is not None:
                context = build if isinstance(build, str) else build.get("context", ".")
                paths.append(context)
                dockerfile = None if isinstance(build, str) else build.get("dockerfile")
                paths.append(str(Path(context) / (dockerfile or "Dockerfile")))
        for section in ("configs", "secrets"):
            paths += [v["file"] for v in (_compose().get(section) or {}).values() if "file" in v]
        assert paths
        missing = [p for p in paths if not (REPO / p).exists()]
        assert not missing, f"paths in docker-compose.yml missing from the repo: {missing}"

    def test_mounts_match_the_configs(self) -> None:
        """The broker's config directory lands where mosquitto.conf's paths expect it,
        and Prometheus's file where its command reads it."""
        assert ("./config/mosquitto", CONTAINER_CONFIG_DIR) in _volume_mounts(_service("mosquitto"))
        prom = _service("prometheus")
        target = dict(_volume_mounts(prom))["./config/prometheus/prometheus.yml"]
        assert f"--config.file={target}" in _compose_command(prom)

    def test_demo_passwords_documented_and_defaulted(self) -> None:
        """The password defaults in the compose file are the demo ones, each is
        documented in config/mosquitto/README.md, and every user has a hash."""
        readme = MOSQUITTO_README.read_text()
        assert "DEMO ONLY" in readme
        for user, password in DEMO_PASSWORDS.items():
            assert f"| `{user}` | `{password}` |" in readme, user
        hashed = {
            line.split(":", 1)[0] for line in (MOSQUITTO_DIR / "passwd").read_text().splitlines()
        }
        assert hashed == set(DEMO_PASSWORDS)
        env = _env(_service("mosquitto"))
        _, default = _interpolation_default(env["HEALTHCHECK_MQTT_PASSWORD"])
        assert default == DEMO_PASSWORDS["healthcheck"]


class TestDockerfile:
    """The streamproc image: slim, non-root, healthchecked, `streamproc` as entrypoint."""

    def test_base_image(self) -> None:
        """python:3.11-slim."""
        froms = [args for word, args in _dockerfile_instructions() if word == "FROM"]
        assert froms == ["python:3.11-slim"]

    def test_non_root_user_after_install(self) -> None:
        """The last USER is neither root nor uid 0 and comes after every RUN."""
        instructions = _dockerfile_instructions()
        users = [i for i, (word, _) in enumerate(instructions) if word == "USER"]
        assert users, "no USER instruction: the container would run as root"
        user = instructions[users[-1]][1].split(":")[0]
        assert user not in ("root", "0")
        runs = [i for i, (word, _) in enumerate(instructions) if word == "RUN"]
        assert max(runs) < users[-1]

    def test_entrypoint_and_default_command(self) -> None:
        """ENTRYPOINT ["streamproc"] (exec form); the default command runs the service."""
        instructions = dict(_dockerfile_instructions())
        assert json.loads(instructions["ENTRYPOINT"]) == ["streamproc"]
        assert json.loads(instructions["CMD"])[0] == "run"

    def test_healthcheck_and_port(self) -> None:
        """HEALTHCHECK asks /healthz with Python's urllib (no curl in slim); the
        metrics port is exposed."""
        instructions = dict(_dockerfile_instructions())
        check = instructions["HEALTHCHECK"]
        assert "urllib.request" in check
        assert "/healthz" in check
        assert "9108" in instructions["EXPOSE"].split()

    def test_copies_exist_and_reach_the_context(self) -> None:
        """Every COPY source exists and .dockerignore lets it into the build context;
        the scenarios go in, the broker's password file stays out."""
        patterns = _dockerignore_patterns()
        sources = []
        for word, args in _dockerfile_instructions():
            if word == "COPY":
                parts = [a for a in shlex.split(args) if not a.startswith("--")]
                sources += parts[:-1]
        assert "config/scenarios" in sources
        for source in sources:
            assert (REPO / source).exists(), source
            assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
        assert _ignored("config/mosquitto/passwd", patterns)
        assert _ignored(".git/config", patterns)
        assert _ignored("tests/test_stack.py", patterns)

    def test_install_keeps_scenarios_reachable(self) -> None:
        """The package is installed (editable, from /app) where scenario_dir() finds
        config/scenarios, and the image build checks that."""
        runs = " ".join(args for word, args in _dockerfile_instructions() if word == "RUN")
        assert "pip install --editable ." in runs
        assert "scenario_dir()" in runs


class TestPrometheus:
    """config/prometheus/prometheus.yml scrapes the processor."""

    def test_scrapes_streamproc(self) -> None:
        """A job scrapes streamproc:9108/metrics, the port the compose service serves."""
        config = yaml.safe_load(PROMETHEUS.read_text())
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        job = jobs["streamproc"]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == ["streamproc:9108"]
        port = _compose_command(_service("streamproc"))[-1]
        assert targets[0].endswith(f":{port}")


class TestMosquittoConfig:
    """config/mosquitto: the shipped configuration, run by a real mosquitto."""

    def test_directives(self) -> None:
        """No anonymous clients, password file and ACL at the mounted paths,
        persistence on the data volume, limits and logging to stdout."""
        d = _conf_directives(MOSQUITTO_DIR / "mosquitto.conf")
        assert d["listener"] == ["1883"]
        assert d["allow_anonymous"] == ["false"]
        assert d["password_file"] == [f"{CONTAINER_CONFIG_DIR}/passwd"]
        assert d["acl_file"] == [f"{CONTAINER_CONFIG_DIR}/acl"]
        assert d["persistence"] == ["true"]
        assert d["persistence_location"] == ["/mosquitto/data/"]
        assert d["autosave_interval"] == ["10"]
        assert d["set_tcp_nodelay"] == ["true"]
        assert d["max_queued_messages"] == ["10000"]
        assert 262_144 <= int(d["max_packet_size"][0]) <= 300_000
        assert d["log_dest"] == ["stdout"]

    def test_tls_block_ready_but_commented(self) -> None:
        """A TLS listener on 8883 with CA, certificate and key under /mosquitto/certs,
        no client certificate required, TLS 1.2 minimum: all commented out."""
        text = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
        block = text[text.index(TLS_BEGIN) : text.index(TLS_END)]
        for line in (
            "#listener 8883",
            f"#cafile {CONTAINER_CERTS_DIR}/ca.crt",
            f"#certfile {CONTAINER_CERTS_DIR}/server.crt",
            f"#keyfile {CONTAINER_CERTS_DIR}/server.key",
            "#require_certificate false",
            "#tls_version tlsv1.2",
        ):
            assert f"\n{line}\n" in block, line

    def test_acl_users_have_passwords(self) -> None:
        """Every ACL user has a password hash and every hashed user has ACL rules."""
        hashed = {
            line.split(":", 1)[0] for line in (MOSQUITTO_DIR / "passwd").read_text().splitlines()
        }
        users = _acl_users(MOSQUITTO_DIR / "acl")
        assert len(users) == len(set(users))
        assert set(users) == hashed

    def test_shipped_config_starts(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """`mosquitto -c` on the shipped files (paths rewritten to a temp copy) starts,
        logs no error, and lets a demo user in."""
        conf = shipped_mosquitto_config(tmp_path / "config")
        broker = MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path / "b", config_file=conf)
        _start(broker)
        try:
            with Subscriber(
                broker, None, username="dashboard", password=DEMO_PASSWORDS["dashboard"]
            ) as client:
                assert client.connected
            log = broker.log_tail(200)
            assert "Error" not in log, log
        finally:
            broker.close()

    def test_compose_healthcheck_command(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """The broker's compose healthcheck, run as the container's shell would run
        it, passes against the shipped config and fails with a wrong password."""
        mosquitto_sub = shutil.which("mosquitto_sub")
        if mosquitto_sub is None:
            pytest.skip("mosquitto_sub not installed (package mosquitto-clients)")
        check = _service("mosquitto")["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        command = check[1].replace("$$", "$")  # compose's escape for a literal $
        assert " -p 1883 " in command
        conf = shipped_mosquitto_config(tmp_path / "config")
        broker = MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path / "b", config_file=conf)
        _start(broker)
        try:
            command = command.replace(" -p 1883 ", f" -p {broker.port} ")
            env = {"PATH": str(Path(mosquitto_sub).parent) + ":/usr/bin:/bin"}
            ok = subprocess.run(  # noqa: S603 - our own compose file's command
                ["/bin/sh", "-c", command],
                env={**env, "HEALTHCHECK_MQTT_PASSWORD": DEMO_PASSWORDS["healthcheck"]},
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert ok.returncode == 0, (ok.stdout, ok.stderr, broker.log_tail())
            bad = subprocess.run(  # noqa: S603
                ["/bin/sh", "-c", command],
                env={**env, "HEALTHCHECK_MQTT_PASSWORD": "wrong"},
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert bad.returncode != 0
        finally:
            broker.close()

    def test_tls_listener_with_readme_certificates(
        self, mosquitto_bin: Path, tmp_path: Path
    ) -> None:
        """The README's openssl recipe makes certificates with which the TLS block,
        uncommented, starts; a client that trusts the CA logs in over TLS (hostname
        checked), an anonymous one is still refused."""
        if shutil.which("openssl") is None:
            pytest.skip("openssl not installed")
        readme = MOSQUITTO_README.read_text()
        section = readme[readme.index("## TLS") :]
        script = section.split("```sh\n", 1)[1].split("```", 1)[0]
        (tmp_path / "config" / "mosquitto").mkdir(parents=True)
        # ownership for the container's uid is not the test's business
        made = subprocess.run(  # noqa: S603 - the README's own commands
            ["/bin/bash", "-euo", "pipefail", "-c", "sudo() { :; }\n" + script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        certs = tmp_path / "config" / "mosquitto" / "certs"
        assert {"ca.crt", "server.crt", "server.key"} <= {p.name for p in certs.iterdir()}

        conf = shipped_mosquitto_config(tmp_path / "shipped", certs=certs)
        broker = MosquittoBroker(binary=mosquitto_bin, workdir=tmp_path / "b", config_file=conf)
        _start(broker)
        try:
            assert len(broker.ports) == 2
            tls_port = broker.ports[1]
            client = Subscriber(
                (broker.host, tls_port),
                "icu/+/+/alarms/#",
                username="dashboard",
                password=DEMO_PASSWORDS["dashboard"],
            )
            client.client.tls_set(ca_certs=str(certs / "ca.crt"))
            with client:
                assert client.connected
            anonymous = Subscriber((broker.host, tls_port), None)
            anonymous.client.tls_set(ca_certs=str(certs / "ca.crt"))
            with pytest.raises(ConnectionRefusedError):
                anonymous.start()
        finally:
            broker.close()
