"""Panels out of view catch up when a person looks at them (callbacks/visibility.py).

A key press on a threshold handle redraws what is in view (the first row: filtering,
markers, segmentation); the comparison and the measurements below it are not recomputed
until they scroll into view, and say "updating…" meanwhile.
"""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import (BUSY_JS, FETCH_HOOK_JS, POSTS_JS, STALE_JS, exact_shown, show,
                               until)

pytestmark = pytest.mark.browser



def _js(dash_duo, script, *args):
    return dash_duo.driver.execute_script(script, *args)



def _quiet(dash_duo, seconds=1.0, timeout=60):
    end = time.time() + timeout
    last, since = None, time.time()
    while time.time() < end:
        n = len(_js(dash_duo, POSTS_JS))
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= seconds and not _js(dash_duo, BUSY_JS):
            return
        time.sleep(0.05)
    raise AssertionError("the page did not settle")


def _row_count(dash_duo):
    return dash_duo.find_element("#measure-caption").text


def test_panels_out_of_view_wait_until_seen_then_catch_up(dash_duo, app_factory):
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    _js(dash_duo, FETCH_HOOK_JS)
    # On opening, the comparison and the measurements are below the first screen: they
    # wait, and say so.
    until(lambda: set(_js(dash_duo, STALE_JS)) == {"compare-panel", "measure-panel"},
          timeout=30, what="the panels below the first screen to wait")
    # Looking at them: they catch up (the first segmentation's comparison and rows).
    show(dash_duo.driver, "#compare-panel")
    dash_duo.wait_for_contains_text("#compare-text", "agree on", timeout=120)
    until(lambda: "regions" in _row_count(dash_duo), timeout=60, what="the table's rows")
    until(lambda: not _js(dash_duo, STALE_JS), timeout=30, what="no panel waiting")
    agreement = dash_duo.find_element("#compare-text").text

    # Back to the thresholds: a key press redraws the segmentation only.
    handle = dash_duo.find_elements("#thresholds-slider [role=slider]")[1]
    show(dash_duo.driver, "#thresholds-slider")
    _quiet(dash_duo)
    _js(dash_duo, FETCH_HOOK_JS)
    for _ in range(3):
        handle.send_keys(Keys.ARROW_RIGHT)
        until(lambda: exact_shown(dash_duo), timeout=60, what="the exact result of the move")
    _quiet(dash_duo)
    outputs = [p["output"] for p in _js(dash_duo, POSTS_JS)]
    assert outputs and all(o == "fast:move" or o.startswith("fast:") for o in outputs), outputs
    assert not any("compare-graph" in o or "measure-table" in o for o in outputs), outputs
    assert set(_js(dash_duo, STALE_JS)) == {"compare-panel", "measure-panel"}
    # the comparison still shows the state before the moves, marked as waiting
    assert dash_duo.find_element("#compare-text").text == agreement
    summary = dash_duo.find_element("#segmentation-summary").text

    # Scrolled into view: one update each, for the current state (not one per move).
    _js(dash_duo, FETCH_HOOK_JS)
    show(dash_duo.driver, "#measure-panel")
    until(lambda: not _js(dash_duo, STALE_JS), timeout=30, what="the panels to catch up")
    _quiet(dash_duo)
    outputs = [p["output"] for p in _js(dash_duo, POSTS_JS)]
    assert sum("compare-graph" in o for o in outputs) == 1, outputs
    assert sum("measure-table" in o for o in outputs) == 1, outputs
    regions = summary.split(" labelled region")[0].split("·")[-1].strip()
    until(lambda: _row_count(dash_duo).startswith(regions + " region"), timeout=30,
          what=f"the table to list the {regions} regions of the current segmentation")


def test_panels_in_view_follow_every_move(dash_duo, app_factory):
    dash_duo.driver.set_window_size(1600, 3200)  # every panel on the screen
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#compare-text", "agree on", timeout=120)
    until(lambda: not _js(dash_duo, STALE_JS), timeout=30, what="no panel waiting")
    _js(dash_duo, FETCH_HOOK_JS)
    _quiet(dash_duo)
    _js(dash_duo, FETCH_HOOK_JS)
    dash_duo.find_elements("#thresholds-slider [role=slider]")[1].send_keys(Keys.ARROW_RIGHT)
    until(lambda: exact_shown(dash_duo), timeout=60, what="the exact result of the move")
    _quiet(dash_duo)
    outputs = [p["output"] for p in _js(dash_duo, POSTS_JS)]
    assert sum("compare-graph" in o for o in outputs) == 1, outputs
    assert sum("measure-table" in o for o in outputs) == 1, outputs
    assert not _js(dash_duo, STALE_JS)
