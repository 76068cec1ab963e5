"""A person uses the app in headless Chromium: segment coins, move the thresholds on the
histogram, undo and redo (buttons and keyboard), zoom in sync, upload a 3D TIFF, download the
labels, and get a clear message for a broken file."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import OVERLAY_JS, until

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

RANGES_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
return [gd._fullLayout.xaxis.range.slice(), gd._fullLayout.yaxis.range.slice()];
"""
HIST_PIXEL_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
return [xa.l2p(arguments[0]), ya._length / 2];
"""



def _until(predicate, timeout=60, what="condition"):
    return until(predicate, timeout=timeout, what=what)


def _overlay(dash_duo):
    return dash_duo.driver.execute_script(OVERLAY_JS)


def _exact_shown(dash_duo):
    text = dash_duo.find_element("#segmentation-summary").text
    return "labelled regions" in text and "live preview" not in text


def _click_histogram_at(dash_duo, intensity):
    x, y = dash_duo.driver.execute_script(HIST_PIXEL_JS, intensity)
    drag = dash_duo.find_element("#histogram-graph .nsewdrag")
    # selenium 4.2 offsets are from the element's top-left corner
    ActionChains(dash_duo.driver).move_to_element_with_offset(drag, int(x), int(y)).click().perform()


def _history_text(dash_duo):
    return dash_duo.find_element("#history-text").text


def test_segment_undo_zoom_upload_download(dash_duo, app_factory, tmp_path):
    dash_duo.start_server(app_factory())

    # The coins sample is loaded and segmented.
    dash_duo.wait_for_contains_text("#image-info", "coins", timeout=60)
    dash_duo.wait_for_contains_text("#segmentation-summary", "object:", timeout=120)
    first = _until(lambda: _overlay(dash_duo), what="segmentation overlay")
    assert first.startswith("data:image/png;base64,")
    assert _history_text(dash_duo) == "step 1 of 1"
    # Every graph draws the latest figure: dcc.Graph's redraw queue is guarded against
    # plotly.js redraws that never settle (assets/graph_guard.js).
    assert dash_duo.driver.execute_script("return window.Plotly.__pipexGuarded === true")
    # Every panel names the scikit-image function it runs.
    links = [a.text for a in dash_duo.find_elements(".doc-link")]
    assert "skimage.segmentation.random_walker" in links

    # Screenshot for the README (the three panels with coins).
    shot = tmp_path / "screenshot.png"
    dash_duo.driver.save_screenshot(str(shot))
    if os.environ.get("PIPEX_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "screenshot.png")

    # Zoom in the Image panel; the Binarization panel follows.
    dash_duo.driver.execute_script(
        "Plotly.relayout(document.querySelector('#image-graph .js-plotly-plot'),"
        " {'xaxis.range': [100, 200], 'yaxis.range': [180, 80]});")
    for graph in ("#segmentation-graph", "#filtered-graph", "#compare-graph"):
        _until(lambda: dash_duo.driver.execute_script(RANGES_JS, graph)[0] == [100, 200],
               what=f"synchronised zoom of {graph}")

    # Click the histogram near the top of the range: vmax moves there, the overlay changes.
    _click_histogram_at(dash_duo, 120)
    _until(lambda: _history_text(dash_duo) == "step 2 of 2", what="history step 2")
    # A live preview may show first; the exact result (its summary counts the labelled
    # regions) then replaces it.
    second = _until(lambda: _exact_shown(dash_duo) and (_overlay(dash_duo) != first)
                    and _overlay(dash_duo), what="overlay to change")
    assert second != first
    slider_text = dash_duo.find_element("#thresholds-text").text
    vmax = float(re.search(r"pixels > ([0-9.]+)", slider_text).group(1))
    assert 115 <= vmax <= 125, slider_text  # the bar under the click (bars are 1 wide)
    # Zoom survived the update.
    assert dash_duo.driver.execute_script(RANGES_JS, "#segmentation-graph")[0] == [100, 200]

    # Undo with the button: back to the first state and the very same overlay.
    dash_duo.find_element("#undo-button").click()
    _until(lambda: _history_text(dash_duo) == "step 1 of 2", what="undo")
    _until(lambda: _overlay(dash_duo) == first, what="overlay of the first state")
    # Redo from the keyboard (Ctrl+Shift+Z), undo again with Ctrl+Z.
    ActionChains(dash_duo.driver).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys("z") \
        .key_up(Keys.SHIFT).key_up(Keys.CONTROL).perform()
    _until(lambda: _history_text(dash_duo) == "step 2 of 2", what="redo by keyboard")
    _until(lambda: _overlay(dash_duo) == second, what="overlay after redo")
    ActionChains(dash_duo.driver).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL) \
        .perform()
    _until(lambda: _history_text(dash_duo) == "step 1 of 2", what="undo by keyboard")

    # A broken file: a clear message, the coins stay.
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + os.urandom(300))
    dash_duo.find_element("#upload input[type=file]").send_keys(str(broken))
    dash_duo.wait_for_contains_text("#load-message", "Could not load broken.tif", timeout=60)
    assert "coins" in dash_duo.find_element("#image-info").text
    assert _overlay(dash_duo) == first

    # Upload a 3D TIFF stack: slice controls appear, it is segmented.
    rng = np.random.default_rng(0)
    vol = np.zeros((16, 48, 48), np.uint16)
    vol[4:12, 12:36, 12:36] = 3000
    vol = (vol + rng.normal(0, 300, vol.shape).clip(-900, 900) + 1000).astype(np.uint16)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, vol)
    dash_duo.find_element("#upload input[type=file]").send_keys(str(stack))
    dash_duo.wait_for_contains_text("#image-info", "stack.tif", timeout=60)
    dash_duo.wait_for_contains_text("#image-info", "16 × 48 × 48", timeout=10)
    _until(lambda: dash_duo.find_element("#slice-controls").is_displayed(), what="slice controls")
    dash_duo.wait_for_contains_text("#segmentation-summary", "voxels", timeout=120)
    assert _history_text(dash_duo) == "step 1 of 1"

    # Download the label image.
    dash_duo.find_element("#download-labels-button").click()
    target = Path(dash_duo.download_path) / "stack_labels.tif"
    _until(lambda: target.exists() and target.stat().st_size > 0, what="downloaded labels")
    time.sleep(0.5)
    labels = tifffile.imread(target)
    assert labels.shape == vol.shape
    # One object in the volume: a label image with the cube as label 1, background 0.
    assert (labels[6:10, 16:32, 16:32] > 0).mean() > 0.95
    assert (labels[:, :6, :6] == 0).mean() > 0.95


RACE_HOOK_JS = """
// The next redraw dcc.Graph asks of the segmentation graph is raced by a zoom while its
// PNG loads, as a resize or a user's zoom can do.
const guarded = Plotly.react;
Plotly.react = function (gd) {
    const result = guarded.apply(this, arguments);
    if (gd.closest && gd.closest('#segmentation-graph')) {
        Plotly.react = guarded;
        Plotly.relayout(gd, {'xaxis.range': [10, 300]});
    }
    return result;
};
"""


def test_the_graph_keeps_drawing_after_a_raced_redraw(dash_duo, app_factory):
    # plotly.js's image trace loses the promise of a redraw when another redraw of the same
    # trace starts while its PNG loads; dcc.Graph queues every later figure behind that
    # promise, so the overlays froze (seen under CPU load). assets/graph_guard.js settles it.
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    first = _until(lambda: _overlay(dash_duo), what="segmentation overlay")
    dash_duo.driver.execute_script(RACE_HOOK_JS)
    _click_histogram_at(dash_duo, 120)
    _until(lambda: _history_text(dash_duo) == "step 2 of 2", what="history step 2")
    _until(lambda: _exact_shown(dash_duo) and _overlay(dash_duo) != first, timeout=30,
           what="the new overlay drawn after the raced redraw")
    dash_duo.find_element("#undo-button").click()
    _until(lambda: _overlay(dash_duo) == first, timeout=30, what="the undone overlay drawn")
