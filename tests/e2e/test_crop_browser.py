"""Try on a crop first (issue 9), as a person does it: zoom the segmentation view to a
region, "Tune on this view", move a threshold on the crop, "Apply to the whole image"."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import exact_shown, until

pytestmark = pytest.mark.browser

SHAPE_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd && gd.layout && gd.layout.uirevision ? String(gd.layout.uirevision) : null;
"""


def _js(dash_duo, script, *args):
    return dash_duo.driver.execute_script(script, *args)



def _vmax(dash_duo):
    return float(dash_duo.find_elements("#thresholds-slider [role=slider]")[1]
                 .get_attribute("aria-valuenow"))


def test_tune_on_a_crop_then_apply_to_the_whole_image(dash_duo, app_factory):
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    until(lambda: exact_shown(dash_duo), 120, "coins segmented")
    assert not dash_duo.find_element("#apply-whole-button").is_displayed()
    whole = _js(dash_duo, SHAPE_JS)
    # zoom the segmentation view to a region (as a box drawn on it does)
    _js(dash_duo, "Plotly.relayout(document.querySelector('#segmentation-graph "
                  ".js-plotly-plot'), {'xaxis.range': [100, 250], 'yaxis.range': [200, 50]});")
    dash_duo.find_element("#crop-button").click()
    dash_duo.wait_for_contains_text("#image-info", "crop (rows 50–200, columns 100–250)",
                                    timeout=60)
    assert "151 × 151" in dash_duo.find_element("#image-info").text
    until(lambda: _js(dash_duo, SHAPE_JS) not in (None, whole) and exact_shown(dash_duo), 120,
          "the crop segmented")
    apply = dash_duo.find_element("#apply-whole-button")
    assert apply.is_displayed() and "coins" in apply.text
    # tune on the crop: vmax one step up
    vmax = _vmax(dash_duo)
    dash_duo.find_elements("#thresholds-slider [role=slider]")[1].send_keys(Keys.ARROW_RIGHT)
    until(lambda: dash_duo.find_element("#history-text").text == "step 2 of 2", 60,
          "the move on the crop")
    until(lambda: exact_shown(dash_duo), 120, "the crop's exact result")
    # apply it to the whole image: coins again, with the crop's thresholds
    apply.click()
    until(lambda: "crop" not in dash_duo.find_element("#image-info").text
          and "303 × 384" in dash_duo.find_element("#image-info").text, 60, "the whole image")
    until(lambda: _js(dash_duo, SHAPE_JS) == whole and exact_shown(dash_duo), 120,
          "the whole image segmented")
    assert _vmax(dash_duo) == vmax + 1
    assert not dash_duo.find_element("#apply-whole-button").is_displayed()
    assert "The recipe tuned on the crop" in dash_duo.find_element("#load-message").text
