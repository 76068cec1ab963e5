# Pipeline Explorer: the Dash app served by gunicorn (gunicorn.conf.py), as a non-root user.
#
#   docker build -t pipex .
#   docker run --rm -p 127.0.0.1:8050:8050 -v pipex-state:/var/lib/pipex \
#       -v /path/to/lab/data:/data:ro pipex
#
# Settings are PIPEX_* environment variables (docs/architecture.md), e.g. -e PIPEX_WORKERS=4.

# Pinned minor/patch release and Debian suite; bump deliberately (or pin a digest).
FROM python:3.11.11-slim-bookworm

# No .pyc files in the image or the volume, unbuffered logs, no pip cache or version check.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user with a fixed uid/gid (match it when preparing a bind-mounted state dir),
# and the state directory it owns; /data is the read-only mount point of the lab's data.
RUN groupadd --system --gid 10001 pipex \
    && useradd --system --uid 10001 --gid pipex --home-dir /var/lib/pipex \
        --no-create-home --shell /usr/sbin/nologin pipex \
    && mkdir -p /var/lib/pipex /data \
    && chown pipex:pipex /var/lib/pipex \
    && chmod 0750 /var/lib/pipex

WORKDIR /app

# Project metadata and sources only (.dockerignore keeps out .venv, var, tests, .git ...).
# Dependency versions are the ranges of pyproject.toml: the project itself is what is installed.
COPY . .
RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

# Runtime configuration; the server listens on all interfaces *inside* the container.
ENV PIPEX_BIND=0.0.0.0:8050 \
    PIPEX_STATE_DIR=/var/lib/pipex \
    PIPEX_CACHE_DIR=/var/lib/pipex/joblib \
    PIPEX_DATA_DIR=/data \
    PIPEX_WORKERS=2 \
    PIPEX_THREADS=2 \
    PIPEX_TIMEOUT=300 \
    HOME=/var/lib/pipex

# Numeric, so that runtimes can check it is not root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001

# Array store and compute cache: keep them across container restarts.
VOLUME ["/var/lib/pipex"]

EXPOSE 8050

# slim has no curl: ask /health with the standard library (non-2xx or no answer -> exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PIPEX_BIND', ':8050').split(',')[0].rsplit(':', 1)[1]; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + port + '/health', timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:server"]
