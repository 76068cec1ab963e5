"""Time a slider move end to end on the server, over HTTP, for this app and a naive baseline.

Both apps run as real gunicorn servers on 127.0.0.1 (free ports), one worker each, with
``OPENBLAS_NUM_THREADS=1`` (and OMP / MKL):

* **app**: the Dockerfile's command ``gunicorn -c gunicorn.conf.py app:server`` from the repo
  root, ``PIPEX_WORKERS=1`` (``PIPEX_THREADS`` default 2), ``PIPEX_STATE_DIR`` a fresh temporary
  folder, ``PIPEX_DATA_DIR`` a temporary folder holding the 1024x1024 TIFF and the 3D volume
  TIFF;
* **baseline**: ``bench/baseline_app.py`` (the talk's app: one callback running
  ``skimage.segmentation.random_walker(img, mask, mode='cg_mg')`` and returning a Heatmap +
  Contour figure, no cache), ``gunicorn -w 1 -k gthread --threads 2 baseline_app:server``.

Callbacks are driven with ``tests.support.dashclient.DashClient``, which POSTs to
``/_dash-update-component`` the bodies dash-renderer sends. A **move** of this app is the one
POST of the move callback (``move-request-store.data`` -> ``history-store.data`` and the
segmentation overlay, ``callbacks.thresholds``; the histogram's lines follow the slider in the
browser). Its latency is that POST as timed by the client (request sent -> whole answer read),
its size the answer's bytes. A move of the baseline is the one POST of its slider callback.
(Before the move's fast path, a move was three POSTs: parameters, segmentation, histogram.)

For a new (vmin, vmax) the segmentation answer is a live preview (warm-started approximate
solve) that triggers a settle callback (``segmentation-graph.figure (settle)``) with the exact
result; "exact result shown" adds that POST to the move (and, browser-like, is the time of
its answer).

* first visit: a (vmin, vmax) never seen before (5 distinct pairs by default, spread around
  the default thresholds that ``image-store.data`` reports);
* repeat: the same pairs again, in the same order (this app: cache hit; the baseline has no
  cache and recomputes).

A browser does more than that POST: the exact result, the comparison and the measurements
follow it. The page is emulated like dash-renderer does it (props of the layout, updated by
each answer; each changed prop requests the server callbacks it is an Input of; the page's
clientside router, which turns a new history into the signals of the panels that depend on
the changed stages, is emulated too), and two more numbers are reported:

* all N callbacks, in sequence: the move first, then every other callback the move
  triggers (and those they trigger), one after the other; summed latency and bytes;
* browser-like: the callbacks a move triggers scheduled as dash-renderer schedules them:
  concurrent POSTs, one connection each, and a callback waits while an active one may still
  write one of its inputs or states, directly or down its chain (``getReadyCallbacks``);
  time from the slider change to the segmentation's answer and to the last answer. Run on
  another set of new pairs (``--no-parallel`` skips it).

Props computed in the browser by components (a grid's ``virtualRowData``) and components
created by callbacks (pattern-matching ids in new children) are not emulated.

Server-side times come from gunicorn's access log (``%(L)s``, request duration), matched to
the requests in order (one client, requests in sequence).

Cases: ``coins`` (sample dropdown), ``1024`` (``data.camera()`` resized to 1024x1024, uint8,
loaded from the data folder), ``3d`` (``pipeline.io.blobs_3d(SIZE)``, float32, loaded from the
data folder). The talk's app is 2D only (Heatmap): the 3D baseline is
``skimage.segmentation.random_walker`` called directly, in this process, on the same volume and
markers (``cg_j``, and ``cg_mg``), and the app's labels (``download-labels.data``) are compared
with its labels pixel by pixel.

Usage::

    python bench/bench_http.py                       # coins,1024,3d, 5 pairs, 128^3
    python bench/bench_http.py --cases coins --repeats 3 --out /tmp/http.json
"""

from __future__ import annotations

import os

# before numpy is imported (the in-process baseline and the servers' environment)
import single_threaded  # noqa: E402

_SINGLE_THREADED = single_threaded.VARIABLES

import argparse  # noqa: E402
import base64  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

import tifffile  # noqa: E402

import baseline_app  # noqa: E402
from pipeline import io as pio  # noqa: E402
from tests.support import GunicornProcess, dockerfile_cmd, free_port, wait_for_http  # noqa: E402
from tests.support.dashclient import DashClient, iter_components, prop_key  # noqa: E402

DEFAULT_OUT = HERE / "results" / "http.json"
CASES = ("coins", "1024", "3d")
CAMERA_FILE = "camera_1024.tif"

# Targets of the issue.
TARGET_BYTES_FRACTION = 1 / 5  # app move bytes <= 1/5 of the baseline's
TARGET_REPEAT_SERVER_S = 0.030  # segmentation callback of a repeat, server side
TARGET_COINS_SPEEDUP = 3.0  # new vmin/vmax on coins, baseline / app
TARGET_3D_SPEEDUP = 5.0  # new vmin/vmax in 3D, direct random_walker / app
TARGET_3D_AGREEMENT = 0.995
#: Name of the callback that replaces a live preview with the exact segmentation.
SETTLE = "segmentation-graph.figure (settle)"

# Offsets of (vmin, vmax) from the defaults, as fractions of the image's value range.
_OFFSETS = [(-0.03, 0.03), (0.02, -0.02), (-0.05, -0.01), (0.01, 0.05), (-0.02, 0.06),
            (0.04, 0.01), (-0.06, -0.03), (0.03, 0.07), (-0.01, -0.05), (0.05, 0.04),
            (-0.04, 0.02), (0.06, 0.06)]

# Access-log line of a callback POST (gunicorn.conf.py's format; the baseline gets the same).
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s pid=%(p)s'
_POST_LINE = re.compile(
    r'"POST /_dash-update-component HTTP/[\d.]+" (\d{3}) \S+ "[^"]*" "[^"]*" ([\d.]+) pid=')
_PROBLEM = re.compile(r"Traceback|Error|ERROR|CRITICAL|WORKER TIMEOUT|Warning|WARNING|"
                      r'" 5\d\d ')


def log(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------- servers


class Server:
    """A gunicorn server started here (by PID), with its log file tailed for request times."""

    def __init__(self, name, argv, cwd, env, log_dir):
        self.name = name
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_dir) / f"{name}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEX_")}
        full_env.update(
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            PYTHONUNBUFFERED="1",
            **{k: "1" for k in _SINGLE_THREADED},
        )
        full_env.update(env)
        argv = [a.replace("{PORT}", str(port)) for a in argv]
        full_env = {k: v.replace("{PORT}", str(port)) for k, v in full_env.items()}
        with open(self.log_path, "wb") as fh:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=fh, stderr=subprocess.STDOUT)
        self.process = GunicornProcess(proc, self.base_url, self.log_path, argv, full_env)
        self.argv = argv
        self._offset = 0

    def wait(self, timeout=180.0):
        wait_for_http(self.base_url + "/health", timeout=timeout, proc=self.process)
        self.skip_log()
        return self

    def stop(self):
        try:
            return self.process.stop()
        except RuntimeError as exc:  # did not stop in time: killed
            log(f"warning: {exc}")
            return None

    def _read_new(self):
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        # only complete lines
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode("utf-8", "replace")

    def skip_log(self):
        self._read_new()

    def post_times(self, expected, timeout=10.0):
        """Server-side seconds of the next `expected` callback POSTs in the access log."""
        found = []
        deadline = time.monotonic() + timeout
        while True:
            for line in self._read_new().splitlines():
                m = _POST_LINE.search(line)
                if m:
                    found.append((int(m.group(1)), float(m.group(2))))
            if len(found) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if len(found) != expected:
            log(f"warning: {self.name}: expected {expected} POST lines in the access log, "
                f"found {len(found)}")
            return [None] * expected
        return [t for _, t in found]

    def problems(self, limit=30):
        """Distinct log lines that look like errors or warnings (tracebacks, 5xx, timeouts)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        seen, out = set(), []
        for line in text.splitlines():
            if _PROBLEM.search(line):
                key = re.sub(r"\d+", "N", line)[:200]
                if key not in seen:
                    seen.add(key)
                    out.append(line.strip()[:400])
        return out[:limit]


def start_app_server(state_dir, data_dir, workers, threads, log_dir, max_upload_mb,
                     app_dir=REPO_ROOT, name="app"):
    """This app's server: the Dockerfile's CMD of `app_dir` (a checkout), run from `app_dir`."""
    app_dir = Path(app_dir)
    env = {
        "PIPEX_BIND": "127.0.0.1:{PORT}",
        "PIPEX_WORKERS": str(workers),
        "PIPEX_THREADS": str(threads),
        "PIPEX_STATE_DIR": str(state_dir),
        "PIPEX_DATA_DIR": str(data_dir),
        "PIPEX_MAX_UPLOAD_MB": str(max_upload_mb),
    }
    return Server(name, dockerfile_cmd(app_dir / "Dockerfile"), app_dir, env, log_dir)


def start_baseline_server(image_arg, threads, log_dir, name):
    argv = [str(Path(sys.executable).parent / "gunicorn"), "-w", "1", "-k", "gthread",
            "--threads", str(threads), "--timeout", "900", "-b", "127.0.0.1:{PORT}",
            "--access-logfile", "-", "--error-logfile", "-",
            "--access-logformat", ACCESS_LOG_FORMAT, "--no-control-socket",
            "--chdir", str(HERE), "baseline_app:server"]
    return Server(name, argv, HERE, {"BASELINE_IMAGE": str(image_arg)}, log_dir)


class Client(DashClient):
    """DashClient that keeps the last HTTP response (for its headers)."""

    last_response = None

    def _post(self, body):
        self.last_response = super()._post(body)
        return self.last_response


def timed(client, server, output, inputs=None, state=None, triggered=None):
    """One callback POST: (response dict, record with client/server seconds and bytes)."""
    out, seconds, nbytes = client.timed_call(output, inputs=inputs, state=state,
                                             triggered=triggered)
    headers = client.last_response.headers
    server_s = server.post_times(1)[0]
    rec = {"output": output, "client_s": seconds, "server_s": server_s, "bytes": nbytes,
           "wire_bytes": int(headers.get("Content-Length", nbytes)),
           "encoding": headers.get("Content-Encoding", "identity")}
    return out, rec


# --------------------------------------------------------------------------- helpers


def snap(value, meta):
    """The app's snapping of a threshold onto the slider grid (callbacks.params._snap)."""
    step = meta.get("step") or 1.0
    lo = meta["min"]
    return round(lo + round((value - lo) / step) * step, 10)


def make_pairs(meta, n):
    """`n` distinct valid (vmin, vmax), spread around the image's default thresholds."""
    lo, hi = meta["min"], meta["max"]
    span = hi - lo
    seen = {(snap(meta["vmin"], meta), snap(meta["vmax"], meta))}
    pairs = []
    scale = 1.0
    while len(pairs) < n:
        for dmin, dmax in _OFFSETS:
            a = snap(meta["vmin"] + dmin * scale * span, meta)
            b = snap(meta["vmax"] + dmax * scale * span, meta)
            if lo < a < b < hi and (a, b) not in seen:
                seen.add((a, b))
                pairs.append((a, b))
                if len(pairs) == n:
                    break
        scale *= 0.5
        if scale < 1e-3:
            raise RuntimeError(f"could not find {n} distinct threshold pairs for {meta['name']}")
    return pairs


def decode_plotly_array(value):
    """A plotly.js array (list or base64 typed array spec) as a numpy array."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if value.get("shape"):
            arr = arr.reshape([int(s) for s in str(value["shape"]).split(",")])
        return arr
    return np.asarray(value)


def median(values):
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def ms(seconds):
    return "–" if seconds is None else f"{1000 * seconds:,.0f} ms" if seconds >= 0.1 \
        else f"{1000 * seconds:.1f} ms"


def kb(nbytes):
    return "–" if nbytes is None else f"{nbytes / 1024:,.1f} kB"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.1f}×"


def verdict(ok):
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------- this app


def _out_keys(dep):
    """'id.prop' keys of a callback's outputs (non-pattern ids; '@hash' suffixes dropped)."""
    output = dep["output"]
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    keys = []
    for part in parts:
        cid, prop = part.rsplit(".", 1)
        if not cid.startswith("{"):
            keys.append(f"{cid}.{prop.split('@', 1)[0]}")
    return keys


def _in_keys(dep, kind="inputs"):
    """'id.prop' keys of a callback's inputs (or state), non-pattern ids only."""
    return [f"{e['id']}.{e['property']}" for e in dep.get(kind) or []
            if not str(e["id"]).startswith("{")]


def _short(dep):
    """A readable name of a callback: its first output."""
    output = dep["output"]
    first = output[2:-2].split("...")[0] if output.startswith("..") else output
    return first.split("@", 1)[0]


def params_of(state):
    """vmin, vmax, beta, mode, tol of one history state (a recipe, or flat parameters)."""
    if "markers" in state:
        seg = state.get("segmentation") or {}
        p = seg.get("params") or {}
        return {"vmin": state["markers"]["vmin"], "vmax": state["markers"]["vmax"],
                "beta": p.get("beta", 130.0), "mode": p.get("mode", "cg_mg"),
                "tol": p.get("tol", 1e-3), "method": seg.get("name", "random_walker"),
                "filter": (state.get("filter") or {}).get("name", "none")}
    return {"method": "random_walker", "filter": "none", **state}


def object_mask(labels):
    """Object pixels of a label image: label 2 if it is random_walker's 1/2 labelling, else > 0."""
    labels = np.asarray(labels)
    if labels.size and labels.min() >= 1:
        return labels == 2
    return labels > 0


class AppSession:
    """One browser page of this app, driven over HTTP like dash-renderer drives it.

    Keeps the page's props (the layout's, updated by every callback answer) and, after a
    callback answers, POSTs the server-side callbacks whose Inputs it changed (as the
    renderer does; a callback waits while another pending one writes one of its inputs), each
    at most once per user action. Props that components compute in the browser (e.g. a
    DataTable's ``derived_virtual_data``) are not emulated.
    """

    #: The callback of a move: one request pushes the thresholds on the history and draws
    #: the segmentation (callbacks.thresholds; the histogram's lines follow in the browser).
    CORE = ("history-store.data",)

    def __init__(self, server, max_depth=4):
        self.server = server
        self.max_depth = max_depth
        self.client = Client(server.base_url, timeout=900)
        layout = self.client.layout()
        self.all_deps = self.client.dependencies()
        self.deps = [d for d in self.all_deps if not d.get("clientside_function")]
        self._subsequent_cache = {}
        self.props = {}
        for cid, props in iter_components(layout):
            for prop, value in props.items():
                self.props[prop_key(cid, prop)] = value
        self.session_id = self.props["session-store.data"]
        self.params_dep = self._dep_writing("history-store.data", "move-request-store.data")
        self.core = {"history-store.data": self.params_dep}
        self.seg_dep = self._dep_writing("segmentation-graph.figure",
                                         "segmentation-signal-store.data")
        self.seq = 0
        # after a live preview, the exact segmentation replaces it (a second POST)
        self.settle_dep = self._dep_writing("segmentation-graph.figure",
                                            "segmentation-pending-store.data")
        self.labels_dep = self._dep_writing("download-labels.data")
        self.meta = None
        self.n_downloads = 0
        self.triggered_by_history = [_short(d) for d in self.deps
                                     if "history-store.data" in _in_keys(d)]

    def _dep_writing(self, key, needs_input=None):
        for dep in self.deps:
            if key in _out_keys(dep) and (needs_input is None or needs_input in _in_keys(dep)):
                return dep
        raise KeyError(f"app: no server callback writes {key!r}"
                       + (f" from {needs_input!r}" if needs_input else ""))

    @property
    def history(self):
        return self.props.get("history-store.data")

    def recipe(self):
        """The current recipe (the page's history pointer holds it)."""
        return self.history["recipe"]

    def move_request(self, vmin, vmax):
        """What the page's gate sends for a committed pair."""
        self.seq += 1
        return {"move-request-store.data": {"pair": [vmin, vmax], "seq": self.seq}}

    def _apply(self, out):
        changed = set()
        for cid, props in out.items():
            for prop, value in props.items():
                key = f"{cid}.{prop}"
                changed.add(key)
                if isinstance(value, dict) and "__dash_patch_update" in value:
                    continue  # a Patch of a figure: not an input of anything here
                self.props[key] = value
        if "history-store.data" in changed:
            changed |= self._route()
        if "segmentation-settled-store.data" in changed:
            changed |= self._gate()
        return changed

    def _gate(self):
        """The gates of the panels below the first row (GATE_JS of callbacks/visibility.py,
        clientside): every panel is taken to be in view, so the comparison and the
        measurements follow each exact segmentation (the page skips them while they are
        out of view: this is the heavier case)."""
        value = self.props.get("segmentation-settled-store.data")
        out = {f"{store}.data": value for store in ("compare-settled-store",
                                                    "measure-settled-store")}
        # the measurements grid drops its rows (RELOAD_JS of callbacks/measure.py) and AG
        # Grid asks the server for the first block of the new table
        from components.measurements import BLOCK_ROWS

        out["measure-table.getRowsRequest"] = {"startRow": 0, "endRow": BLOCK_ROWS,
                                               "sortModel": [], "filterModel": {}}
        self.props.update(out)
        return set(out)

    def _route(self):
        """The page's router (ROUTE_JS in callbacks/thresholds.py, a clientside callback):
        the signal stores of the panels that depend on the stages the change touched."""
        h = self.history or {}
        ch = set(h.get("changed") or ())
        sig = {"rev": h.get("rev"), "t": time.time()}
        seg_stages = bool(ch & {"image", "filter", "markers", "segmentation", "postprocess"})
        out = {}
        if ch & {"image", "filter"}:
            out["filter-signal-store.data"] = sig
        if seg_stages and not h.get("drawn"):
            out["segmentation-signal-store.data"] = sig
        if "measure" in ch and not seg_stages:
            out["measure-signal-store.data"] = sig
        self.props.update(out)
        return set(out)

    def run(self, dep, triggered, overrides=None):
        """POST one callback with the page's current values; record its timing."""
        inputs = {k: self.props.get(k) for k in _in_keys(dep)}
        state = {k: self.props.get(k) for k in _in_keys(dep, "state")}
        inputs.update(overrides or {})
        out, rec = timed(self.client, self.server, dep["output"], inputs, state, triggered)
        rec["callback"] = _short(dep)
        for key, core in self.core.items():
            if dep is core:  # named by the output the issue talks about
                rec["callback"], rec["core"] = key, True
        if dep is self.settle_dep:
            rec["callback"], rec["settle"] = SETTLE, True
        if dep is self.params_dep or dep is self.seg_dep:
            rec["seg"] = True
        summary = out.get("segmentation-summary", {}).get("children")
        if isinstance(summary, str):
            rec["summary"] = summary
        return out, rec

    def _priority(self, dep):
        for i, key in enumerate(self.CORE):
            if dep is self.core[key]:
                return i
        return len(self.CORE)

    def cascade(self, origin, changed):
        """Run the callbacks the `changed` props trigger, level by level; their records."""
        ran = {origin["output"]}
        records = []
        pending = {}  # output -> (dep, triggers) deferred to the next level
        for _level in range(self.max_depth):
            todo = dict(pending)
            for dep in self.deps:
                if dep["output"] in ran:
                    continue
                trig = [k for k in _in_keys(dep) if k in changed]
                if trig:
                    old = todo.get(dep["output"], (dep, []))[1]
                    todo[dep["output"]] = (dep, old + [k for k in trig if k not in old])
            if not todo:
                break
            # a callback waits while another one to run writes one of its inputs
            writes = {o: set(_out_keys(d)) for o, (d, _) in todo.items()}
            pending, now = {}, []
            for output, (dep, trig) in todo.items():
                others = set().union(*(w for o, w in writes.items() if o != output))
                if others & set(_in_keys(dep)):
                    pending[output] = (dep, trig)
                else:
                    now.append((dep, trig))
            if not now:  # a cycle: run them anyway
                now, pending = list(pending.values()), {}
            now.sort(key=lambda t: self._priority(t[0]))
            changed = set()
            for dep, trig in now:
                out, rec = self.run(dep, trig)
                ran.add(dep["output"])
                records.append(rec)
                changed |= self._apply(out)
        return records

    def load(self, sample=None, data_file=None):
        """Show a newly chosen image: the load callback and everything it triggers."""
        dep = self._dep_writing("image-store.data")
        if data_file is None:  # page load with the default sample: the initial call
            out, rec = self.run(dep, [], {"sample-dropdown.value": sample})
        else:
            out, rec = self.run(dep, ["data-file-dropdown.value"],
                                {"data-file-dropdown.value": data_file})
        rec["callback"] = "image-store.data"
        if "image-store" not in out:
            raise RuntimeError(f"app: load failed: {out.get('load-message')}")
        changed = self._apply(out)
        self.meta = self.props["image-store.data"]
        records = [rec] + self.cascade(dep, changed)
        self._check_segmentation(records)
        return records

    def _check_segmentation(self, records):
        seg = [r for r in records if r.get("seg")]
        if not seg:
            raise RuntimeError("app: the segmentation callback did not run")
        message = self.props.get("segmentation-message.children")
        if message:
            raise RuntimeError(f"app: segmentation failed: {json.dumps(message)[:500]}")
        summary = seg[0].get("summary") or ""
        seg[0]["cached"] = "from cache" in summary
        seg[0]["preview"] = "live preview" in summary
        settle = [r for r in records if r.get("settle")]
        if seg[0]["preview"] and not settle:
            raise RuntimeError("app: a live preview was not followed by the exact result")
        final = (settle[0].get("summary") if settle else summary) or ""
        m = re.search(r"computed in ([\d.]+) s", final)
        seg[0]["compute_s"] = float(m.group(1)) if m else None
        return seg[0]

    def _step_away(self, vmin, vmax):
        """If (vmin, vmax) is already the current setting (the slider would not move), move
        to the image's default thresholds first, untimed (a single-pair run needs it)."""
        p = params_of(self.recipe())
        if math.isclose(p["vmin"], vmin, rel_tol=1e-6) and math.isclose(p["vmax"], vmax,
                                                                           rel_tol=1e-6):
            out, _ = self.run(self.params_dep, ["move-request-store.data"],
                              self.move_request(self.meta["vmin"], self.meta["vmax"]))
            self.cascade(self.params_dep, self._apply(out))

    def move(self, vmin, vmax):
        """A slider move: the parameters callback, then every callback it triggers."""
        self._step_away(vmin, vmax)
        before = self.history
        out, prec = self.run(self.params_dep, ["move-request-store.data"],
                             self.move_request(vmin, vmax))
        if "history-store" not in out:
            message = out.get("param-message", {}).get("children")
            raise RuntimeError(f"app: thresholds {vmin}/{vmax} refused: {message}")
        changed = self._apply(out)
        if self.history == before:
            raise RuntimeError(f"app: thresholds {vmin}/{vmax} did not change the history")
        records = [prec] + self.cascade(self.params_dep, changed)
        srec = self._check_segmentation(records)
        core = [r for r in records if r.get("core")]
        if len(core) != len(self.CORE):
            raise RuntimeError(f"app: a move ran {[r['callback'] for r in records]}")

        def total(recs, field):
            values = [r[field] for r in recs]
            return None if any(v is None for v in values) else sum(values)

        state = self.recipe()
        exact = core + [r for r in records if r.get("settle")]
        return {
            "vmin": vmin, "vmax": vmax, "params": params_of(state),
            "client_s": total(core, "client_s"), "server_s": total(core, "server_s"),
            "exact_client_s": total(exact, "client_s"),
            "exact_server_s": total(exact, "server_s"), "exact_bytes": total(exact, "bytes"),
            "preview": srec["preview"],
            "bytes": total(core, "bytes"), "wire_bytes": total(core, "wire_bytes"),
            "full_client_s": total(records, "client_s"),
            "full_server_s": total(records, "server_s"),
            "full_bytes": total(records, "bytes"), "n_callbacks": len(records),
            "seg_client_s": srec["client_s"], "seg_server_s": srec["server_s"],
            "seg_compute_s": srec["compute_s"], "cached": srec["cached"],
            "parts": records,
        }

    def _subsequent(self, dep):
        """Every output `dep` leads to, transitively (dash-renderer's
        getAllSubsequentOutputsForCallback), over all callbacks, clientside ones included."""
        key = dep["output"]
        if key not in self._subsequent_cache:
            touched, frontier = set(), set(_out_keys(dep))
            while frontier:
                touched |= frontier
                nxt = set()
                for d in self.all_deps:
                    if frontier & set(_in_keys(d)):
                        nxt |= set(_out_keys(d))
                frontier = nxt - touched
            self._subsequent_cache[key] = touched
        return self._subsequent_cache[key]

    def _ready(self, dep, active):
        """dash-renderer's getReadyCallbacks: no input or state of `dep` is an output that an
        active (requested or executing) callback may still write, directly or down its chain."""
        mine = set(_in_keys(dep)) | set(_in_keys(dep, "state"))
        return not any(mine & self._subsequent(other) for other in active if other is not dep)

    def move_browser(self, vmin, vmax, max_runs=3):
        """A slider move scheduled as dash-renderer schedules it.

        The parameters callback runs alone (the slider's change); each answer updates the
        page's props and requests the server callbacks whose Inputs it changed (not the
        callback that answered); every requested callback that is ready (see `_ready`) is
        POSTed at once, on its own connection, as the browser does. Returns client-side times
        from the slider change: to the (last) segmentation answer and to the last answer."""
        self._step_away(vmin, vmax)
        t0 = time.perf_counter()
        out, prec = self.run(self.params_dep, ["move-request-store.data"],
                             self.move_request(vmin, vmax))
        if "history-store" not in out:
            message = out.get("param-message", {}).get("children")
            raise RuntimeError(f"app: thresholds {vmin}/{vmax} refused: {message}")
        n_posts, nbytes, runs, timeline = 1, prec["bytes"], {}, []
        requested = {}  # output -> (dep, triggers)

        def request(changed, source):
            for dep in self.deps:
                if dep is source:
                    continue
                trig = [k for k in _in_keys(dep) if k in changed]
                if trig and runs.get(dep["output"], 0) < max_runs:
                    old = requested.get(dep["output"], (dep, []))[1]
                    requested[dep["output"]] = (dep, old + [k for k in trig if k not in old])

        def one(dep, trig, inputs, state):
            client = Client(self.server.base_url, timeout=900)
            client._layout, client._dependencies = self.client._layout, self.client._dependencies
            client.session.cookies.update(self.client.session.cookies)
            try:
                res, _seconds, size = client.timed_call(dep["output"], inputs, state, trig)
            finally:
                client.session.close()
            return res, time.perf_counter() - t0, size

        request(self._apply(out), self.params_dep)
        executing = {}  # future -> dep
        # the move's own answer brings the first overlay (a preview, or the cached exact)
        to_seg = prec["client_s"]
        first = out.get("segmentation-summary", {}).get("children")
        to_exact = to_seg if isinstance(first, str) and "live preview" not in first else None
        with ThreadPoolExecutor(max_workers=16) as pool:
            while requested or executing:
                active = [d for d, _ in requested.values()] + list(executing.values())
                ready = [o for o, (d, _) in requested.items() if self._ready(d, active)]
                if not ready and not executing:  # should not happen: run them all
                    ready = list(requested)
                for output in ready:
                    dep, trig = requested.pop(output)
                    inputs = {k: self.props.get(k) for k in _in_keys(dep)}
                    state = {k: self.props.get(k) for k in _in_keys(dep, "state")}
                    runs[output] = runs.get(output, 0) + 1
                    start = time.perf_counter() - t0
                    fut = pool.submit(one, dep, trig, inputs, state)
                    fut.start_s = start
                    executing[fut] = dep
                done, _ = wait(list(executing), return_when=FIRST_COMPLETED)
                for fut in done:
                    dep = executing.pop(fut)
                    res, t_done, size = fut.result()
                    n_posts += 1
                    nbytes += size
                    timeline.append({"callback": _short(dep), "start_s": fut.start_s,
                                     "end_s": t_done})
                    summary = res.get("segmentation-summary", {}).get("children")
                    if isinstance(summary, str) and "live preview" not in summary \
                            and dep in (self.seg_dep, self.settle_dep):
                        to_exact = t_done
                    request(self._apply(res), dep)
        self.server.post_times(n_posts - 1)  # consume their access-log lines
        return {"vmin": vmin, "vmax": vmax, "to_seg_s": to_seg, "to_exact_s": to_exact,
                "to_all_s": max([e["end_s"] for e in timeline], default=prec["client_s"]),
                "params_s": prec["client_s"], "n_parallel": n_posts - 1, "bytes": nbytes,
                "timeline": timeline}

    def labels(self):
        """The label image of the current parameters, via the download callback."""
        self.n_downloads += 1
        out, _ = self.run(self.labels_dep, ["download-labels-button.n_clicks"],
                          {"download-labels-button.n_clicks": self.n_downloads})
        data = out["download-labels"]["data"]
        raw = base64.b64decode(data["content"]) if data.get("base64") else data["content"]
        return tifffile.imread(io.BytesIO(raw))


# --------------------------------------------------------------------------- baseline


class BaselineSession:
    """One page of the talk's app."""

    def __init__(self, server):
        self.server = server
        self.client = Client(server.base_url, timeout=900)
        self.client.layout()
        self.client.dependencies()
        self.values = {"vmin-slider.value": self.client.find_component("vmin-slider")["value"],
                       "vmax-slider.value": self.client.find_component("vmax-slider")["value"]}

    def load(self):
        _, rec = timed(self.client, self.server, "graph.figure", inputs=dict(self.values),
                       triggered=[])
        return [rec]

    def move(self, vmin, vmax):
        new = {"vmin-slider.value": vmin, "vmax-slider.value": vmax}
        changed = [k for k in new if new[k] != self.values[k]] or list(new)
        self.values = new
        out, rec = timed(self.client, self.server, "graph.figure", inputs=new, triggered=changed)
        seg = decode_plotly_array(out["graph"]["figure"]["data"][1]["z"])
        rec.update(vmin=vmin, vmax=vmax)
        return rec, seg


# --------------------------------------------------------------------------- cases


def summarize_moves(first, repeat):
    """Medians of this app's moves (the issue's 3 callbacks, and all triggered callbacks)."""
    out = {}
    for prefix in ("", "full_"):
        for field in ("client_s", "server_s", "bytes"):
            out[f"{prefix}first_{field}"] = median([m[prefix + field] for m in first])
            out[f"{prefix}repeat_{field}"] = median([m[prefix + field] for m in repeat])
    for field in ("exact_client_s", "exact_server_s", "exact_bytes"):
        out[f"first_{field}"] = median([m[field] for m in first])
    out["first_previews"] = sum(m["preview"] for m in first)
    out["repeat_seg_server_s"] = median([m["seg_server_s"] for m in repeat])
    out["repeat_seg_client_s"] = median([m["seg_client_s"] for m in repeat])
    out["first_seg_server_s"] = median([m["seg_server_s"] for m in first])
    out["first_seg_compute_s"] = median([m["seg_compute_s"] for m in first])
    out["repeat_cache_hits"] = sum(m["cached"] for m in repeat)
    out["n_callbacks"] = max(m["n_callbacks"] for m in first + repeat)
    per = {}
    for kind, moves in (("first", first), ("repeat", repeat)):
        for m in moves:
            for r in m["parts"]:
                d = per.setdefault(r["callback"], {"core": bool(r.get("core"))})
                d.setdefault(f"{kind}_server_s", []).append(r["server_s"])
                d.setdefault(f"{kind}_bytes", []).append(r["bytes"])
    out["per_callback"] = {
        name: {k: (median(v) if isinstance(v, list) else v) for k, v in d.items()}
        for name, d in per.items()}
    return out


def summarize_parallel(first, repeat):
    if not first:
        return None
    return {
        "first_to_seg_s": median([m["to_seg_s"] for m in first]),
        "first_to_all_s": median([m["to_all_s"] for m in first]),
        "first_to_exact_s": median([m["to_exact_s"] for m in first]),
        "repeat_to_seg_s": median([m["to_seg_s"] for m in repeat]),
        "repeat_to_all_s": median([m["to_all_s"] for m in repeat]),
        "first_bytes": median([m["bytes"] for m in first]),
        "n_parallel": max(m["n_parallel"] for m in first + repeat),
    }


def describe_move(kind, am):
    p = am["params"]
    exact = (f", exact result after {ms(am['exact_client_s'])}" if am["preview"] else "")
    return (f"  {kind:6} vmin/vmax {p['vmin']:g}/{p['vmax']:g}: app {ms(am['client_s'])} "
            f"({kb(am['bytes'])}; seg server {ms(am['seg_server_s'])}"
            f"{', cache hit' if am['cached'] else ''}"
            f"{', live preview' if am['preview'] else ''}{exact}; all {am['n_callbacks']} callbacks "
            f"{ms(am['full_client_s'])}, {kb(am['full_bytes'])})")


def parallel_pass(app, pairs):
    """Browser-like moves (triggered callbacks sent at once) on their own new pairs."""
    first, repeat = [], []
    for kind in ("first", "repeat"):
        for vmin, vmax in pairs:
            pm = app.move_browser(vmin, vmax)
            (first if kind == "first" else repeat).append(pm)
            log(f"  {kind:6} {vmin:g}/{vmax:g} browser-like: segmentation after "
                f"{ms(pm['to_seg_s'])}, all {pm['n_parallel'] + 1} answers after "
                f"{ms(pm['to_all_s'])}")
            if len(first) == 1 and kind == "first":
                log("         answers: " + ", ".join(
                    f"{e['callback'].split('.')[0]} {ms(e['start_s'])}→{ms(e['end_s'])}"
                    for e in sorted(pm["timeline"], key=lambda e: e["end_s"])))
    return first, repeat


def run_2d_case(name, app_server, data_dir, log_dir, args):
    """coins or 1024: this app and the baseline server, interleaved, on the same pairs."""
    if name == "coins":
        image_arg, data_file = "coins", None
    else:
        image_arg, data_file = str(data_dir / CAMERA_FILE), CAMERA_FILE
    log(f"\n### case {name}: starting the baseline server")
    base_server = start_baseline_server(image_arg, args.threads, log_dir, f"baseline-{name}")
    try:
        base_server.wait()
        app = AppSession(app_server)
        t0 = time.perf_counter()
        app_load = app.load(sample="coins" if data_file is None else None, data_file=data_file)
        log(f"app: loaded {app.meta['name']} {app.meta['shape']} {app.meta['dtype']} in "
            f"{time.perf_counter() - t0:.2f} s; defaults vmin/vmax = "
            f"{app.meta['vmin']:g}/{app.meta['vmax']:g}")
        base = BaselineSession(base_server)
        t0 = time.perf_counter()
        base_load = base.load()
        log(f"baseline: page load callback in {time.perf_counter() - t0:.2f} s")
        all_pairs = make_pairs(app.meta, 2 * args.repeats if args.parallel else args.repeats)
        pairs, par_pairs = all_pairs[:args.repeats], all_pairs[args.repeats:]
        app_first, app_repeat, base_first, base_repeat, agreement = [], [], [], [], []
        for kind in ("first", "repeat"):
            for vmin, vmax in pairs:
                am = app.move(vmin, vmax)
                params = am["params"]
                bm, seg = base.move(params["vmin"], params["vmax"])
                (app_first if kind == "first" else app_repeat).append(am)
                (base_first if kind == "first" else base_repeat).append(bm)
                if kind == "first":
                    labels = app.labels()
                    agreement.append(float((object_mask(labels) == (seg == 2)).mean()))
                log(describe_move(kind, am) + f"  baseline {ms(bm['client_s'])} "
                    f"({kb(bm['bytes'])})")
        par_first, par_repeat = parallel_pass(app, par_pairs)
    finally:
        base_problems = base_server.problems()
        base_server.stop()
    summary = {
        "app": summarize_moves(app_first, app_repeat),
        "app_parallel": summarize_parallel(par_first, par_repeat),
        "baseline": {
            "first_client_s": median([m["client_s"] for m in base_first]),
            "repeat_client_s": median([m["client_s"] for m in base_repeat]),
            "first_server_s": median([m["server_s"] for m in base_first]),
            "repeat_server_s": median([m["server_s"] for m in base_repeat]),
            "first_bytes": median([m["bytes"] for m in base_first]),
            "repeat_bytes": median([m["bytes"] for m in base_repeat]),
        },
    }
    summary["app"]["load_client_s"] = sum(r["client_s"] for r in app_load)
    summary["baseline"]["load_client_s"] = sum(r["client_s"] for r in base_load)
    summary["agreement_app_vs_baseline"] = {"min": min(agreement),
                                            "mean": float(np.mean(agreement))}
    return {
        "image": {k: app.meta[k] for k in ("name", "shape", "dtype", "min", "max", "vmin", "vmax")},
        "pairs": [[m["params"]["vmin"], m["params"]["vmax"]] for m in app_first],
        "parallel_pairs": [list(p) for p in par_pairs],
        "callbacks_on_history_change": app.triggered_by_history,
        "summary": summary,
        "app": {"load": app_load, "first": app_first, "repeat": app_repeat,
                "parallel_first": par_first, "parallel_repeat": par_repeat},
        "baseline": {"load": base_load, "first": base_first, "repeat": base_repeat,
                     "argv": base_server.argv, "log_problems": base_problems},
    }


def direct_random_walker(volume, params, mode):
    """skimage.segmentation.random_walker on the volume, timed; (seconds, labels)."""
    from skimage.segmentation import random_walker

    markers = np.zeros(volume.shape, dtype=np.uint8)
    markers[volume < params["vmin"]] = 1
    markers[volume > params["vmax"]] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's "probability range outside [0, 1]"
        t0 = time.perf_counter()
        labels = random_walker(volume, markers, beta=params["beta"], mode=mode, tol=params["tol"])
        seconds = time.perf_counter() - t0
    return seconds, labels


def run_3d_case(app_server, volume_path, args):
    """3D: this app's move vs skimage's random_walker called directly (in this process)."""
    volume = tifffile.imread(volume_path)
    log(f"\n### case 3d: {volume.shape} {volume.dtype}")
    app = AppSession(app_server)
    t0 = time.perf_counter()
    app_load = app.load(data_file=volume_path.name)
    log(f"app: loaded {app.meta['name']} {app.meta['shape']} {app.meta['dtype']} in "
        f"{time.perf_counter() - t0:.2f} s (graph built); defaults vmin/vmax = "
        f"{app.meta['vmin']:g}/{app.meta['vmax']:g}")
    all_pairs = make_pairs(app.meta, 2 * args.repeats if args.parallel else args.repeats)
    pairs, par_pairs = all_pairs[:args.repeats], all_pairs[args.repeats:]
    modes = [m for m in args.direct_modes.split(",") if m]
    direct = {m: [] for m in modes}
    skipped = {}
    app_first, app_repeat, agreement = [], [], {m: [] for m in modes}
    for kind in ("first", "repeat"):
        for i, (vmin, vmax) in enumerate(pairs):
            am = app.move(vmin, vmax)
            (app_first if kind == "first" else app_repeat).append(am)
            line = describe_move(kind, am)
            if kind == "first" and i < args.direct_repeats:
                params = am["params"]
                if params["method"] != "random_walker" or params["filter"] != "none":
                    raise RuntimeError(f"app: unexpected recipe {params}")
                labels = None
                for mode in modes:
                    if mode in skipped:
                        continue
                    seconds, sk_labels = direct_random_walker(volume, params, mode)
                    direct[mode].append({"vmin": params["vmin"], "vmax": params["vmax"],
                                         "seconds": seconds})
                    if labels is None:
                        labels = object_mask(app.labels())
                    agreement[mode].append(float((labels == (sk_labels == 2)).mean()))
                    line += f"  direct {mode} {ms(seconds)} (agreement {agreement[mode][-1]:.4%})"
                    if seconds > args.direct_budget:
                        skipped[mode] = (f"one call took {seconds:.0f} s > --direct-budget "
                                         f"{args.direct_budget:g} s: not repeated")
            log(line)
    par_first, par_repeat = parallel_pass(app, par_pairs)
    summary = {"app": summarize_moves(app_first, app_repeat),
               "app_parallel": summarize_parallel(par_first, par_repeat)}
    summary["app"]["load_client_s"] = sum(r["client_s"] for r in app_load)
    summary["direct"] = {
        mode: {"median_s": median([d["seconds"] for d in direct[mode]]),
               "calls": len(direct[mode]),
               "agreement_min": min(agreement[mode]) if agreement[mode] else None,
               "agreement_mean": float(np.mean(agreement[mode])) if agreement[mode] else None,
               "note": skipped.get(mode)}
        for mode in modes
    }
    return {
        "image": {k: app.meta[k] for k in ("name", "shape", "dtype", "min", "max", "vmin", "vmax")},
        "pairs": [[m["params"]["vmin"], m["params"]["vmax"]] for m in app_first],
        "parallel_pairs": [list(p) for p in par_pairs],
        "callbacks_on_history_change": app.triggered_by_history,
        "summary": summary,
        "app": {"load": app_load, "first": app_first, "repeat": app_repeat,
                "parallel_first": par_first, "parallel_repeat": par_repeat},
        "direct": direct,
    }


# --------------------------------------------------------------------------- report


def _repeat_target(name, a):
    return {
        "case": name, "target": "repeat: segmentation callback ≤ 30 ms on the server",
        "value": ms(a["repeat_seg_server_s"]),
        "pass": a["repeat_seg_server_s"] is not None
        and a["repeat_seg_server_s"] <= TARGET_REPEAT_SERVER_S,
    }


def targets_2d(name, case):
    s = case["summary"]
    a, b = s["app"], s["baseline"]
    out = [{
        "case": name, "target": "move response bytes ≤ 1/5 of baseline",
        "value": f"{kb(a['first_bytes'])} vs {kb(b['first_bytes'])} "
                 f"(1/{ratio(b['first_bytes'], a['first_bytes']):.1f})",
        "pass": a["first_bytes"] <= TARGET_BYTES_FRACTION * b["first_bytes"],
    }, _repeat_target(name, a)]
    if name == "coins":
        speedup = ratio(b["first_client_s"], a["first_client_s"])
        out.append({
            "case": name, "target": "new vmin/vmax ≥ 3× faster than baseline",
            "value": f"{fmt_ratio(speedup)} ({ms(b['first_client_s'])} / "
                     f"{ms(a['first_client_s'])})",
            "pass": speedup is not None and speedup >= TARGET_COINS_SPEEDUP,
        })
    return out


def targets_3d(case):
    s = case["summary"]
    a = s["app"]
    out = [_repeat_target("3d", a)]
    d = s["direct"].get("cg_j")
    if d and d["median_s"] is not None:
        speedup = ratio(d["median_s"], a["first_client_s"])
        out.append({
            "case": "3d", "target": "new vmin/vmax ≥ 5× faster than direct random_walker (cg_j)",
            "value": f"{fmt_ratio(speedup)} ({ms(d['median_s'])} / {ms(a['first_client_s'])})",
            "pass": speedup >= TARGET_3D_SPEEDUP,
        })
        out.append({
            "case": "3d", "target": "labels agree with direct random_walker (cg_j) ≥ 99.5 %",
            "value": f"{d['agreement_min']:.3%} (worst pair)",
            "pass": d["agreement_min"] >= TARGET_3D_AGREEMENT,
        })
    return out


def _app_rows(a, p, ref_first, ref_repeat, ref_bytes):
    """Rows of the app's extra measurements: all triggered callbacks, browser-like timing."""
    def cmp(x, ref):
        return fmt_ratio(ratio(ref, x)) if ref is not None else ""
    n = a["n_callbacks"]
    rows = [
        f"| all {n} callbacks a move triggers, in sequence: first visit | "
        f"{ms(a['full_first_client_s'])} | | {cmp(a['full_first_client_s'], ref_first)} |",
        f"| all {n} callbacks a move triggers, in sequence: repeat | "
        f"{ms(a['full_repeat_client_s'])} | | {cmp(a['full_repeat_client_s'], ref_repeat)} |",
        f"| all {n} callbacks a move triggers: response bytes | {kb(a['full_first_bytes'])} | | "
        f"{cmp(a['full_first_bytes'], ref_bytes)} |",
    ]
    if p:
        rows += [
            f"| browser-like ({p['n_parallel']} callbacks after the parameters, scheduled as "
            f"dash-renderer does): segmentation shown, first visit | {ms(p['first_to_seg_s'])} | | "
            f"{cmp(p['first_to_seg_s'], ref_first)} |",
            f"| browser-like: exact segmentation shown, first visit | "
            f"{ms(p['first_to_exact_s'])} | | {cmp(p['first_to_exact_s'], ref_first)} |",
            f"| browser-like: all panels, first visit | {ms(p['first_to_all_s'])} | | "
            f"{cmp(p['first_to_all_s'], ref_first)} |",
            f"| browser-like: segmentation shown, repeat | {ms(p['repeat_to_seg_s'])} | | "
            f"{cmp(p['repeat_to_seg_s'], ref_repeat)} |",
            f"| browser-like: all panels, repeat | {ms(p['repeat_to_all_s'])} | | "
            f"{cmp(p['repeat_to_all_s'], ref_repeat)} |",
        ]
    return rows


def table_callbacks(a):
    rows = ["| callback (first output) | server, first visit | server, repeat | bytes, first visit |",
            "| --- | ---: | ---: | ---: |"]
    for name, d in a["per_callback"].items():
        star = " *" if d.get("core") else ""
        rows.append(f"| `{name}`{star} | {ms(d.get('first_server_s'))} | "
                    f"{ms(d.get('repeat_server_s'))} | {kb(d.get('first_bytes'))} |")
    return "\n".join(rows)


def table_2d(name, case):
    s = case["summary"]
    a, b = s["app"], s["baseline"]
    img = case["image"]
    rows = [
        f"#### {name}: {img['name']} {' × '.join(map(str, img['shape']))} {img['dtype']} "
        f"({len(case['pairs'])} new vmin/vmax pairs, each visited twice)",
        "",
        "| per slider move | this app | baseline (talk) | baseline / app |",
        "| --- | ---: | ---: | ---: |",
        f"| median latency, first visit (client) | {ms(a['first_client_s'])} | "
        f"{ms(b['first_client_s'])} | {fmt_ratio(ratio(b['first_client_s'], a['first_client_s']))} |",
        f"| median latency, repeat (client) | {ms(a['repeat_client_s'])} | "
        f"{ms(b['repeat_client_s'])} | {fmt_ratio(ratio(b['repeat_client_s'], a['repeat_client_s']))} |",
        f"| median server time, first visit | {ms(a['first_server_s'])} | "
        f"{ms(b['first_server_s'])} | {fmt_ratio(ratio(b['first_server_s'], a['first_server_s']))} |",
        f"| median server time, repeat | {ms(a['repeat_server_s'])} | "
        f"{ms(b['repeat_server_s'])} | {fmt_ratio(ratio(b['repeat_server_s'], a['repeat_server_s']))} |",
        f"| median response bytes, first visit | {kb(a['first_bytes'])} | "
        f"{kb(b['first_bytes'])} | {fmt_ratio(ratio(b['first_bytes'], a['first_bytes']))} |",
        f"| exact result shown (move + settle callback after the live preview), first visit "
        f"(client; previews: {a['first_previews']}/{len(case['pairs'])}) | "
        f"{ms(a['first_exact_client_s'])} | {ms(b['first_client_s'])} | "
        f"{fmt_ratio(ratio(b['first_client_s'], a['first_exact_client_s']))} |",
        f"| exact result: server time, bytes, first visit | {ms(a['first_exact_server_s'])}, "
        f"{kb(a['first_exact_bytes'])} | {ms(b['first_server_s'])}, {kb(b['first_bytes'])} | |",
        f"| segmentation callback alone, repeat (server) | {ms(a['repeat_seg_server_s'])} | | |",
        *_app_rows(a, s.get("app_parallel"), b["first_client_s"], b["repeat_client_s"],
                   b["first_bytes"]),
        f"| image load (all load callbacks, client) | {ms(a['load_client_s'])} | "
        f"{ms(b['load_client_s'])} | |",
        "",
        f"App repeats answered from cache: {a['repeat_cache_hits']}/{len(case['pairs'])}; "
        f"app solve of a new pair (server, median): {ms(a['first_seg_compute_s'])}; "
        f"object pixels, app vs baseline: {s['agreement_app_vs_baseline']['min']:.3%} agree "
        f"(worst pair), {s['agreement_app_vs_baseline']['mean']:.3%} (mean).",
        "",
        table_callbacks(a),
    ]
    return "\n".join(rows)


def table_3d(case):
    s = case["summary"]
    a = s["app"]
    img = case["image"]
    d = s["direct"].get("cg_j") or next(iter(s["direct"].values()), None) or {}
    ref = d.get("median_s")
    rows = [
        f"#### 3d: {img['name']} {' × '.join(map(str, img['shape']))} {img['dtype']} "
        f"({len(case['pairs'])} new vmin/vmax pairs, each visited twice)",
        "",
        "| per new vmin/vmax | this app | direct `random_walker` | direct / app |",
        "| --- | ---: | ---: | ---: |",
        f"| median latency, first visit (client) | {ms(a['first_client_s'])} | {ms(ref)} (cg_j) | "
        f"{fmt_ratio(ratio(ref, a['first_client_s']))} |",
        f"| median latency, repeat (client) | {ms(a['repeat_client_s'])} | {ms(ref)} (cg_j, "
        "no cache) | " f"{fmt_ratio(ratio(ref, a['repeat_client_s']))} |",
    ]
    for mode, dm in s["direct"].items():
        if dm["median_s"] is None:
            rows.append(f"| skimage `{mode}` | | {dm['note'] or 'not run'} | |")
            continue
        rows.append(
            f"| skimage `{mode}`, {dm['calls']} calls; object voxels agree (worst pair) | "
            f"{dm['agreement_min']:.3%} | {ms(dm['median_s'])} | "
            f"{fmt_ratio(ratio(dm['median_s'], a['first_client_s']))} |")
    rows += [
        f"| median response bytes per move | {kb(a['first_bytes'])} | – | |",
        f"| segmentation callback alone, repeat (server) | {ms(a['repeat_seg_server_s'])} | | |",
        *_app_rows(a, s.get("app_parallel"), ref, ref, None),
        f"| image load incl. graph build (client) | {ms(a['load_client_s'])} | | |",
        "",
        f"App repeats answered from cache: {a['repeat_cache_hits']}/{len(case['pairs'])}; "
        f"app solve of a new pair (server, median): {ms(a['first_seg_compute_s'])}.",
        "",
        table_callbacks(a),
    ]
    return "\n".join(rows)


def table_targets(targets):
    rows = ["| case | target | measured | result |", "| --- | --- | --- | --- |"]
    rows += [f"| {t['case']} | {t['target']} | {t['value']} | {verdict(t['pass'])} |"
             for t in targets]
    return "\n".join(rows)


def machine_info():
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("dash", "plotly", "numpy", "scipy", "skimage", "pyamg", "gunicorn"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions,
            "loadavg_start": os.getloadavg()}


# --------------------------------------------------------------------------- main


def prepare_data_dir(data_dir, cases, size):
    """The app's data folder for `cases`: the 1024x1024 TIFF (``CAMERA_FILE``) for ``1024``,
    ``blobs3d_SIZE.tif`` (``pipeline.io.blobs_3d(size)``, float32) for ``3d``.
    Returns (path of the volume TIFF, upload limit in MB large enough for the files)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if "1024" in cases:
        shutil.copyfile(baseline_app.camera_1024_tiff(), data_dir / CAMERA_FILE)
    volume_path = data_dir / f"blobs3d_{size}.tif"
    if "3d" in cases:
        tifffile.imwrite(volume_path, pio.blobs_3d(size).astype(np.float32))
    max_mb = max(64, int(sum(f.stat().st_size for f in data_dir.iterdir()) / 2**20) + 16)
    return volume_path, max_mb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated subset of coins,1024,3d (default: all)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="distinct new (vmin, vmax) pairs per case; each is timed as a first "
                             "visit, then again as a repeat (default 5)")
    parser.add_argument("--size", type=int, default=128, help="edge of the 3D volume (default 128)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--workers", type=int, default=1,
                        help="PIPEX_WORKERS of this app's server (default 1; the baseline "
                             "always has 1 worker)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per worker of both servers (default 2, PIPEX_THREADS)")
    parser.add_argument("--direct-modes", default="cg_j,cg_mg",
                        help="skimage modes timed directly in 3D (default cg_j,cg_mg)")
    parser.add_argument("--direct-repeats", type=int, default=3,
                        help="3D pairs on which random_walker is called directly (default 3)")
    parser.add_argument("--direct-budget", type=float, default=120.0,
                        help="stop calling a direct mode after one call took longer (s)")
    parser.add_argument("--no-parallel", dest="parallel", action="store_false",
                        help="skip the browser-like pass (triggered callbacks sent at once, on "
                             "another set of new pairs)")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if a target is not met")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose among {', '.join(CASES)}")
    if not 1 <= args.repeats <= 20:
        parser.error("--repeats must be between 1 and 20")
    if args.size < 8:
        parser.error("--size must be at least 8")

    started = time.perf_counter()
    info = machine_info()
    log(f"bench_http: cases {cases}, {args.repeats} pairs each, app PIPEX_WORKERS={args.workers} "
        f"PIPEX_THREADS={args.threads}, baseline 1 worker x {args.threads} threads, "
        f"OPENBLAS/OMP/MKL_NUM_THREADS=1; {info['cores']} cores ({info['cpu']}), "
        f"load average {info['loadavg_start'][0]:.2f}")
    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": info,
        "settings": {"cases": cases, "repeats": args.repeats, "size": args.size,
                     "app_workers": args.workers, "threads": args.threads,
                     "baseline_workers": 1, "direct_modes": args.direct_modes,
                     "direct_repeats": args.direct_repeats,
                     "blas_threads": {k: "1" for k in _SINGLE_THREADED}},
        "cases": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="pipex-bench-"))
    log_dir = args.out.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    app_server = None
    try:
        data_dir = tmp / "data"
        volume_path, max_mb = prepare_data_dir(data_dir, cases, args.size)
        log("starting this app's server (Dockerfile CMD)")
        app_server = start_app_server(tmp / "state", data_dir, args.workers, args.threads,
                                      log_dir, max_mb)
        app_server.wait()
        results["app_server"] = {"argv": app_server.argv, "workers": args.workers,
                                 "threads": args.threads}
        for name in cases:
            if name == "3d":
                results["cases"][name] = run_3d_case(app_server, volume_path, args)
            else:
                results["cases"][name] = run_2d_case(name, app_server, data_dir, log_dir, args)
    finally:
        if app_server is not None:
            results.setdefault("app_server", {})["log_problems"] = app_server.problems()
            code = app_server.stop()
            results["app_server"]["exit_code"] = code
        shutil.rmtree(tmp, ignore_errors=True)

    targets = []
    tables = []
    for name, case in results["cases"].items():
        if name == "3d":
            tables.append(table_3d(case))
            targets += targets_3d(case)
        else:
            tables.append(table_2d(name, case))
            targets += targets_2d(name, case)
    results["targets"] = targets
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["loadavg_end"] = os.getloadavg()

    log("\n## Results\n")
    log(f"{results['date']}, {info['cores']} cores ({info['cpu']}); app: gunicorn "
        f"PIPEX_WORKERS={args.workers} x {args.threads} threads; baseline: gunicorn 1 worker x "
        f"{args.threads} threads; BLAS threads 1. Latency = client-timed POSTs, summed: a move "
        "of this app = the parameters + segmentation + histogram callbacks (the issue's "
        "definition; `*` below), of the baseline = its one callback. 'All N callbacks' adds "
        "every other server callback the move triggers; 'browser-like' schedules them as "
        "dash-renderer does (concurrent POSTs; a callback waits while an active one may still "
        "write one of its inputs or states) and times until the segmentation / the last "
        "answer arrives.\n")
    for table in tables:
        log(table + "\n")
    log("#### Targets\n")
    log(table_targets(targets) + "\n")
    problems = {"app": results.get("app_server", {}).get("log_problems", [])}
    for name, case in results["cases"].items():
        if "baseline" in case:
            problems[f"baseline-{name}"] = case["baseline"]["log_problems"]
    for name, lines in problems.items():
        if lines:
            log(f"server log of {name}: {len(lines)} distinct warning/error line(s):")
            for line in lines:
                log(f"    {line}")
    log(f"\nserver logs: {log_dir}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {args.out}  (total {results['elapsed_s']:.0f} s)")
    if args.check and not all(t["pass"] for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
