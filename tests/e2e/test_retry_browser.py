"""A lost request is seen and retried (assets/retry.js, issue 11), in headless Chromium.

The app's Flask server gets a test hook that answers chosen callback requests 503 (what a
proxy says when its worker is gone) or 500; then gunicorn with 2 workers, one of them killed
with SIGKILL between moves and in the middle of a slow request.

Served without keep-alive, as a proxy reaches the workers: with keep-alive, Chromium itself
sends a request again when the reused connection it went on dies unanswered, so the loss of a
request reaches the page only on a fresh connection (or as a proxy's 502).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile
from flask import Response, request
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import BUSY_JS, OVERLAY_JS, exact_shown, until
from tests.support import serve_docker_cmd

pytestmark = pytest.mark.browser

BANNER_JS = """
const b = document.getElementById('pipex-lost');
if (!b || b.hidden) { return null; }
const retry = b.querySelector('.pipex-lost-retry');
return {text: b.textContent, retry: Boolean(retry && !retry.hidden)};
"""
FILTERED_JS = """
const gd = document.querySelector('#filtered-graph .js-plotly-plot');
return gd && gd.data && gd.data.length ? gd.data[0].source : null;
"""


def _js(browser, script, *args):
    return browser.driver.execute_script(script, *args)


def _history(browser):
    return browser.find_element("#history-text").text



def _vmax_right(browser):
    browser.find_elements("#thresholds-slider [role=slider]")[1].send_keys(Keys.ARROW_RIGHT)


def _quiet(browser, seconds=1.0, timeout=90):
    """Wait until no panel has been busy for `seconds`."""
    end, since = time.time() + timeout, time.time()
    while time.time() < end:
        if _js(browser, BUSY_JS):
            since = time.time()
        elif time.time() - since >= seconds:
            return
        time.sleep(0.05)
    raise AssertionError(f"panels still busy: {_js(browser, BUSY_JS)}")


def _kind(path, args, body):
    """'move' for a move (the fast path or its Dash fallback), 'batch' for the start of a
    batch run (a background callback; its polls name the job), else None."""
    if path == "/_pipex/move":
        return "move"
    if path != "/_dash-update-component" or not isinstance(body, dict):
        return None
    if '"move-request-store"' in json.dumps(body.get("inputs")):
        return "move"
    # the Run button's background callback (the Batch tab's page-load and poll callbacks
    # write its table too, with other inputs)
    if "batch-table" in str(body.get("output")) and not ({"cacheKey", "job"} & set(args)) \
            and '"batch-run"' in json.dumps(body.get("inputs")):
        return "batch"
    return None


FAST, FALLBACK = "move /_pipex/move", "move /_dash-update-component"
BATCH = "batch /_dash-update-component"


def _faulty(app):
    """Install a hook in front of the app's routes: ``faults[key]`` answers the next
    requests of a kind and route (``FAST``, ``FALLBACK``) with a status (``{"status": 503,
    "left": 1}``; ``left`` None: all of them); ``attempts`` counts the requests per key;
    ``down``: every callback request answers 503."""
    state = {"faults": {}, "attempts": {}, "down": False}

    @app.server.before_request
    def _drop():
        if request.method != "POST" or not (request.path == "/_dash-update-component"
                                             or request.path.startswith("/_pipex/")):
            return None
        kind = _kind(request.path, request.args, request.get_json(silent=True))
        key = f"{kind or 'other'} {request.path}"
        state["attempts"][key] = state["attempts"].get(key, 0) + 1
        if state["down"]:
            return Response("down", 503)
        fault = state["faults"].get(key)
        if fault and (fault["left"] is None or fault["left"] > 0):
            if fault["left"] is not None:
                fault["left"] -= 1
            return Response("fault", fault["status"])
        return None

    return state


def _start(dash_duo, app_factory):
    app = app_factory()
    state = _faulty(app)
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    _quiet(dash_duo)
    return state


def test_a_lost_move_is_sent_again_and_lands(dash_duo, app_factory):
    state = _start(dash_duo, app_factory)
    # the first attempt of the move is lost, and so would be the Dash callback the page
    # falls back to when the move fails
    state["faults"].update({FAST: {"status": 503, "left": 1},
                            FALLBACK: {"status": 503, "left": 1}})
    state["attempts"].clear()
    before = _js(dash_duo, OVERLAY_JS)
    _vmax_right(dash_duo)
    until(lambda: _history(dash_duo) == "step 2 of 2" and exact_shown(dash_duo)
          and _js(dash_duo, OVERLAY_JS) != before, what="the move to land")
    assert state["attempts"][FAST] == 2, state["attempts"]  # lost, then sent again
    assert _js(dash_duo, "return window.pipexRetry.again()") == 1
    assert FALLBACK not in state["attempts"], state["attempts"]
    assert _js(dash_duo, BANNER_JS) is None
    _quiet(dash_duo)
    assert _js(dash_duo, BANNER_JS) is None


def test_a_server_that_does_not_answer_shows_a_banner_and_retry_fixes_the_page(
        dash_duo, app_factory):
    state = _start(dash_duo, app_factory)
    before = _js(dash_duo, OVERLAY_JS)
    state["attempts"].clear()
    state["down"] = True
    _vmax_right(dash_duo)
    banner = until(lambda: _js(dash_duo, BANNER_JS), timeout=30, what="the banner")
    assert "did not answer" in banner["text"] and "stale" in banner["text"], banner
    assert banner["retry"], banner
    time.sleep(1.5)
    # sent twice (once more after a pause), no more; nothing changed on the page
    assert state["attempts"].get(FAST) == 2, state["attempts"]
    assert _history(dash_duo) == "step 1 of 1"
    assert _js(dash_duo, OVERLAY_JS) == before

    # the server is back: Retry sends the move again, it lands and the banner goes
    state["down"] = False
    dash_duo.find_element("#pipex-lost .pipex-lost-retry").click()
    until(lambda: _history(dash_duo) == "step 2 of 2" and exact_shown(dash_duo)
          and _js(dash_duo, OVERLAY_JS) != before, what="the move to land after Retry")
    until(lambda: _js(dash_duo, BANNER_JS) is None, timeout=10, what="the banner to go")
    _quiet(dash_duo)

    # a 500 is a bug, not a lost request: never sent again, but the page says so
    state["attempts"].clear()
    state["faults"].update({FAST: {"status": 500, "left": None},
                            FALLBACK: {"status": 500, "left": None}})
    _vmax_right(dash_duo)
    banner = until(lambda: _js(dash_duo, BANNER_JS), timeout=30, what="the banner of a 500")
    assert "failed" in banner["text"] and not banner["retry"], banner
    until(lambda: state["attempts"].get(FALLBACK), timeout=10,
          what="the page's fallback to the Dash callback")
    time.sleep(1.5)
    assert state["attempts"][FAST] == 1, state["attempts"]
    assert state["attempts"][FALLBACK] == 1, state["attempts"]
    assert _history(dash_duo) == "step 2 of 2"
    # the next request that succeeds takes the banner away
    state["faults"].clear()
    _vmax_right(dash_duo)
    until(lambda: _history(dash_duo) == "step 3 of 3" and exact_shown(dash_duo),
          what="the next move")
    until(lambda: _js(dash_duo, BANNER_JS) is None, timeout=10, what="the banner to go")


def test_the_start_of_a_batch_run_is_not_sent_again_by_itself(dash_duo, app_factory, tmp_path):
    """A batch run is a background callback: its first request launches a job, so a lost
    one is not sent again (it might have started a job); the page says so and Run works."""
    from PIL import Image
    from skimage import data

    (tmp_path / "data").mkdir()
    Image.fromarray(data.coins()[:120, :160]).save(tmp_path / "data" / "one.png")
    state = _start(dash_duo, app_factory)
    dash_duo.driver.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Batch']").click()
    until(lambda: "(1)" in dash_duo.find_element("#batch-source").text, what="the data folder")
    state["faults"][BATCH] = {"status": 503, "left": 1}
    dash_duo.find_element("#batch-run").click()
    banner = until(lambda: _js(dash_duo, BANNER_JS), timeout=30, what="the banner")
    assert "did not answer" in banner["text"] and not banner["retry"], banner
    assert "the job did not start" in banner["text"], banner
    time.sleep(1.5)
    assert state["attempts"][BATCH] == 1, state["attempts"]
    # the tab's polls answer meanwhile: the banner stays until the run is started again
    assert _js(dash_duo, BANNER_JS) == banner
    until(lambda: dash_duo.find_element("#batch-run").is_enabled(), timeout=30,
          what="Run enabled again")
    dash_duo.find_element("#batch-run").click()
    until(lambda: len(dash_duo.find_elements("#batch-table tr.batch-row")) == 1, timeout=120,
          what="the batch's table")
    assert state["attempts"][BATCH] == 2, state["attempts"]
    until(lambda: _js(dash_duo, BANNER_JS) is None, timeout=10, what="the banner to go")


# ---- gunicorn, 2 workers, one killed -----------------------------------------------------

def _workers(server):
    return psutil.Process(server.pid).children()


def _cpu(proc):
    """CPU seconds of a worker and its children (a filter may run in blocks in processes)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def _computing(server, window=0.3, least=0.15):
    """The worker that used the most CPU over `window` seconds if it used at least `least`
    seconds of it, else None."""
    procs = _workers(server)
    start = {p.pid: _cpu(p) for p in procs}
    time.sleep(window)
    used, busiest = max(((_cpu(p) - start[p.pid], p) for p in procs), key=lambda u: u[0])
    return busiest if used >= least else None


def _kill(server, proc):
    os.kill(proc.pid, signal.SIGKILL)  # a worker of the server this test started
    until(lambda: proc.pid not in {p.pid for p in _workers(server)}, timeout=30,
          what="the killed worker to be gone")


def _first_move(browser, server):
    """Open the page on `server`, wait for coins' segmentation, move vmax one step."""
    browser.server_url = server.base_url
    browser.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=180)
    _quiet(browser)
    _vmax_right(browser)
    until(lambda: _history(browser) == "step 2 of 2" and exact_shown(browser), timeout=90,
          what="the first move")
    _quiet(browser)


def _labels_shown(browser):
    """(labels, recipe) of the labels download, whose thresholds are the slider's."""
    browser.find_element("#download-labels-button").click()
    path = Path(browser.download_path) / "coins_labels.tif"
    until(lambda: path.exists() and path.stat().st_size > 0, timeout=60,
          what="the labels download")
    time.sleep(0.5)
    with tifffile.TiffFile(path) as tif:
        labels = tif.asarray()
        recipe = json.loads(tif.pages[0].description)["steps"]["recipe"]
    thumbs = browser.find_elements("#thresholds-slider [role=slider]")
    assert [recipe["markers"]["vmin"], recipe["markers"]["vmax"]] == [
        float(t.get_attribute("aria-valuenow")) for t in thumbs]
    return labels, recipe


@pytest.mark.server
def test_a_killed_worker_loses_nothing(dash_br, tmp_path):
    from skimage import data

    from pipeline import recipe as recipes

    with serve_docker_cmd(workers=2, env={"GUNICORN_CMD_ARGS": "--keep-alive 0"}) as server:
        _first_move(dash_br, server)

        # killed between moves
        _kill(server, _workers(server)[0])
        before = _js(dash_br, OVERLAY_JS)
        _vmax_right(dash_br)
        until(lambda: _history(dash_br) == "step 3 of 3" and exact_shown(dash_br)
              and _js(dash_br, OVERLAY_JS) != before, timeout=90,
              what="the move after a worker was killed")
        _quiet(dash_br)

        # killed in the middle of a slow request: a bilateral filter of sigma 10 (~2 s)
        dash_br.select_dcc_dropdown("#filter-method", value="Bilateral (plane by plane in 3D)")
        until(lambda: _history(dash_br) == "step 4 of 4", timeout=90, what="bilateral")
        _quiet(dash_br)
        filtered = _js(dash_br, FILTERED_JS)
        spatial = dash_br.find_elements("#filter-panel .param input")[1]
        spatial.send_keys(Keys.CONTROL, "a")
        spatial.send_keys("10", Keys.ENTER)
        until(lambda: _history(dash_br) == "step 5 of 5", timeout=90, what="sigma_spatial")
        busy = until(lambda: _computing(server), timeout=30, what="a worker computing")
        assert _js(dash_br, BUSY_JS), "the slow request had finished already"
        _kill(server, busy)
        until(lambda: _js(dash_br, "return window.pipexRetry.again()"), timeout=30,
              what="the lost requests to be sent again")
        until(lambda: _js(dash_br, FILTERED_JS) != filtered, timeout=120,
              what="the filtered panel to update")
        _quiet(dash_br, seconds=1.5, timeout=180)
        until(lambda: exact_shown(dash_br), timeout=60, what="the exact segmentation")
        assert _history(dash_br) == "step 5 of 5"
        assert _js(dash_br, BANNER_JS) is None

        # nothing lost: the labels download is the recipe the page shows, bit for bit
        labels, recipe = _labels_shown(dash_br)
        assert recipe["filter"]["name"] == "bilateral", recipe["filter"]
        assert recipe["filter"]["params"]["sigma_spatial"] == 10
        n = int(re.search(r"(\d+) labelled region",
                          dash_br.find_element("#segmentation-summary").text).group(1))
        assert labels.max() == n
        assert np.array_equal(labels, recipes.run(data.coins(), recipe).labels)


@pytest.mark.server
def test_a_full_restart_loses_no_session_and_the_page_recovers(dash_br, tmp_path):
    """Issue 11: the whole server stopped and started again (an upgrade, a reboot) on the
    same state folder. A move made while it is down is held with the banner; once it is back,
    Retry lands it on the same session: its history goes on, undo reads it, the labels are
    the recipe's."""
    from skimage import data

    from pipeline import recipe as recipes
    from tests.support import free_port

    state, port = tmp_path / "state", free_port()
    env = {"GUNICORN_CMD_ARGS": "--keep-alive 0"}
    with serve_docker_cmd(workers=2, env=env, state_dir=state, port=port) as server:
        _first_move(dash_br, server)
        session = _js(dash_br, "return window.pipexMove && window.pipexMove.ctx ? "
                               "window.pipexMove.ctx.session : null")
    # the server is down: the page holds the move and says so
    before = _js(dash_br, OVERLAY_JS)
    _vmax_right(dash_br)
    banner = until(lambda: _js(dash_br, BANNER_JS), timeout=30, what="the banner")
    assert "did not answer" in banner["text"] and banner["retry"], banner
    assert _history(dash_br) == "step 2 of 2"
    with serve_docker_cmd(workers=2, env=env, state_dir=state, port=port):
        dash_br.find_element("#pipex-lost .pipex-lost-retry").click()
        until(lambda: _history(dash_br) == "step 3 of 3" and exact_shown(dash_br)
              and _js(dash_br, OVERLAY_JS) != before, timeout=120,
              what="the held move to land after the restart")
        until(lambda: _js(dash_br, BANNER_JS) is None, timeout=10, what="the banner to go")
        assert _js(dash_br, "return window.pipexMove.ctx.session") == session
        _quiet(dash_br)
        # the history from before the restart is there: undo goes back to step 2
        dash_br.find_element("#undo-button").click()
        until(lambda: _history(dash_br) == "step 2 of 3" and exact_shown(dash_br), timeout=90,
              what="undo across the restart")
        _quiet(dash_br)
        labels, recipe = _labels_shown(dash_br)
        assert np.array_equal(labels, recipes.run(data.coins(), recipe).labels)
