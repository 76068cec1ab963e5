"""gunicorn settings of Pipeline Explorer: ``gunicorn -c gunicorn.conf.py app:server``.

Read once by the gunicorn master when it starts. Deployment knobs come from ``PIPEX_*``
environment variables (see docs/architecture.md); everything else is fixed here. Every public
name in this file is a gunicorn setting (tests/test_deploy.py checks it), so helpers start with
an underscore.
"""

import os


def _env_int(name, default, minimum=1):
    """Integer environment variable `name` (`default` if unset or empty), at least `minimum`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be >= {minimum}, got {raw!r}")
    return value


# --- numeric libraries: one thread per worker thread ----------------------------------------
# numpy/scipy (OpenBLAS, MKL) and OpenMP code start one thread per core by default; with
# PIPEX_WORKERS x PIPEX_THREADS request threads that oversubscribes the cores badly. These
# variables are read when the libraries are loaded, i.e. when a worker imports the app (and so
# numpy): preload_app stays False so that happens in each worker, after gunicorn has applied
# them. setdefault keeps a value the operator set explicitly.
_SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in _SINGLE_THREADED:
    os.environ.setdefault(_name, "1")

# Also handed to gunicorn, which sets them in the master before forking workers (and they
# show up in `gunicorn --print-config`).
raw_env = [f"{_name}={os.environ[_name]}" for _name in _SINGLE_THREADED]

# --- socket ---------------------------------------------------------------------------------
# Address(es) to listen on, "HOST:PORT" (several separated by commas). Loopback by default;
# the container image sets 0.0.0.0:8050.
bind = [b.strip() for b in os.environ.get("PIPEX_BIND", "127.0.0.1:8050").split(",") if b.strip()]

# --- workers --------------------------------------------------------------------------------
# Worker processes. Arrays live in the on-disk store shared by all workers, so any worker can
# serve any request of any session.
workers = _env_int("PIPEX_WORKERS", 2)

# Threaded workers: a slow callback (random walker on a large volume) does not block the
# small requests (layout, assets, health) handled by the same process.
worker_class = "gthread"

# Request threads per worker.
threads = _env_int("PIPEX_THREADS", 2)

# Import the app in each worker after fork, not once in the master: numpy must be imported
# after the *_NUM_THREADS variables above are set, and no file handle of the store (diskcache
# uses SQLite) may be shared across fork.
preload_app = False

# Seconds a worker may be silent (a request running) before the master kills and replaces it.
# Generous: one segmentation of a large 3-D image can take minutes.
timeout = _env_int("PIPEX_TIMEOUT", 300)

# Seconds workers get to finish in-flight requests after SIGTERM/SIGHUP before being killed.
graceful_timeout = 30

# Seconds an idle connection may wait for its next request, off the request threads. gthread
# also uses it for a *new* connection that has sent nothing for 5 s (a fixed wait that holds a
# thread): it is parked here, then closed. So an idle client costs a thread for 5 s and a
# connection slot (worker_connections) for 5 + keepalive s: short, gunicorn's default. nginx
# (deploy/nginx.conf) opens one connection per request, so a longer value buys nothing there.
# What no gunicorn setting bounds: a client that trickles its header keeps its thread until the
# header is complete. Serve through the buffering proxy, which holds such clients instead.
keepalive = 2

# Restart a worker after about this many requests, to bound the growth of any leak (numpy /
# scikit-image caches, fragmentation). The jitter spreads restarts so that the workers are not
# all recycled at the same moment. State is on disk, so a restart loses nothing.
max_requests = 1000
max_requests_jitter = 100

# Heartbeat file of each worker in RAM (/dev/shm) when available: on a disk-backed /tmp (as in
# many containers) the heartbeat's fchmod can stall a worker.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

# --- HTTP limits: gunicorn's defaults, spelled out --------------------------------------------
# Longest request line (method + URL), number of header fields and size of one header field.
# Callback payloads and uploads travel in request bodies, which these do not limit (the app
# checks PIPEX_MAX_UPLOAD_MB itself).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# --- logging --------------------------------------------------------------------------------
# Access log to stdout and error log to stderr, one line per request: what container runtimes
# and systemd collect.
accesslog = "-"
errorlog = "-"
loglevel = "info"

# Default access-log format plus the request duration in seconds (%(L)s) and the worker's
# process id (pid=%(p)s), which shows which worker served each step of a session.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s pid=%(p)s'

# Process title in ps/top.
proc_name = "pipex"

# --- control socket ---------------------------------------------------------------------------
# gunicorn >= 25.1 opens a control socket for `gunicornc` at a fixed per-user path by default;
# two servers of one user (tests, several instances) would fight over it, and the image's user
# has no writable home. Not used here. (Older gunicorn ignores this name.)
control_socket_disable = True
