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

# numba keeps the compiled beat-detector loops here (the package directory is
# root's and read-only for the service user); compiled once per container start
ENV STREAMPROC_AUDIT_DB=/data/streamproc-audit.sqlite3 \
    STREAMPROC_METRICS_PORT=9108 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

USER streamproc:streamproc

# Prometheus /metrics and /healthz
EXPOSE 9108

# /healthz answers 200 while the broker is connected and the audit log works,
# 503 (an exception here: unhealthy) otherwise. No curl in the slim image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMPROC_METRICS_PORT', '9108') + '/healthz', timeout=4)"]

ENTRYPOINT ["streamproc"]
CMD ["run", "--metrics-port", "9108"]
