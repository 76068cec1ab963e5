"""A person moves the thresholds in headless Chromium: what a move costs the browser, a
drag of a handle, and loading images in a row while the first is still computing.

The choreography tested here is drawn in docs/architecture.md ("A move").
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import (BUSY_JS, BUSY_SELECTOR, FETCH_HOOK_JS, MARKER_PIXELS_JS,
                               OVERLAY_JS, POSTS_JS, STALE_JS, exact_shown, show, until)

pytestmark = pytest.mark.browser

SHAPES_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
return gd && gd.layout && gd.layout.shapes ? gd.layout.shapes.map(s => s.x0) : null;
"""
# The image each figure shows (its uirevision starts with the image id).
FIGURE_IMAGES_JS = """
const out = {};
for (const id of ['image-graph', 'filtered-graph', 'segmentation-graph', 'compare-graph']) {
    const gd = document.querySelector('#' + id + ' .js-plotly-plot');
    out[id] = gd && gd.layout && gd.layout.uirevision ?
        String(gd.layout.uirevision).split('-')[0] : null;
}
return out;
"""
THUMB_JS = """
arguments[0].scrollIntoView({block: 'center'});
const b = arguments[0].getBoundingClientRect();
return [b.x + b.width / 2, b.y + b.height / 2];
"""


def count_calls_js(method, graph, counter):
    """JS that counts (in ``window[counter]``, reset to 0) the calls of ``Plotly[method]`` on
    the plot of the graph `graph` (the wrapper installed once per page)."""
    return f"""
window.{counter} = 0;
if (!window.{counter}Wrapped) {{
    const original = window.Plotly.{method};
    window.Plotly.{method} = function (g) {{
        if (g === document.querySelector('#{graph} .js-plotly-plot')) {{
            window.{counter} += 1;
        }}
        return original.apply(this, arguments);
    }};
    window.{counter}Wrapped = true;
}}
"""


def _until(predicate, timeout=60, what="condition"):
    return until(predicate, timeout=timeout, what=what)


def _js(dash_duo, script, *args):
    return dash_duo.driver.execute_script(script, *args)


def _summary(dash_duo):
    return dash_duo.find_element("#segmentation-summary").text



def _idle(dash_duo, quiet=1.0, timeout=60):
    """Wait until no new request was made for `quiet` seconds and no panel is busy."""
    end = time.time() + timeout
    last, since = -1, time.time()
    while time.time() < end:
        n = len(_js(dash_duo, POSTS_JS))
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= quiet and not _js(dash_duo, BUSY_JS):
            return
        time.sleep(0.05)
    raise AssertionError("the page did not settle")


def _handles(dash_duo):
    return dash_duo.find_elements("#thresholds-slider [role=slider]")


def _start(dash_duo, app_factory):
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    _js(dash_duo, FETCH_HOOK_JS)
    _idle(dash_duo)
    _js(dash_duo, FETCH_HOOK_JS)


def test_a_key_press_costs_one_request_and_the_histogram_follows_in_the_browser(
        dash_duo, app_factory):
    _start(dash_duo, app_factory)
    before = _js(dash_duo, OVERLAY_JS)
    vmin, vmax = _js(dash_duo, SHAPES_JS)[:2]
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    # The vmax line and the text under the slider follow at once, from the browser.
    _until(lambda: (_js(dash_duo, SHAPES_JS) or [])[:2] == [vmin, vmax + 1], timeout=5,
           what="the vmax line to follow the slider")
    assert f"pixels > {vmax + 1:g}" in dash_duo.find_element("#thresholds-text").text
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of the new pair")
    _idle(dash_duo)
    posts = [p["output"] for p in _js(dash_duo, POSTS_JS)]
    # One request pushes the move and brings the overlay (the fast path, drawn without
    # dash-renderer); then the exact result (if a preview came first), the comparison and
    # the table. Nothing else.
    assert posts[0] == "fast:move", posts
    assert len(posts) <= 4, posts
    for untouched in ("histogram-graph", "filtered-graph", "threshold-gallery", "image-graph",
                      "sweep-param", "measure-plot", "selected-labels"):
        assert not any(untouched in p for p in posts), (untouched, posts)
    # The request of a move stays small (no undo history travels with it).
    assert max(p["bytes"] for p in _js(dash_duo, POSTS_JS)) < 8000
    assert dash_duo.find_element("#history-text").text == "step 2 of 2"

    # The log-counts switch is applied in the browser too.
    _js(dash_duo, FETCH_HOOK_JS)
    dash_duo.find_element("#histogram-log input").click()
    _until(lambda: _js(dash_duo, "return document.querySelector('#histogram-graph "
                                 ".js-plotly-plot').layout.yaxis.type") == "log",
           timeout=5, what="log axis")
    time.sleep(0.5)
    assert _js(dash_duo, POSTS_JS) == []
    # The lines drawn in the browser stay where the slider put them when the figure is
    # patched (the log switch) or zoomed: the graph never redraws an older figure's lines.
    assert _js(dash_duo, SHAPES_JS)[:2] == [vmin, vmax + 1]
    _js(dash_duo, "Plotly.relayout(document.querySelector('#histogram-graph .js-plotly-plot'),"
                  " {'xaxis.range': [10, 200]})")
    _until(lambda: _js(dash_duo, "return document.querySelector('#histogram-graph "
                                 ".js-plotly-plot').layout.xaxis.range[0]") == 10,
           timeout=5, what="the histogram zoomed")
    time.sleep(0.5)
    assert _js(dash_duo, SHAPES_JS)[:2] == [vmin, vmax + 1]
    # A histogram redraw that moves the lines costs no whole re-plot of the histogram by
    # dcc.Graph (its figure prop is not replaced on a key press).
    reacts = count_calls_js("react", "histogram-graph", "__histReacts")
    _js(dash_duo, reacts)
    # nor a second drawing of the segmentation graph once its overlays are drawn (dcc.Graph
    # re-reacting the figure Dash is handed: a plot that only confirms what is drawn)
    _js(dash_duo, """
window.__segPlots = 0;
document.querySelector('#segmentation-graph .js-plotly-plot')
    .on('plotly_afterplot', () => { window.__segPlots += 1; });""")
    before = _js(dash_duo, OVERLAY_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: (_js(dash_duo, SHAPES_JS) or [])[:2] == [vmin, vmax + 2], timeout=5,
           what="the vmax line to follow the second key press")
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of the second key press")
    _idle(dash_duo)
    assert _js(dash_duo, "return window.__histReacts") == 0
    assert _js(dash_duo, "return window.__segPlots") == 1



def test_the_next_step_is_prepared_while_the_person_looks(dash_duo, app_factory):
    """A key press on a handle is followed by the preparation of the next step in the same
    direction (POST /_pipex/prefetch, answered with nothing); the next key press is then
    answered from the cache. A turn (the other handle) is solved as before."""
    _start(dash_duo, app_factory)
    # the preparation's answer (nothing) arrives once the server has solved the next step:
    # the next key press waits for it here (a person is slower than coins' solve)
    _js(dash_duo, """
window.__prepared = 0;
const fetched = window.fetch;
window.fetch = function (url) {
    const answer = fetched.apply(this, arguments);
    if (String(url).indexOf('/_pipex/prefetch') >= 0) {
        answer.then(function () { window.__prepared += 1; });
        // what Dash holds when it is asked: the answer of the key press handed over already
        const s = window.dash_stores[0].getState();
        let node = s.layout;
        for (const k of s.paths.strs['history-store']) { node = node[k]; }
        window.__handedVmax = node.props.data.recipe.markers.vmax;
    }
    return answer;
};""")
    vmin, vmax = _js(dash_duo, SHAPES_JS)[:2]
    before = _js(dash_duo, OVERLAY_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of the first key press")
    assert "computed in" in _summary(dash_duo)
    _until(lambda: _js(dash_duo, "return window.__prepared") == 1, what="the next step prepared")
    # asked for once the answer is handed to Dash (and painted): the server's solve does not
    # share the CPU with the page drawing the answer
    assert _js(dash_duo, "return window.__handedVmax") == vmax + 1
    _idle(dash_duo)
    posts = [p["output"] for p in _js(dash_duo, POSTS_JS)]
    assert posts.count("fast:prefetch") == 1 and posts.index("fast:prefetch") > 0, posts
    for pair, handle, key, how in (((vmin, vmax + 2), 1, Keys.ARROW_RIGHT, "from cache"),
                                   ((vmin - 1, vmax + 2), 0, Keys.ARROW_LEFT, "computed in")):
        _js(dash_duo, "window.__posts.length = 0")
        before = _js(dash_duo, OVERLAY_JS)
        _handles(dash_duo)[handle].send_keys(key)
        _until(lambda: (_js(dash_duo, SHAPES_JS) or [])[:2] == list(pair), timeout=5,
               what=f"the lines at {pair}")
        _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
               what=f"the exact overlay of {pair}")
        assert how in _summary(dash_duo), (pair, _summary(dash_duo))
        _idle(dash_duo)
        posts = [p["output"] for p in _js(dash_duo, POSTS_JS)]
        assert posts[0] == "fast:move", posts
        if how == "from cache":  # drawn at once: no live preview to settle
            assert "fast:settle" not in posts, posts
    assert dash_duo.find_element("#history-text").text == "step 4 of 4"  # nothing pushed


# Hold the server's answers to moves: only what the page draws itself changes.
HOLD_MOVES_JS = """
const original = window.__unheld = window.fetch;
window.fetch = function (url, options) {
    if (String(url).indexOf('/_pipex/move') >= 0) { return new Promise(function () {}); }
    return original.apply(this, arguments);
};
"""


def test_the_markers_follow_a_key_press_before_the_server_answers(dash_duo, app_factory,
                                                                  tmp_path):
    """On an image whose answer takes a while (above 262,144 pixels) the page draws the
    markers of a key press itself, before the server's answer."""
    from pipeline import render
    from pipeline.segment import make_markers

    _start(dash_duo, app_factory)
    rng = np.random.default_rng(3)
    image = rng.normal(100, 20, (600, 560)).clip(0, 255).astype(np.uint8)
    image[150:450, 120:400] += 80
    tifffile.imwrite(tmp_path / "large.tif", image)
    dash_duo.find_element("#upload input[type=file]").send_keys(str(tmp_path / "large.tif"))
    dash_duo.wait_for_contains_text("#image-info", "large.tif", timeout=60)
    _until(lambda: exact_shown(dash_duo), timeout=120, what="the image segmented")
    _idle(dash_duo, quiet=1.0, timeout=120)
    _until(lambda: _js(dash_duo, "return window.pipexFast.hasValues()"), timeout=30,
           what="the filtered values in the page")
    vmin, vmax = _js(dash_duo, SHAPES_JS)[:2]
    _js(dash_duo, HOLD_MOVES_JS)
    seg_before = _js(dash_duo, OVERLAY_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: _js(dash_duo, "return document.getElementById('segmentation-graph')"
                                 ".dataset.markers") == f"{vmin:g},{vmax + 1:g}",
           timeout=5, what="the page to draw the markers of the new pair")
    # drawn on the page's canvas over the plot, the graph's own markers image hidden
    assert _js(dash_duo, "const c = document.querySelector('#segmentation-graph "
                         "canvas.pipex-markers'); return c && c.style.display") == "block"
    assert _js(dash_duo, "return document.querySelectorAll('#segmentation-graph "
                         "image[data-pipex-hidden]').length") == 1
    # laid exactly over the plot area (plotly's drag layer covers it)
    canvas, area = _js(dash_duo, """
        const r = function (el) { const b = el.getBoundingClientRect();
                                  return [b.left, b.top, b.width, b.height]; };
        const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
        return [r(gd.querySelector('canvas.pipex-markers')), r(gd.querySelector('.nsewdrag'))];""")
    assert np.allclose(canvas, area, atol=1.5), (canvas, area)
    # and the markers drawn where the graph draws its own markers image (hidden meanwhile)
    drawn, own = _js(dash_duo, """
        const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const area = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const im = gd.querySelector('image[data-pipex-hidden]').getBoundingClientRect();
        const w = arguments[0], h = arguments[1];
        return [[area.left + xa.l2p(-0.5), area.top + Math.min(ya.l2p(-0.5), ya.l2p(h - 0.5)),
                 Math.abs(xa.l2p(w - 0.5) - xa.l2p(-0.5)),
                 Math.abs(ya.l2p(h - 0.5) - ya.l2p(-0.5))],
                [im.left, im.top, im.width, im.height]];""", image.shape[1], image.shape[0])
    assert np.allclose(drawn, own, atol=1.5), (drawn, own)
    counts = dash_duo.driver.execute_async_script(
        MARKER_PIXELS_JS, _js(dash_duo, "return window.pipexFast.markersImage()"))
    # exactly the server's markers for that pair (no filter: integer values)
    expected = make_markers(image.astype(float), vmin, vmax + 1, check=False)
    shown = {}
    for key, n in counts.items():  # colours within the canvas's alpha rounding
        rgb = np.array([int(v) for v in key.split(",")])
        label = next(lab for lab, ref in render.MARKER_COLORS.items()
                     if np.abs(rgb - ref).max() <= 3)
        shown[label] = shown.get(label, 0) + n
    assert shown == {1: int((expected == 1).sum()), 2: int((expected == 2).sum())}
    # the segmentation waits for the server (held here): unchanged
    assert _js(dash_duo, OVERLAY_JS) == seg_before
    # answered, the graph's own overlays are drawn and the page's canvas goes away
    _js(dash_duo, "window.fetch = window.__unheld;")
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != seg_before,
           timeout=60, what="the server's answer")
    _until(lambda: _js(dash_duo, "return document.querySelector('#segmentation-graph "
                                 "canvas.pipex-markers').style.display") == "none",
           timeout=10, what="the page's markers to give way to the graph's")
    assert _js(dash_duo, "return document.querySelectorAll('#segmentation-graph "
                         "image[data-pipex-hidden]').length") == 0


def test_dragging_a_handle_previews_and_the_release_shows_the_exact_result(
        dash_duo, app_factory):
    _start(dash_duo, app_factory)
    first = _js(dash_duo, OVERLAY_JS)
    _js(dash_duo, """
        window.__overlays = [];
        const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
        gd.on('plotly_afterplot', function () {
            const s = gd.data[2].source;
            if (window.__overlays[window.__overlays.length - 1] !== s) { window.__overlays.push(s); }
        });""")
    x, y = _js(dash_duo, THUMB_JS, _handles(dash_duo)[1])
    cdp = dash_duo.driver.execute_cdp_cmd
    cdp("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x, "y": y, "button": "left",
                                     "clickCount": 1})
    for i in range(1, 41):  # many positions in a row, about 2 s
        cdp("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x + 2 * i, "y": y,
                                         "button": "left", "buttons": 1})
        time.sleep(0.03)
    during = list(_js(dash_duo, "return window.__overlays"))
    drag_summary = _summary(dash_duo)
    cdp("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x + 80, "y": y,
                                     "button": "left", "clickCount": 1})
    assert len(during) >= 2, ("the overlay did not follow the handle while dragging",
                              [p["output"][:40] for p in _js(dash_duo, POSTS_JS)],
                              drag_summary, _js(dash_duo, "return window.pipexMove"))
    assert "preview" in drag_summary or "labelled regions" in drag_summary
    _until(lambda: dash_duo.find_element("#history-text").text == "step 2 of 2",
           what="one history step for the whole drag")
    _until(lambda: exact_shown(dash_duo), what="the exact result after the release")
    _idle(dash_duo)
    posts = [p["output"] for p in _js(dash_duo, POSTS_JS)]
    drags = [p for p in posts if p == "fast:drag"]
    assert drags, posts
    released = _js(dash_duo, OVERLAY_JS)
    assert released != first
    slider = [float(h.get_attribute("aria-valuenow")) for h in _handles(dash_duo)]
    dash_duo.driver.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Recipe']").click()
    recipe = _until(lambda: dash_duo.find_element("#recipe-view").get_attribute("textContent"),
                    what="the recipe view")
    assert f'"vmax": {slider[1]}' in recipe, (slider, recipe)
    # The shown result is the exact one for the final pair: leave it and come back (a cache
    # hit for that pair, computed the canonical way) and the very same overlay is drawn.
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: _js(dash_duo, OVERLAY_JS) != released and exact_shown(dash_duo),
           what="the next pair")
    _handles(dash_duo)[1].send_keys(Keys.ARROW_LEFT)
    _until(lambda: exact_shown(dash_duo) and "from cache" in _summary(dash_duo), what="back")
    _until(lambda: _js(dash_duo, OVERLAY_JS) == released, what="the same exact overlay")


def test_loading_images_in_a_row_never_leaves_a_stale_panel(dash_duo, app_factory, tmp_path):
    _start(dash_duo, app_factory)
    rng = np.random.default_rng(1)
    big = (rng.normal(100, 20, (768, 768)).clip(0, 255)).astype(np.uint8)
    big[200:500, 200:500] += 80
    vol = (rng.normal(1000, 200, (24, 64, 64)).clip(0, 4000)).astype(np.uint16)
    vol[8:16, 16:48, 16:48] += 1500
    small = np.zeros((60, 80), np.uint8)
    small[20:40, 20:60] = 200
    small += rng.integers(0, 30, small.shape, dtype=np.uint8)
    paths = []
    for name, array in (("big.tif", big), ("stack.tif", vol), ("third.tif", small)):
        tifffile.imwrite(tmp_path / name, array)
        paths.append(str(tmp_path / name))
    # every panel that says it is updating, from now on (a quick machine may finish the
    # first image's work before a single look at the page would see it)
    _js(dash_duo, """
window.__busySeen = [];
const selector = arguments[0];
const note = () => document.querySelectorAll(selector)
    .forEach(p => { if (!window.__busySeen.includes(p.id)) { window.__busySeen.push(p.id); } });
new MutationObserver(note).observe(document.body, {subtree: true, attributes: true,
                                                   attributeFilter: ['class']});""",
        BUSY_SELECTOR)
    upload = dash_duo.find_element("#upload input[type=file]")
    upload.send_keys(paths[0])
    dash_duo.wait_for_contains_text("#image-info", "big.tif", timeout=60)
    assert _js(dash_duo, "return window.__busySeen;"), \
        "the panels did not say they were updating"
    upload.send_keys(paths[1])  # while the first is still computing
    upload.send_keys(paths[2])
    dash_duo.wait_for_contains_text("#image-info", "third.tif", timeout=60)
    _until(lambda: exact_shown(dash_duo), timeout=120, what="the third image segmented")
    _idle(dash_duo, quiet=1.5, timeout=120)
    # the panels below the first screen say they wait to be seen (assets/visible.js) ...
    waiting = set(_js(dash_duo, STALE_JS))
    assert waiting <= {"compare-panel", "measure-panel"}, waiting
    for panel in waiting:
        label = _js(dash_duo, "return getComputedStyle(document.getElementById(arguments[0]), "
                              "'::after').content;", panel)
        assert "updating" in label, (panel, label)
    # ... and show the current image once looked at
    show(dash_duo.driver, "#measure-panel")
    dash_duo.wait_for_contains_text("#measure-caption", "third.tif", timeout=120)
    _until(lambda: not _js(dash_duo, STALE_JS), timeout=60, what="the panels to catch up")
    _idle(dash_duo, quiet=1.5, timeout=120)
    images = _js(dash_duo, FIGURE_IMAGES_JS)
    shown = images["image-graph"]
    assert shown and set(images.values()) == {shown}, images
    assert dash_duo.find_element("#measure-caption").get_attribute("title") == shown
    assert "60 × 80" in dash_duo.find_element("#image-info").text
    assert not _js(dash_duo, BUSY_JS)
    assert "Random walker" in dash_duo.find_element("#compare-text").text


def test_enter_in_a_threshold_box_applies_the_value(dash_duo, app_factory):
    # dash's RangeSlider applies a typed value on blur only; Enter now applies it too
    _start(dash_duo, app_factory)
    before = _js(dash_duo, OVERLAY_JS)
    box = dash_duo.find_element("#thresholds-slider input.dash-range-slider-max-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("140", Keys.ENTER)
    _until(lambda: dash_duo.find_element("#history-text").text == "step 2 of 2",
           what="the typed value applied by Enter")
    assert "pixels > 140" in dash_duo.find_element("#thresholds-text").text
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the segmentation of the typed value")


def test_threshold_tooltips_read_as_numbers_on_a_float_image(dash_duo, app_factory, tmp_path):
    """Issue 10: the slider's tooltips show 4 significant digits (not a float's raw digits)."""
    _start(dash_duo, app_factory)
    rng = np.random.default_rng(4)
    image = rng.normal(0.3, 0.07, (120, 140)).astype(np.float32)
    image[30:90, 40:100] += 0.4
    tifffile.imwrite(tmp_path / "float.tif", image)
    dash_duo.find_element("#upload input[type=file]").send_keys(str(tmp_path / "float.tif"))
    dash_duo.wait_for_contains_text("#image-info", "float.tif", timeout=60)
    _until(lambda: exact_shown(dash_duo), timeout=120, what="the image segmented")
    tips = lambda: [t.text for t in dash_duo.find_elements(  # noqa: E731
        "#thresholds-slider [class*=tooltip]") if t.text.strip()]
    _until(lambda: len(tips()) == 2, timeout=10, what="two tooltips")
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)  # a step of range / 1000
    _until(lambda: exact_shown(dash_duo), timeout=60, what="the move")
    for text in tips():
        digits = text.replace("-", "").replace(".", "").lstrip("0")
        assert len(digits) <= 4, tips()
        float(text.replace(",", ""))
    # vmin's tooltip ends at its thumb and vmax's starts at its thumb: they never overlap,
    # however close the thumbs are
    boxes = _js(dash_duo, """
        const r = function (sel) {
            const b = document.querySelector('#thresholds-slider ' + sel).getBoundingClientRect();
            return [b.left, b.right, (b.left + b.right) / 2];
        };
        return [r('.dash-slider-thumb-1'), r('.dash-slider-thumb-1 .dash-slider-tooltip'),
                r('.dash-slider-thumb-2'), r('.dash-slider-thumb-2 .dash-slider-tooltip')];""")
    (_, _, c1), (_, right1, _), (_, _, c2), (left2, _, _) = boxes
    assert right1 <= c1 + 1 and left2 >= c2 - 1, boxes


def test_a_bad_recipe_is_reported_in_the_recipe_tab(dash_duo, app_factory, tmp_path):
    """Issue 10 item 7: the message appears beside the control that caused it, styled."""
    _start(dash_duo, app_factory)
    dash_duo.driver.find_element(
        By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Recipe']").click()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    dash_duo.find_element("#load-recipe-upload input[type=file]").send_keys(str(bad))
    dash_duo.wait_for_contains_text("#recipe-message", "Could not load the recipe", timeout=30)
    assert dash_duo.find_elements("#recipe-message .message-error")
    assert dash_duo.find_element("#param-message").text == ""
    assert dash_duo.find_element("#history-text").text == "step 1 of 1"  # nothing lost


def test_a_dominant_bin_is_clipped_and_log_counts_show_it_whole(dash_duo, app_factory,
                                                               tmp_path):
    """Issue 10 item 6: an image with a black surround (one bin dwarfs the others)."""
    _start(dash_duo, app_factory)
    rng = np.random.default_rng(6)
    image = np.zeros((200, 200), np.uint8)
    yy, xx = np.mgrid[:200, :200]
    disk = (yy - 100) ** 2 + (xx - 100) ** 2 < 60 ** 2
    image[disk] = rng.integers(60, 200, disk.sum()).astype(np.uint8)
    tifffile.imwrite(tmp_path / "surround.tif", image)
    dash_duo.find_element("#upload input[type=file]").send_keys(str(tmp_path / "surround.tif"))
    dash_duo.wait_for_contains_text("#image-info", "surround.tif", timeout=60)
    yaxis = ("const gd = document.querySelector('#histogram-graph .js-plotly-plot');"
             "return [gd.layout.yaxis.type, gd._fullLayout.yaxis.range,"
             "        gd.layout.meta ? gd.layout.meta.clip : null];")
    # the linear axis is clipped above the other bins (the spike of zeros says its count)
    zeros = int((image == 0).sum())

    def clipped():  # the linear axis's range is the histogram's clip, below the spike
        kind, shown, clip = _js(dash_duo, yaxis)
        return clip if kind == "linear" and clip and shown == clip and clip[1] < 0.2 * zeros \
            else None

    _until(clipped, timeout=60, what="the clipped linear axis")
    _js(dash_duo, FETCH_HOOK_JS)
    _idle(dash_duo)  # a later histogram (the filtered image's) may set its own clip
    assert clipped()
    dash_duo.find_element("#histogram-log input").click()
    _until(lambda: _js(dash_duo, yaxis)[0] == "log", timeout=10, what="log counts")
    dash_duo.find_element("#histogram-log input").click()
    _until(clipped, timeout=10, what="the clip back on the linear axis")


def test_a_large_image_is_drawn_at_its_display_level_and_the_markers_line_up(
        dash_duo, app_factory, tmp_path):
    """A 1500 x 1600 image (above render.DISPLAY_MAX_PIXELS) goes to the browser on 2 x 2
    blocks: every trace of the segmentation graph says so, the axes stay in pixels of the
    image, and the markers the page draws itself on a key press cover the image exactly."""
    from PIL import Image

    rows, cols = np.mgrid[0:1500, 0:1600]
    image = (60 + (rows + cols) // 100).astype(np.uint8)
    image[300:700, 400:900] = 200
    (tmp_path / "data").mkdir(exist_ok=True)
    Image.fromarray(image).save(tmp_path / "data" / "big.png")
    _start(dash_duo, app_factory)
    dash_duo.select_dcc_dropdown("#data-file-dropdown", value="big.png")
    dash_duo.wait_for_contains_text("#image-info", "big.png", timeout=60)
    geometry_js = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd.data.map(t => [t.dx, t.x0]).concat([gd.layout.xaxis.range]);"""
    _until(lambda: _js(dash_duo, geometry_js)[4][1] > 1000 and exact_shown(dash_duo),
           timeout=120, what="the exact result of the large image")
    geometry = _js(dash_duo, geometry_js)
    assert geometry[:4] == [[2, 0.5]] * 4, geometry
    lo, hi = sorted(geometry[4])
    assert -2 <= lo <= 0 and 1599 <= hi <= 1602  # the axis spans the image's own pixels
    _idle(dash_duo)
    _js(dash_duo, FETCH_HOOK_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: _js(dash_duo, "return document.getElementById('segmentation-graph')"
                                 ".dataset.markers || null"), timeout=10,
           what="the page's own markers")
    # its values are at the display level: they are drawn over the image's own pixels
    assert _js(dash_duo, "return document.getElementById('segmentation-graph')"
                         ".dataset.markersSpan") == "1600,1500"


# Every dash-renderer action, and the outputs of the callbacks it ran (assets/fastmove.js:
# a key press sets the slider and the move's answer quietly).
ACTIONS_JS = """
window.__acts = [];
window.__ran = [];
if (!window.__actsWrapped) {
    const store = window.dash_stores[0];
    const dispatch = store.dispatch;
    store.dispatch = function (a) {
        window.__acts.push(typeof a === 'function' ? 'thunk' : a.type);
        if (a && a.type === 'Callbacks.Aggregate' && Array.isArray(a.payload)) {
            a.payload.forEach(function (x) {
                if (x && x.type === 'Callbacks.AddExecuting') {
                    (x.payload || []).forEach(function (c) {
                        window.__ran.push(c && c.callback ? c.callback.output : '?');
                    });
                }
            });
        }
        return dispatch.apply(this, arguments);
    };
    window.__actsWrapped = true;
}
"""
# plotly_restyle events of the segmentation graph, as its listeners (dcc.Graph) get them
RESTYLE_EVENTS_JS = """
window.__restyles = [];
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
gd.on('plotly_restyle', function (data) { window.__restyles.push(data); });
"""
DASH_PROP_JS = """
const s = window.dash_stores[0].getState();
let node = s.layout;
for (const k of s.paths.strs[arguments[0]]) { node = node[k]; }
return node.props[arguments[1]];
"""


def test_a_key_press_runs_no_dash_callback_and_dash_holds_what_the_page_shows(
        dash_duo, app_factory):
    _start(dash_duo, app_factory)
    before = _js(dash_duo, OVERLAY_JS)
    vmin, vmax = _js(dash_duo, SHAPES_JS)[:2]
    restyled = _js(dash_duo, DASH_PROP_JS, "segmentation-graph", "restyleData")
    _js(dash_duo, ACTIONS_JS)
    _js(dash_duo, RESTYLE_EVENTS_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of the new pair")
    _idle(dash_duo)
    ran = _js(dash_duo, "return window.__ran")
    # no gate, router, context mirror or panels' gate: the page did their work
    for store in ("move-request-store", "segmentation-signal-store", "client-sink-store",
                  "compare-settled-store"):
        assert not any(store in r for r in ran), (store, ran)
    acts = _js(dash_duo, "return window.__acts")
    assert len(acts) <= 30, acts  # ~90 when each of those ran (a cycle is ~10 actions)
    # ...and Dash holds what the page shows: the slider, the history pointer, the text
    assert _js(dash_duo, DASH_PROP_JS, "thresholds-slider", "value") == [vmin, vmax + 1]
    assert _js(dash_duo, DASH_PROP_JS, "thresholds-slider", "drag_value") == [vmin, vmax + 1]
    markers = _js(dash_duo, DASH_PROP_JS, "history-store", "data")["recipe"]["markers"]
    assert (markers["vmin"], markers["vmax"]) == (vmin, vmax + 1)
    assert f"pixels > {vmax + 1:g}" in _js(dash_duo, DASH_PROP_JS, "thresholds-text",
                                           "children")
    assert dash_duo.find_element("#history-text").text == "step 2 of 2"
    assert [h.get_attribute("aria-valuenow") for h in _handles(dash_duo)] == [
        f"{vmin:g}", f"{vmax + 1:g}"]
    # the figure Dash holds has the overlays drawn (a re-render draws the same)
    figure = _js(dash_duo, DASH_PROP_JS, "segmentation-graph", "figure")
    assert [t.get("source") for t in figure["data"]][1:] == _js(
        dash_duo, "return document.querySelector('#segmentation-graph .js-plotly-plot')"
                  ".data.slice(1).map(t => t.source)")
    # the page's restyle of the overlays is not passed to dcc.Graph (no callback listens to
    # its restyleData: a store update and a re-render of the graph for nothing); a restyle
    # by anyone else still is
    assert _js(dash_duo, "return window.__restyles") == []
    assert _js(dash_duo, DASH_PROP_JS, "segmentation-graph", "restyleData") == restyled

    # Undo, a server callback reading the history pointer as State, goes back to the pair
    # before, and the next key press moves on from there
    dash_duo.find_element("#undo-button").click()
    _until(lambda: dash_duo.find_element("#history-text").text == "step 1 of 2",
           what="undo")
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) == before,
           what="the overlay before the key press, again")
    assert (_js(dash_duo, SHAPES_JS) or [])[:2] == [vmin, vmax]
    _idle(dash_duo)
    _handles(dash_duo)[0].send_keys(Keys.ARROW_LEFT)
    _until(lambda: (_js(dash_duo, SHAPES_JS) or [])[:2] == [vmin - 1, vmax], timeout=10,
           what="the vmin line after undo and a key press")
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of (vmin - 1, vmax)")
    markers = _js(dash_duo, DASH_PROP_JS, "history-store", "data")["recipe"]["markers"]
    assert (markers["vmin"], markers["vmax"]) == (vmin - 1, vmax)
    assert dash_duo.find_element("#history-text").text == "step 2 of 2"
    assert _js(dash_duo, "return window.__restyles") == []

    # a restyle of the segmentation graph by anyone else is passed on as before
    _js(dash_duo, "const gd = document.querySelector('#segmentation-graph .js-plotly-plot');"
                  "return Plotly.restyle(gd, {opacity: 0.9}, [1]);")
    _until(lambda: len(_js(dash_duo, "return window.__restyles")) == 1, timeout=10,
           what="another restyle's event")
    _until(lambda: "opacity" in ((_js(dash_duo, DASH_PROP_JS, "segmentation-graph",
                                      "restyleData") or [{}])[0] or {}), timeout=10,
           what="dcc.Graph's restyleData")


# The segmentation graph's overlay images as drawn: per trace, plotly's data, its full data
# and the href of the <image> plotly drew for it (and a mark on that element).
SEG_IMAGES_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
const out = [];
gd.querySelectorAll('.imagelayer .im image').forEach(function (el) {
    const t = el.__data__[0].trace;
    out.push({index: t.index, data: gd.data[t.index].source, full: t.source,
              href: el.getAttributeNS('http://www.w3.org/1999/xlink', 'href'),
              mark: el.dataset.testMark || null});
});
return out;
"""
COUNT_RESTYLES_JS = count_calls_js("restyle", "segmentation-graph", "__segRestyles")


def test_a_key_press_puts_the_new_overlays_into_the_drawn_images(dash_duo, app_factory):
    """The answer's overlays (same size, same geometry) go into the <image> elements plotly
    drew, without a Plotly.restyle (a whole recalculation and redraw of the graph, and a
    second load of every PNG for a hover canvas); plotly's data says what is drawn, and
    plotly's own next redraw draws the same."""
    _start(dash_duo, app_factory)
    # (the first hand-off after the load re-plots the figure Dash is handed once)
    before = _js(dash_duo, OVERLAY_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of the first key press")
    _idle(dash_duo)
    before = _js(dash_duo, OVERLAY_JS)
    _js(dash_duo, "document.querySelectorAll('#segmentation-graph .imagelayer .im image')"
                  ".forEach(function (el, i) { el.dataset.testMark = 'm' + i; });")
    marks = {im["index"]: im["mark"] for im in _js(dash_duo, SEG_IMAGES_JS)}
    _js(dash_duo, COUNT_RESTYLES_JS)
    _js(dash_duo, """
window.__segPlots = 0;
document.querySelector('#segmentation-graph .js-plotly-plot')
    .on('plotly_afterplot', () => { window.__segPlots += 1; });""")
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != before,
           what="the exact overlay of the new pair")
    _idle(dash_duo)
    assert _js(dash_duo, "return window.__segRestyles") == 0
    assert _js(dash_duo, "return window.__segPlots") == 1  # the graph says it has drawn
    drawn = _js(dash_duo, SEG_IMAGES_JS)
    by_trace = {im["index"]: im for im in drawn}
    assert by_trace[2]["data"] != before
    for im in drawn:  # the same elements, each showing what plotly's data says
        assert im["mark"] == marks[im["index"]], (im["index"], im["mark"])
        assert im["href"] == im["data"] == im["full"], im["index"]
    # the page's markers gave way to the graph's own (the answer's markers overlay)
    assert _js(dash_duo, "return document.querySelectorAll('#segmentation-graph "
                         "image[data-pipex-hidden]').length") == 0
    # plotly's next whole redraw (a zoom) draws the same overlays, and its hover canvas of
    # the overlays follows them again
    _js(dash_duo, "const gd = document.querySelector('#segmentation-graph .js-plotly-plot');"
                  "Plotly.relayout(gd, {'xaxis.range': [10, 200]});")
    _until(lambda: all(im["mark"] is None for im in _js(dash_duo, SEG_IMAGES_JS))
           or _js(dash_duo, "return document.querySelector('#segmentation-graph "
                            ".js-plotly-plot')._fullLayout.xaxis.range[0]") == 10,
           timeout=10, what="the zoom")
    time.sleep(1.0)
    after = _js(dash_duo, SEG_IMAGES_JS)
    assert [(im["index"], im["href"]) for im in after] == [
        (im["index"], im["data"]) for im in drawn]
    assert _js(dash_duo, """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd._fullData.filter(t => t.index > 0 && t.visible === true)
    .every(t => t._canvas && t._canvas.source === t.source);""")
    # the next key press goes on from there
    shown = _js(dash_duo, OVERLAY_JS)
    _handles(dash_duo)[1].send_keys(Keys.ARROW_RIGHT)
    _until(lambda: exact_shown(dash_duo) and _js(dash_duo, OVERLAY_JS) != shown,
           what="the exact overlay of the next pair")
    _idle(dash_duo)
    for im in _js(dash_duo, SEG_IMAGES_JS):
        assert im["href"] == im["data"] == im["full"], im["index"]
