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
from tests.support.images import sixteen_bit_cells

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


# Every drawn bar's box (bars of no height left out), the notes' boxes, the names' boxes,
# the count axis's type, and whether the bars drawn are those of that type (the log switch
# swaps the dominant bins' heights, callbacks.thresholds.LOG_JS).
BARS_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
if (!gd || !gd.data || !gd._fullLayout || !gd.layout.meta) { return null; }
const box = function (e) {
    const b = e.getBoundingClientRect();
    return {left: b.left, right: b.right, top: b.top, bottom: b.bottom};
};
const type = gd._fullLayout.yaxis.type;
const meta = gd.layout.meta;
const want = meta.y ? meta.y[type === 'log' ? 'log' : 'linear'] : null;
return {
    type: type, xtop: gd._fullLayout.xaxis.range[1],
    swapped: !want || JSON.stringify(Array.from(gd.data[0].y)) === JSON.stringify(want),
    clipped: meta.y ? meta.y.linear.filter(function (y, i) {
        return y !== meta.y.log[i]; }).length : 0,
    bars: Array.from(gd.querySelectorAll('.bars path')).map(box)
        .filter(function (b) { return b.bottom - b.top > 0.5 && b.right > b.left; }),
    notes: Array.from(gd.querySelectorAll('.annotation')).map(box),
    names: Array.from(gd.querySelectorAll('.scatterlayer .textpoint text'))
        .filter(function (t) { return t.textContent; })
        .map(function (t) { return Object.assign(box(t), {name: t.textContent}); }),
};
"""

# The hover label over the first bin (plotly's own hover, at that bin's x), and its true
# count.
HOVER_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
Plotly.Fx.hover(gd, {xval: gd.data[0].x[0]}, 'xy');
const text = gd.querySelector('.hoverlayer').textContent;
Plotly.Fx.unhover(gd);  // not over the next screenshot's names
return text ? {text: text, count: gd.layout.meta.y.log[0]} : null;
"""


@pytest.mark.parametrize("sample", ["cells16", "retina"])
def test_no_bar_nor_note_reaches_the_names_in_linear_or_log_counts(dash_duo, app_factory,
                                                                  tmp_path, sample):
    """Issue 10 item 6: on a 16-bit image whose three darkest bins dominate, the clipped
    bars were drawn up to the top of the plot, across "mean" and "yen" in the names' band;
    with log counts (autoranged) the tallest bars reached the band too. On that image and on
    retina (its black surround), every bar ends below the lowest name, in linear counts, in
    log counts and back, and each clipped bin's note lies below the names, overlapping
    none."""
    import tifffile

    if sample == "cells16":
        path = tmp_path / "cells16.tif"
        tifffile.imwrite(path, sixteen_bit_cells())
        clipped, mine = 3, (lambda xtop: xtop > 1000)
    else:
        path = tmp_path / "retina.png"
        Image.fromarray(data.retina()).save(path)
        clipped, mine = 1, (lambda xtop: xtop <= 1.01)
    _start(dash_duo, app_factory)
    dash_duo.find_element("#upload input[type=file]").send_keys(str(path))

    def drawn(kind):
        if path.name not in dash_duo.find_element("#image-info").text:
            return None
        shown = dash_duo.driver.execute_script(BARS_JS)
        if (not shown or shown["type"] != kind or not shown["swapped"]
                or not mine(shown["xtop"]) or {n["name"] for n in shown["names"]} != NAMES):
            return None
        return shown

    for step, kind in enumerate(("linear", "log", "linear")):
        if step:
            dash_duo.find_element("#histogram-log input").click()
        shown = until(lambda: drawn(kind), 120, f"{sample}'s histogram, {kind} counts")
        dash_duo.find_element("#histogram-graph").screenshot(
            str(tmp_path / f"{sample}-{step}-{kind}.png"))  # to look at, on a failure
        band = max(n["bottom"] for n in shown["names"])  # the lowest name's bottom
        assert shown["bars"]
        tallest = min(shown["bars"], key=lambda b: b["top"])
        assert tallest["top"] >= band - 1, (kind, tallest, band)
        assert len(shown["notes"]) == clipped, shown["notes"]
        for note in shown["notes"]:
            assert note["top"] >= band - 1, (kind, note, band)
            for lab in shown["names"]:
                apart = (lab["right"] <= note["left"] or note["right"] <= lab["left"] or
                         lab["bottom"] <= note["top"] or note["bottom"] <= lab["top"])
                assert apart, (kind, lab, note)
        if kind == "log":  # the largest count (a dominant bin) drawn up to the band
            assert tallest["top"] <= band + 6, (tallest, band)
        # the dominant bins' bars drawn at their clip level or whole, per type
        assert shown["clipped"] == clipped, shown["clipped"]
        # the hover over the darkest bin says its true count, however high its bar is drawn
        hover = until(lambda: dash_duo.driver.execute_script(HOVER_JS), 10, "the hover")
        assert f"{hover['count']:,} pixels" in hover["text"], hover
