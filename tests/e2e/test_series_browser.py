"""A person opens a TIFF of two image series from the data folder in headless Chromium: the
Series menu appears next to the data-file menu, lists both series, and choosing the second
loads it (its shape in the image info); a sample hides the menu again (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from tests.e2e.helpers import until

pytestmark = pytest.mark.browser


def _ramp(shape):
    return (np.indices(shape).sum(axis=0) * 7 % 251).astype(np.uint16)


def _displayed(dash_duo, selector):
    return dash_duo.find_element(selector).is_displayed()


def test_choose_the_second_series_of_a_tiff(dash_duo, app_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    with tifffile.TiffWriter(data / "two.ome.tif", ome=True) as tif:
        tif.write(_ramp((4, 40, 48)), photometric="minisblack",
                  metadata={"axes": "ZYX", "Name": "stack"})
        tif.write(_ramp((60, 70)), photometric="minisblack",
                  metadata={"axes": "YX", "Name": "plane"})
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    assert not _displayed(dash_duo, "#data-series-item")  # coins: no series to choose

    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="two.ome.tif")
    dash_duo.wait_for_contains_text("#image-info", "4 × 40 × 48", timeout=60)
    until(lambda: _displayed(dash_duo, "#data-series-item"), 30, "the Series menu")
    assert "0: “stack” — 4 × 40 × 48 uint16" in dash_duo.find_element(
        "#data-series-dropdown").text

    dash_duo.select_dcc_dropdown("#data-series-dropdown",
                                 value="1: “plane” — 60 × 70 uint16")
    dash_duo.wait_for_contains_text("#image-info", "2D image, 60 × 70, uint16", timeout=60)
    assert "two.ome.tif" in dash_duo.find_element("#image-info").text
    assert "series 1 (“plane”, 60 × 70, uint16) is shown" in dash_duo.find_element(
        "#image-info").text
    assert dash_duo.find_element("#data-file-dropdown").text.startswith("two.ome.tif")
    until(lambda: "labelled regions" in dash_duo.find_element("#segmentation-summary").text,
          120, "the second series segmented")

    dash_duo.select_dcc_dropdown("#sample-dropdown", value="camera")
    dash_duo.wait_for_contains_text("#image-info", "camera", timeout=60)
    until(lambda: not _displayed(dash_duo, "#data-series-item"), 30, "the Series menu hidden")
    severe = [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]
    assert severe == [], severe
