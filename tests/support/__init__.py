"""Helpers shared by the tests: repo paths, free ports, and serving the Dockerfile's command.

``serve_docker_cmd`` starts the image's ``CMD`` (gunicorn with gunicorn.conf.py) from the
repo root, outside Docker, on a loopback port; conftest.py wraps it in the ``gunicorn_server``
fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"

__all__ = [
    "REPO_ROOT",
    "DOCKERFILE",
    "GunicornProcess",
    "dockerfile_cmd",
    "dockerfile_instructions",
    "free_port",
    "NGINX_CONF",
    "NginxProcess",
    "nginx_binary",
    "nginx_test_conf",
    "serve_docker_cmd",
    "serve_nginx",
    "title_of",
    "wait_for_http",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dockerfile_instructions(dockerfile: Path):
    """(INSTRUCTION, arguments) of a Dockerfile, with continuation lines joined."""
    logical, current = [], ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current.strip():
        logical.append(current)
    for text in logical:
        word, _, rest = text.partition(" ")
        yield word.upper(), rest.strip()


def dockerfile_cmd(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The argv of the (last) ``CMD`` of `dockerfile`, which must be in exec (JSON) form."""
    cmds = [args for word, args in dockerfile_instructions(dockerfile) if word == "CMD"]
    if not cmds:
        raise ValueError(f"{dockerfile} has no CMD")
    try:
        argv = json.loads(cmds[-1])
    except json.JSONDecodeError:
        raise ValueError(f"CMD of {dockerfile} is not in exec (JSON) form: {cmds[-1]}") from None
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"CMD of {dockerfile} is not a JSON list of strings: {cmds[-1]}")
    return argv


def child_pids(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (Linux /proc): a gunicorn master's workers."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def stop_by_pid(server, timeout: float, what: str) -> int:
    """SIGTERM `server` (``.proc``, ``.pid``, ``.describe()``) by its PID and wait; SIGKILL
    it and raise if it hangs. Returns the exit code."""
    if server.proc.poll() is None:
        os.kill(server.pid, signal.SIGTERM)
        try:
            return server.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
            raise RuntimeError(f"{what} did not stop within {timeout}s of SIGTERM; killed\n"
                               f"{server.describe()}") from None
    return server.proc.returncode


class GunicornProcess:
    """A server process started by `serve_docker_cmd`: its Popen, URL and log file."""

    def __init__(self, proc: subprocess.Popen, base_url: str, log_path: Path, argv, env):
        self.proc = proc
        self.pid = proc.pid
        self.base_url = base_url
        self.log_path = log_path
        self.argv = argv
        self.env = env

    def log(self, tail: int = 60) -> str:
        """The last `tail` lines of the server's combined stdout/stderr."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def describe(self) -> str:
        """Command, pid and log tail, for failure messages."""
        return f"$ {shlex.join(self.argv)}  (pid {self.pid})\n--- server log ---\n{self.log()}"

    def stop(self, timeout: float = 45.0) -> int:
        """SIGTERM the server (by PID), wait for it; SIGKILL if it hangs. Returns the exit code."""
        return stop_by_pid(self, timeout, "server")


def wait_for_http(url: str, timeout: float = 60.0, proc: GunicornProcess | None = None):
    """Poll `url` until it answers 200; return that response. Fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(
                f"server exited with code {proc.proc.returncode} before {url} answered\n"
                + proc.describe()
            )
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.25)
    where = f"\n{proc.describe()}" if proc is not None else ""
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s (last: {last}){where}")


def wait_for_port(host: str, port: int, timeout: float = 60.0, proc=None):
    """Wait until `port` accepts TCP connections (gunicorn's master is listening; a request
    then waits in the backlog until a worker takes it)."""
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"server exited early\n{proc.describe()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} did not accept connections in {timeout} s")


@contextlib.contextmanager
def serve_docker_cmd(env=None, workers: int = 2, health_timeout: float = 60.0, state_dir=None,
                     wait="health", port: int | None = None):
    """Run the Dockerfile's CMD from the repo root on a free loopback port; yield the process.

    The interpreter's bin directory (the venv's) comes first on PATH so that ``gunicorn`` is the
    one installed next to it. ``PIPEX_BIND`` is 127.0.0.1:<free port>, ``PIPEX_STATE_DIR`` and
    ``PIPEX_DATA_DIR`` are fresh temporary folders unless given. Waits for ``/health`` (or,
    with ``wait="port"``, only until the port accepts connections: the workers may still be
    booting); on exit, terminates the server by PID and waits for it. `port`: a given loopback
    port instead of a free one.
    """
    argv = dockerfile_cmd()
    port = free_port() if port is None else port
    with tempfile.TemporaryDirectory(prefix="pipex-serve-") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "data"
        data_dir.mkdir()
        full_env = dict(os.environ)
        full_env.pop("PIPEX_CACHE_DIR", None)  # default: inside the temporary state dir
        full_env.update(
            PATH=os.pathsep.join([str(Path(sys.executable).parent), full_env.get("PATH", "")]),
            PIPEX_BIND=f"127.0.0.1:{port}",
            PIPEX_WORKERS=str(workers),
            PIPEX_STATE_DIR=str(state_dir if state_dir is not None else tmp / "state"),
            PIPEX_DATA_DIR=str(data_dir),
            PYTHONUNBUFFERED="1",
        )
        full_env.update(env or {})
        log_path = tmp / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = GunicornProcess(proc, f"http://127.0.0.1:{port}", log_path, argv, full_env)
        try:
            if wait == "port":
                wait_for_port("127.0.0.1", port, timeout=health_timeout, proc=server)
            else:
                wait_for_http(server.base_url + "/health", timeout=health_timeout, proc=server)
            yield server
        except BaseException:
            server.stop()
            raise
        code = server.stop()
        if code != 0:
            raise RuntimeError(f"server exited with code {code} after SIGTERM\n{server.describe()}")


def title_of(html: str) -> str | None:
    """Text of the first <title> element of an HTML page."""
    match = re.search(r"<title[^>]*>(.*?)</title>", html, re.IGNORECASE | re.DOTALL)
    return match.group(1).strip() if match else None


# --- nginx in front (deploy/nginx.conf) ---------------------------------------------------------

NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    """Path of the nginx executable (PATH, then Debian's /usr/sbin/nginx), or None."""
    found = shutil.which("nginx")
    if found:
        return found
    debian = Path("/usr/sbin/nginx")
    return str(debian) if debian.is_file() and os.access(debian, os.X_OK) else None


def _directive(line: str, name: str) -> bool:
    """Whether the active (uncommented) `line` is the nginx directive `name`."""
    return re.match(rf"\s*{name}\s", line) is not None


def nginx_test_conf(prefix: Path, listen_port: int, upstream: str,
                    source: Path = NGINX_CONF) -> Path:
    """Write `source` (deploy/nginx.conf) into `prefix` for an nginx run by a normal user.

    Only what ties it to a machine changes: ``listen`` becomes 127.0.0.1:`listen_port`, the
    upstream ``server`` becomes `upstream` ("127.0.0.1:PORT"), the pid file, the error and
    access logs and the temporary folders go into `prefix`, and ``user`` is dropped (as root, it
    names root, so that the workers can write the temporary folders under `prefix`). Every
    other directive is kept as written. Raises ValueError if the file no longer has the shape
    these replacements expect (one pid, one ``http {``, one upstream server, a listen).
    Returns the path of the written configuration.
    """
    prefix = Path(prefix)
    temp = prefix / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(("pid", "http", "upstream", "listen"), 0)
    out = []
    for line in Path(source).read_text(encoding="utf-8").splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        if line.lstrip().startswith("#"):
            out.append(line)
        elif _directive(line, "user"):
            if os.geteuid() == 0:
                import pwd

                out.append(f"{indent}user {pwd.getpwuid(0).pw_name};")
        elif _directive(line, "pid"):
            counts["pid"] += 1
            out.append(f"{indent}pid {prefix / 'nginx.pid'};")
        elif _directive(line, "error_log"):
            level = line.strip().rstrip(";").split()[2:]
            out.append(" ".join([f"{indent}error_log", str(prefix / "error.log"), *level]) + ";")
        elif _directive(line, "access_log") and "/" in line:
            fmt = line.strip().rstrip(";").split()[2:]
            out.append(" ".join([f"{indent}access_log", str(prefix / "access.log"), *fmt]) + ";")
        elif _directive(line, "listen"):
            counts["listen"] += 1
            out.append(f"{indent}listen 127.0.0.1:{listen_port};")
        elif re.match(r"\s*server\s+[^\s{;]+:\d+", line):
            counts["upstream"] += 1
            out.append(f"{indent}server {upstream};")
        elif re.match(r"\s*http\s*\{", line):
            counts["http"] += 1
            out.append(line)
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                out.append(f"{indent}    {kind}_temp_path {temp / kind};")
        else:
            out.append(line)
    expected = {"pid": 1, "http": 1, "upstream": 1}
    wrong = {k: counts[k] for k in expected if counts[k] != expected[k]}
    if wrong or counts["listen"] < 1:
        raise ValueError(f"{source} does not have the expected shape: {counts}")
    conf = prefix / "nginx.conf"
    conf.write_text("\n".join(out) + "\n", encoding="utf-8")
    return conf


class NginxProcess:
    """An nginx master started by `serve_nginx` (``daemon off``): Popen, URL, prefix."""

    def __init__(self, proc: subprocess.Popen, base_url: str, prefix: Path, conf: Path, argv):
        self.proc = proc
        self.pid = proc.pid
        self.base_url = base_url
        self.prefix = prefix
        self.conf = conf
        self.argv = argv

    def log(self, tail: int = 40) -> str:
        """The last `tail` lines of nginx's error log and of its output."""
        parts = []
        for name in ("error.log", "nginx.out"):
            try:
                lines = (self.prefix / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            parts.append(f"--- {name} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)

    def describe(self) -> str:
        return f"$ {shlex.join(self.argv)}  (pid {self.pid})\n{self.log()}"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the master by PID (a fast shutdown: it stops its workers) and wait."""
        return stop_by_pid(self, timeout, "nginx")


@contextlib.contextmanager
def serve_nginx(upstream_url: str, prefix: Path, source: Path = NGINX_CONF, timeout: float = 30.0):
    """Run nginx with `source` made local by `nginx_test_conf`, in front of `upstream_url`
    (``http://127.0.0.1:PORT``), on a free loopback port; yield an `NginxProcess` once it
    answers; SIGTERM it by PID on exit. Everything it writes stays in `prefix`."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (make test installs Debian's nginx-light)")
    prefix = Path(prefix)
    port = free_port()
    upstream = upstream_url.split("://", 1)[-1].rstrip("/")
    conf = nginx_test_conf(prefix, port, upstream, source)
    argv = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
            "-g", "daemon off;"]
    with open(prefix / "nginx.out", "wb") as out:
        proc = subprocess.Popen(argv, cwd=prefix, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    server = NginxProcess(proc, f"http://127.0.0.1:{port}", prefix, conf, argv)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with code {proc.returncode}\n{server.describe()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nginx did not listen within {timeout}s\n"
                                       + server.describe()) from None
                time.sleep(0.05)
        yield server
    finally:
        server.stop()
