"""Hovering the segmentation in headless Chromium (issue 10 item 9, and item 3's numbers):
the line under the graph names the pixel, its intensity as a person reads it (65,535-style
on a 16-bit image, at most 4 significant digits on a float image) and its region; the image's
range and the measurements (areas in the millions) are written for a person too."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import exact_shown, show, until
from tests.e2e.test_issue10_browser import _disks, _start, _upload

pytestmark = pytest.mark.browser

# Image pixel (x, y) of the segmentation graph in the window's coordinates.
DATA_TO_CLIENT_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
const fl = gd._fullLayout;
const area = gd.querySelector('.nsewdrag').getBoundingClientRect();
return [area.left + fl.xaxis.l2p(arguments[0]), area.top + fl.yaxis.l2p(arguments[1])];
"""


def _hover(dash_duo, x, y):
    """Move the pointer over image pixel (x, y) of the segmentation graph; the line under it."""
    show(dash_duo.driver, "#segmentation-graph")
    px, py = dash_duo.driver.execute_script(DATA_TO_CLIENT_JS, float(x), float(y))
    for dx in (1, 0):  # a move plotly sees as one, then onto the pixel
        dash_duo.driver.execute_cdp_cmd("Input.dispatchMouseEvent",
                                        {"type": "mouseMoved", "x": px + dx, "y": py})
    return dash_duo.find_element("#segmentation-hover").text


def _largest_area(dash_duo):
    """The largest area the table's rows in view write, once it is in the millions."""
    texts = [t for t in dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#measure-table "
        ".ag-center-cols-container .ag-cell[col-id=area]')).map(c => c.textContent);") if t]
    text = max(texts, key=lambda t: float(t.replace(",", "")), default="")
    return text if len(text.replace(",", "").split(".")[0]) >= 7 else None


def _line_for(dash_duo, x, y):
    pattern = re.compile(rf"^x {x}, y {y} · intensity (\S+) · (region \d+|background)$")
    found = until(lambda: pattern.match(_hover(dash_duo, x, y)), 30,
                  f"the line under the graph for ({x}, {y})")
    return found.group(1), found.group(2)


def test_hover_names_the_pixel_its_intensity_for_a_person_and_its_region(dash_duo,
                                                                        app_factory,
                                                                        tmp_path):
    _start(dash_duo, app_factory)
    image = _disks(np.uint16, 3000, 42000)
    tifffile.imwrite(tmp_path / "sixteen.tif", image)
    _upload(dash_duo, tmp_path / "sixteen.tif")
    until(lambda: exact_shown(dash_duo), 120, "segmented")
    # a disk's centre (an object) and a corner (background)
    value, region = _line_for(dash_duo, 45, 40)
    assert value == f"{int(image[40, 45]):,}" and "," in value, value
    assert region.startswith("region "), region
    value, region = _line_for(dash_duo, 5, 5)
    assert value == f"{int(image[5, 5]):,}" and region == "background", (value, region)
    # item 3 elsewhere on the page: the image's range (65,535, not 6.554e+04), and
    # measurements in the millions with separators, no exponent (not 1.01426e+6)
    info = dash_duo.find_element("#image-info").text
    assert f"values {image.min():,} … {image.max():,}" in info, info
    show(dash_duo.driver, "#measure-panel")
    size = dash_duo.find_element("#pixel-size")
    size.send_keys(Keys.CONTROL, "a")
    size.send_keys("100", Keys.ENTER)
    area = until(lambda: _largest_area(dash_duo), 60, "areas in the millions")
    assert re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", area), area

    image = _disks(np.float32, 0.1, 0.9, seed=3)
    tifffile.imwrite(tmp_path / "float.tif", image)
    _upload(dash_duo, tmp_path / "float.tif")
    until(lambda: exact_shown(dash_duo), 120, "segmented")
    value, region = _line_for(dash_duo, 130, 60)
    digits = re.sub(r"^0\.0*|[.,-]", "", value)
    assert len(digits) <= 4 and abs(float(value) - float(image[60, 130])) < 1e-3, value
    assert region.startswith("region "), region
