"""Load and faults: N simulated users on one server with the README's settings (issue 11).

The server is the Dockerfile's command (``gunicorn -c gunicorn.conf.py app:server``) started
the way ``bench_http.py`` starts it (``bench_http.Server``: from the repo root, on 127.0.0.1
and a free port, stopped by its PID), with ``PIPEX_WORKERS=2`` and ``PIPEX_THREADS=2``, a
fresh ``PIPEX_STATE_DIR`` per run (an empty cache) and every other setting at its default.

Each simulated user is a thread doing what a person does in a browser, with think times
(``--think``, default 0.5–2 s, uniform) between actions, for ``--seconds``:

* **page load**: ``GET /``, ``/_dash-layout``, ``/_dash-dependencies`` (the session id);
* **load a sample** (coins): the load callback and every callback it triggers
  (``bench_http.AppSession.load``), then ``POST /_pipex/values`` (the page draws the markers);
* then, in a loop (weights ``--mix``, default move 65 %, undo 12 %, filter 11 %, download
  12 %):

  - **move** the thresholds to a new (vmin, vmax) a few % of the value range away, as the
    page's gate does: ``POST /_pipex/move``; when its answer is a live preview (it then names
    a pending exact result) ``POST /_pipex/settle``. *Move time* = that request plus the
    settle when one is needed: a key press to the answer with the exact overlays. Then the
    answer's other outputs are handed to the page and the callbacks they trigger run
    (comparison, measurements, recipe view, …; ``AppSession.cascade``), as dash-renderer
    runs them (in sequence here, one connection per user); then the preparation of the
    next step the page asks for (``POST /_pipex/prefetch``): never used by these random
    moves, so only its cost is measured;
  - **undo** (the undo button: the history callback, then what it triggers);
  - **change the filter** (none / gaussian / median, the filter dropdown): *filter time* =
    the history callback until the segmentation panel's exact answer (its live preview's
    settle included), with the segmentation callbacks run first; the other panels follow;
  - **download the labels** (the download callback; the TIFF is decoded): *download time*.

Requests go through one ``requests.Session`` per user (keep-alive, as a browser). A request
lost as the page loses it (connection error, 502 / 503 / 504) is sent once more after 0.5 s,
as ``assets/retry.js`` does; every failed attempt is counted as an error by kind, and
*unrecovered* errors are those whose retry failed too (or that are not retried: 500, 4xx,
an application error such as a refused move).

Measured per run: requests, errors by kind, p50 / p95 / max of a move, a filter change, a
download (and undo, page and sample loads); the workers' CPU seconds (``/proc``, summed over
every worker process seen, recycled ones included) and peak RSS (``VmHWM``, the largest of
any worker), the state dir's ``store/`` and ``joblib/`` sizes (sampled every 0.5 s; largest
seen) against ``PIPEX_STORE_SIZE_GB`` and twice that; worker boots and recycles in gunicorn's
log; the load average before and after.

Scenarios:

* ``--users 1,5,20``: one run per N (``--seconds`` each, a fresh server each);
* ``--heavy-neighbour``: 5 users on coins without, then with one more user who loads a
  large generated image (``--heavy-size``, default 2048², uint8, from the data folder) and
  moves its thresholds (the reduced-grid preview, then the exact 2048² random walker); the
  others' p95 of a move with / without;
* ``--kill-worker``: 5 users; at half time one worker is SIGKILLed (by its pid, a child of
  the master; one that is computing, so that requests are in flight); the requests that
  failed, and afterwards, for every user, whether the session
  still answers: its history is readable (an undo answers the previous state) and the
  labels download works.

Usage::

    python bench/bench_load.py                                  # N = 1, 5, 20, 60 s each
    python bench/bench_load.py --users 1,5,20 --heavy-neighbour --kill-worker --seconds 45
    python bench/bench_load.py --users 2 --seconds 5 --out /tmp/load.json   # a quick check

Results: ``--out`` (default ``bench/results/load.json``) and a markdown table on stdout. The
exit status is 1 when a user crashed outside a request or, with ``--check``, when a run had
errors.
"""

from __future__ import annotations

import os

# BLAS at one thread, before numpy is imported
import single_threaded  # noqa: E402, F401

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import requests  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402
from bench_http import AppSession, Server, log, snap  # noqa: E402
from tests.support import child_pids, dockerfile_cmd  # noqa: E402
from tests.support.dashclient import DashCallbackError  # noqa: E402

DEFAULT_OUT = HERE / "results" / "load.json"
PENDING = "segmentation-pending-store"
RETRIED = (502, 503, 504)  # what assets/retry.js sends again (besides a lost connection)
FILTERS = ("none", "gaussian", "median")
DEFAULT_MIX = {"move": 0.65, "undo": 0.12, "filter": 0.11, "download": 0.12}
REQUEST_TIMEOUT = 180.0
HEAVY_FILE = "heavy.tif"
# seconds since the run started, per kind of timed action
ACTIONS = ("page", "load", "move", "filter", "undo", "download")


# --------------------------------------------------------------------------- recording


class Recorder:
    """What all users of one run did: timed actions, requests, errors (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        self.requests = 0
        self.errors = collections.Counter()  # every failed attempt, by kind
        self.unrecovered = collections.Counter()  # failures the page could not hide
        self.error_times = []  # (seconds since start, kind, path)
        self.samples = collections.defaultdict(list)  # (user, action) -> [seconds]
        self.previews = 0
        self.crashes = []

    def now(self):
        return time.perf_counter() - self.t0

    def request(self):
        with self.lock:
            self.requests += 1

    def error(self, kind, path, final):
        with self.lock:
            self.errors[kind] += 1
            if final:
                self.unrecovered[kind] += 1
            self.error_times.append((round(self.now(), 3), kind, path, final))

    def sample(self, user, action, seconds):
        with self.lock:
            self.samples[(user, action)].append(seconds)

    def times(self, action, users=None):
        return [s for (u, a), v in self.samples.items() for s in v
                if a == action and (users is None or u in users)]


class TracedSession(requests.Session):
    """A user's connection pool: counts requests and errors, and sends a lost request once
    more after 0.5 s (a connection error or a 502 / 503 / 504), as the page does."""

    def __init__(self, recorder, retry=True):
        super().__init__()
        self.recorder = recorder
        self.retry = retry

    def request(self, method, url, *args, **kwargs):
        kwargs["timeout"] = min(kwargs.get("timeout") or REQUEST_TIMEOUT, REQUEST_TIMEOUT)
        path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
        for attempt in (0, 1):
            last = attempt == 1 or not self.retry
            self.recorder.request()
            try:
                response = super().request(method, url, *args, **kwargs)
            except requests.Timeout:
                self.recorder.error("timeout", path, final=True)
                raise  # a request that takes that long is not sent again by the page
            except requests.ConnectionError as exc:
                text = str(exc).lower()
                kind = ("connection reset" if "reset" in text or "aborted" in text
                        or "remotedisconnected" in text else
                        "connection refused" if "refused" in text else "connection error")
                self.recorder.error(kind, path, final=last)
                if last:
                    raise
                time.sleep(0.5)
                continue
            if response.status_code < 400:
                return response
            retried = response.status_code in RETRIED and not last
            self.recorder.error(f"HTTP {response.status_code}", path, final=not retried)
            if not retried:
                return response
            time.sleep(0.5)
        raise AssertionError("unreachable")


_local = threading.local()


class TracedClient(bench_http.Client):
    """bench_http's DashClient, on the calling user's `TracedSession` (AppSession creates
    its client itself: it takes the session of the thread that creates it)."""

    def __init__(self, base_url, **kwargs):
        if getattr(_local, "session", None) is not None:
            kwargs.setdefault("session", _local.session)
        super().__init__(base_url, **kwargs)


bench_http.Client = TracedClient  # AppSession looks `Client` up in bench_http when it runs


class _NoLog:
    """What AppSession needs of a server, without the access-log matching of bench_http (it
    pairs log lines with one client's requests in order: meaningless with many users)."""

    def __init__(self, base_url):
        self.base_url = base_url

    def post_times(self, expected, timeout=0.0):
        return [None] * expected


class AppError(RuntimeError):
    """The app answered, but with a refusal or an error message (counted by kind)."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# --------------------------------------------------------------------------- one user


class User(AppSession):
    """One browser page of the app, driven like a person drives it."""

    def __init__(self, base_url, recorder, name, rng, mix, think, retry=True):
        self.name = name
        self.rec = recorder
        self.rng = rng
        self.mix = mix
        self.think_range = think
        self.http = TracedSession(recorder, retry=retry)
        self.base_url = base_url
        self.n_undo = 0
        self.exact_at = None
        self.ready = False
        _local.session = self.http
        try:
            t = time.perf_counter()
            page = self.http.get(base_url + "/", timeout=60)
            if page.status_code != 200:
                raise AppError(f"page HTTP {page.status_code}")
            super().__init__(_NoLog(base_url))  # /_dash-layout, /_dash-dependencies
            self.rec.sample(name, "page", time.perf_counter() - t)
        finally:
            _local.session = None
        self.undo_dep = self._dep_writing("history-store.data", "undo-button.n_clicks")
        self.filter_dep = self._dep_writing("history-store.data", "filter-method.value")

    # -- the page's context and the fast path

    def ctx(self):
        p = self.props
        return {"session": self.session_id, "image": self.meta["id"],
                "history": self.history, "base": p.get("segmentation-base-store.data"),
                "view": {"axis": p.get("slice-axis.value"), "index": p.get("slice-index.value"),
                         "style": p.get("overlay-style.value"),
                         "show": p.get("show-markers.value"),
                         "view": p.get("result-view.value")}}

    def fast(self, name, body):
        response = self.http.post(f"{self.base_url}/_pipex/{name}", json=body, timeout=120)
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise DashCallbackError(response.status_code, response.text, f"/_pipex/{name}")
        return response.json()

    def run(self, dep, triggered, overrides=None):
        out, rec = super().run(dep, triggered, overrides)
        summary = rec.get("summary")
        if dep in (self.seg_dep, self.settle_dep) and isinstance(summary, str) \
                and "live preview" not in summary and self.exact_at is None:
            self.exact_at = time.perf_counter()
        return out, rec

    def _priority(self, dep):
        # the segmentation panel first (the rest of the page follows it)
        return 0 if dep in (self.seg_dep, self.settle_dep) else 1

    # -- actions

    def load_sample(self, sample=None, data_file=None):
        t = time.perf_counter()
        _local.session = self.http
        try:
            self.load(sample=sample, data_file=data_file)
        finally:
            _local.session = None
        self.rec.sample(self.name, "load", time.perf_counter() - t)
        self.fast("values", self.ctx())  # the page's markers (once per image and filter)
        self.ready = True

    def new_pair(self):
        m = self.recipe()["markers"]
        lo, hi, span = self.meta["min"], self.meta["max"], self.meta["max"] - self.meta["min"]
        for _ in range(50):
            a = snap(m["vmin"] + self.rng.uniform(-0.06, 0.06) * span, self.meta)
            b = snap(m["vmax"] + self.rng.uniform(-0.06, 0.06) * span, self.meta)
            if lo < a < b < hi and (a, b) != (m["vmin"], m["vmax"]):
                return a, b
        return snap(self.meta["vmin"], self.meta), snap(self.meta["vmax"], self.meta)

    def move(self):
        m = self.recipe()["markers"]
        old = (m["vmin"], m["vmax"])
        a, b = self.new_pair()
        self.seq += 1
        ctx = self.ctx()
        t = time.perf_counter()
        res = self.fast("move", {**ctx, "request": {"pair": [a, b], "seq": self.seq}})
        if res is None:
            raise AppError("move answered 204 (nothing drawn)")
        out = res.get("outputs") or {}
        if not res.get("full") and not res.get("overlays"):
            msg = (out.get("param-message") or {}).get("children")
            raise AppError("move refused", json.dumps(msg)[:200])
        pending = (out.get(PENDING) or {}).get("data")
        history = (out.get("history-store") or {}).get("data")
        settled = {}
        if pending and history:
            self.rec.previews += 1
            base = (out.get("segmentation-base-store") or {}).get("data", ctx["base"])
            res2 = self.fast("settle", {**ctx, "history": history, "base": base,
                                        "pending": pending})
            settled = (res2 or {}).get("outputs") or {}
        self.rec.sample(self.name, "move", time.perf_counter() - t)
        message = (settled.get("segmentation-message") or out.get("segmentation-message")
                   or {}).get("children")
        # the page hands the other outputs to Dash: the callbacks they trigger run
        changed = self._apply({k: v for k, v in out.items() if k != PENDING})
        changed |= self._apply(settled)
        self._cascade(self.params_dep, changed)
        if message:
            raise AppError("segmentation message", json.dumps(message)[:200])
        # the page then asks the server to prepare the next step (POST /_pipex/prefetch,
        # assets/fastmove.js); this user's next move is elsewhere, so it is extra load only
        nxt = [a, b + (b - old[1])] if b != old[1] else [a + (a - old[0]), b]
        if history and nxt[0] < nxt[1]:
            self.fast("prefetch", {**self.ctx(), "request": {"pair": nxt, "seq": self.seq}})

    def _cascade(self, origin, changed):
        _local.session = self.http
        try:
            return self.cascade(origin, changed)
        finally:
            _local.session = None

    def history_action(self, dep, trigger, value):
        _local.session = self.http
        try:
            self.exact_at = None
            t = time.perf_counter()
            out, _ = self.run(dep, [trigger], {trigger: value})
            if "history-store" not in out:
                msg = (out.get("param-message") or {}).get("children")
                raise AppError(f"{trigger} refused", json.dumps(msg)[:200])
            self.cascade(dep, self._apply(out))
            message = self.props.get("segmentation-message.children")
            if message:
                raise AppError("segmentation message", json.dumps(message)[:200])
            return t
        finally:
            _local.session = None

    def undo(self):
        if not (self.history or {}).get("index"):
            return self.move()  # nothing to undo yet: a person moves a threshold instead
        self.n_undo += 1
        before = self.history["index"]
        t = self.history_action(self.undo_dep, "undo-button.n_clicks", self.n_undo)
        self.rec.sample(self.name, "undo", (self.exact_at or time.perf_counter()) - t)
        if self.history["index"] != before - 1:
            raise AppError("undo did not go back one step")

    def change_filter(self):
        current = (self.recipe().get("filter") or {}).get("name", "none")
        choice = self.rng.choice([f for f in FILTERS if f != current])
        t = self.history_action(self.filter_dep, "filter-method.value", choice)
        if self.exact_at is None:
            raise AppError("filter change: no segmentation answer")
        self.rec.sample(self.name, "filter", self.exact_at - t)
        self.fast("values", self.ctx())  # the page's markers of the new filtered image

    def download(self):
        t = time.perf_counter()
        _local.session = self.http
        try:
            labels = self.labels()
        finally:
            _local.session = None
        self.rec.sample(self.name, "download", time.perf_counter() - t)
        if labels.size == 0:
            raise AppError("empty labels")

    def act(self):
        r, acc = self.rng.random(), 0.0
        for action, weight in self.mix.items():
            acc += weight
            if r < acc:
                break
        {"move": self.move, "undo": self.undo, "filter": self.change_filter,
         "download": self.download}[action]()
        return action

    def think(self):
        time.sleep(self.rng.uniform(*self.think_range))


def _count_app_error(rec, exc):
    """An exception of one action: HTTP errors were counted by the session already."""
    if isinstance(exc, AppError):
        rec.error(f"app: {exc.kind}", "", final=True)
    elif isinstance(exc, RuntimeError) and str(exc).startswith("app: "):
        # AppSession's own checks (a load whose segmentation shows a message, ...)
        rec.error(":".join(str(exc).split(":")[:2]), "", final=True)
    elif isinstance(exc, (requests.RequestException, DashCallbackError)):
        pass
    else:
        rec.crashes.append("".join(traceback.format_exception(exc))[-2000:])


def user_thread(base_url, rec, name, seed, deadline, args, image=None, holder=None):
    """One user: page, sample, then actions with think times until `deadline`."""
    rng = random.Random(seed)
    user = None
    try:
        time.sleep(rng.uniform(0, min(2.0, args.think[1])))  # people do not all arrive at once
        user = User(base_url, rec, name, rng, args.mix, args.think)
        if holder is not None:
            holder.append(user)
        if image is None:
            user.load_sample(sample="coins")
        else:
            user.load_sample(data_file=image)
    except Exception as exc:  # noqa: BLE001
        _count_app_error(rec, exc)
        return
    while True:
        user.think()
        if time.monotonic() >= deadline:
            break
        try:
            user.act()
        except Exception as exc:  # noqa: BLE001
            _count_app_error(rec, exc)


# --------------------------------------------------------------------------- a browser


class BrowserNeighbour(threading.Thread):
    """The heavy neighbour as a person in headless Chromium (``bench_browser.Page``: the
    browser tests' flags and instrumentation; the timings by ``bench_sizes.watch``): opens
    the page (coins), chooses `image` in the data-file dropdown and waits for its exact
    result (the app's background job where the app runs one), then ``--heavy-keys`` key
    presses on the vmax handle and a filter change (``filter-method``: gaussian), each to
    its exact result, until `deadline`. Its timings and errors are in ``self.out``."""

    def __init__(self, server, image, deadline, args, rec):
        super().__init__(daemon=True, name="browser-neighbour")
        self.server, self.image, self.deadline, self.args, self.rec = (
            server, image, deadline, args, rec)
        self.out = {"steps": [], "errors": []}

    def left(self):
        return max(1.0, self.deadline - time.monotonic())

    def step(self, page, what, name, mode, start):
        import bench_sizes

        t_run = round(self.rec.now(), 2)
        r = bench_sizes.watch(page, name, mode, start, self.left())
        keep = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                if k.endswith("_s") or k in ("stop_message", "timed_out")}
        keep.update(what=what, at_s=t_run, summary=(r.get("exact_summary")
                                                   or r.get("overlay_summary")))
        self.out["steps"].append(keep)
        log(f"  neighbour {what} at {t_run} s: first overlay {keep.get('overlay_s')} s, "
            f"exact {keep.get('exact_s')} s" + (f"; {r['stop_message'][:100]}"
                                               if r.get("stop_message") else ""))
        return r

    def run(self):
        import bench_browser as bb

        page = None
        try:
            page_args = argparse.Namespace(chromium=self.args.chromium,
                                           chromedriver=self.args.chromedriver,
                                           timeout=max(60.0, self.left()), profile=False,
                                           quiet_ms=500.0)
            page = bb.Page("neighbour", bb.APP, self.server, page_args)
            if self.args.browser_nice:
                self.out["browser_nice"] = renice_browser(page, self.args.browser_nice)
            self.out["page_open_s"] = round(page.open(timeout=self.left()), 2)
            self.step(page, "load", self.image, "load", lambda: page.js(
                "window.dash_clientside.set_props('data-file-dropdown', "
                "{value: arguments[0]})", self.image))
            for _ in range(self.args.heavy_keys):
                if time.monotonic() >= self.deadline - 1:
                    break
                time.sleep(1.0)
                page.focused = None
                page.focus("vmax")
                self.step(page, "key", "", "move", lambda: page._key("ArrowRight"))
            if time.monotonic() < self.deadline - 1:
                time.sleep(1.0)
                self.step(page, "filter", "", "move", lambda: page.js(
                    "window.dash_clientside.set_props('filter-method', {value: 'gaussian'})"))
            self.out["console_errors"] = page.console_errors()[:10]
        except Exception as exc:  # noqa: BLE001
            self.out["errors"].append(f"{type(exc).__name__}: {str(exc)[:400]}")
            log(f"  neighbour error: {self.out['errors'][-1]}")
        finally:
            if page is not None:
                self.out["browser_cpu_s"] = browser_cpu(page)
                page.close()


def renice_browser(page, niceness):
    """Lower the priority of the page's Chromium (chromedriver and its processes; renderers
    started later inherit it from the browser process): on a lab server the person's browser
    runs on their own computer, not on the server's cores. The processes reniced."""
    import psutil

    try:
        root = psutil.Process(page.driver.service.process.pid)
        procs = [root] + root.children(recursive=True)
    except (psutil.Error, AttributeError):
        return 0
    done = 0
    for p in procs:
        try:
            p.nice(niceness)
            done += 1
        except psutil.Error:
            pass
    return done


def browser_cpu(page):
    """CPU seconds of the page's Chromium (chromedriver and every process under it): on this
    machine the neighbour's browser shares the server's cores, as it would not on a lab
    server."""
    import psutil

    try:
        root = psutil.Process(page.driver.service.process.pid)
        procs = [root] + root.children(recursive=True)
    except (psutil.Error, AttributeError):
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return round(total, 2)


def neighbour_text(n):
    """One line of the browser neighbour's own timings."""
    parts = []
    for st in n.get("steps", []):
        def sec(v):
            return "–" if v is None else f"{v:.2f} s"
        parts.append(f"{st['what']} (at {st['at_s']:.0f} s): first overlay "
                     f"{sec(st.get('overlay_s'))}, exact {sec(st.get('exact_s'))}"
                     + (" (not by the end)" if st.get("exact_s") is None else ""))
    errs = n.get("errors") or []
    cpu = n.get("browser_cpu_s")
    return ("; ".join(parts) + (f"; its Chromium used {cpu:.0f} s of CPU on these cores"
                                if cpu is not None else "")
            + (f"; errors {errs}" if errs else ""))


# --------------------------------------------------------------------------- the server




def _cpu_ticks(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(stat[11]) + int(stat[12])


def _vm_hwm(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def busy_worker(master, within=10.0):
    """A worker that is computing (it used CPU in the last 0.1 s), so that the kill lands
    mid-request; waits up to `within` s for one, else any worker. (pid, busy)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        workers = child_pids(master)
        before = {p: _cpu_ticks(p) for p in workers}
        time.sleep(0.1)
        for p in workers:
            after, b = _cpu_ticks(p), before.get(p)
            if after is not None and b is not None and after - b >= 2:
                return p, True
    workers = child_pids(master)
    return (workers[0] if workers else None), False


def _dir_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class Monitor(threading.Thread):
    """Samples the workers (CPU seconds, peak RSS) and the caches' sizes every 0.5 s."""

    def __init__(self, master_pid, state_dir, renice_jobs=0):
        super().__init__(daemon=True)
        self.renice_jobs = renice_jobs  # what-if: background jobs at a lower priority
        self.reniced = set()
        self.master = master_pid
        self.state_dir = Path(state_dir)
        self.stop_event = threading.Event()
        self.cpu = {}  # pid -> (utime + stime) seconds, last seen
        self.cpu_start = {}
        self.hwm = {}  # pid -> VmHWM bytes, last seen
        self.rss_now_max = 0
        self.store_max = 0
        self.cache_max = 0
        self.workers_seen = set()
        self.job_cpu = {}  # job process (a worker's child) -> CPU seconds, last seen
        self.job_hwm = {}  # job process -> VmHWM bytes, last seen
        self.tick = os.sysconf("SC_CLK_TCK")
        self.sample()
        self.cpu_start = dict(self.cpu)

    def sample(self):
        for pid in child_pids(self.master):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            self.workers_seen.add(pid)
            self.cpu[pid] = (int(stat[11]) + int(stat[12])) / self.tick
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm[pid] = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    self.rss_now_max = max(self.rss_now_max, int(line.split()[1]) * 1024)
            for job in child_pids(pid):  # background jobs (Dash's diskcache manager)
                if self.renice_jobs and job not in self.reniced:
                    try:
                        os.setpriority(os.PRIO_PROCESS, job, self.renice_jobs)
                        self.reniced.add(job)
                    except OSError:
                        pass
                ticks, hwm = _cpu_ticks(job), _vm_hwm(job)
                if ticks is not None:
                    self.job_cpu[job] = ticks / self.tick
                if hwm is not None:
                    self.job_hwm[job] = hwm
        self.store_max = max(self.store_max, _dir_bytes(self.state_dir / "store"))
        self.cache_max = max(self.cache_max, _dir_bytes(self.state_dir / "joblib"))

    def run(self):
        while not self.stop_event.wait(0.5):
            self.sample()

    def stop(self):
        self.stop_event.set()
        self.join(5)
        self.sample()

    def result(self):
        return {"cpu_s": round(sum(self.cpu[p] - self.cpu_start.get(p, 0.0)
                                   for p in self.cpu), 2),
                "peak_rss_mb": round(max(self.hwm.values(), default=0) / 2**20, 1),
                "worker_pids_seen": len(self.workers_seen),
                "store_max_mb": round(self.store_max / 2**20, 2),
                "cache_max_mb": round(self.cache_max / 2**20, 2),
                "jobs": {"processes": len(self.job_cpu), "reniced": len(self.reniced),
                         "cpu_s": round(sum(self.job_cpu.values()), 2),
                         "peak_rss_mb": round(max(self.job_hwm.values(), default=0) / 2**20,
                                              1)}}


def start_server(state_dir, data_dir, log_dir, name, extra_env=None, app_dir=REPO_ROOT):
    """The Dockerfile's CMD, as bench_http starts it, with the README's 2 workers x 2 threads,
    run from `app_dir` (this checkout, or a snapshot of a commit)."""
    env = {"PIPEX_BIND": "127.0.0.1:{PORT}", "PIPEX_WORKERS": "2", "PIPEX_THREADS": "2",
           "PIPEX_STATE_DIR": str(state_dir), "PIPEX_DATA_DIR": str(data_dir)}
    env.update(extra_env or {})
    app_dir = Path(app_dir)
    return Server(name, dockerfile_cmd(app_dir / "Dockerfile"), app_dir, env, log_dir)


def gunicorn_events(log_text):
    boots = len(re.findall(r"Booting worker with pid", log_text))
    return {"worker_boots": boots,
            "recycles": len(re.findall(r"Autorestarting worker after current request",
                                       log_text)),
            "worker_timeouts": len(re.findall(r"WORKER TIMEOUT", log_text)),
            "killed_by_signal": len(re.findall(r"was sent SIGKILL|killed by signal", log_text,
                                               re.IGNORECASE)),
            "tracebacks": len(re.findall(r"Traceback", log_text)),
            "http_5xx": len(re.findall(r'" 5\d\d \d', log_text))}


def pct(values, q):
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def stats(values):
    return {"n": len(values), "p50_s": pct(values, 50), "p95_s": pct(values, 95),
            "max_s": max(values) if values else None}


# --------------------------------------------------------------------------- one run


def heavy_image(size, seed=0):
    """The heavy neighbour's image: size² uint8, stripes of blobs (sin·cos > 0.2) at 180 on
    60, Gaussian noise sigma 25."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blobs = (np.sin(xx / 37.0) * np.cos(yy / 29.0) > 0.2).astype(np.float32)
    del yy, xx
    img = 60 + 120 * blobs + rng.normal(0, 25, (size, size)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def run_load(args, n_users, label, heavy=False, kill=False, seed=0, browser=None):
    """Start a server, run `n_users` users (and the heavy neighbour / the kill / a browser
    neighbour on a `browser`² image), report."""
    store_gb = float(args.env.get("PIPEX_STORE_SIZE_GB", 4))
    with tempfile.TemporaryDirectory(prefix="pipex-load-") as tmp:
        tmp = Path(tmp)
        state, data = tmp / "state", tmp / "data"
        data.mkdir()
        if heavy or browser:
            import tifffile

            tifffile.imwrite(data / HEAVY_FILE, heavy_image(browser or args.heavy_size))
        log_dir = HERE / "results" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        server = start_server(state, data, log_dir, f"load-{label}", args.env)
        try:
            server.wait()
            load_before = os.getloadavg()
            monitor = Monitor(server.process.pid, state, renice_jobs=args.renice_jobs)
            monitor.start()
            rec = Recorder()
            client_cpu = time.process_time()
            deadline = time.monotonic() + args.seconds
            users, threads = [], []
            names = [f"u{i}" for i in range(n_users)]
            for i, name in enumerate(names):
                threads.append(threading.Thread(
                    target=user_thread, args=(server.base_url, rec, name, seed * 1000 + i,
                                              deadline, args, None, users), daemon=True))
            if heavy:
                threads.append(threading.Thread(
                    target=user_thread, args=(server.base_url, rec, "heavy", seed * 1000 + 999,
                                              deadline, args, HEAVY_FILE, None), daemon=True))
            neighbour = None
            if browser:
                neighbour = BrowserNeighbour(server, HEAVY_FILE, deadline, args, rec)
                threads.append(neighbour)
            for t in threads:
                t.start()
            kill_info = None
            if kill:
                time.sleep(args.seconds / 2)
                victim, busy = busy_worker(server.process.pid)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                kill_info = {"at_s": round(rec.now(), 2), "pid": victim, "busy": busy}
                log(f"  SIGKILL worker {victim} at {kill_info['at_s']} s "
                    f"({'while it computed' if busy else 'idle'})")
            for t in threads:
                t.join(args.seconds + 300)
            hung = [t.name for t in threads if t.is_alive()]
            if kill:
                kill_info.update(check_sessions(users, rec))
            client_cpu = time.process_time() - client_cpu
            monitor.stop()
            load_after = os.getloadavg()
            gunicorn = gunicorn_events(server.process.log(tail=10**7))
        finally:
            code = server.stop()
    gunicorn["worker_boots_after_start"] = max(0, gunicorn["worker_boots"] - 2)
    res = monitor.result()
    result = {
        "label": label, "users": n_users, "heavy_neighbour": heavy, "seconds": args.seconds,
        "requests": rec.requests, "errors": dict(rec.errors),
        "errors_total": sum(rec.errors.values()),
        "unrecovered": dict(rec.unrecovered),
        "unrecovered_total": sum(rec.unrecovered.values()),
        "error_times": rec.error_times[:200],
        "previews": rec.previews, "crashes": rec.crashes, "hung_users": hung,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "workers": {"cpu_s": res["cpu_s"], "peak_rss_mb": res["peak_rss_mb"],
                    "pids_seen": res["worker_pids_seen"]},
        "client_cpu_s": round(client_cpu, 2),
        "caches": {"store_max_mb": res["store_max_mb"], "cache_max_mb": res["cache_max_mb"],
                   "store_limit_mb": store_gb * 1024, "cache_limit_mb": 2 * store_gb * 1024,
                   "within_limits": res["store_max_mb"] <= store_gb * 1024
                   and res["cache_max_mb"] <= 2 * store_gb * 1024},
        "gunicorn": gunicorn, "server_exit": code,
    }
    coins_users = {f"u{i}" for i in range(n_users)}
    for action in ACTIONS:
        result[action] = stats(rec.times(action, coins_users))
    if heavy:
        result["heavy_user"] = {a: stats(rec.times(a, {"heavy"})) for a in ACTIONS}
    if kill:
        result["kill"] = kill_info
    result["jobs"] = res["jobs"]
    if browser:
        result["browser_neighbour"] = dict(neighbour.out, size=browser)
    return result


def check_sessions(users, rec):
    """After the kill: every user's session still answers (history, labels)."""
    ok, failures = 0, []
    for user in users:
        if not user.ready:
            failures.append(f"{user.name}: never loaded its sample")
            continue
        try:
            if (user.history or {}).get("index"):
                user.undo()  # reads the history from the store: the previous state
            user.download()
            ok += 1
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{user.name}: {type(exc).__name__}: {str(exc)[:200]}")
    return {"sessions_checked": len(users), "sessions_ok": ok, "session_failures": failures,
            "errors_after_kill": None}


# --------------------------------------------------------------------------- report


def _ms(s):
    return "–" if s is None else f"{1000 * s:,.0f}"


def row(r, name=None):
    mv, fl, dl = r["move"], r["filter"], r["download"]
    errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"
    c = r["caches"]
    return (f"| {name or r['label']} | {r['requests']:,} | {errs} | {r['unrecovered_total']} | "
            f"{mv['n']}: {_ms(mv['p50_s'])} / {_ms(mv['p95_s'])} / {_ms(mv['max_s'])} | "
            f"{fl['n']}: {_ms(fl['p50_s'])} / {_ms(fl['p95_s'])} / {_ms(fl['max_s'])} | "
            f"{dl['n']}: {_ms(dl['p50_s'])} / {_ms(dl['p95_s'])} / {_ms(dl['max_s'])} | "
            f"{r['workers']['cpu_s']:.0f} s / {r['workers']['peak_rss_mb']:.0f} MB | "
            f"{c['store_max_mb']:.1f} / {c['cache_max_mb']:.1f} MB "
            f"{'✓' if c['within_limits'] else '✗'} | {r['gunicorn']['recycles']} | "
            f"{r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} |")


def table(results):
    lines = [
        ("| run | requests | errors (attempts, by kind) | unrecovered | move: n, p50 / p95 / "
         "max ms | filter change | download | workers: CPU / peak RSS | store / cache (max) "
         "| recycles | load avg (1 min) |"),
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(row(r))
    return "\n".join(lines)


def _ratio(a, b):
    return None if not b or a is None else a / b


def browser_scenario(alone, with_, size):
    """The users' move / filter p50 and p95 without and with the browser neighbour."""
    out = {"size": size, "alone": alone, "with": with_,
           "neighbour": with_.get("browser_neighbour", {})}
    for action in ("move", "filter"):
        for q in ("p50_s", "p95_s"):
            out[f"{action}_{q[:3]}_ratio"] = _ratio(with_[action][q], alone[action][q])
    return out


def browser_text(h):
    a, w = h["alone"], h["with"]
    r = h.get("move_p95_ratio")
    return (f"Browser neighbour ({h['size']}²): the others' move p50 / p95 "
            f"{_ms(a['move']['p50_s'])} / {_ms(a['move']['p95_s'])} ms alone → "
            f"{_ms(w['move']['p50_s'])} / {_ms(w['move']['p95_s'])} ms with it "
            f"({'–' if r is None else f'{r:.2f}'}× at p95); background jobs: "
            f"{w.get('jobs', {}).get('processes', 0)} process(es), "
            f"{w.get('jobs', {}).get('cpu_s', 0):.0f} s CPU, peak RSS "
            f"{w.get('jobs', {}).get('peak_rss_mb', 0):.0f} MB. The neighbour: "
            + neighbour_text(h["neighbour"]))


def parse_mix(text):
    mix = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in DEFAULT_MIX:
            raise argparse.ArgumentTypeError(f"unknown action {k!r}")
        mix[k.strip()] = float(v)
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="1,5,20", help="comma-separated N (one run each)")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of each run")
    ap.add_argument("--think", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"),
                    help="think time between actions, seconds (uniform)")
    ap.add_argument("--mix", type=parse_mix, default=dict(DEFAULT_MIX),
                    help="action weights, e.g. move=0.65,undo=0.12,filter=0.11,download=0.12")
    ap.add_argument("--heavy-neighbour", action="store_true",
                    help="5 users without, then with, one user on a large image")
    ap.add_argument("--heavy-size", type=int, default=2048, help="edge of the large image")
    ap.add_argument("--heavy-users", type=int, default=5)
    ap.add_argument("--heavy-browser", type=int, default=None, metavar="SIZE",
                    help="--heavy-users users alone, then with a headless Chromium page "
                         "on a SIZE² image (loads it, waits for the exact result, key "
                         "presses, a filter change)")
    ap.add_argument("--heavy-keys", type=int, default=3,
                    help="key presses of the browser neighbour")
    ap.add_argument("--browser-nice", type=int, default=0, metavar="N",
                    help="run the neighbour's Chromium at niceness N (e.g. 19: as if it ran "
                         "on the person's own computer; default 0)")
    ap.add_argument("--renice-jobs", type=int, default=0, metavar="N",
                    help="what-if: the bench renices every background-job process it sees "
                         "(children of the workers, sampled every 0.5 s) to N; the app "
                         "does not (default 0: untouched)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER",
                                                             "/usr/bin/chromedriver"))
    ap.add_argument("--kill-worker", action="store_true",
                    help="5 users; SIGKILL one worker at half time; check every session")
    ap.add_argument("--kill-users", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra server environment (e.g. PIPEX_MAX_JOB_GB=8)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if any run had errors")
    args = ap.parse_args(argv)
    args.env = dict(e.split("=", 1) for e in args.env)
    users = [int(u) for u in args.users.split(",") if u.strip()] if args.users else []

    info = bench_http.machine_info()
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"bench_load: {started:%Y-%m-%d %H:%M} UTC, {info['cores']} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; users {users}, {args.seconds:g} s "
        "each, gunicorn 2 workers x 2 threads")
    results, scenarios = [], {}
    for i, n in enumerate(users):
        log(f"- {n} user(s), {args.seconds:g} s ...")
        r = run_load(args, n, f"N={n}", seed=i + 1)
        log(row(r))
        results.append(r)
    if args.heavy_neighbour:
        n = args.heavy_users
        log(f"- heavy neighbour: {n} users alone, then with one user on "
            f"{args.heavy_size}² ...")
        alone = run_load(args, n, f"N={n}, no neighbour", seed=101)
        log(row(alone))
        with_ = run_load(args, n, f"N={n} + neighbour {args.heavy_size}²", heavy=True, seed=101)
        log(row(with_))
        p_alone, p_with = alone["move"]["p95_s"], with_["move"]["p95_s"]
        scenarios["heavy_neighbour"] = {
            "size": args.heavy_size, "alone": alone, "with": with_,
            "p95_move_ratio": None if not p_alone or p_with is None else p_with / p_alone,
            "p95_filter_ratio": (None if not alone["filter"]["p95_s"]
                                 or with_["filter"]["p95_s"] is None
                                 else with_["filter"]["p95_s"] / alone["filter"]["p95_s"])}
        results += [alone, with_]
    if args.heavy_browser:
        n, size = args.heavy_users, args.heavy_browser
        log(f"- browser neighbour: {n} users alone, then with a Chromium page on {size}² ...")
        alone = run_load(args, n, f"N={n}, no neighbour", seed=301)
        log(row(alone))
        with_ = run_load(args, n, f"N={n} + browser {size}²", seed=301, browser=size)
        log(row(with_))
        scenarios["heavy_browser"] = browser_scenario(alone, with_, size)
        results += [alone, with_]
    if args.kill_worker:
        log(f"- kill a worker: {args.kill_users} users, SIGKILL at {args.seconds / 2:g} s ...")
        k = run_load(args, args.kill_users, f"N={args.kill_users}, worker killed", kill=True,
                     seed=201)
        at = k["kill"]["at_s"]
        k["kill"]["errors_after_kill"] = [e for e in k["error_times"] if e[0] >= at]
        log(row(k))
        scenarios["kill_worker"] = k["kill"]
        results.append(k)

    md = table(results)
    extra = []
    if "heavy_neighbour" in scenarios:
        h = scenarios["heavy_neighbour"]
        hu = h["with"]["heavy_user"]
        extra.append(
            f"Heavy neighbour ({h['size']}²): the others' move p95 "
            f"{_ms(h['alone']['move']['p95_s'])} ms alone → {_ms(h['with']['move']['p95_s'])} ms "
            f"with it ({h['p95_move_ratio'] or float('nan'):.2f}×); the neighbour's own load "
            f"{_ms(hu['load']['max_s'])} ms, moves p50 {_ms(hu['move']['p50_s'])} ms "
            f"(n={hu['move']['n']}).")
    if "heavy_browser" in scenarios:
        extra.append(browser_text(scenarios["heavy_browser"]))
    if "kill_worker" in scenarios:
        kw = scenarios["kill_worker"]
        lost = collections.Counter(e[1] for e in kw["errors_after_kill"])
        unrec = sum(1 for e in kw["errors_after_kill"] if e[3])
        extra.append(
            f"Worker killed (pid {kw['pid']}, at {kw['at_s']} s): failed attempts after the "
            f"kill {dict(lost) or 0}, unrecovered after the page's retry {unrec}; sessions "
            f"answering afterwards (history + labels): {kw['sessions_ok']}/"
            f"{kw['sessions_checked']}" + (f" — {kw['session_failures']}"
                                           if kw["session_failures"] else ""))
    report = {"started": started.isoformat(), "machine": info, "args": {
        "users": users, "seconds": args.seconds, "think": list(args.think), "mix": args.mix,
        "env": args.env, "heavy_size": args.heavy_size,
        "heavy_browser": args.heavy_browser, "browser_nice": args.browser_nice,
        "renice_jobs": args.renice_jobs},
        "runs": results,
        "scenarios": scenarios, "loadavg_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    log("")
    log(md)
    for line in extra:
        log("")
        log(line)
    log(f"\nwritten {args.out}")
    crashed = [r for r in results if r["crashes"] or r["hung_users"]]
    for r in crashed:
        log(f"{r['label']}: crashes {r['crashes'][:2]} hung {r['hung_users']}")
    if crashed or (args.check and any(r["errors_total"] for r in results)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
