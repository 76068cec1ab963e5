"""A person draws markers by hand on the Segmentation graph in headless Chromium: drawing on,
a stroke drawn with the mouse (CDP events), one history step, the markers overlay and the
segmentation change, the drawn shape leaves the graph; a threshold move keeps the stroke;
undo removes it (callbacks/scribbles.py)."""

from __future__ import annotations

import itertools
import time

import pytest
from selenium.webdriver.common.keys import Keys

from pipeline import render
from tests.e2e.helpers import MARKER_PIXELS_JS, OVERLAY_JS, exact_shown, until

pytestmark = pytest.mark.browser

# Screen position of image pixel (x, y) on the segmentation graph.
TO_SCREEN_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
gd.scrollIntoView({block: 'center'});
const r = gd.getBoundingClientRect(), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
return [r.left + xa._offset + xa.l2p(arguments[0]), r.top + ya._offset + ya.l2p(arguments[1])];
"""
LAYOUT_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd && gd._fullLayout ? {dragmode: gd._fullLayout.dragmode,
    shapes: (gd.layout.shapes || []).length,
    color: gd._fullLayout.newshape && gd._fullLayout.newshape.line.color} : null;
"""


def _bg(counts):
    """Background-marker pixels of an overlay's colour counts (the canvas rounds the
    colours of semi-transparent pixels: 0,113,177 for 0,114,178)."""
    r, g, b = render.MARKER_COLORS[1]
    return sum(n for key, n in counts.items()
               if max(abs(int(v) - c) for v, c in zip(key.split(","), (r, g, b))) <= 3)


def _js(dash_duo, script, *args):
    return dash_duo.driver.execute_script(script, *args)


def _markers(dash_duo):
    return dash_duo.driver.execute_async_script(MARKER_PIXELS_JS)


def _summary(dash_duo):
    return dash_duo.find_element("#segmentation-summary").text



def _step(dash_duo):
    return dash_duo.find_element("#history-text").text


def _draw(dash_duo, points):
    """Press, move through `points` (image pixels) and release, as a mouse would."""
    cdp = dash_duo.driver.execute_cdp_cmd
    screen = [_js(dash_duo, TO_SCREEN_JS, x, y) for x, y in points]
    x, y = screen[0]
    cdp("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
    cdp("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x, "y": y, "button": "left",
                                     "buttons": 1, "clickCount": 1})
    for (x0, y0), (x1, y1) in itertools.pairwise(screen):
        for t in (0.25, 0.5, 0.75, 1.0):
            cdp("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x0 + t * (x1 - x0),
                                             "y": y0 + t * (y1 - y0), "button": "left",
                                             "buttons": 1})
            time.sleep(0.02)
    x, y = screen[-1]
    cdp("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x, "y": y, "button": "left",
                                     "buttons": 0, "clickCount": 1})


def test_a_stroke_drawn_on_the_graph_becomes_background_markers_and_undo_removes_it(
        dash_duo, app_factory):
    dash_duo.start_server(app_factory())
    until(lambda: exact_shown(dash_duo), timeout=120, what="coins segmented")
    time.sleep(0.5)
    before_markers = _markers(dash_duo)
    before_overlay = _js(dash_duo, OVERLAY_JS)
    assert _step(dash_duo) == "step 1 of 1"
    assert _js(dash_duo, LAYOUT_JS)["dragmode"] == "pan"

    dash_duo.find_element("#draw-markers-mode input[value=background]").click()
    until(lambda: (_js(dash_duo, LAYOUT_JS) or {}).get("dragmode") == "drawopenpath",
          timeout=10, what="the graph to draw open paths")
    assert _js(dash_duo, LAYOUT_JS)["color"].lower() == render.MARKER_HEX[1].lower()

    # a background stroke down through the coins of the second column
    _draw(dash_duo, [(60, 20), (60, 65), (61, 110)])
    until(lambda: _step(dash_duo) == "step 2 of 2", timeout=30, what="one history step")
    until(lambda: dash_duo.find_element("#draw-markers-info").text == "1 stroke drawn",
          timeout=10, what="the stroke count")
    assert _js(dash_duo, LAYOUT_JS)["shapes"] == 0  # the drawn shape left the graph
    until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before_overlay,
          timeout=60, what="the segmentation with the stroke")
    # 90 x 5 pixels of the stroke, most of them object markers (coins) before
    until(lambda: _bg(_markers(dash_duo)) > _bg(before_markers) + 200, timeout=30,
          what="the stroke in the markers overlay")

    # a threshold move keeps the stroke (drawn by the server: the page cannot)
    until(lambda: _js(dash_duo, "return window.pipexFast.hasValues()"), timeout=30,
          what="the filtered values in the page (it could draw thresholds-only markers)")
    dash_duo.find_elements("#thresholds-slider [role=slider]")[1].send_keys(Keys.ARROW_RIGHT)
    until(lambda: _step(dash_duo) == "step 3 of 3", timeout=30, what="the move")
    until(lambda: exact_shown(dash_duo), timeout=60, what="the move's exact result")
    time.sleep(0.5)
    moved = _markers(dash_duo)
    # the page did not paint markers of its own over the graph (assets/fastmove.js)
    assert _js(dash_duo, "return document.getElementById('segmentation-graph')"
                         ".dataset.markers || null") is None
    assert _bg(moved) > _bg(before_markers) + 200, "the stroke was lost by a move"
    assert dash_duo.find_element("#draw-markers-info").text == "1 stroke drawn"

    # undo twice: the move, then the stroke
    dash_duo.find_element("#undo-button").click()
    until(lambda: _step(dash_duo) == "step 2 of 3", timeout=30, what="undo of the move")
    dash_duo.find_element("#undo-button").click()
    until(lambda: _step(dash_duo) == "step 1 of 3", timeout=30, what="undo of the stroke")
    until(lambda: dash_duo.find_element("#draw-markers-info").text == "", timeout=10,
          what="no stroke after undo")
    until(lambda: _markers(dash_duo) == before_markers, timeout=30,
          what="the markers of the first state again")
    until(lambda: _js(dash_duo, OVERLAY_JS) == before_overlay, timeout=30,
          what="the first segmentation again")

    # drawing off: the graph pans again
    dash_duo.find_element("#draw-markers-mode input[value=off]").click()
    until(lambda: _js(dash_duo, LAYOUT_JS)["dragmode"] == "pan", timeout=10, what="pan")
