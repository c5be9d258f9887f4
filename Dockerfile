# streamproc: the stream processor (`streamproc`) and the simulator
# (`streamproc-sim`) in one image. docker-compose.yml runs both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# an unprivileged user owns nothing but the audit volume
RUN groupadd --system --gid 10001 streamproc \
    && useradd --system --uid 10001 --gid streamproc --home-dir /app \
       --no-create-home --shell /usr/sbin/nologin streamproc

WORKDIR /app

# The package (numpy/scipy come as wheels: no compiler needed) and the
# settings and scenarios, laid out as in the repository: the code finds the
# scenarios next to its package (simulators.scenario.scenario_dir() is
# <package>/../config/scenarios), so the install is an editable one of /app
# rather than a copy into site-packages, where there is no config/.
COPY pyproject.toml README.md ./
COPY streamproc ./streamproc
COPY simulators ./simulators
COPY config/streamproc.toml ./config/streamproc.toml
COPY config/scenarios ./config/scenarios
RUN pip install --editable . \
    && cd / && python -c "from simulators.scenario import scenario_dir; assert (scenario_dir() / 'ne_60_40.toml').is_file(), scenario_dir()"

# the audit trail (SQLite, WAL) lives on a volume mounted at /data (compose:
# audit-data); a new named volume takes this directory's owner
RUN mkdir -p /data && chown streamproc:streamproc /data

# numba's compiled loops (the beat detector, the codec's number parser), built
# here once so that no container compiles them (~20 s): a container takes data
# ~1 s after it starts. NUMBA_CPU_NAME=generic makes code for any CPU of this
# architecture (no host-specific instructions: the image runs on other hosts than
# the one that built it; no measurable cost on the replay benchmark, see
# benchmarks/README.md "Cold start"); it must be the same at run time, the cache
# is keyed on it. `--check` fails the build unless everything now loads from the
# cache. The service user owns the cache: numba needs it writable to use it.
ENV NUMBA_CACHE_DIR=/opt/numba-cache \
    NUMBA_CPU_NAME=generic
RUN mkdir -p "$NUMBA_CACHE_DIR" \
    && python -m streamproc.shell.warm > /dev/null \
    && python -m streamproc.shell.warm --check \
    && chown -R streamproc:streamproc "$NUMBA_CACHE_DIR"

ENV STREAMPROC_AUDIT_DB=/data/streamproc-audit.sqlite3 \
    STREAMPROC_METRICS_PORT=9108

USER streamproc:streamproc

# Prometheus /metrics and /healthz
EXPOSE 9108

# /healthz answers 200 while the broker is connected and the audit log works,
# 503 (an exception here: unhealthy) otherwise. No curl in the slim image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMPROC_METRICS_PORT', '9108') + '/healthz', timeout=4)"]

ENTRYPOINT ["streamproc"]
CMD ["run", "--metrics-port", "9108"]
