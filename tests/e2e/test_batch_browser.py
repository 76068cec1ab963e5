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


def _batch_tab(driver):
    driver.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Batch']").click()


def _listed_jobs(driver):
    """(job id, state class) of each batch in the Batch tab's list of the owner's batches."""
    # read in one script: the list is redrawn at each tick of the poll
    return [tuple(pair) for pair in driver.execute_script(
        "return Array.from(document.querySelectorAll('#batch-jobs li.batch-job'),"
        " li => [li.getAttribute('data-job'), li.getAttribute('class')]);")]


def test_a_batch_survives_a_reload_and_only_its_browser_sees_it(dash_duo, app_factory,
                                                                tmp_path):
    from selenium import webdriver

    from tests.e2e.conftest import pytest_setup_options

    data = tmp_path / "data"
    data.mkdir()
    coins = _png(skdata.coins())
    n = 300  # still running when the page is back (120 could all be done by then in CI)
    for i in range(n):
        (data / f"coins{i:02d}.png").write_bytes(coins)
    _open_batch_tab(dash_duo, app_factory())
    driver = dash_duo.driver
    browser_id = driver.execute_script("return JSON.parse(localStorage.getItem('batch-browser'))")
    assert isinstance(browser_id, str) and len(browser_id) == 32

    dash_duo.find_element("#batch-run").click()
    until(lambda: _progress(dash_duo)[0] >= 1, timeout=240, what="the first file done")
    job = until(lambda: _status(tmp_path / "state"), what="the job's status")[0]["job"]

    # the tab is closed and opened again: a new page, a new session, the same browser
    driver.refresh()
    dash_duo.wait_for_contains_text("#image-info", "coins", timeout=60)
    assert driver.execute_script(
        "return JSON.parse(localStorage.getItem('batch-browser'))") == browser_id
    _batch_tab(driver)
    seen = []

    def listed_running():
        seen.append((_listed_jobs(driver), _status(tmp_path / "state")[0]["done"]))
        return any(j == job and "batch-job-running" in c for j, c in seen[-1][0])

    try:
        until(listed_running, timeout=60, what="the running batch listed after the reload")
    except AssertionError:
        raise AssertionError(f"{seen[:2]} ... {seen[-2:]}") from None

    def attached():
        # its progress, and Cancel enabled while it runs
        value, maximum, text = _progress(dash_duo)
        return (value if maximum == n and value < n and f"of {n} files done" in text
                and dash_duo.find_element("#batch-cancel").is_enabled() else None)

    first = until(attached, timeout=60, what="the re-attached job's progress and Cancel")
    until(lambda: _progress(dash_duo)[0] > first, timeout=120, what="the progress to move")

    # it ends: its table and its zip, on the reloaded page
    link = until(lambda: dash_duo.find_elements("#batch-zip-link"), timeout=300,
                 what="the zip link of the re-attached job")
    href = link[0].get_attribute("href")
    assert job in href
    assert _progress(dash_duo)[:2] == (n, n)
    assert len(dash_duo.find_elements("#batch-table tr.batch-row")) == n
    assert not dash_duo.find_element("#batch-cancel").is_enabled()
    until(lambda: any(j == job and "batch-job-done" in c for j, c in _listed_jobs(driver)),
          what="the list to show it done")
    answer = requests.get(href, timeout=60)
    assert answer.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert len(archive.namelist()) == 2 * n + 3
    description = json.loads(tifffile_description(archive.read("coins00_labels.tif")))
    assert description["command"] == "Pipeline Explorer Batch tab"

    # another browser profile (another owner) does not see it: a second Chromium, with its
    # own new profile (and so its own localStorage), started as dash[testing] starts its own
    options = pytest_setup_options()
    for arg in ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--remote-debugging-port=0", f"--user-data-dir={tmp_path / 'other-profile'}"):
        options.add_argument(arg)
    other = webdriver.Chrome(options=options)
    try:
        other.get(dash_duo.server_url)
        until(lambda: other.execute_script(
            "return JSON.parse(localStorage.getItem('batch-browser'))"), timeout=60,
            what="the other browser's id")
        assert other.execute_script(
            "return JSON.parse(localStorage.getItem('batch-browser'))") != browser_id
        _batch_tab(other)
        until(lambda: "All files of the data folder" in other.find_element(
            By.ID, "batch-source").text, timeout=60, what="the other page's Batch tab")
        time.sleep(2)  # time for the list of its own batches to arrive
        assert _listed_jobs(other) == []
        assert other.find_elements(By.ID, "batch-zip-link") == []
        assert other.find_element(By.ID, "batch-table").text == ""
        # nor can it cancel it: Cancel on its page finds no batch of its own
        assert not other.find_element(By.ID, "batch-cancel").is_enabled()
    finally:
        other.quit()


def tifffile_description(raw: bytes) -> str:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        return tif.pages[0].description
