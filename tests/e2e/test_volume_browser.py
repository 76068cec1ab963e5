"""A person opens a 3D stack of the data folder in headless Chromium and sees it in 3D: the
3D view tab shows three planes through the stack's centre, a click in the top (YX) plane
moves the two others to the clicked point, a voxel size typed and applied gives the planes
their aspect, and "Show surface" draws the regions as a Mesh3d."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from pipeline.io import blobs_3d
from tests.e2e.helpers import until

pytestmark = pytest.mark.browser

#: (layout.title.text, gd.data.length, trace types) of a graph.
GRAPH_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.layout || !gd.data) { return null; }
return [gd.layout.title ? gd.layout.title.text : '', gd.data.length,
        gd.data.map(function (t) { return t.type; })];
"""
#: Pixel position (from the drag layer's top left) of a data point of a plane graph.
DATA_TO_PIXEL_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
const fl = gd._fullLayout;
return [fl.xaxis.l2p(arguments[1]), fl.yaxis.l2p(arguments[2])];
"""


def _title(dash_duo, graph):
    found = dash_duo.driver.execute_script(GRAPH_JS, graph)
    return found[0] if found else ""


def test_orthogonal_views_follow_a_click_and_the_surface_renders(dash_duo, app_factory,
                                                                 tmp_path):
    volume = blobs_3d(48)[:24]
    volume = ((volume - volume.min()) / (volume.max() - volume.min()) * 255).astype(np.uint8)
    (tmp_path / "data").mkdir(exist_ok=True)
    tifffile.imwrite(tmp_path / "data" / "stack.tif", volume, imagej=True,
                     resolution=(2.0, 2.0), metadata={"spacing": 2.0, "unit": "um",
                                                      "axes": "ZYX"})
    dash_duo.driver.set_window_size(1600, 2600)
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)

    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="stack.tif")
    dash_duo.wait_for_contains_text("#image-info", "3D stack", timeout=60)
    until(lambda: "voxels" in dash_duo.find_element("#segmentation-summary").text, 120,
          "the stack segmented")

    # Open the 3D view tab: three planes through the centre (z 12, y 24, x 24).
    dash_duo.driver.find_element(By.XPATH, "//*[text()='3D view']").click()
    until(lambda: "at z = 12" in _title(dash_duo, "#volume-yx-graph"), 60, "the YX plane")
    assert "at x = 24" in _title(dash_duo, "#volume-zy-graph")
    assert "at y = 24" in _title(dash_duo, "#volume-zx-graph")
    assert dash_duo.driver.execute_script(GRAPH_JS, "#volume-yx-graph")[2] == ["image", "image"]
    sources = dash_duo.driver.execute_script(
        "return document.querySelector('#volume-yx-graph .js-plotly-plot').data"
        ".map(function (t) { return t.source.slice(0, 22); });")
    assert sources == ["data:image/png;base64,"] * 2

    # The file's voxel size (ImageJ: z 2 µm, resolution 2 px/µm) is used from the load: the
    # planes are drawn in µm (voxel x 8 is at 4 µm, y 30 at 15 µm).
    assert dash_duo.driver.execute_script(
        "const gd = document.querySelector('#volume-zx-graph .js-plotly-plot');"
        "return [gd.data[0].dx, gd.data[0].dy];") == [0.5, 2]
    # Click the YX plane at x = 8, y = 30: the ZY plane moves to x = 8, the ZX plane to y = 30.
    x, y = dash_duo.driver.execute_script(DATA_TO_PIXEL_JS, "#volume-yx-graph", 4.0, 15.0)
    drag = dash_duo.find_element("#volume-yx-graph .nsewdrag")
    # fully in view: the pointer's origin is the element's in-view centre
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", drag)
    ActionChains(dash_duo.driver).move_to_element_with_offset(drag, int(x), int(y)).click() \
        .perform()
    until(lambda: "at x = 8" in _title(dash_duo, "#volume-zy-graph"), 60, "the ZY plane moved")
    assert "at y = 30" in _title(dash_duo, "#volume-zx-graph")
    assert "at z = 12" in _title(dash_duo, "#volume-yx-graph")
    dash_duo.wait_for_contains_text("#volume-info", "cursor z 12, y 30, x 8")

    # Zoom the YX plane: the ZX plane (x shared) and the ZY plane (y shared) follow.
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#volume-yx-graph .js-plotly-plot');"
        "window.Plotly.relayout(gd, {'xaxis.range': [5, 10], 'yaxis.range': [20, 15]});")
    ranges = ("const g = function (id) { return document.querySelector(id + ' .js-plotly-plot')"
              "._fullLayout; };"
              "return [g('#volume-zx-graph').xaxis.range, g('#volume-zy-graph').xaxis.range];")
    zx_x, zy_x = until(lambda: (lambda r: r if r[0] == [5, 10] and r[1] == [15, 20] else None)(
        dash_duo.driver.execute_script(ranges)), 30, "the other planes zoomed")
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#volume-zx-graph .js-plotly-plot');"
        "window.Plotly.relayout(gd, {'xaxis.autorange': true, 'yaxis.autorange': 'reversed'});")
    until(lambda: dash_duo.driver.execute_script(ranges)[0] != [5, 10], 30, "zoom reset")

    # Type another voxel size (z 3, y / x 0.25) and apply it: the planes' aspect follows.
    dash_duo.wait_for_contains_text("#voxel-size-source", "Apply", timeout=30)
    for axis, value in (("z", "3"), ("y", "0.25"), ("x", "0.25")):
        box = dash_duo.find_element(f"#voxel-size-{axis}")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value)
    dash_duo.find_element("#voxel-size-apply").click()
    dash_duo.wait_for_contains_text("#volume-info", "3 × 0.25 × 0.25", timeout=60)
    assert "(the recipe's)" in dash_duo.find_element("#volume-info").text
    dx = dash_duo.driver.execute_script(
        "const gd = document.querySelector('#volume-zx-graph .js-plotly-plot');"
        "return [gd.data[0].dx, gd.data[0].dy];")
    assert dx == [0.25, 3]

    # Show surface: a Mesh3d per region, with its cost.
    dash_duo.find_element("#surface-button").click()
    dash_duo.wait_for_contains_text("#surface-cost", "triangles", timeout=90)
    found = until(lambda: dash_duo.driver.execute_script(GRAPH_JS, "#surface-graph"), 30,
                  "the surface figure")
    until(lambda: "mesh3d" in (dash_duo.driver.execute_script(GRAPH_JS, "#surface-graph")
                               or ["", 0, []])[2], 30, "mesh3d traces")
    found = dash_duo.driver.execute_script(GRAPH_JS, "#surface-graph")
    assert 1 <= found[1] <= 50 and set(found[2]) == {"mesh3d"}
    drawn = dash_duo.driver.execute_script(
        "const s = document.querySelector('#surface-graph .js-plotly-plot')._fullLayout.scene;"
        "return !!(s && s._scene && s._scene.glplot);")
    assert drawn  # plotly made its WebGL scene
    assert "regions" in dash_duo.find_element("#surface-cost").text

    # Select a row of the measurements table: its region stays opaque, the others fade.
    opacities = ("return document.querySelector('#surface-graph .js-plotly-plot').data"
                 ".map(function (t) { return [t.meta, t.opacity]; });")

    def select_first_row():
        box = dash_duo.find_element(
            "#measure-table .ag-row[row-index='0'] .ag-selection-checkbox input")
        if not box.is_selected():
            box.click()
        shown = dash_duo.driver.execute_script(opacities)
        return shown if any(o is not None and o < 1 for _, o in shown) else None

    shown = until(select_first_row, 60, "the other regions faded")
    label = int(dash_duo.find_element("#measure-table .ag-row[row-index='0']")
                .get_attribute("row-id"))
    assert {m for m, o in shown if o == 1} <= {label}

    # Undo the voxel size: the open tab redraws (the measure stage changed), back to the
    # file's, and says the surface shows labels of another voxel size.
    dash_duo.find_element("#undo-button").click()
    dash_duo.wait_for_contains_text("#volume-info", "2 × 0.5 × 0.5 µm (the file's metadata)",
                                    timeout=60)
    dash_duo.wait_for_contains_text("#surface-cost", "changed since this surface was drawn",
                                    timeout=30)
    assert dash_duo.find_element("#voxel-size-z").get_attribute("value") == "2"

    # A change of the segmentation while the tab is open (clear border) redraws the planes'
    # outlines once the exact segmentation is shown.
    overlay = ("return document.querySelector('#volume-yx-graph .js-plotly-plot')"
               ".data[1].source;")
    before = dash_duo.driver.execute_script(overlay)
    dash_duo.driver.find_element(
        By.XPATH, "//*[@id='postprocess-ops']//label[contains(., 'clear border')]//input").click()
    until(lambda: dash_duo.driver.execute_script(overlay) != before, 60,
          "the planes' outlines redrawn")
