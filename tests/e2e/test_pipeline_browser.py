"""A person walks the whole pipeline in headless Chromium: filter, adopt Otsu's threshold
from the gallery, segment and compare, post-process, read the measurements table, click a
region, select rows, download the CSV and the labels, export the script and run it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from skimage import data, io

from tests.e2e.helpers import until

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
TRACE_SOURCE_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
return gd && gd.data && gd.data.length > arguments[1] ? gd.data[arguments[1]].source : null;
"""
DATA_TO_PIXEL_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
const fl = gd._fullLayout;
return [fl.xaxis.l2p(arguments[0]), fl.yaxis.l2p(arguments[1])];
"""



def _until(predicate, timeout=90, what="condition"):
    return until(predicate, timeout=timeout, what=what)


def _step(dash_duo):
    text = dash_duo.find_element("#history-text").text
    return int(re.match(r"step (\d+) of", text).group(1)) if text else 0


def _download(dash_duo, name):
    path = Path(dash_duo.download_path) / name
    _until(lambda: path.exists() and path.stat().st_size > 0, what=f"download {name}")
    time.sleep(0.5)
    return path


def test_whole_pipeline(dash_duo, app_factory, tmp_path):
    dash_duo.driver.set_window_size(1600, 2700)
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    assert _step(dash_duo) == 1

    # 1. Filtering: Gaussian, then sigma = 1.5 (Enter commits the number).
    dash_duo.select_dcc_dropdown("#filter-method", value="Gaussian")
    _until(lambda: _step(dash_duo) == 2, what="filter step in history")
    sigma = _until(lambda: dash_duo.find_element("#filter-panel .param input"), what="sigma")
    sigma.send_keys(Keys.CONTROL, "a")
    sigma.send_keys("1.5", Keys.ENTER)
    _until(lambda: _step(dash_duo) == 3, what="sigma in history")
    dash_duo.wait_for_contains_text("#filter-doc", "skimage.filters.gaussian")

    # 2. Threshold discovery: adopt Otsu's threshold as vmax from the gallery.
    def adopt_otsu():
        try:
            tile = dash_duo.driver.find_element(
                By.XPATH, "//div[contains(@class,'tile')]"
                          "[.//code[text()='threshold_otsu']]")
            value = float(tile.find_element(By.CSS_SELECTOR, ".tile-value").text)
            tile.find_element(By.XPATH, ".//button[text()='as vmax']").click()
        except StaleElementReferenceException:  # the gallery re-rendered meanwhile
            return None
        return value

    otsu = _until(adopt_otsu, what="otsu tile")  # retried while the gallery re-renders
    _until(lambda: _step(dash_duo) == 4, what="adopted threshold")
    text = dash_duo.find_element("#thresholds-text").text
    assert f"pixels > {otsu:g}" in text or abs(
        float(re.search(r"pixels > ([0-9.]+)", text).group(1)) - otsu) < 1e-3 * otsu

    # 3. Segmentation, compared with watershed from the same markers.
    dash_duo.wait_for_contains_text("#compare-text", "agree on", timeout=120)

    # 4. Post-processing: fill holes and remove small objects.
    boxes = dash_duo.find_elements("#postprocess-ops input[type=checkbox]")
    boxes[2].click()  # fill holes
    _until(lambda: _step(dash_duo) == 5, what="fill holes")
    dash_duo.find_elements("#postprocess-ops input[type=checkbox]")[3].click()  # small objects
    _until(lambda: _step(dash_duo) == 6, what="remove small objects")
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=60)

    # 5. Measurements: the table fills in.
    rows = _until(lambda: dash_duo.find_elements("#measure-table .ag-center-cols-container .ag-row"),
                  what="table rows")
    assert len(rows) >= 5
    n_regions = int(re.search(r"(\d+) labelled regions",
                              dash_duo.find_element("#segmentation-summary").text).group(1))
    assert n_regions >= 10

    # Click a region in the image: its row is highlighted in the table.
    dash_duo.find_element("#download-labels-button").click()
    labels_path = _download(dash_duo, "coins_labels.tif")
    labels = tifffile.imread(labels_path)
    assert labels.max() == n_regions
    target = int(np.bincount(labels.ravel())[1:].argmax()) + 1  # the largest region
    rr, cc = np.nonzero(labels == target)
    k = len(rr) // 2
    x, y = dash_duo.driver.execute_script(DATA_TO_PIXEL_JS, float(cc[k]), float(rr[k]))
    drag = dash_duo.find_element("#segmentation-graph .nsewdrag")
    ActionChains(dash_duo.driver).move_to_element_with_offset(drag, int(x), int(y)).click() \
        .perform()
    highlighted = _until(lambda: [r for r in dash_duo.find_elements("#measure-table .ag-row")
                                  if "255, 243, 176" in (r.get_attribute("style") or "")],
                         what="highlighted row")
    # the line under the image names the pixel, its intensity and its region
    _until(lambda: f"region {target}" in dash_duo.find_element("#segmentation-hover").text
           and "intensity" in dash_duo.find_element("#segmentation-hover").text,
           what="the pixel's line under the image")
    assert {r.get_attribute("row-id") for r in highlighted} == {str(target)}

    # Select a row: its region is highlighted in the image.
    blank = dash_duo.driver.execute_script(TRACE_SOURCE_JS, "#segmentation-graph", 3)
    def select_first_row():
        # the grid may re-render its rows (row highlight, scroll) and swallow a click: click
        # again while the box is not ticked
        box = dash_duo.find_element(
            "#measure-table .ag-row[row-index='0'] .ag-selection-checkbox input")
        if not box.is_selected():
            box.click()
        return dash_duo.driver.execute_script(TRACE_SOURCE_JS, "#segmentation-graph", 3) != blank

    _until(select_first_row, what="selected region highlighted")

    # Download the CSV: provenance header, one row per region.
    dash_duo.find_element("#download-csv-button").click()
    csv = _download(dash_duo, "coins_measurements.csv").read_text(encoding="utf-8")
    lines = csv.splitlines()
    assert lines[0].startswith("# ") and "provenance" in csv
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(body) == n_regions + 1  # header row + regions

    shot = tmp_path / "pipeline.png"
    dash_duo.driver.save_screenshot(str(shot))
    if os.environ.get("PIPEX_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "pipeline.png")

    # Export the script and run it on the same image: the same labels, bit for bit.
    dash_duo.driver.find_element(By.XPATH, "//*[text()='Recipe']").click()
    dash_duo.wait_for_contains_text("#recipe-view", "pipeline-explorer-recipe")
    dash_duo.find_element("#export-script-button").click()
    script = _download(dash_duo, "coins_pipeline.py")
    image_path = tmp_path / "coins.png"
    io.imsave(image_path, data.coins(), check_contrast=False)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, str(script), str(image_path), "--out", str(out)],
                   check=True, cwd=tmp_path, env=env, timeout=300)
    produced = tifffile.imread(next(out.glob("*labels*.tif")))
    np.testing.assert_array_equal(produced, labels)
