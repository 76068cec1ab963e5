"""A slow exact segmentation runs as a background job, in headless Chromium (issue 9): a
2048² noisy image from the data folder shows its reduced-grid preview, then the exact
random walker runs as a job whose progress bar moves; Cancel kills the job's process (the
CPU falls back) and the preview stays with a message; Compute runs it again, a key press
meanwhile supersedes that run (its process is killed too), and the exact result of the new
pair is drawn with the comparison following it."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest
from PIL import Image
from selenium.webdriver.common.keys import Keys
from skimage import data as skdata
from skimage.transform import resize

from callbacks.display import COMPARE_WAITS
from tests.e2e.helpers import OVERLAY_JS, show, until

pytestmark = pytest.mark.browser

N = 2048


def _noisy_camera(n=N):
    rng = np.random.default_rng(9)
    image = resize(skdata.camera() / 255.0, (n, n), order=1)
    return (np.clip(image + rng.normal(0, 0.08, image.shape), 0, 1) * 255).astype(np.uint8)


def _jobs():
    """The background jobs running now: processes forked from this one (the diskcache
    manager's ``multiprocess.Process``), alive."""
    me = psutil.Process()
    cmdline = me.cmdline()
    out = []
    for child in me.children(recursive=False):
        try:
            if child.cmdline() == cmdline and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def _gone(proc):
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _cpu_seconds(proc, interval):
    """CPU seconds `proc` used over `interval` seconds of wall time."""
    before = sum(proc.cpu_times()[:2])
    time.sleep(interval)
    return sum(proc.cpu_times()[:2]) - before


def _progress(dash_duo):
    bar = dash_duo.find_element("#exact-job-progress")
    return (float(bar.get_attribute("value") or 0),
            dash_duo.find_element("#exact-job-progress-text").text)


def _box_shown(dash_duo):
    return dash_duo.find_element("#exact-job").value_of_css_property("display") != "none"


def _summary(dash_duo):
    return dash_duo.find_element("#segmentation-summary").text


def test_a_slow_exact_result_runs_as_a_job_with_progress_and_cancel(dash_duo, app_factory,
                                                                      tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(_noisy_camera()).save(data / "large.png")
    dash_duo.start_server(app_factory(max_pixels=2**24))
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled region", timeout=120)
    assert not _box_shown(dash_duo)  # coins: no job

    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="large.png")
    dash_duo.wait_for_contains_text("#image-info", "large.png", timeout=120)
    until(lambda: "live preview (at 1/" in _summary(dash_duo), timeout=120,
          what="the reduced-grid preview")
    until(lambda: _box_shown(dash_duo), timeout=60, what="the job's progress bar")
    preview = dash_duo.driver.execute_script(OVERLAY_JS)
    job = until(lambda: _jobs(), timeout=30, what="the job's process")[0]
    # the comparison waits for the exact result (it does not compute it beside the job)
    until(lambda: COMPARE_WAITS in dash_duo.find_element("#compare-text").text, timeout=30,
          what="the comparison waiting for the exact segmentation")
    # the bar moves and says what runs and the time left
    seen = [until(lambda: _progress(dash_duo)[0] > 0 and _progress(dash_duo), timeout=30,
                  what="some progress")]
    seen.append(until(lambda: _progress(dash_duo)[0] > seen[0][0] and _progress(dash_duo),
                      timeout=60, what="the progress bar to move"))
    assert "left" in seen[-1][1] or "post-processing" in seen[-1][1], seen
    assert dash_duo.find_element("#exact-job-cancel").is_enabled()
    assert _cpu_seconds(job, 1.0) > 0.05  # it computes (however busy the machine is)

    clicked = time.monotonic()
    dash_duo.find_element("#exact-job-cancel").click()
    until(lambda: _gone(job), timeout=10, what="the job's process to end")
    latency = time.monotonic() - clicked
    print(f"cancel latency (click to the job's process gone): {latency:.2f} s")
    assert _jobs() == []  # nothing computes on: the CPU falls back
    until(lambda: "exact result cancelled" in dash_duo.find_element(
        "#exact-job-message").text, timeout=10, what="the cancel message")
    assert "press Compute to run it again" in dash_duo.find_element("#exact-job-message").text
    until(lambda: not _box_shown(dash_duo), timeout=10, what="the progress bar hidden")
    # the preview stays
    assert dash_duo.driver.execute_script(OVERLAY_JS) == preview
    assert "live preview" in _summary(dash_duo) and "labelled region" not in _summary(dash_duo)
    time.sleep(1.0)
    assert dash_duo.driver.execute_script(OVERLAY_JS) == preview

    # Compute runs it again; a key press meanwhile supersedes that run
    run = dash_duo.find_element("#exact-job-run")
    assert run.is_displayed()
    run.click()
    until(lambda: _box_shown(dash_duo), timeout=30, what="the second job's progress bar")
    second = until(lambda: _jobs(), timeout=30, what="the second job's process")[0]
    assert not dash_duo.find_element("#exact-job-message").is_displayed()
    handles = dash_duo.find_elements("#thresholds-slider [role=slider]")
    vmax = float(handles[1].get_attribute("aria-valuenow"))
    handles[1].send_keys(Keys.ARROW_RIGHT)
    until(lambda: _gone(second), timeout=30, what="the superseded job's process to end")
    until(lambda: "labelled region" in _summary(dash_duo) and "preview" not in _summary(
        dash_duo), timeout=240, what="the exact result of the new pair")
    assert dash_duo.driver.execute_script(OVERLAY_JS) != preview
    assert "(background job)" in _summary(dash_duo), _summary(dash_duo)
    assert f"pixels > {vmax + 1:g}" in dash_duo.find_element("#thresholds-text").text
    until(lambda: not _box_shown(dash_duo), timeout=10, what="the progress bar hidden")
    assert not dash_duo.find_element("#exact-job-run").is_displayed()
    assert dash_duo.find_element("#exact-job-message").text == ""
    until(lambda: _jobs() == [], timeout=10, what="no job left running")
    # the comparison follows the exact result (SEG_SETTLED) once it is looked at; it never
    # computed the exact segmentation itself while the job ran (callbacks.display
    # compare_update): it said it waits for it
    show(dash_duo.driver, "#compare-panel")
    until(lambda: "agree on" in dash_duo.find_element("#compare-text").text, timeout=240,
          what="the comparison of the exact result")


def test_a_new_large_image_gets_its_exact_result_from_a_job(dash_duo, app_factory, tmp_path):
    """The first view of a large image: its reduced-grid preview, then a job (started by
    the settle callback, not the fast path) whose result the page draws."""
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(_noisy_camera(1400)).save(data / "large.png")
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled region", timeout=120)
    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="large.png")
    dash_duo.wait_for_contains_text("#image-info", "large.png", timeout=120)
    until(lambda: "live preview (at 1/" in _summary(dash_duo), timeout=120,
          what="the reduced-grid preview")
    preview = dash_duo.driver.execute_script(OVERLAY_JS)
    until(lambda: "(background job)" in _summary(dash_duo), timeout=240,
          what="the exact result computed by the job")
    assert "labelled region" in _summary(dash_duo) and "preview" not in _summary(dash_duo)
    assert dash_duo.driver.execute_script(OVERLAY_JS) != preview
    until(lambda: not _box_shown(dash_duo), timeout=10, what="the progress bar hidden")
    show(dash_duo.driver, "#compare-panel")  # it follows the exact result once looked at
    until(lambda: "agree on" in dash_duo.find_element("#compare-text").text, timeout=240,
          what="the comparison of the exact result")
