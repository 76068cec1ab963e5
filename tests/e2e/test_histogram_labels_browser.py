"""Issue 10 item 6 on the page, in headless Chromium: on skimage's retina and hubble images
(the histograms a person distrusted: a spike, threshold names piled up, "triangle" clipped
to "ngle") the seven automatic thresholds' names are all drawn, none overlaps another, each
lies inside the plot area, and none is hidden by the vmin / vmax lines or the notes on the
counts (a clipped bin's count), wherever the lines are moved: they end below the names;
and the count axis is chosen for the image's informative part (retina's surround clipped)."""

from __future__ import annotations

import pytest
from PIL import Image
from skimage import data

from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import until
from tests.e2e.test_issue10_browser import _start

pytestmark = pytest.mark.browser

# Every threshold name drawn on the histogram: its text and box, and the plot area's box.
LABELS_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
if (!gd) { return null; }
const area = gd.querySelector('.nsewdrag').getBoundingClientRect();
const labels = Array.from(gd.querySelectorAll('.scatterlayer .textpoint text'))
    .filter(function (t) { return t.textContent; })
    .map(function (t) {
        const b = t.getBoundingClientRect();
        return {name: t.textContent, left: b.left, right: b.right, top: b.top,
                bottom: b.bottom};
    });
return {labels: labels, top: gd.layout.xaxis.range[1], area: {left: area.left, right: area.right, top: area.top,
                               bottom: area.bottom}};
"""

# The boxes of what is drawn over the counts: the vmin / vmax lines (the shapes above the
# traces), the notes (annotations), and the x of each threshold's dotted line and of the
# vmax line in data units.
OVER_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
const box = function (e) {
    const b = e.getBoundingClientRect();
    return {left: b.left, right: b.right, top: b.top, bottom: b.bottom};
};
return {lines: Array.from(gd.querySelectorAll('.layer-above .shapelayer path')).map(box),
        notes: Array.from(gd.querySelectorAll('.annotation')).map(box),
        x: Object.fromEntries(gd.data.filter(function (t) { return /lines/.test(t.mode || ''); })
                                     .map(function (t) { return [t.name, t.x[0]]; })),
        vmax: gd.layout.shapes[1].x0,
        counts: Array.from(gd.data[0].y), top: gd._fullLayout.yaxis.range[1],
        type: gd._fullLayout.yaxis.type};
"""

NAMES = {"isodata", "li", "mean", "minimum", "otsu", "triangle", "yen"}


def _drawn(dash_duo, name):
    if name not in dash_duo.find_element("#image-info").text:
        return None
    shown = dash_duo.driver.execute_script(LABELS_JS)
    if not shown or {lab["name"] for lab in shown["labels"]} != NAMES:
        return None
    if shown["top"] > 1.01:  # still coins' histogram (both samples are 0 … 1 float images)
        return None
    return shown


@pytest.mark.parametrize("sample", ["retina", "hubble_deep_field"])
def test_threshold_names_never_overlap_nor_leave_the_plot(dash_duo, app_factory, tmp_path,
                                                          sample):
    path = tmp_path / f"{sample}.png"
    Image.fromarray(getattr(data, sample)()).save(path)
    _start(dash_duo, app_factory)
    dash_duo.find_element("#upload input[type=file]").send_keys(str(path))
    shown = until(lambda: _drawn(dash_duo, path.name), 120, f"the seven names on {sample}")
    area, labels = shown["area"], shown["labels"]
    for lab in labels:  # inside the plot area (1 px of anti-aliasing)
        assert lab["left"] >= area["left"] - 1 and lab["right"] <= area["right"] + 1, (lab, area)
        assert lab["top"] >= area["top"] - 1 and lab["bottom"] <= area["bottom"] + 1, (lab, area)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            apart = (a["right"] <= b["left"] or b["right"] <= a["left"] or
                     a["bottom"] <= b["top"] or b["bottom"] <= a["top"])
            assert apart, (a, b)
    # vmax typed onto otsu's threshold: the vmax line runs along otsu's dotted line (the
    # gate redraws the lines in the browser, Plotly.relayout), and still ends below every
    # name, as the vmin line does; no note of the counts covers a name
    otsu = dash_duo.driver.execute_script(OVER_JS)["x"]["otsu"]
    box = dash_duo.find_element("#thresholds-slider input.dash-range-slider-max-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(repr(otsu), Keys.ENTER)
    over = until(lambda: (lambda o: o if abs(o["vmax"] - otsu) < 1e-9 else None)(
        dash_duo.driver.execute_script(OVER_JS)), 30, "the vmax line on otsu's")
    shown = _drawn(dash_duo, path.name)
    assert len(over["lines"]) >= 2, over
    # the count axis shows the image, not its dark surround: the bins past the two darkest
    # (retina's black surround dwarfs the rest) reach most of the plot's height
    assert over["type"] == "linear"
    assert max(over["counts"][2:]) >= 0.6 * over["top"], (max(over["counts"]), over["top"])
    for lab in shown["labels"]:
        for line in over["lines"]:
            assert lab["bottom"] <= line["top"] + 1, (lab, line)
        for note in over["notes"]:
            apart = (lab["right"] <= note["left"] or note["right"] <= lab["left"] or
                     lab["bottom"] <= note["top"] or note["bottom"] <= lab["top"])
            assert apart, (lab, note)
