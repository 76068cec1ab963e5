"""The measurements table's update in Chromium, before and after paging (issue 9).

Serves a checkout of the app (``--app-dir``, repeatable: e.g. the commit before the paging
in a worktree, then this one) with the Dockerfile's command (gunicorn, one worker) on
127.0.0.1 (``--port``, then the next ports), opens it in headless Chromium (the browser
tests' flags), scrolls the measurements panel into view, uploads an image of N dots
(``bench_measure_table.dots_image``: 1,000 / 10,000 / 50,000 regions) and records, in the
page: the table's request (the POST whose outputs include ``measure-table``) — its answer's
bytes and its time from sent to read — and the time from that request to the table's caption
naming the new image's count with its first row drawn ("shown").

Usage: ``python bench/bench_measure_browser.py --app-dir /tmp/before --app-dir .
[--sizes 1000 10000]``; the results go to ``bench/results/measure_browser.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_measure_table import dots_image

from tests.support import dockerfile_cmd, wait_for_http

HOOK_JS = """
window.__calls = [];
const original = window.fetch;
window.fetch = function (url, options) {
    const answer = original.apply(this, arguments);
    if (String(url).indexOf('_dash-update-component') >= 0) {
        let output = '';
        try { output = JSON.parse(options.body).output; } catch (e) { output = '?'; }
        const entry = {output: output, t0: performance.now(), t1: null, bytes: null};
        window.__calls.push(entry);
        answer.then(r => r.clone().text()).then(function (t) {
            entry.t1 = performance.now(); entry.bytes = t.length;
        });
    }
    return answer;
};
window.__shown = null;
window.__watch = function (text) {
    window.__shown = null;
    const tick = function () {
        const cap = document.getElementById('measure-caption');
        const row = document.querySelector('#measure-table .ag-center-cols-container '
                                           + '.ag-row[row-index="0"] [col-id="area"]');
        if (cap && cap.textContent.indexOf(text) >= 0 && row && row.textContent) {
            window.__shown = performance.now();
        } else {
            requestAnimationFrame(tick);
        }
    };
    requestAnimationFrame(tick);
};
"""


def browser():
    options = Options()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                "--window-size=1600,1000", "--force-device-scale-factor=1",
                "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def serve(app_dir, port, state_dir, log_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEX_")}
    env.update(PIPEX_BIND=f"127.0.0.1:{port}", PIPEX_WORKERS="1",
               PIPEX_STATE_DIR=str(state_dir), PIPEX_DATA_DIR=str(state_dir / "data"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    (state_dir / "data").mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(dockerfile_cmd(Path(app_dir) / "Dockerfile"), cwd=app_dir,
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    wait_for_http(f"http://127.0.0.1:{port}/health", timeout=120)
    return proc


def _busy(driver):
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return {m["name"]: m["value"] for m in metrics}["TaskDuration"]


def _press_right(driver):
    """ArrowRight on the vmax handle, without scrolling the page (CDP key events)."""
    handle = driver.find_elements("css selector", "#thresholds-slider [role=slider]")[1]
    driver.execute_script("arguments[0].focus({preventScroll: true});", handle)
    for kind in ("rawKeyDown", "keyUp"):
        driver.execute_cdp_cmd("Input.dispatchKeyEvent", {
            "type": kind, "key": "ArrowRight", "code": "ArrowRight",
            "windowsVirtualKeyCode": 39, "nativeVirtualKeyCode": 39})


def warm_update(driver, quiet=2.0):
    """A move to a new (vmin, vmax), then Undo: the table of a state whose measurements are
    cached is shown again. Returns the Undo's table request (bytes, seconds) and the page's
    main-thread busy time from the click to idle."""
    n_calls = len(driver.execute_script("return window.__calls"))
    _press_right(driver)
    time.sleep(0.5)  # the panel updates when in view (callbacks.visibility)
    driver.execute_script(
        "document.getElementById('measure-panel').scrollIntoView({block: 'end'});")
    until(lambda: [c for c in driver.execute_script("return window.__calls")[n_calls:]
                   if "measure-table" in c["output"] and c["t1"]], 900, "the move's table")
    time.sleep(quiet)
    n_calls = len(driver.execute_script("return window.__calls"))
    busy = _busy(driver)
    driver.execute_script("document.getElementById('undo-button').click();")
    done = until(lambda: [c for c in driver.execute_script("return window.__calls")[n_calls:]
                          if "measure-table" in c["output"] and c["t1"]], 300,
                 "the undo's table")
    time.sleep(quiet)
    busy = _busy(driver) - busy  # CDP TaskDuration: time in main-thread tasks
    call = done[0]
    return {"cached table: answer bytes": call["bytes"],
            "cached table: request s": round((call["t1"] - call["t0"]) / 1000, 3),
            "cached table: main thread busy s (undo to idle)": round(max(busy, 0), 3)}


def until(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def measure_app(app_dir, port, sizes, images, tmp):
    proc = serve(app_dir, port, tmp / f"state-{port}", tmp / f"server-{port}.log")
    driver, out = None, []
    try:
        driver = browser()
        driver.execute_cdp_cmd("Performance.enable", {})
        driver.get(f"http://127.0.0.1:{port}/")
        until(lambda: "labelled region" in (driver.execute_script(
            "const e = document.getElementById('segmentation-summary');"
            "return e ? e.textContent : '';") or ""), 180, "the first segmentation")
        driver.execute_script(HOOK_JS)
        for n in sizes:
            name = images[n].name
            text = f" regions of {name}"  # the count is the segmentation's
            driver.execute_script(
                "document.getElementById('measure-panel').scrollIntoView({block: 'end'});"
                "window.__calls.length = 0; window.__watch(arguments[0]);", text)
            driver.find_element("css selector", "#upload input[type=file]").send_keys(
                str(images[n]))
            until(lambda: driver.execute_script("return window.__shown"), 900, text)
            time.sleep(1.0)
            calls = driver.execute_script("return window.__calls")
            shown = driver.execute_script("return window.__shown")
            table = [c for c in calls if "measure-table" in c["output"] and c["t0"] < shown]
            last = table[-1]
            caption = driver.find_element("css selector", "#measure-caption").text
            row = {"app": str(app_dir), "dots": n, "caption": caption.split(" · ")[0],
                   "first table: requests": len(table), "first table: answer bytes":
                   last["bytes"], "first table: request s": round((last["t1"] - last["t0"])
                                                                  / 1000, 3),
                   "first table: request to shown s": round((shown - last["t0"]) / 1000, 3)}
            row.update(warm_update(driver))
            print(json.dumps(row), flush=True)
            out.append(row)
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    return out


def main(argv=None):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server and browser
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", action="append", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--port", type=int, default=8121)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-measure-browser-"))
    images = {}
    for n in args.sizes:
        images[n] = tmp / f"dots{n}.tif"
        tifffile.imwrite(images[n], dots_image(n))
    results = []
    for i, app_dir in enumerate(args.app_dir):
        results += measure_app(Path(app_dir).resolve(), args.port + i, args.sizes, images, tmp)
    out = HERE / "results" / "measure_browser.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
