"""The Batch tab in headless Chromium: run the current recipe over the data folder (a broken
file among good ones), watch the progress, read the table, download the zip; and Cancel a
running batch: its process and workers stop, nothing is packed."""

from __future__ import annotations

import io
import json
import time
import zipfile

import psutil
import pytest
import requests
from PIL import Image
from selenium.webdriver.common.by import By
from skimage import data as skdata

from tests.e2e.helpers import until

pytestmark = pytest.mark.browser


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _open_batch_tab(dash_duo, app):
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text("#image-info", "coins", timeout=60)
    # the page's recipe exists once the coins are segmented
    dash_duo.wait_for_contains_text("#segmentation-summary", "object:", timeout=120)
    dash_duo.driver.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Batch']").click()
    until(lambda: "All files of the data folder" in dash_duo.find_element("#batch-source").text,
          what="the data folder offered")


def _progress(dash_duo):
    bar = dash_duo.find_element("#batch-progress")
    return (float(bar.get_attribute("value") or 0), float(bar.get_attribute("max") or 1),
            dash_duo.find_element("#batch-progress-text").text)


def _status(state_dir):
    """The status.json of the (only) session's latest batch, or None."""
    latest = list((state_dir / "batch").glob("*/latest"))
    if not latest:
        return None
    folder = latest[0].parent / latest[0].read_text().strip()
    try:
        return json.loads((folder / "status.json").read_text()), folder
    except (OSError, ValueError):
        return None


def test_batch_over_the_data_folder(dash_duo, app_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    coins = skdata.coins()
    (data / "first.png").write_bytes(_png(coins[:150, :200]))
    (data / "second.png").write_bytes(_png(coins[120:, 150:]))
    (data / "broken.png").write_bytes(_png(coins)[:300])  # truncated
    _open_batch_tab(dash_duo, app_factory())
    assert "(3)" in dash_duo.find_element("#batch-source").text

    seen = []

    def finished():
        seen.append(_progress(dash_duo))
        return len(dash_duo.find_elements("#batch-table tr.batch-row")) == 3

    dash_duo.find_element("#batch-run").click()
    until(finished, timeout=240, what="the result table")
    value, maximum, text = _progress(dash_duo)
    assert (value, maximum) == (3, 3) and text.startswith("3 of 3 files done"), seen[-3:]
    assert any(v < 3 for v, _, _ in seen), "the progress was never seen below 3 of 3"

    rows = {r.find_element(By.TAG_NAME, "td").text: r.text
            for r in dash_duo.find_elements("#batch-table tr.batch-row")}
    assert set(rows) == {"broken.png", "first.png", "second.png"}
    assert "failed:" in rows["broken.png"] and "broken.png" in rows["broken.png"].split(
        "failed:")[1]
    assert " ok" in rows["first.png"] and " ok" in rows["second.png"]
    summary = dash_duo.find_element("#batch-summary").text
    assert "2 done, 1 failed" in summary, summary
    assert dash_duo.find_element("#batch-run").is_enabled()
    assert not dash_duo.find_element("#batch-cancel").is_enabled()

    # the download link serves the zip
    href = dash_duo.find_element("#batch-zip-link").get_attribute("href")
    answer = requests.get(href, timeout=60)
    assert answer.status_code == 200
    names = set(zipfile.ZipFile(io.BytesIO(answer.content)).namelist())
    assert names == {"first_labels.tif", "first_measurements.csv", "second_labels.tif",
                     "second_measurements.csv", "measurements.csv", "recipe.json",
                     "pipeline.py"}

    # a batch that cannot start says why and leaves the last results as they were
    dash_duo.select_dcc_dropdown("#batch-source", value="Uploaded files (0)")
    dash_duo.find_element("#batch-run").click()
    until(lambda: "No uploaded files" in dash_duo.find_element("#batch-message").text,
          what="the reason the batch did not start")
    assert len(dash_duo.find_elements("#batch-table tr.batch-row")) == 3
    assert dash_duo.find_element("#batch-zip-link").get_attribute("href") == href


def test_cancel_stops_a_running_batch(dash_duo, app_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    coins = _png(skdata.coins())
    n = 150  # far more work than passes before Cancel is pressed
    for i in range(n):
        (data / f"coins{i:03d}.png").write_bytes(coins)
    _open_batch_tab(dash_duo, app_factory())
    state = tmp_path / "state"

    dash_duo.find_element("#batch-run").click()
    first = until(lambda: _progress(dash_duo)[0], timeout=240, what="the first file done")
    until(lambda: _progress(dash_duo)[0] > first, timeout=120, what="the progress bar to move")
    status, folder = until(lambda: _status(state), what="the job's status")
    assert status["state"] == "running" and status["total"] == n
    job = psutil.Process(status["pid"])
    workers = job.children(recursive=True)
    until(lambda: "left" in _progress(dash_duo)[2], what="a time-left estimate")
    assert dash_duo.find_element("#batch-cancel").is_enabled()

    dash_duo.find_element("#batch-cancel").click()
    until(lambda: "Cancelled after" in dash_duo.find_element("#batch-message").text,
          what="the cancel message")

    def gone(proc):
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    until(lambda: gone(job), timeout=30, what="the job's process to end")
    until(lambda: all(gone(w) for w in workers), timeout=30, what="its workers to end")
    done = _status(state)[0]["done"]
    assert done < n
    assert not (folder / "results.zip").exists()
    assert dash_duo.find_elements("#batch-zip-link") == []
    until(lambda: dash_duo.find_element("#batch-run").is_enabled(), what="Run enabled again")
    # nothing runs on: after a pause, no file more was finished or written
    labels = sorted(folder.glob("*_labels.tif"))
    time.sleep(3)
    assert _status(state)[0]["done"] == done
    assert sorted(folder.glob("*_labels.tif")) == labels
