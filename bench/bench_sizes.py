"""Size by size (issue 9, "Speed and memory"): first view, first overlay, exact result and the
worker's peak memory on 2048², 4096², 256³ and 512×512×128 images, uint8 and uint16, beside
a direct ``skimage.segmentation.random_walker`` call on the same image and markers.

For each size and dtype:

* a noisy synthetic image is written to the data folder (2D: ``data.coins()`` upscaled, with
  Gaussian noise; 3D: smooth random blobs, upscaled from a coarse grid, with noise; scaled to
  the dtype's full range), ``sz_<shape>_<dtype>.tif``;
* the app is served as the README runs it (``bench_load.start_server``: the Dockerfile's
  command ``gunicorn -c gunicorn.conf.py app:server``, 2 workers × 2 threads, on 127.0.0.1,
  a fresh ``PIPEX_STATE_DIR``, every other setting at its default but
  ``PIPEX_MAX_UPLOAD_MB``, raised above the file's size, and any ``--env``);
* headless Chromium (``bench_browser.Page``: the browser tests' flags, the page's
  instrumentation) opens the page (coins drawn, idle), then a watcher installed in the page
  (``WATCH_JS``, polling the DOM every 5 ms, each event timed when seen and when the next
  frame is painted) times, from the file chosen in the data-file dropdown
  (``set_props`` as the dropdown does):

  - **first view**: the segmentation graph's image trace shows the new image's base (a
    volume: its shown slice; a large image's labelled preview on blocks), with or without an
    overlay — seen when the graph has drawn it (``plotly_afterplot``) or by the poll,
    whether or not the image info names the file yet (**info**: when it does);
  - **first overlay**: its segmentation overlay (``data[2]``) is the new image's (a preview
    or the exact result), drawn on that base: neither the old image's overlay nor the empty
    one the first view draws while the overlay is computed (``display.first_view``);
  - **exact**: the overlay drawn while the summary says "labelled region" and not "preview";

  then ``--moves`` key presses (ArrowRight on the vmax handle, CDP key events, the page idle
  before each): key → first overlay drawn, key → exact drawn, from the page's keydown event
  (as ``bench_browser.py``; until 2026-12-01 from the script before the WebDriver call that
  sends the key, which added 20-60 ms). A budget refusal or another message in the page
  ends the wait; the page's messages are recorded.
* with ``--breakdown``, where the load's time goes (``breakdown``): every callback request
  of the page from the file chosen to the first overlay (start, response headers, body read
  by dash-renderer; bytes; the fast path's ``Server-Timing``), the segmentation graph's
  redraws (Plotly.react / newPlot: start, end, painted), the main thread's CDP metrics and a
  CDP CPU profile by script; and the same requests and redraws of each key press;
* the server's memory is sampled every 0.1 s (psutil): per gunicorn worker, its RSS plus the
  RSS of its descendants (background-job processes), and the largest single process; at the
  end each worker's ``VmHWM``. The peak *above the worker's RSS before the file was chosen*
  is compared with the app's estimate of the job it runs (``job_estimate``:
  ``pipeline.randomwalker.estimate_bytes(shape, 'cg_mg')`` for a whole solve, the block
  plan's ``peak_bytes`` where the image is above the budget and the app solves by blocks)
  and with ``PIPEX_MAX_JOB_GB`` (default 4 GiB);
* after the server is stopped, the direct call ``skimage.segmentation.random_walker(image,
  markers, beta, mode='cg_mg', tol)`` with the markers of the app's thresholds at load
  (1 below vmin, 2 above vmax; the default recipe's beta and tol) runs in a child process
  whose address space is capped (``resource.setrlimit(RLIMIT_AS)``, ``--direct-cap-gb``,
  default 6 GB, lowered to 60 % of the available memory): its time and peak RSS
  (``ru_maxrss``), or "does not fit" when ``estimate_bytes`` is above the cap or the call
  fails with MemoryError under it.

Usage::

    flock /tmp/pipex-bench.lock .venv/bin/python bench/bench_sizes.py            # all sizes, uint8
    .venv/bin/python bench/bench_sizes.py --sizes 2048 --dtypes uint8,uint16 --moves 3
    .venv/bin/python bench/bench_sizes.py --sizes 256x256x256 --no-direct --env PIPEX_MAX_JOB_GB=8
    .venv/bin/python bench/bench_sizes.py --sizes 2048 --moves 0 --no-direct --breakdown

Prints a Markdown table and writes the JSON (``--out``, default
``bench/results/sizes.json``).
"""

from __future__ import annotations

import os

# before numpy is imported (the in-process baseline and the servers' environment)
import single_threaded  # noqa: E402

_SINGLE_THREADED = single_threaded.VARIABLES

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

DEFAULT_OUT = HERE / "results" / "sizes.json"
SIZES = ("2048x2048", "4096x4096", "256x256x256", "128x512x512")
DTYPES = ("uint8", "uint16")
TARGET_FIRST_OVERLAY_S = 0.3
TARGET_RSS_RATIO = 1.5
MODE = "cg_mg"  # the app's default random-walker solver (pipeline.recipe.default_recipe)
#: A page message that ends the wait for an exact result (a refusal, an error).
STOP_WORDS = ("PIPEX_MAX_JOB_GB", "refus", "error", "not enough memory", "cancelled",
              "stopped", "too large", "Unexpected")
MESSAGE_IDS = ("segmentation-message", "exact-job-message", "load-message", "param-message",
               "volume-message")


# --------------------------------------------------------------------------- pure parts


def parse_shape(text):
    """'2048' -> (2048, 2048); '256x256x256' -> (256, 256, 256); '512x512x128' is (z, y, x)
    as written. A volume is written z first: '128x512x512' = 128 slices of 512²."""
    parts = [int(p) for p in str(text).lower().replace("×", "x").split("x") if p.strip()]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise ValueError(f"a size is N, NxN or ZxYxX, got {text!r}")
    return tuple(parts)


def shape_label(shape):
    if len(shape) == 2 and shape[0] == shape[1]:
        return f"{shape[0]}²"
    if len(shape) == 3 and len(set(shape)) == 1:
        return f"{shape[0]}³"
    if len(shape) == 3:
        return f"{shape[2]}×{shape[1]}×{shape[0]}"
    return "×".join(map(str, shape))


def image_name(shape, dtype):
    return f"sz_{'x'.join(map(str, shape))}_{np.dtype(dtype).name}.tif"


def _scale(unit, dtype):
    """Floats in [0, 1] -> the dtype's full range."""
    top = np.iinfo(dtype).max
    return np.rint(np.clip(unit, 0.0, 1.0) * top).astype(dtype)


def synthetic_image(shape, dtype="uint8", seed=0, noise=0.08):
    """A noisy synthetic image of `shape` and `dtype` (full range of the dtype).

    2D: ``skimage.data.coins()`` upscaled (linear) to `shape`, plus Gaussian noise
    (sigma `noise` of the range). 3D: smooth blobs (random values on a grid 8× coarser,
    smoothed, upscaled linearly; about 40 % object) at 0.25 / 0.75, plus the same noise.
    Built in float32 one slice / block at a time so that 512×512×128 stays ~0.5 GB.
    """
    from scipy import ndimage as ndi
    from skimage import data as skdata
    from skimage.transform import resize

    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    if len(shape) == 2:
        base = resize(skdata.coins().astype(np.float32) / 255.0, shape, order=1,
                      preserve_range=True, anti_aliasing=False).astype(np.float32)
        base += rng.normal(0.0, noise, shape).astype(np.float32)
        return _scale(base, dtype)
    if len(shape) != 3:
        raise ValueError(f"2D or 3D shapes only, got {shape}")
    coarse_shape = tuple(max(4, s // 8) for s in shape)
    coarse = ndi.gaussian_filter(rng.random(coarse_shape, dtype=np.float32), 1.0)
    level = np.quantile(coarse, 0.6)
    coarse = np.clip((coarse - level) / (4 * coarse.std()) + 0.5, 0, 1)  # soft edges
    out = np.empty(shape, dtype=dtype)
    zoom = [s / c for s, c in zip(shape, coarse_shape)]
    blobs = ndi.zoom(coarse, zoom, order=1, output=np.float32, grid_mode=True,
                     mode="nearest")[:shape[0], :shape[1], :shape[2]]
    for z in range(shape[0]):
        sl = 0.25 + 0.5 * (blobs[z] > 0.5) + rng.normal(0.0, noise, shape[1:]).astype(
            np.float32)
        out[z] = _scale(sl, dtype)
    return out


def write_image(folder, shape, dtype, seed=0):
    """The image file in `folder` (written once; reused when present). Its path."""
    import tifffile

    path = Path(folder) / image_name(shape, dtype)
    if not path.exists():
        img = synthetic_image(shape, dtype, seed=seed)
        tmp = path.with_suffix(".part")
        tifffile.imwrite(tmp, img)
        tmp.replace(path)
    return path


def markers_of(image, vmin, vmax):
    markers = np.zeros(image.shape, dtype=np.uint8)
    markers[image < vmin] = 1
    markers[image > vmax] = 2
    return markers


def _direct_child(spec_path):
    """In the capped child: the direct call; prints one JSON line."""
    import resource
    import warnings

    spec = json.loads(Path(spec_path).read_text())
    out = {"ok": False}
    try:
        import tifffile
        from skimage.segmentation import random_walker

        image = tifffile.imread(spec["image"])
        markers = markers_of(image, spec["vmin"], spec["vmax"])
        out["undecided_fraction"] = float((markers == 0).mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            labels = random_walker(image, markers, beta=spec["beta"], mode=spec["mode"],
                                   tol=spec["tol"])
            out["seconds"] = time.perf_counter() - t0
        out["object_fraction"] = float((labels == 2).mean())
        out["ok"] = True
    except MemoryError as exc:
        out["error"] = f"MemoryError: {exc}"[:300]
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_capped(args_list, cap_bytes, timeout):
    """Run `python bench_sizes.py <args_list>` in a child whose address space is capped at
    `cap_bytes` (RLIMIT_AS); returns (parsed RESULT dict or None, returncode, stderr tail)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (int(cap_bytes), int(cap_bytes)))

    env = {**os.environ, **{k: "1" for k in _SINGLE_THREADED}}
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args_list],
                              capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit, env=env, cwd=REPO_ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:g} s"}, None, ""
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if result is None:
        result = {"ok": False, "error": f"child exited {proc.returncode} "
                                        f"{proc.stderr.strip()[-300:]}"}
    return result, proc.returncode, proc.stderr[-2000:]


def direct_cap_bytes(cap_gb):
    """The cap of the direct call: `cap_gb` GiB, at most 60 % of the available memory."""
    import psutil

    return int(min(cap_gb * 1024**3, 0.6 * psutil.virtual_memory().available))


def direct_random_walker(image_path, shape, vmin, vmax, params, cap_bytes, timeout,
                         tmp_dir):
    """The direct skimage call beside the app, capped; a dict (time, peak RSS, or does not
    fit)."""
    from pipeline.randomwalker import estimate_bytes

    est = estimate_bytes(shape, params.get("mode", MODE))
    out = {"estimate_bytes": est, "cap_bytes": cap_bytes, "mode": params.get("mode", MODE)}
    if est > cap_bytes:
        out.update(fits=False, why=f"estimate {est / 1024**3:.1f} GB > cap "
                                   f"{cap_bytes / 1024**3:.1f} GB")
        return out
    spec = Path(tmp_dir) / "direct.json"
    spec.write_text(json.dumps({"image": str(image_path), "vmin": vmin, "vmax": vmax,
                                "beta": params.get("beta", 130.0), "tol": params.get("tol", 1e-3),
                                "mode": params.get("mode", MODE)}))
    res, code, _err = run_capped(["--direct-child", str(spec)], cap_bytes, timeout)
    out.update(res)
    out["returncode"] = code
    out["fits"] = bool(res.get("ok"))
    if not res.get("ok"):
        out["why"] = res.get("error", "failed")
    return out


_JOB_ESTIMATE_PY = """
import json, os, sys
sys.path.insert(0, sys.argv[4])
import bench_sizes
# the checkout in the working directory first, not the repository bench_sizes put there
sys.path[:] = [os.getcwd()] + [p for p in sys.path if p not in ('', sys.argv[5])]
est = bench_sizes.job_estimate(json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
import pipeline
assert os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__))) == os.getcwd()
print(json.dumps(est))
"""


def job_estimate(shape, budget_bytes, mode=MODE, app_dir=None):
    """The app's own estimate of the job it runs: the whole solve's
    (``randomwalker.estimate_bytes``) when within the budget, else the block plan's peak
    (``pipeline.blocks.plan_blocks(...).peak_bytes``, where the app solves by blocks).
    (bytes, how). With `app_dir`, computed by that checkout's ``pipeline`` (the code the
    server ran; this working tree's may have changed since), in a child process."""
    if app_dir is not None:
        out = subprocess.run([sys.executable, "-c", _JOB_ESTIMATE_PY, json.dumps(list(shape)),
                              str(int(budget_bytes)), mode, str(HERE), str(REPO_ROOT)],
                             cwd=Path(app_dir).resolve(), check=True, capture_output=True,
                             text=True)
        est, how = json.loads(out.stdout.strip().splitlines()[-1])
        return est, how
    from pipeline.randomwalker import estimate_bytes

    whole = estimate_bytes(shape, mode)
    if whole <= budget_bytes:
        return whole, "whole"
    try:
        from pipeline import blocks
    except ImportError:  # an app without blocks: it refuses
        return whole, "whole (over the budget)"
    plan = blocks.plan_blocks(tuple(shape), mode, budget_bytes)
    return plan.peak_bytes, (f"blocks of {'×'.join(map(str, plan.chunks))}, "
                             f"{plan.in_flight} at once")


def _ratio_of(r):
    """Peak above idle / the estimate of the job the app runs (the block plan's for blocks)."""
    mem = r.get("memory") or {}
    above = mem.get("peak_above_idle_bytes")
    est = r.get("job_estimate_bytes")
    if est is None and r.get("shape") and r.get("budget_bytes"):
        est = job_estimate(r["shape"], r["budget_bytes"])[0]
    est = est or r.get("estimate_bytes")
    return (None if above is None or not est else above / est), est


def _s(v, digits=2):
    if v is None:
        return "–"
    return f"{v:,.{digits}f} s"


def _gb(b):
    return "–" if b is None else f"{b / 1024**3:.2f} GB"


def _moves_text(values):
    vals = [v for v in values if v is not None]
    if not values:
        return "–"
    if not vals:
        return "never"
    med = statistics.median(vals)
    spread = f" ({min(vals):.2f}–{max(vals):.2f})" if max(vals) > min(vals) else ""
    missing = f", {len(values) - len(vals)} never" if len(vals) < len(values) else ""
    return f"{med:.2f} s{spread}{missing}"


def direct_text(d):
    if not d:
        return "not run"
    if d.get("fits"):
        return f"{d['seconds']:.1f} s, {_gb(d.get('maxrss_bytes'))}"
    why = d.get("why", "?")
    if why.startswith("MemoryError"):
        why = (f"MemoryError under the {_gb(d.get('cap_bytes'))} cap, at "
               f"{_gb(d.get('maxrss_bytes'))} RSS; estimate {_gb(d.get('estimate_bytes'))}")
    return f"does not fit ({why})"


#: Which of the page's messages the table quotes, first found first (the load message,
#: "Loaded x.tif.", says nothing).
SAYS_ORDER = ("exact-job-message", "segmentation-message", "volume-message", "param-message")


def page_says(row):
    stop = (row.get("load") or {}).get("stop_message")
    if stop:
        return stop
    msgs = dict(row.get("page_messages_end") or [])
    return next((msgs[k] for k in SAYS_ORDER if msgs.get(k)), row.get("error") or "")


def table(rows):
    """The Markdown table of the runs (one row per size and dtype)."""
    head = ("| image | first view | first overlay | exact | key → first overlay | key → exact "
            "| worker peak RSS (above idle) / the job's estimate / budget | direct `random_walker` "
            "(cg_mg) | load avg | page says |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        load = r.get("load", {})
        mem = r.get("memory", {})
        ratio, est = _ratio_of(r)
        mem_text = (f"{_gb(mem.get('peak_worker_bytes'))} ({_gb(mem.get('peak_above_idle_bytes'))})"
                    f" / {_gb(est)} / {_gb(r.get('budget_bytes'))}"
                    + (f" = {ratio:.2f}×" if ratio is not None else ""))
        la = r.get("loadavg") or {}
        la_text = (f"{la['before'][0]:.1f} → {la['after'][0]:.1f}"
                   if la.get("before") and la.get("after") else "–")
        msg = page_says(r)
        lines.append(
            f"| {r['label']} | {_s(load.get('view_s'))} | {_s(load.get('overlay_s'))} | "
            f"{_s(load.get('exact_s'))} | {_moves_text([m.get('overlay_s') for m in r.get('moves', [])])} | "
            f"{_moves_text([m.get('exact_s') for m in r.get('moves', [])])} | {mem_text} | "
            f"{direct_text(r.get('direct'))} | {la_text} | {msg[:240]} |")
    return "\n".join(lines)


def targets(rows):
    """PASS / FAIL of the issue's targets per row (never asserted)."""
    out = []
    for r in rows:
        load = r.get("load", {})
        firsts = [load.get("overlay_s")] + [m.get("overlay_s") for m in r.get("moves", [])]
        known = [f for f in firsts if f is not None]
        mem = r.get("memory", {})
        ratio, _est = _ratio_of(r)
        out.append({
            "label": r["label"],
            "first_overlay_ok": bool(known) and len(known) == len(firsts)
            and max(known) <= TARGET_FIRST_OVERLAY_S,
            "first_overlay_max_s": max(known) if known else None,
            "rss_ratio_ok": None if ratio is None else ratio <= TARGET_RSS_RATIO,
            "under_budget": None if mem.get("peak_above_idle_bytes") is None
            else mem["peak_above_idle_bytes"] <= r["budget_bytes"],
        })
    return out


# --------------------------------------------------------------------------- the page

#: Installed before each timed action: watches the segmentation graph every 5 ms.
WATCH_JS = r"""
var name = arguments[0], mode = arguments[1], ids = arguments[2], blank = arguments[3];
var now = function () { return performance.now(); };
if (window.__sz && window.__sz.timer) { clearInterval(window.__sz.timer); }
function gd() {
  var h = document.getElementById('segmentation-graph');
  return h ? h.querySelector('.js-plotly-plot') : null;
}
function src(i) {
  var g = gd(); var t = g && g.data && g.data[i];
  return t ? (t.source || null) : null;
}
function summary() {
  var h = document.getElementById('segmentation-graph');
  if (h && h.dataset && h.dataset.summary !== undefined) { return h.dataset.summary; }
  var s = document.getElementById('segmentation-summary');
  return s ? s.textContent : '';
}
function info() { var e = document.getElementById('image-info'); return e ? e.textContent : ''; }
function exactText(t) { return !!t && t.indexOf('labelled region') >= 0 && t.indexOf('preview') < 0; }
// a move's times count from its keydown (as bench_browser's), not from this script: the
// key is dispatched by a later WebDriver call (tens of ms on this machine)
if (window.__szKey) { removeEventListener('keydown', window.__szKey, true); }
window.__szKey = function () {
  var w = window.__sz; if (w && w.key === null) { w.key = now() - w.t0; }
};
addEventListener('keydown', window.__szKey, true);
var W = window.__sz = {t0: now(), key: null, ev: {}, msgs: {}, summaries: [],
                       base: {image: src(0), overlay: src(2), summary: summary()},
                       first: null};
function mark(k, x) {
  if (W.ev[k]) { return; }
  var r = {t: now() - W.t0, paint: null, x: x === undefined ? null : x};
  W.ev[k] = r;
  requestAnimationFrame(function () { setTimeout(function () { r.paint = now() - W.t0; }, 0); });
}
W.check = function () {
  var s = summary(), ov = src(2), named = !name || info().indexOf(name) >= 0;
  if (W.summaries.length === 0 || W.summaries[W.summaries.length - 1].s !== s) {
    W.summaries.push({t: now() - W.t0, s: (s || '').slice(0, 300)});
  }
  if (name && named) { mark('info'); }  // a move has no file to name
  var im = src(0);
  // the new base drawn (the page may draw it before the image info names the file)
  if (mode === 'load' && im && im !== W.base.image) { mark('view'); }
  // a move whose overlay is the same picture (a volume's slice that did not change) is
  // drawn when the summary of what is drawn changes
  // (an app that draws a new image's base first draws it with an empty overlay)
  var drawn = mode === 'load' ? ov && ov !== W.base.overlay && ov !== blank && W.ev.view
                              : (ov && ov !== W.base.overlay) || (s && s !== W.base.summary);
  if (drawn) {
    if (!W.first) { W.first = ov || 'same'; }
    mark('overlay', s);
    if (s && s.indexOf('preview') >= 0) { mark('preview', s); }
    if (exactText(s) && (s !== W.base.summary || (ov || 'same') !== W.first)) {
      mark('exact', s);
    } else if (exactText(s) && !W.ev.preview && now() - W.t0 - W.ev.overlay.t > 250) {
      // drawn exact at once with the same summary text: exact since the overlay changed
      W.ev.exact = W.ev.overlay;
    }
  }
  ids.forEach(function (id) {
    var e = document.getElementById(id);
    var t = e ? e.textContent : '';
    if (t) { W.msgs[id] = t.slice(0, 600); }
  });
};
W.timer = setInterval(W.check, 5);
// also when the graph has drawn (a redraw followed by a long script is seen when drawn,
// not when the script lets the timer run)
var g = gd();
if (g && typeof g.on === 'function' && !g.__szWatched) {
  g.__szWatched = true;
  g.on('plotly_afterplot', function () { if (window.__sz && window.__sz.check) { window.__sz.check(); } });
}
return W.base;
"""

#: The empty overlay (a transparent 1×1 PNG, ``callbacks.display.blank_uri``) of a new
#: image's first view: not an overlay of the new image.
BLANK_OVERLAY = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABAQMAAAAl21bKAAAAA1BMVEUAAACn"
                 "ej3aAAAAAXRSTlMAQObYZgAAAApJREFUeAFjYAAAAAIAAXN1ARgAAAAASUVORK5CYII=")

READ_JS = "return window.__sz ? {ev: window.__sz.ev, msgs: window.__sz.msgs, " \
          "summaries: window.__sz.summaries, key: window.__sz.key} : null"


def _stop_message(msgs):
    for text in (msgs or {}).values():
        low = text.lower()
        if any(w.lower() in low for w in STOP_WORDS):
            return text
    return None


def watch(page, name, mode, start, timeout):
    """Install the watcher, run `start()`, wait until exact drawn (or a stop message, or
    `timeout`); the events in seconds since the watcher's t0 (painted)."""
    page.js(WATCH_JS, name, mode, list(MESSAGE_IDS), BLANK_OVERLAY)
    start()
    end = time.monotonic() + timeout
    state = None
    stopped = None
    while time.monotonic() < end:
        state = page.js(READ_JS)
        ev = state["ev"]
        if ev.get("exact") and ev["exact"].get("paint") is not None:
            break
        stopped = _stop_message(state["msgs"])
        if stopped and (ev.get("overlay") or time.monotonic() > end - timeout + 20):
            time.sleep(1.0)  # the message and the preview settle
            state = page.js(READ_JS)
            break
        time.sleep(0.05)
    page.js("if (window.__sz) { clearInterval(window.__sz.timer); window.__sz.check = null; }")
    ev = state["ev"] if state else {}
    # a move: from its keydown (the load: from the script that chose the file)
    key_ms = (state or {}).get("key") if mode == "move" else None
    shift = key_ms or 0.0

    def at(k):
        e = ev.get(k)
        if not e:
            return None
        return ((e["paint"] if e.get("paint") is not None else e["t"]) - shift) / 1000.0

    return {"view_s": at("view"), "info_s": at("info"), "overlay_s": at("overlay"),
            "preview_s": at("preview"), "exact_s": at("exact"),
            "overlay_summary": (ev.get("overlay") or {}).get("x"),
            "exact_summary": (ev.get("exact") or {}).get("x"),
            "timed_out": not ev.get("exact") and not stopped,
            "stop_message": stopped,
            "messages": state["msgs"] if state else {},
            "summaries": (state or {}).get("summaries", [])[-8:],
            "key_after_s": None if key_ms is None else key_ms / 1000.0}


# --------------------------------------------------------------------------- memory


class TreeSampler(threading.Thread):
    """Every `interval` s: per gunicorn worker, its RSS + its descendants' (background jobs);
    the largest seen, the largest single process, and each worker's VmHWM at the end."""

    def __init__(self, master_pid, interval=0.1):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.master = psutil.Process(master_pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_worker = 0
        self.peak_single = 0
        self.peak_children = 0
        self.hwm = {}
        self.job_pids = set()
        self.samples = 0
        self.idle = self.tree_rss()

    def tree_rss(self):
        """{worker pid: (rss of worker, rss of its descendants)}."""
        out = {}
        try:
            workers = self.master.children()
        except self.psutil.NoSuchProcess:
            return out
        for w in workers:
            try:
                own = w.memory_info().rss
                kids = 0
                for c in w.children(recursive=True):
                    try:
                        r = c.memory_info().rss
                    except self.psutil.NoSuchProcess:
                        continue
                    kids += r
                    self.job_pids.add(c.pid)
                    self.peak_single = max(self.peak_single, r)
                out[w.pid] = (own, kids)
                self.peak_single = max(self.peak_single, own)
            except self.psutil.NoSuchProcess:
                continue
        return out

    def _hwm(self):
        for w in self.master.children():
            try:
                for line in Path(f"/proc/{w.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.hwm[w.pid] = int(line.split()[1]) * 1024
            except OSError:
                pass

    def run(self):
        while not self.stop_event.wait(self.interval):
            tree = self.tree_rss()
            self.samples += 1
            for own, kids in tree.values():
                self.peak_worker = max(self.peak_worker, own + kids)
                self.peak_children = max(self.peak_children, kids)
            self._hwm()

    def stop(self):
        self.stop_event.set()
        self.join(5)
        self._hwm()

    def result(self, estimate, budget):
        idle = max((own + kids for own, kids in self.idle.values()), default=0)
        above = max(0, self.peak_worker - idle)
        return {"idle_worker_bytes": idle, "peak_worker_bytes": self.peak_worker,
                "peak_above_idle_bytes": above, "peak_single_process_bytes": self.peak_single,
                "peak_job_children_bytes": self.peak_children,
                "worker_vmhwm_bytes": max(self.hwm.values(), default=None),
                "job_processes_seen": len(self.job_pids), "samples": self.samples,
                "ratio_to_estimate": above / estimate if estimate else None,
                "above_budget": above > budget}


# --------------------------------------------------------------------------- one size


def _page_args(args):
    return argparse.Namespace(chromium=args.chromium, chromedriver=args.chromedriver,
                              timeout=args.timeout, profile=False, quiet_ms=500.0)


#: The segmentation graph's id (its redraws are the first view's and the overlays').
SEG_GRAPH_ID = "segmentation-graph"


def breakdown(raw, t0_ms, profile=None, metrics=None, until_s=None):
    """Where a load's time went, from the page's instrumentation (``bench_browser``'s
    ``__bench.collect()``): every callback request (its output, start, response headers and
    body read, in seconds since `t0_ms`, the watcher's start; bytes), the segmentation
    graph's redraws (Plotly.react / newPlot: start, end, painted), the main thread's CDP
    metrics over the load and, with `profile`, its self time by script. Requests starting
    after `until_s` are left out."""
    def s(v):
        return None if v is None else round((v - t0_ms) / 1000.0, 4)

    reqs = []
    for f in raw.get("fetches", []):
        start = s(f["start"])
        if until_s is not None and start is not None and start > until_s:
            continue
        reqs.append({"output": (f.get("output") or "")[:160], "start_s": start,
                     "headers_s": s(f.get("headers")), "end_s": s(f.get("end")),
                     "resp_bytes": f.get("resp_bytes"), "status": f.get("status"),
                     "server": f.get("server")})
    draws = [{"fn": d.get("fn"), "start_s": s(d.get("start")), "end_s": s(d.get("end")),
              "paint_s": s(d.get("paint"))}
             for d in raw.get("draws", []) if d.get("graph") == SEG_GRAPH_ID
             and (until_s is None or (d.get("start") is not None
                                      and (d["start"] - t0_ms) / 1000.0 <= until_s))]
    out = {"requests": reqs, "seg_draws": draws}
    if metrics is not None:
        out["main_thread"] = metrics
    if profile is not None:
        out["profile_ms"] = profile
    return out


def breakdown_text(label, b):
    """The breakdown (:func:`breakdown`) as lines of text."""
    lines = [f"  {label}: requests (start → headers → body, s since the file was chosen or the "
             "key press)"]
    for r in sorted(b["requests"], key=lambda r: r["start_s"] or 0):
        lines.append(f"    {_s(r['start_s'], 3):>6} → {_s(r['headers_s'], 3):>6} → "
                     f"{_s(r['end_s'], 3):>6}  {(r['resp_bytes'] or 0) / 1e3:8.1f} kB  "
                     f"{r['output'][:90]}"
                     + (f"  (server: {r['server']})" if r.get("server") else ""))
    for d in b["seg_draws"]:
        lines.append(f"    segmentation graph {d['fn']}: {_s(d['start_s'], 3)} → "
                     f"{_s(d['end_s'], 3)}, painted {_s(d['paint_s'], 3)}")
    if b.get("main_thread"):
        lines.append("    main thread: " + ", ".join(
            f"{k} {v:.3f} s" for k, v in b["main_thread"].items()))
    if b.get("profile_ms"):
        lines.append("    profile (ms): " + ", ".join(
            f"{k} {v:.0f}" for k, v in list(b["profile_ms"].items())[:8]))
    return "\n".join(lines)


def run_one(args, shape, dtype, data_dir, log_dir, tmp):
    import bench_browser as bb
    import bench_load as bl
    from pipeline.randomwalker import estimate_bytes

    label = f"{shape_label(shape)} {np.dtype(dtype).name}"
    path = write_image(data_dir, shape, dtype)
    est = estimate_bytes(shape, MODE)
    budget_gb = float(args.env.get("PIPEX_MAX_JOB_GB", 4))
    job_est, job_how = job_estimate(shape, int(budget_gb * 1024**3), app_dir=args.app_dir)
    row = {"label": label, "shape": list(shape), "dtype": np.dtype(dtype).name,
           "file": path.name, "file_bytes": path.stat().st_size, "estimate_bytes": est,
           "job_estimate_bytes": job_est, "job_estimate_how": job_how,
           "budget_bytes": int(budget_gb * 1024**3), "mode": MODE}
    upload_mb = max(64, int(path.stat().st_size / 2**20) + 16)
    env = {"PIPEX_MAX_UPLOAD_MB": str(upload_mb), **args.env}
    row["env"] = env
    state = Path(tmp) / f"state-{path.stem}"
    server = bl.start_server(state, data_dir, log_dir, f"sizes-{path.stem}", env,
                             app_dir=args.app_dir)
    page = sampler = None
    la_before = os.getloadavg()
    try:
        server.wait()
        page = bb.Page(label, bb.APP, server, _page_args(args))
        page.open(timeout=args.timeout)
        sampler = TreeSampler(server.process.pid)
        sampler.start()
        bb.log(f"  {label}: page open; choosing {path.name}")
        if args.breakdown:
            page.js("return window.__bench.reset()")
            m0 = page.metrics()
            page.driver.execute_cdp_cmd("Profiler.enable", {})
            page.driver.execute_cdp_cmd("Profiler.setSamplingInterval", {"interval": 500})
            page.driver.execute_cdp_cmd("Profiler.start", {})
        row["load"] = watch(page, path.name, "load", lambda: page.js(
            "window.dash_clientside.set_props('data-file-dropdown', {value: arguments[0]})",
            path.name), args.timeout)
        if args.breakdown:
            prof = bb.profile_buckets(
                page.driver.execute_cdp_cmd("Profiler.stop", {})["profile"])
            m1 = page.metrics()
            t0 = page.js("return window.__sz.t0")
            view = row["load"].get("overlay_s") or row["load"].get("view_s")
            row["load"]["breakdown"] = breakdown(
                page.js("return window.__bench.collect()"), t0, prof,
                {field: round(m1.get(name, 0.0) - m0.get(name, 0.0), 4)
                 for name, field in bb.CDP_METRICS.items()},
                until_s=None if view is None else view + 0.05)
            bb.log(breakdown_text(label, row["load"]["breakdown"]))
        bb.log(f"  load: {json.dumps({k: v for k, v in row['load'].items() if k.endswith('_s')})}")
        row["thresholds"] = list(page.thresholds())
        moves = []
        for i in range(args.moves):
            time.sleep(args.idle)
            page.wait_idle(timeout=min(args.timeout, 120))
            page.focused = None
            page.focus("vmax")
            if args.breakdown:
                page.js("return window.__bench.reset()")
            m = watch(page, "", "move", lambda: page._key("ArrowRight"), args.timeout)
            m["pair"] = list(page.thresholds())
            if args.breakdown:
                first = m.get("overlay_s")
                m["breakdown"] = breakdown(
                    page.js("return window.__bench.collect()"),
                    page.js("return window.__sz.t0") + 1000.0 * (m.get("key_after_s") or 0.0),
                    until_s=None if first is None else first + 0.05)
                bb.log(breakdown_text(f"{label} move {i + 1}", m["breakdown"]))
            moves.append(m)
            bb.log(f"  move {i + 1}: {json.dumps({k: v for k, v in m.items() if k.endswith('_s')})}"
                   + (f" stop: {m['stop_message'][:120]}" if m["stop_message"] else ""))
        row["moves"] = moves
        time.sleep(1.0)
        row["page_messages_end"] = page.js(
            "return arguments[0].map(function (i) { var e = document.getElementById(i);"
            " return e ? [i, e.textContent] : [i, '']; })", list(MESSAGE_IDS))
        row["console_errors"] = page.console_errors()[:10]
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {str(exc)[:600]}"
        bb.log(f"  error: {row['error']}")
    finally:
        if sampler is not None:
            sampler.stop()
            row["memory"] = sampler.result(job_est, row["budget_bytes"])
        if page is not None:
            page.close()
        row["server_problems"] = server.problems(15)
        server.stop()
    row["loadavg"] = {"before": list(la_before), "after": list(os.getloadavg())}
    row["page_says"] = page_says(row)
    if args.direct and row.get("thresholds") and None not in row["thresholds"]:
        vmin, vmax = row["thresholds"]
        params = bb.direct_params(vmin, vmax)
        params["mode"] = MODE
        bb.log(f"  direct random_walker({MODE}) at vmin={vmin}, vmax={vmax} ...")
        row["direct"] = direct_random_walker(path, shape, vmin, vmax, params,
                                             direct_cap_bytes(args.direct_cap_gb),
                                             args.direct_timeout, tmp)
        row["loadavg"]["after_direct"] = list(os.getloadavg())
        bb.log(f"  direct: {direct_text(row['direct'])}")
    return row


# --------------------------------------------------------------------------- main


def snapshot(ref, folder):
    """`git archive` of `ref` into `folder` (no change to the repository); (folder, commit)."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=REPO_ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "archive", commit], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return folder, commit


def parse_args(argv=None):
    import bench_browser as bb

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(SIZES),
                    help="comma-separated N, NxN or ZxYxX (default: %(default)s)")
    ap.add_argument("--dtypes", default="uint8", help="comma-separated: uint8,uint16")
    ap.add_argument("--moves", type=int, default=3, help="key presses on vmax per image")
    ap.add_argument("--idle", type=float, default=2.0, help="seconds idle before a key press")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds to wait for an exact result")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra server environment (e.g. PIPEX_MAX_JOB_GB=8)")
    ap.add_argument("--breakdown", action="store_true",
                    help="record where the load's time goes: its callback requests, the "
                         "segmentation graph's redraws and the main thread (CDP profile)")
    ap.add_argument("--no-direct", dest="direct", action="store_false",
                    help="skip the direct skimage call")
    ap.add_argument("--direct-cap-gb", type=float, default=6.0,
                    help="address-space cap of the direct call (GiB; at most 60%% of the "
                         "available memory)")
    ap.add_argument("--direct-timeout", type=float, default=900.0)
    ap.add_argument("--data-dir", type=Path, default=HERE / "results" / "sizes-data",
                    help="where the images are written (kept between runs)")
    ap.add_argument("--app-dir", type=Path, default=None,
                    help="serve the app from this folder (default: a snapshot of HEAD, "
                         "`git archive`, so that uncommitted edits in the working tree are "
                         "not measured; '.' serves the working tree)")
    ap.add_argument("--chromium", default=bb.CHROMIUM)
    ap.add_argument("--chromedriver", default=bb.CHROMEDRIVER)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--table", type=Path, nargs="+", default=None, metavar="JSON",
                    help="print the table of earlier runs' JSON files and exit")
    ap.add_argument("--direct-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.env = dict(e.split("=", 1) for e in args.env)
    return args


def main(argv=None):
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--direct-child":
        _direct_child(sys.argv[2])
        return 0
    args = parse_args(argv)
    import bench_browser as bb
    import bench_http as bh

    if args.table:
        rows = []
        with tempfile.TemporaryDirectory(prefix="pipex-sizes-table-") as tmp:
            for i, path in enumerate(args.table):
                report = json.loads(Path(path).read_text())
                commit = (report.get("app") or {}).get("commit")
                bb.log(f"{path}: {report['started'][:16]} UTC, app {commit}")
                for row in report["rows"]:
                    if row.get("job_estimate_bytes") is None and commit:
                        # the estimate of the code that ran, not of this working tree
                        app = Path(tmp) / f"app{i}"
                        if not app.exists():
                            snapshot(commit, app)
                        row["job_estimate_bytes"], row["job_estimate_how"] = job_estimate(
                            row["shape"], row["budget_bytes"], app_dir=app)
                rows += report["rows"]
        bb.log(table(rows))
        return 0

    shapes = [parse_shape(s) for s in args.sizes.split(",") if s.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    started = datetime.datetime.now(datetime.timezone.utc)
    bb.log(f"bench_sizes: {started:%Y-%m-%d %H:%M} UTC, load average "
           f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; sizes "
           f"{[shape_label(s) for s in shapes]} × {dtypes}; env {args.env}")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = HERE / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    report = {"started": started.isoformat(), "machine": bh.machine_info(),
              "args": {k: (str(v) if isinstance(v, Path) else v)
                       for k, v in vars(args).items()}, "rows": rows}
    with tempfile.TemporaryDirectory(prefix="pipex-sizes-") as tmp:
        if args.app_dir is None:
            args.app_dir, commit = snapshot("HEAD", Path(tmp) / "app")
        else:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.app_dir, check=False,
                                    capture_output=True, text=True).stdout.strip() or None
        report["app"] = {"dir": str(args.app_dir), "commit": commit}
        bb.log(f"app: {args.app_dir} (commit {commit})")
        for shape in shapes:
            for dtype in dtypes:
                bb.log(f"- {shape_label(shape)} {dtype} ...")
                rows.append(run_one(args, shape, dtype, args.data_dir, log_dir, tmp))
                report["targets"] = targets(rows)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=1, default=str))
    report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    report["targets"] = targets(rows)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    bb.log("")
    bb.log(table(rows))
    bb.log("")
    for t in report["targets"]:
        bb.log(f"{t['label']}: first overlay ≤ {TARGET_FIRST_OVERLAY_S} s "
               f"{'PASS' if t['first_overlay_ok'] else 'FAIL'} (max {t['first_overlay_max_s']}); "
               f"RSS ≤ {TARGET_RSS_RATIO}× estimate {t['rss_ratio_ok']}; "
               f"under budget {t['under_budget']}")
    bb.log(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
