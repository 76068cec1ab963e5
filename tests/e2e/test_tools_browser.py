"""The tools a scientist reaches for next, in headless Chromium: split touching objects from the
post-processing checklist (the region count in the summary goes from 4 to 7 on touching
disks), and choose the red channel of a colour image in the loader's Channel menu (3 disks
instead of the luminance's 12 regions; the menu is hidden for a gray image)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By

from tests.e2e.helpers import until

pytestmark = pytest.mark.browser


def _touching():
    """Three pairs of overlapping disks and one disk alone (gray, uint8)."""
    yy, xx = np.indices((140, 200))
    mask = np.zeros((140, 200), dtype=bool)
    for cy, cx in ((35, 35), (35, 63), (100, 40), (100, 68), (40, 140), (66, 156), (105, 150)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 16 ** 2
    noise = np.random.default_rng(3).normal(0, 6, mask.shape)
    return np.clip(mask * 140.0 + 60 + noise, 0, 255).astype(np.uint8)


def _colour():
    """Three red disks on a green background: the red channel shows them best."""
    yy, xx = np.indices((120, 160))
    disks = np.zeros((120, 160), dtype=bool)
    for cy, cx in ((35, 35), (35, 110), (85, 72)):
        disks |= (yy - cy) ** 2 + (xx - cx) ** 2 < 16 ** 2
    rgb = np.empty((120, 160, 3), dtype=np.uint8)
    rgb[..., 0] = np.where(disks, 220, 30)
    rgb[..., 1] = np.where(disks, 50, 140)
    rgb[..., 2] = 70
    rgb += np.random.default_rng(2).integers(0, 10, rgb.shape, dtype=np.uint8)
    return rgb


def _regions(dash_duo):
    """The region count of the exact result in the summary, or None (a preview, or none)."""
    text = dash_duo.find_element("#segmentation-summary").text
    if "live preview" in text:
        return None
    found = re.search(r"([\d,]+) labelled region", text)
    return int(found.group(1).replace(",", "")) if found else None


def _displayed(dash_duo, selector):
    return dash_duo.find_element(selector).is_displayed()


def test_split_touching_objects_and_choose_a_channel(dash_duo, app_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    Image.fromarray(_touching()).save(data / "touching.png")
    Image.fromarray(_colour()).save(data / "colour.png")
    dash_duo.driver.set_window_size(1600, 2700)
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)

    # Touching disks: one region per pair.
    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="touching.png")
    dash_duo.wait_for_contains_text("#image-info", "touching.png", timeout=60)
    until(lambda: _regions(dash_duo) == 4, 120, "4 regions before the split")
    assert not _displayed(dash_duo, "#channel-controls")  # a gray image: no channel to choose

    # Tick "split touching objects": each pair becomes two regions.
    box = dash_duo.driver.find_element(
        By.XPATH, "//*[contains(@class,'post-ops')]//label[contains(., 'split touching "
                  "objects')]//input")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()
    until(lambda: _regions(dash_duo) == 7, 120, "7 regions after the split")
    links = [a.text for a in dash_duo.find_elements("#binarization-panel .doc-link")]
    assert "skimage.feature.peak_local_max" in links
    assert "skimage.segmentation.watershed" in links

    # A colour image: the Channel menu appears; its luminance gives many small regions.
    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="colour.png")
    dash_duo.wait_for_contains_text("#image-info", "colour.png", timeout=60)
    until(lambda: _displayed(dash_duo, "#channel-controls"), 60, "the Channel menu")
    until(lambda: (_regions(dash_duo) or 0) > 3, 120, "the luminance segmented")
    luminance = _regions(dash_duo)

    # The red channel: the image info says so, and the three disks are found.
    dash_duo.select_dcc_dropdown("#channel-dropdown", value="red")
    dash_duo.wait_for_contains_text("#image-info", "red channel", timeout=60)
    assert "uint8" in dash_duo.find_element("#image-info").text
    until(lambda: _regions(dash_duo) == 3, 120, "3 regions on the red channel")
    assert luminance != 3
    if os.environ.get("PIPEX_TOOLS_SCREENSHOT"):
        dash_duo.driver.execute_script("window.scrollTo(0, 0);")
        dash_duo.driver.save_screenshot(os.environ["PIPEX_TOOLS_SCREENSHOT"])

    # Back to the luminance: the loaded image again, with its own result.
    dash_duo.select_dcc_dropdown("#channel-dropdown", value="luminance (rgb2gray)")
    until(lambda: "red channel" not in dash_duo.find_element("#image-info").text, 60,
          "the luminance again")
    until(lambda: _regions(dash_duo) == luminance, 120, "the luminance's regions")
    severe = [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]
    assert not severe, "\n".join(e["message"] for e in severe)
