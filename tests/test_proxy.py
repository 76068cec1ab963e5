"""Deployment behind nginx: deploy/nginx.conf and compose.yaml.

gunicorn's gthread workers have 2 x 2 threads; a new connection takes one while gunicorn waits
for its request, so idle or slow-header clients starved everyone (issue 11: 16 idle
connections -> /health in 9.5 s, 50 -> ~30 s). The buffering proxy of deploy/nginx.conf holds
such clients itself. Here nginx (Debian's nginx-light, installed by `make test`) runs as the
test's user on 127.0.0.1 with that file (ports and paths made local by
`tests.support.nginx_test_conf`), in front of the Dockerfile's command (gunicorn, 2 workers).

The load test fails when /health or a segmentation move gets no answer within REQUEST_TIMEOUT
through nginx while 50 idle and 50 slow-header connections are held. Latencies are printed
(run with -s), not asserted; the same measurement straight against gunicorn is printed too.
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support import (
    DOCKERFILE,
    NGINX_CONF,
    REPO_ROOT,
    dockerfile_cmd,
    dockerfile_instructions,
    nginx_binary,
    nginx_test_conf,
    serve_docker_cmd,
    serve_nginx,
    title_of,
)
from tests.support.dashclient import DashClient

COMPOSE = REPO_ROOT / "compose.yaml"
COMPOSE_DASK = REPO_ROOT / "docs" / "compose-dask.yml"
# The failure condition of a request made while connections are held (not a latency target).
REQUEST_TIMEOUT = 10.0
N_IDLE = 50
N_SLOW = 50


def _nginx():
    binary = nginx_binary()
    if binary is None:
        pytest.fail("nginx not found (make test installs Debian's nginx-light: apt-get install "
                    "nginx-light)")
    return binary


# --- deploy/nginx.conf as written -----------------------------------------------------------


def _directives(path=NGINX_CONF):
    """{name: [arguments of each occurrence]} of the active directives of an nginx file, plus
    "location" blocks as ("location", args). Comments dropped, continued lines joined."""
    text = "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
                     for line in Path(path).read_text().splitlines())
    found = {}
    for statement in re.split(r"[;{}]", text):
        words = statement.split()
        if words:
            found.setdefault(words[0], []).append(words[1:])
    return found


def _upstream(path=NGINX_CONF) -> str:
    """The address of the (one) upstream server of an nginx file."""
    servers = [args for args in _directives(path)["server"] if args]
    assert len(servers) == 1, servers
    return servers[0][0]


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "s"]


def _bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, value
    return int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[
        match.group(2).lower()]


def test_nginx_conf_bounds_clients_and_buffers():
    conf = _directives()
    one = {name: args[0] for name, args in conf.items() if len(args) == 1}

    # slow and idle clients: every wait bounded (and not generous)
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout",
                 "keepalive_timeout"):
        assert name in one, f"{name} missing in {NGINX_CONF}"
        assert 0 < _seconds(one[name][0]) <= 60, (name, one[name])
    assert one["proxy_request_buffering"] == ["on"] and one["proxy_buffering"] == ["on"]
    # heavy callbacks: nginx waits longer than gunicorn lets a request run (PIPEX_TIMEOUT 300)
    assert _seconds(one["proxy_read_timeout"][0]) >= 300

    # the upload limit: just above what the app accepts (its own 413 message is then shown)
    from pipeline.config import Config

    app_limit = int(Config().max_bytes * 4 / 3) + 2**20  # app.py's MAX_CONTENT_LENGTH
    nginx_limit = _bytes(one["client_max_body_size"][0])
    assert app_limit <= nginx_limit <= app_limit + 8 * 2**20, (app_limit, nginx_limit)

    # connections per address, compression of JSON and JS
    zone = one["limit_conn_zone"]
    assert zone[0] == "$binary_remote_addr", zone
    zone_name = zone[1].split("=")[1].split(":")[0]
    assert conf["limit_conn"][0][0] == zone_name and int(conf["limit_conn"][0][1]) >= 6
    assert one["gzip"] == ["on"]
    assert {"application/json", "application/javascript"} <= set(one["gzip_types"])

    # headers for the app; a client's own X-Forwarded-User never passed on (the app trusts it
    # from this proxy with PIPEX_TRUST_REMOTE_USER=1)
    headers = {args[0].lower(): args[1:] for args in conf["proxy_set_header"]}
    assert headers["x-forwarded-for"] == ["$proxy_add_x_forwarded_for"]
    assert headers["x-forwarded-proto"] == ["$scheme"]
    assert headers["x-forwarded-user"] == ['""']

    # the app's default address, /health passed through, no daemon setting (tests and
    # compose add `daemon off;`)
    assert _upstream() == "127.0.0.1:8050"  # gunicorn.conf.py's default PIPEX_BIND
    assert ["=", "/health"] in conf["location"]
    assert "daemon" not in conf
    assert "include" in one and "proxy_pass" in conf


def test_nginx_accepts_deploy_conf(tmp_path):
    conf = nginx_test_conf(tmp_path, listen_port=18080, upstream="127.0.0.1:18050")
    text = conf.read_text()
    assert "127.0.0.1:18080" in text and "server 127.0.0.1:18050;" in text
    assert str(tmp_path / "nginx.pid") in text and "/var/log" not in text.split("http {")[0]
    result = subprocess.run(
        [_nginx(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test is successful" in output, output
    # ... and refuses a broken one: the check can fail
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("proxy_buffering on;", "proxy_buffering sometimes;"))
    result = subprocess.run(
        [_nginx(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c",
         str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0


# --- compose.yaml ---------------------------------------------------------------------------


def _compose():
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text()), yaml


def _no_registry_host(image: str) -> bool:
    first = image.split("/")[0]
    return "/" not in image or not ("." in first or ":" in first or first == "localhost")


def _volume(spec: str):
    """(source, target, mode) of a short volume syntax (the source may hold ${VAR:-x})."""
    parts = spec.split(":")
    mode = parts.pop() if parts[-1] in ("ro", "rw") else "rw"
    return ":".join(parts[:-1]), parts[-1], mode


def test_compose_runs_the_dockerfile_behind_nginx():
    compose, yaml = _compose()
    services = compose["services"]
    app, nginx = services["app"], services["nginx"]

    # the app: the Dockerfile's image and command, reachable by nginx only
    assert app["build"]["dockerfile"] == "Dockerfile"
    assert (COMPOSE.parent / app["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
    assert app["command"] == dockerfile_cmd()
    env = app["environment"]
    assert env["PIPEX_BIND"] == _upstream(), "nginx.conf's upstream is the app's address"
    healthcheck = next(args for w, args in dockerfile_instructions(DOCKERFILE)
                       if w == "HEALTHCHECK")
    assert "/health" in json.dumps(app["healthcheck"]["test"]) and "/health" in healthcheck
    volumes = [_volume(v) for v in app["volumes"]]
    targets = {v[1] for v in volumes}
    state_dir = next(args for w, args in dockerfile_instructions(DOCKERFILE) if w == "ENV"
                     and "PIPEX_STATE_DIR=" in args).split("PIPEX_STATE_DIR=")[1].split()[0]
    assert state_dir in targets and "/data" in targets
    assert next(v for v in volumes if v[1] == "/data")[2] == "ro"
    for service in (app, nginx):
        limits = service["deploy"]["resources"]["limits"]
        assert limits["memory"] and limits["cpus"]

    # nginx: in the app's network namespace (the upstream 127.0.0.1:8050), this repo's file
    assert nginx["network_mode"] == "service:app"
    assert any(v.startswith("./deploy/nginx.conf:/etc/nginx/nginx.conf") for v in
               nginx["volumes"])
    assert "/health" in json.dumps(nginx["healthcheck"]["test"])
    assert "nginx-light" in nginx["build"]["dockerfile_inline"]

    # the options: Redis (Celery) and a dask scheduler + worker, as profiles
    profiles = {name: s.get("profiles", []) for name, s in services.items()}
    assert profiles["app"] == [] and profiles["nginx"] == []
    assert "redis" in profiles["redis"]
    celery = [n for n, s in services.items() if "celery" in json.dumps(s.get("command", ""))]
    assert celery and all("redis" in profiles[n] for n in celery)
    dask = yaml.safe_load(COMPOSE_DASK.read_text())["services"]
    assert services["scheduler"]["command"] == dask["scheduler"]["command"]
    assert services["dask-worker"]["command"][:3] == dask["worker-1"]["command"][:3]
    assert "dask" in profiles["scheduler"] and "dask" in profiles["dask-worker"]

    # images by name only (no registry host in the repo)
    images = [s["image"] for s in services.values() if "image" in s]
    assert images and all(_no_registry_host(i) for i in images), images
    assert re.search(r"FROM debian:\S+", nginx["build"]["dockerfile_inline"])


# --- nginx in front of gunicorn: held connections ---------------------------------------------


class HeldConnections:
    """`n_idle` connections that send nothing and `n_slow` that send a header a few bytes a
    second, to 127.0.0.1:`port`, held open from a background thread (one the server closes
    is opened again) until `stop`."""

    def __init__(self, port: int, n_idle: int = N_IDLE, n_slow: int = N_SLOW,
                 interval: float = 1.0):
        self.port = port
        self.n_idle, self.n_slow, self.interval = n_idle, n_slow, interval
        self.selector = selectors.DefaultSelector()
        self.closed_by_server = 0
        self.bytes_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def _open(self, slow: bool):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        if slow:
            self._send(sock, b"GET /health HTTP/1.1\r\n")
        self.selector.register(sock, selectors.EVENT_READ, {"slow": slow, "n": 0})

    def _send(self, sock, data):
        sock.send(data)
        self.bytes_sent += len(data)

    def _reopen(self, sock, slow):
        self.selector.unregister(sock)
        sock.close()
        self.closed_by_server += 1
        if not self._stop.is_set():
            self._open(slow)

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self.selector.get_map())

    def __enter__(self):
        with self._lock:
            for _ in range(self.n_idle):
                self._open(slow=False)
            for _ in range(self.n_slow):
                self._open(slow=True)
        self._thread.start()
        return self

    def _run(self):
        next_tick = time.monotonic() + self.interval
        while not self._stop.is_set():
            events = self.selector.select(timeout=0.1)
            with self._lock:
                for key, _ in events:  # readable: closed by the server (or a 408 / 400)
                    try:
                        data = key.fileobj.recv(4096)
                    except OSError:
                        data = b""
                    if not data or b"HTTP/1." in data:
                        self._reopen(key.fileobj, key.data["slow"])
                if time.monotonic() >= next_tick:
                    next_tick += self.interval
                    for key in list(self.selector.get_map().values()):
                        if key.data["slow"]:
                            key.data["n"] += 1
                            try:
                                self._send(key.fileobj, b"X-%d: a\r\n" % key.data["n"])
                            except OSError:
                                self._reopen(key.fileobj, True)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for key in list(self.selector.get_map().values()):
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
        self.selector.close()


def _timed(fn):
    """(seconds, result) of fn(), or (None, the exception) when it fails or times out."""
    start = time.perf_counter()
    try:
        result = fn()
    except (requests.RequestException, OSError) as exc:
        return None, exc
    return time.perf_counter() - start, result


def _health(base_url):
    response = requests.get(base_url + "/health", timeout=REQUEST_TIMEOUT,
                            headers={"Connection": "close"})
    response.raise_for_status()
    return response.json()


VIEW = {"slice-axis.value": 0, "slice-index.value": 0, "overlay-style.value": "contour",
        "show-markers.value": ["markers"], "result-view.value": "labels"}


class User:
    """A person's session on coins, driven as the page does (tests/test_deploy.py)."""

    def __init__(self, base_url):
        self.client = DashClient(base_url, timeout=60)
        self.sid = self.client.find_component("session-store")["data"]
        self.client.dependencies()
        state = {"session-store.data": self.sid}
        self.meta = self.client.call("image-store.data",
                                     inputs={"sample-dropdown.value": "coins"}, state=state,
                                     triggered=[])["image-store"]["data"]
        out = self.client.call("history-store.data", inputs={"image-store.data": self.meta},
                               state={"history-store.data": None, **state},
                               triggered=["image-store.data"])
        self.history = out["history-store"]["data"]
        self.base = None
        self.seq = 0

    def using(self, base_url):
        """The same session, its requests sent to `base_url` (layout already known)."""
        other = DashClient(base_url, timeout=REQUEST_TIMEOUT)
        other._layout, other._dependencies = self.client._layout, self.client._dependencies
        self.client = other
        return self

    def move(self, pair):
        self.seq += 1
        state = {"history-store.data": self.history, "image-store.data": self.meta,
                 "segmentation-base-store.data": self.base, "session-store.data": self.sid,
                 **VIEW}
        out = self.client.call("history-store.data",
                               inputs={"move-request-store.data": {"pair": list(pair),
                                                                   "seq": self.seq}},
                               state=state, triggered=["move-request-store.data"])
        self.history = out["history-store"]["data"]
        self.base = out.get("segmentation-base-store", {}).get("data", self.base)
        summary = out["segmentation-summary"]["children"]
        assert "object" in summary, out.get("segmentation-message")
        return summary


PAIRS = [(83, 140), (90, 140), (90, 150), (85, 145), (88, 142), (84, 150)]


def _measure(base_url, user, pairs, repeats=3):
    """Latencies (s, or None for no answer within REQUEST_TIMEOUT) of /health and of moves."""
    health = [_timed(lambda: _health(base_url)) for _ in range(repeats)]
    moves = [_timed(lambda pair=pair: user.move(pair)) for pair in pairs]
    return health, moves


def _fmt(results):
    return ", ".join("no answer" if s is None else f"{s * 1000:.0f} ms" for s, _ in results)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """gunicorn (the Dockerfile's command, 2 workers) with nginx (deploy/nginx.conf) in front."""
    _nginx()
    with serve_docker_cmd(workers=2) as app, \
            serve_nginx(app.base_url, tmp_path_factory.mktemp("nginx")) as nginx:
        yield app, nginx


@pytest.mark.server
def test_nginx_serves_the_app(proxied):
    app, nginx = proxied
    health = requests.get(nginx.base_url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", nginx.describe()
    page = requests.get(nginx.base_url + "/", timeout=30)
    assert page.status_code == 200 and title_of(page.text) == "Pipeline Explorer"
    # the page's bundles compressed
    bundle = re.findall(r'src="(/_dash-component-suites/[^"]+\.js[^"]*)"', page.text)[0]
    js = requests.get(nginx.base_url + bundle, headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert js.status_code == 200 and js.headers.get("Content-Encoding") == "gzip", js.headers
    # a body over the limit is refused by nginx before gunicorn sees a byte of it
    with socket.create_connection(("127.0.0.1", int(nginx.base_url.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /_dash-update-component HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n")
        s.settimeout(10)
        assert s.recv(200).startswith(b"HTTP/1.1 413"), nginx.describe()
    assert app.proc.poll() is None


@pytest.mark.server
def test_held_connections_do_not_starve_the_app(proxied):
    """50 idle + 50 slow-header connections held: /health and a move answer through nginx."""
    app, nginx = proxied
    app_port = int(app.base_url.rsplit(":", 1)[1])
    nginx_port = int(nginx.base_url.rsplit(":", 1)[1])
    user = User(nginx.base_url)
    user.move((80, 150))  # the first segmentation of this image (not measured)
    user.client.timeout = REQUEST_TIMEOUT

    quiet = _measure(nginx.base_url, user, PAIRS[:2])
    header_timeout = _seconds(_directives()["client_header_timeout"][0][0])
    with HeldConnections(nginx_port) as held:
        start = time.monotonic()
        time.sleep(2.0)  # the idle ones accepted, the slow ones a few bytes into their header
        before = held.open_count
        health, moves = _measure(nginx.base_url, user, PAIRS[2:4])
        # again once nginx has dropped the first ones (client_header_timeout) and they are
        # opened again: the hold goes on
        time.sleep(max(0.0, start + header_timeout + 2.0 - time.monotonic()))
        health_2, moves_2 = _measure(nginx.base_url, user, PAIRS[4:])
        after, reopened, sent = held.open_count, held.closed_by_server, held.bytes_sent
    health, moves = health + health_2, moves + moves_2
    report = [
        f"through nginx, nothing held:   /health {_fmt(quiet[0])}; move {_fmt(quiet[1])}",
        (f"through nginx, {N_IDLE} idle + {N_SLOW} slow-header connections held "
         f"({before} -> {after} open, {reopened} closed by nginx and reopened, {sent} header "
         f"bytes trickled): /health {_fmt(health)}; move {_fmt(moves)}"),
    ]

    # The same straight against gunicorn, for the record (not asserted: it starves).
    direct_user = user.using(app.base_url)
    with HeldConnections(app_port) as held_direct:
        time.sleep(2.0)
        d_health, d_moves = _measure(app.base_url, direct_user, [(86, 146)], repeats=2)
        d_open = held_direct.open_count
    report.append(f"straight to gunicorn, the same connections held ({d_open} open): "
                  f"/health {_fmt(d_health)}; move {_fmt(d_moves)}")
    print("\n" + "\n".join(report))
    # gunicorn gets its threads back once the held connections close
    recovered = _timed(lambda: requests.get(app.base_url + "/health", timeout=60))
    print(f"gunicorn after the connections closed: /health {_fmt([recovered])}")

    # the held connections were really held while nginx answered
    assert before >= N_IDLE + N_SLOW - 5 and after >= N_IDLE + N_SLOW - 5, (before, after)
    assert sent > N_SLOW * 22
    failed = [(what, r) for what, results in (("health", health), ("move", moves))
              for s, r in results if s is None]
    assert not failed, f"no answer within {REQUEST_TIMEOUT} s through nginx: {failed}\n" + \
        "\n".join(report) + "\n" + nginx.describe()


@pytest.mark.server
def test_nginx_drops_a_forged_user_header(tmp_path):
    """With proxy sign-in (PIPEX_TRUST_REMOTE_USER=1) the app trusts X-Forwarded-User from
    127.0.0.1: nginx must never pass on a client's own."""
    _nginx()
    forged = [{"X-Forwarded-User": "alice"}, {"X_Forwarded_User": "alice"}]
    with serve_docker_cmd(workers=1, env={"PIPEX_TRUST_REMOTE_USER": "1"}) as app, \
            serve_nginx(app.base_url, tmp_path) as nginx:
        # straight to the app from 127.0.0.1 the header signs in (so the check can fail)
        direct = requests.get(app.base_url + "/_dash-layout", headers=forged[0], timeout=30)
        assert direct.status_code == 200, app.describe()
        for headers in forged:
            via = requests.get(nginx.base_url + "/_dash-layout", headers=headers, timeout=30)
            assert via.status_code == 401, (headers, via.status_code, via.text[:200])
        assert requests.get(nginx.base_url + "/health", timeout=10).status_code == 200
