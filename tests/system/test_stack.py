"""The container stack, checked without Docker: compose file, Dockerfile, Prometheus, Mosquitto.

No Docker engine is needed: ``docker-compose.yml`` and ``prometheus.yml`` are
parsed as YAML, the Dockerfile as text, and the shipped Mosquitto
configuration (``config/mosquitto``) is run by a real ``mosquitto`` through
:class:`tests.system.broker.MosquittoBroker`, with its password file and ACL copied
to a temporary directory (:func:`tests.system.broker.shipped_broker`). The compose
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

from tests.system.broker import (
    CONTAINER_CERTS_DIR,
    CONTAINER_CONFIG_DIR,
    DEMO_PASSWORDS,
    MOSQUITTO_DIR,
    TLS,
    MosquittoBroker,
    Subscriber,
    shipped_broker,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MOSQUITTO_README = MOSQUITTO_DIR / "README.md"
PROMETHEUS = REPO / "config" / "prometheus" / "prometheus.yml"


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


def _required_variable(value: str) -> tuple[str, str]:
    """``${VAR:?message}`` → ``(VAR, message)``; anything else (a default) fails the test."""
    m = re.fullmatch(r"\$\{([A-Z0-9_]+):\?([^}]+)\}", value)
    assert m, f"expected ${{VAR:?message}} (no fallback), got {value!r}"
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


def _listener_blocks(path: Path) -> dict[str, dict[str, list[str]]]:
    """Each listener's directives (``per_listener_settings true``), keyed by its arguments."""
    blocks: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        words = raw.split(maxsplit=1)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "listener":
            current = blocks.setdefault(words[1], {})
        elif words[0] in ("persistence", "log_dest"):
            current = None  # the global section follows the listeners
        elif current is not None:
            current.setdefault(words[0], []).append(words[1] if len(words) > 1 else "")
    return blocks


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
        # the processor's own TLS listener, checked against the stack's CA
        assert env["STREAMPROC_BROKER"] == "mqtts://mosquitto:8884"
        assert ("./config/mosquitto/certs/ca.crt", env["STREAMPROC_TLS_CA"]) in _volume_mounts(svc)
        assert env["STREAMPROC_USERNAME"] == "processor"
        name, message = _required_variable(env["STREAMPROC_PASSWORD"])
        assert (name, ".env" in message) == ("PROCESSOR_MQTT_PASSWORD", True)
        # Prometheus scrapes it across the compose network; the host's port is loopback
        assert env["STREAMPROC_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - in the container
        assert svc["ports"] == ["127.0.0.1:9108:9108"]
        audit_dir = str(Path(env["STREAMPROC_AUDIT_DB"]).parent)
        assert ("audit-data", audit_dir) in _volume_mounts(svc)

    def test_simulator_service(self) -> None:
        """`streamproc-sim publish` for 12 beds in real time, as the simulator user."""
        svc = _service("simulator")
        assert svc["entrypoint"] in (["streamproc-sim"], "streamproc-sim")
        assert _compose_command(svc) == [
            "publish",
            "--broker",
            "mqtts://mosquitto:8883",
            "--beds",
            "12",
            "--speed",
            "1",
        ]
        env = _env(svc)
        assert env["STREAMPROC_SIM_USERNAME"] == "simulator"
        assert _required_variable(env["STREAMPROC_SIM_PASSWORD"])[0] == "SIMULATOR_MQTT_PASSWORD"
        assert ("./config/mosquitto/certs/ca.crt", env["STREAMPROC_SIM_TLS_CA"]) in _volume_mounts(
            svc
        )

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
        # the certificates are each site's own: made before the first start, never committed
        site_made = [p for p in paths if p.startswith("./config/mosquitto/certs")]
        assert site_made
        ignored = subprocess.run(  # noqa: S603 - our own paths
            ["git", "check-ignore", *site_made],  # noqa: S607 - git on the PATH
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert set(ignored.stdout.split()) == set(site_made), ignored
        missing = [p for p in paths if p not in site_made and not (REPO / p).exists()]
        assert not missing, f"paths in docker-compose.yml missing from the repo: {missing}"

    def test_mounts_match_the_configs(self) -> None:
        """The broker's config directory lands where mosquitto.conf's paths expect it,
        and Prometheus's file where its command reads it."""
        mounts = _volume_mounts(_service("mosquitto"))
        assert ("./config/mosquitto", CONTAINER_CONFIG_DIR) in mounts
        assert ("./config/mosquitto/certs", CONTAINER_CERTS_DIR) in mounts
        prom = _service("prometheus")
        target = dict(_volume_mounts(prom))["./config/prometheus/prometheus.yml"]
        assert f"--config.file={target}" in _compose_command(prom)

    def test_no_password_fallbacks(self) -> None:
        """Every variable the compose file reads is required (``${VAR:?message}``): a
        missing password stops `docker compose up` with that message, never a demo one."""
        text = COMPOSE.read_text()
        variables = re.findall(r"\$\{[^}]*\}", text)
        assert {_required_variable(v)[0] for v in variables} == {
            "HEALTHCHECK_MQTT_PASSWORD",
            "PROCESSOR_MQTT_PASSWORD",
            "SIMULATOR_MQTT_PASSWORD",
        }
        assert "demo-only" not in text

    def test_demo_passwords_documented(self) -> None:
        """Each demo password is documented in config/mosquitto/README.md and has a hash
        in the committed demo files; the processor's only in passwd-processor.demo."""
        readme = MOSQUITTO_README.read_text()
        assert "DEMO ONLY" in readme
        for user, password in DEMO_PASSWORDS.items():
            assert f"| `{user}` | `{password}` |" in readme, user
        assert _hashed("passwd-processor.demo") == {"processor"}
        assert _hashed("passwd.demo") == set(DEMO_PASSWORDS) - {"processor"}


def _hashed(name: str) -> set[str]:
    return {
        line.split(":", 1)[0]
        for line in (MOSQUITTO_DIR / name).read_text().splitlines()
        if line and not line.startswith("#")
    }


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
        assert _ignored("tests/system/test_stack.py", patterns)

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
        """Persistence on the data volume, limits and logging to stdout."""
        d = _conf_directives(MOSQUITTO_DIR / "mosquitto.conf")
        assert d["per_listener_settings"] == ["true"]
        assert d["persistence"] == ["true"]
        assert d["persistence_location"] == ["/mosquitto/data/"]
        assert d["autosave_interval"] == ["10"]
        assert d["set_tcp_nodelay"] == ["true"]
        assert d["max_queued_messages"] == ["10000"]
        assert 262_144 <= int(d["max_packet_size"][0]) <= 300_000
        assert d["log_dest"] == ["stdout"]

    def test_tls_only_profile(self) -> None:
        """Plain MQTT on the loopback only; 8883 (everyone but the processor) and 8884
        (the processor only) speak TLS 1.2+ with the certificates under /mosquitto/certs;
        no listener takes anonymous clients; the client id is the user name everywhere
        but on the processor's listener, whose password file holds the processor alone."""
        blocks = _listener_blocks(MOSQUITTO_DIR / "mosquitto.conf")
        assert list(blocks) == ["1883 127.0.0.1", "8883", "8884"]
        tls = {
            "cafile": [f"{CONTAINER_CERTS_DIR}/ca.crt"],
            "certfile": [f"{CONTAINER_CERTS_DIR}/server.crt"],
            "keyfile": [f"{CONTAINER_CERTS_DIR}/server.key"],
            "tls_version": ["tlsv1.2"],
            "require_certificate": ["false"],
        }
        for name, block in blocks.items():
            assert block["allow_anonymous"] == ["false"], name
            assert block["acl_file"] == [f"{CONTAINER_CONFIG_DIR}/acl"], name
            has_tls = {k: v for k, v in block.items() if k in tls}
            assert has_tls == ({} if name == "1883 127.0.0.1" else tls), name
        for name in ("1883 127.0.0.1", "8883"):
            assert blocks[name]["use_username_as_clientid"] == ["true"]
            assert blocks[name]["password_file"] == [f"{CONTAINER_CONFIG_DIR}/passwd"]
        assert "use_username_as_clientid" not in blocks["8884"]
        assert blocks["8884"]["password_file"] == [f"{CONTAINER_CONFIG_DIR}/passwd-processor"]

    def test_acl_users_have_passwords(self) -> None:
        """Every ACL user has a demo password hash, and every hashed user has rules: its
        own, or (a care unit's gateway) the pattern rules on its user name."""
        hashed = _hashed("passwd.demo") | _hashed("passwd-processor.demo")
        users = _acl_users(MOSQUITTO_DIR / "acl")
        assert len(users) == len(set(users))
        patterns = (MOSQUITTO_DIR / "acl").read_text().splitlines()
        assert "pattern write icu/%u/+/abp" in patterns
        assert "pattern write icu/%u/+/vitals" in patterns
        assert set(users) == hashed - {"ward7", "ward8"}

    def test_shipped_config_starts(self, mosquitto_bin: Path, tmp_path: Path) -> None:
        """`mosquitto -c` on the shipped files (paths rewritten to a temp copy) starts,
        logs no error, and lets a demo user in."""
        broker = shipped_broker(tmp_path, binary=mosquitto_bin)
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
        broker = shipped_broker(tmp_path, binary=mosquitto_bin)
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
        """The README's openssl recipe makes certificates with which the shipped TLS
        listeners start; a client that trusts the CA logs in over TLS (hostname
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

        broker = shipped_broker(tmp_path / "shipped", binary=mosquitto_bin, certs=certs)
        _start(broker)
        try:
            assert len(broker.ports) == 3
            tls_port = broker.ports[TLS]
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
