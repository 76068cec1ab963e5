"""Issue 10 item 1 in headless Chromium: after "remove small objects" the segmentation's
summary and the measurements give the true count of objects, not the highest label (the
label image keeps its gaps, and the post-processing panel says why and what to tick);
"relabel sequential" numbers them 1 … N. And the Sample menu (item 9) stops saying "coins"
once another image is loaded, and choosing coins again loads it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from selenium.webdriver.common.by import By

from tests.e2e.helpers import exact_shown, show, until

pytestmark = pytest.mark.browser


def _image():
    """25 specks of 2 x 2 pixels along the top (labelled first), four disks below."""
    yy, xx = np.mgrid[:200, :200]
    image = np.full((200, 200), 40, np.uint8)
    for k in range(25):
        image[4:6, 4 + 7 * k:6 + 7 * k] = 220
    for cy, cx in ((70, 50), (70, 150), (150, 50), (150, 150)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 20 ** 2] = 220
    noise = np.random.default_rng(0).normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _regions(dash_duo):
    found = re.search(r"([\d,]+) labelled region", dash_duo.find_element(
        "#segmentation-summary").text)
    return int(found.group(1).replace(",", "")) if found and exact_shown(dash_duo) else None


def _tick(dash_duo, label):
    box = dash_duo.driver.find_element(
        By.XPATH, f"//*[contains(@class,'post-ops')]//label[contains(., '{label}')]//input")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()


def _labels(dash_duo, name, before):
    path = Path(dash_duo.download_path) / name
    if path.exists():
        path.unlink()
    show(dash_duo.driver, "#download-labels-button")
    dash_duo.find_element("#download-labels-button").click()
    until(lambda: path.exists() and path.stat().st_size > 0 and path.stat().st_mtime >= before,
          60, f"download {name}")
    time.sleep(0.5)
    return tifffile.imread(path)


def test_the_count_is_the_number_of_objects_not_the_highest_label(dash_duo, app_factory,
                                                                  tmp_path):
    dash_duo.driver.set_window_size(1600, 2700)
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    path = tmp_path / "specks.tif"
    tifffile.imwrite(path, _image())
    dash_duo.find_element("#upload input[type=file]").send_keys(str(path))
    dash_duo.wait_for_contains_text("#image-info", "specks.tif", timeout=60)
    until(lambda: _regions(dash_duo) == 29, 120, "29 regions: 25 specks and 4 disks")
    # item 9: the Sample menu no longer says "coins" once another image is loaded
    assert "coins" not in dash_duo.find_element("#sample-dropdown").text

    _tick(dash_duo, "remove small objects")  # min size 64 px: the specks go
    until(lambda: _regions(dash_duo) == 4, 120, "4 labelled regions after removing the specks")
    labels = _labels(dash_duo, "specks_labels.tif", time.time() - 1)
    found = np.unique(labels[labels > 0])
    assert len(found) == 4 and labels.max() == 29, found  # the disks keep labels 26 ... 29
    show(dash_duo.driver, "#measure-panel")
    until(lambda: dash_duo.find_element("#measure-caption").text.startswith(
        "4 regions of specks.tif"), 60, "the table's 4 regions")
    hint = dash_duo.find_element(".post-hint").text
    assert "counts of objects" in hint and "relabel sequential" in hint, hint

    _tick(dash_duo, "relabel sequential")
    until(lambda: dash_duo.find_element("#history-text").text == "step 3 of 3", 60,
          "relabel sequential applied")
    until(lambda: _regions(dash_duo) == 4, 120, "still 4 regions")
    labels = _labels(dash_duo, "specks_labels.tif", time.time() - 1)
    assert sorted(np.unique(labels[labels > 0])) == [1, 2, 3, 4]
    # choosing coins again loads it
    show(dash_duo.driver, "#sample-dropdown")
    dash_duo.select_dcc_dropdown("#sample-dropdown", value="coins")
    dash_duo.wait_for_contains_text("#image-info", "coins", timeout=60)

