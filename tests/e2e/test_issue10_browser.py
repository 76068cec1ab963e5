"""Issue 10's remaining items in headless Chromium: the vmin / vmax boxes hold the image's
values (16-bit, a float image with a tiny range), the keys step the thresholds finely (one
slider step, ten with Shift) and a typed value with Enter is what the recipe holds; the
random walker's intensity scale is information, not an input; the parameter sweep is a grid
with labelled axes whose current cell is marked and whose cells adopt their recipe."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import tifffile
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.helpers import exact_shown, until

pytestmark = pytest.mark.browser

# For each threshold box: its text's width and the widest value of the slider's range at its
# step, in the box's own font, against the room for digits (the box without its padding and
# the spin buttons' 16 px).
BOX_FIT_JS = """
const slider = document.getElementById('thresholds-slider');
const boxes = slider.querySelectorAll('input.dash-range-slider-input');
const low = boxes[0], high = boxes[1];
const step = high.getAttribute('step');
const d = (String(step).split('.')[1] || '').length;
const lo = Number(low.getAttribute('min')), hi = Number(high.getAttribute('max'));
const canvas = document.createElement('canvas').getContext('2d');
return Array.from(boxes).map(function (box) {
    const cs = getComputedStyle(box);
    canvas.font = cs.font;
    const room = box.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 16;
    const widest = Math.max(canvas.measureText(lo.toFixed(d)).width,
                            canvas.measureText(hi.toFixed(d)).width);
    return {value: box.value, text: canvas.measureText(box.value).width, widest: widest,
            room: room, step: step, lo: lo, hi: hi};
});
"""

HOVER_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
window.Plotly.Fx.hover(gd, {xval: arguments[0]}, 'xy');
const layer = gd.querySelector('.hoverlayer');
return layer ? layer.textContent : '';
"""

# Whether each threshold tooltip's box overlaps the "log counts" switch.
OVERLAP_JS = """
const label = document.querySelector('#histogram-log label').getBoundingClientRect();
return Array.from(document.querySelectorAll('#thresholds-slider .dash-slider-tooltip'))
    .map(function (tip) {
        const b = tip.getBoundingClientRect();
        return b.left < label.right && label.left < b.right &&
               b.top < label.bottom && label.top < b.bottom;
    });
"""


def _drag_right(dash_duo, x, y, step, pause, steps=10):
    """Press the mouse at (x, y), move it `steps` times `step` px to the right (`pause` s
    apart) and release it there (CDP mouse events, as a person's drag)."""
    cdp = dash_duo.driver.execute_cdp_cmd
    cdp("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
    cdp("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x, "y": y, "button": "left",
                                     "buttons": 1, "clickCount": 1})
    for k in range(1, steps + 1):
        cdp("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x + step * k, "y": y,
                                         "button": "left", "buttons": 1})
        time.sleep(pause)
    cdp("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x + step * steps, "y": y,
                                     "button": "left", "buttons": 0, "clickCount": 1})

def _js(dash_duo, script, *args):
    return dash_duo.driver.execute_script(script, *args)


def _summary(dash_duo):
    return dash_duo.find_element("#segmentation-summary").text



def _tab(dash_duo, label):
    dash_duo.driver.find_element(
        By.XPATH, f"//*[contains(@class, 'tab') and normalize-space()='{label}']").click()


def _recipe(dash_duo):
    """The current recipe, as the Recipe tab shows it (the tab must be open: dcc.Tabs renders
    the open tab only)."""
    found = dash_duo.find_elements("#recipe-view")
    text = found[0].get_attribute("textContent") if found else ""
    return json.loads(text) if text else None


def _markers(dash_duo):
    recipe = _recipe(dash_duo)
    return recipe and (recipe["markers"]["vmin"], recipe["markers"]["vmax"])


def _step_text(dash_duo):
    return dash_duo.find_element("#history-text").text


def _start(dash_duo, app_factory):
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    until(lambda: exact_shown(dash_duo), 120, "coins segmented")
    _tab(dash_duo, "Recipe")
    until(lambda: _markers(dash_duo) is not None, 30, "the recipe")


def _upload(dash_duo, path):
    dash_duo.find_element("#upload input[type=file]").send_keys(str(path))
    dash_duo.wait_for_contains_text("#image-info", path.name, timeout=60)
    until(lambda: exact_shown(dash_duo) and _step_text(dash_duo) == "step 1 of 1", 120,
          f"{path.name} segmented")
    until(lambda: _markers(dash_duo) is not None, 30, "the recipe")


def _disks(dtype, low, high, seed=0):
    yy, xx = np.mgrid[:150, :180]
    image = np.full((150, 180), float(low))
    for cy, cx in ((40, 45), (100, 60), (60, 130), (115, 140)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 16 ** 2] = high
    image += np.random.default_rng(seed).normal(0, (high - low) * 0.03, image.shape)
    return image.astype(dtype)


def _fits(dash_duo, what):
    boxes = _js(dash_duo, BOX_FIT_JS)
    for box in boxes:
        assert box["text"] <= box["room"] and box["widest"] <= box["room"], (what, boxes)
    return boxes


def _key(dash_duo, handle, key, shift=False):
    dash_duo.driver.execute_script("arguments[0].focus();", handle)
    chain = ActionChains(dash_duo.driver)
    if shift:
        chain = chain.key_down(Keys.SHIFT).send_keys(key).key_up(Keys.SHIFT)
    else:
        chain = chain.send_keys(key)
    chain.perform()


def test_threshold_boxes_fit_the_values_and_the_keys_give_fine_control(dash_duo, app_factory,
                                                                       tmp_path):
    _start(dash_duo, app_factory)
    # a 16-bit image: values in the tens of thousands, a slider step of 1
    tifffile.imwrite(tmp_path / "sixteen.tif", _disks(np.uint16, 3000, 42000))
    _upload(dash_duo, tmp_path / "sixteen.tif")
    boxes = _fits(dash_duo, "16-bit")
    assert boxes[1]["step"] == "1" and boxes[1]["hi"] > 40000
    # the tooltips leave "log counts" readable (vmin is near the left end here)
    overlaps = _js(dash_duo, OVERLAP_JS)
    assert overlaps == [False, False], overlaps
    # the histogram's hover says an intensity as a person reads it (no 1.235e+4)
    for x in (12000, 25000, 40000):
        text = until(lambda x=x: _js(dash_duo, HOVER_JS, x), 10, "the histogram's hover")
        # the axis's label, the bar's intensity and its count: 11,905 intensity 11,905 ...
        assert re.match(r"(\d{1,2},\d{3})intensity \1[\d,]+ pixels$", text), text
    vmin, vmax = _markers(dash_duo)
    handles = dash_duo.find_elements("#thresholds-slider [role=slider]")
    # the page says how (a drag moves ~200 grey levels per pixel of this slider)
    assert "Shift + ← / → (ten)" in dash_duo.find_element("#histogram-panel .hint").text
    # an arrow key moves vmax by one grey level, Shift + arrow by ten
    _key(dash_duo, handles[1], Keys.ARROW_RIGHT)
    until(lambda: _step_text(dash_duo) == "step 2 of 2", 60, "the arrow key's move")
    until(lambda: _markers(dash_duo) == (vmin, vmax + 1), 30, "vmax + 1")
    _key(dash_duo, handles[1], Keys.ARROW_RIGHT, shift=True)
    until(lambda: _step_text(dash_duo) == "step 3 of 3", 60, "the Shift + arrow move")
    until(lambda: _markers(dash_duo) == (vmin, vmax + 11), 30, "vmax + 11")
    _key(dash_duo, handles[0], Keys.ARROW_LEFT, shift=True)
    until(lambda: _markers(dash_duo) == (vmin - 10, vmax + 11), 60, "vmin - 10")
    # a value typed in a box, with Enter, is what the recipe holds
    box = dash_duo.find_element("#thresholds-slider input.dash-range-slider-max-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(vmax + 1234), Keys.ENTER)
    until(lambda: _markers(dash_duo) == (vmin - 10, vmax + 1234), 60, "the typed vmax")
    _fits(dash_duo, "16-bit, after the moves")
    # the text under the slider writes the thresholds as the tooltips do: 43,234, not 43234
    text = dash_duo.find_element("#thresholds-text").text
    assert f"pixels > {vmax + 1234:,.0f}" in text and f"pixels < {vmin - 10:,.0f}" in text, text

    # a float image with a tiny range: the step has six decimals, the boxes hold them
    tifffile.imwrite(tmp_path / "tiny.tif", _disks(np.float32, 0.0004, 0.0035, seed=1))
    _upload(dash_duo, tmp_path / "tiny.tif")
    boxes = _fits(dash_duo, "tiny float")
    assert len(boxes[1]["step"].split(".")[1]) >= 6, boxes
    vmin, vmax = _markers(dash_duo)
    step = float(boxes[1]["step"])
    handles = dash_duo.find_elements("#thresholds-slider [role=slider]")
    _key(dash_duo, handles[1], Keys.ARROW_RIGHT)
    until(lambda: _step_text(dash_duo) == "step 2 of 2", 60, "the arrow key's move")
    until(lambda: _markers(dash_duo) and abs(_markers(dash_duo)[1] - (vmax + step)) < step / 100,
          30, "vmax + one step")


def test_the_intensity_scale_is_shown_as_information(dash_duo, app_factory, tmp_path):
    _start(dash_duo, app_factory)
    info = lambda: dash_duo.find_element("#intensity-scale-info")
    until(lambda: "255 (the maximum of uint8)" in info().text, 30, "the scale of coins")
    assert "read-only" in info().text
    # no input for it in the random walker's form; beta is there
    form = "[id*='\"stage\":\"segmentation\"'][id*='\"type\":\"param\"']"
    names = {re.search(r'"name":"(\w+)"', e.get_attribute("id")).group(1)
             for e in dash_duo.find_elements(form)}
    assert "beta" in names and "intensity_scale" not in names
    # what it is, one click away
    info().find_element(By.TAG_NAME, "summary").click()
    until(lambda: "img_as_float" in info().text, 10, "the explanation")
    # another method: no such scale, the line is hidden; back: shown again
    dash_duo.select_dcc_dropdown("#segmentation-method", value="Watershed")
    until(lambda: not info().is_displayed(), 30, "the line hidden")
    dash_duo.select_dcc_dropdown("#segmentation-method", value="Random walker")
    until(lambda: info().is_displayed() and "255" in info().text, 30, "the line back")
    # a recipe made on a float image keeps its own scale, and the line says so
    recipe = _recipe(dash_duo)
    recipe["segmentation"]["params"]["intensity_scale"] = 1.0
    path = tmp_path / "float-made.json"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    dash_duo.find_element("#load-recipe-upload input[type=file]").send_keys(str(path))
    until(lambda: "from the loaded recipe" in info().text, 30, "the loaded recipe's scale")
    assert "this uint8 image would give 255" in info().text
    assert _recipe(dash_duo)["segmentation"]["params"]["intensity_scale"] == 1.0


def test_the_sweep_is_a_grid_with_labelled_axes_and_a_click_adopts_a_cell(dash_duo,
                                                                        app_factory):
    _start(dash_duo, app_factory)
    vmin, _ = _markers(dash_duo)
    _tab(dash_duo, "Parameter sweep")
    until(lambda: dash_duo.find_element("#sweep-param-a").text.strip() == "markers: vmin", 30,
          "parameter A")
    dash_duo.find_element("#sweep-values-a").send_keys(f"60, {vmin:g}")
    dash_duo.select_dcc_dropdown("#sweep-param-b", value="segmentation (random_walker): beta")
    dash_duo.find_element("#sweep-values-b").send_keys("50, 130")
    dash_duo.find_element("#sweep-run").click()
    cells = lambda: dash_duo.find_elements("#sweep-grid .sweep-cell")
    until(lambda: len(cells()) == 4, 180, "the 2 x 2 grid")
    # the axes say the parameters, the rows and columns their values
    axes = [e.text for e in dash_duo.find_elements("#sweep-grid .sweep-axis")]
    assert axes == ["segmentation (random_walker): beta", "markers: vmin"]
    assert [e.text for e in dash_duo.find_elements("#sweep-grid .sweep-value-column")] == [
        "50", "130"]
    assert [e.text for e in dash_duo.find_elements("#sweep-grid .sweep-value-row")] == [
        "60", f"{vmin:g}"]
    # laid out as a grid: two rows of two, the columns aligned
    boxes = [c.rect for c in cells()]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and boxes[2]["y"] > boxes[0]["y"] + 40
    assert abs(boxes[0]["x"] - boxes[2]["x"]) < 2 and boxes[1]["x"] > boxes[0]["x"] + 40
    current = lambda: [i for i, c in enumerate(cells())
                       if "sweep-current" in c.get_attribute("class")]
    until(lambda: current() == [3], 10, "the current recipe's cell marked")
    # a click on a cell adopts it: a new step of the history, the mark follows
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", cells()[0])
    cells()[0].click()
    until(lambda: _step_text(dash_duo) == "step 2 of 2", 60, "the cell adopted")
    until(lambda: current() == [0], 10, "the adopted cell marked")
    dash_duo.find_element("#undo-button").click()
    until(lambda: current() == [3], 30, "undo: the first cell marked again")
    dash_duo.find_element("#redo-button").click()
    until(lambda: current() == [0], 30, "redo: the adopted cell marked again")
    _tab(dash_duo, "Recipe")
    until(lambda: _markers(dash_duo) == (60, _markers(dash_duo)[1]), 30, "vmin 60")
    assert _recipe(dash_duo)["segmentation"]["params"]["beta"] == 50
    # another image: the grid of the previous one goes
    dash_duo.select_dcc_dropdown("#sample-dropdown", value="camera")
    dash_duo.wait_for_contains_text("#image-info", "camera", timeout=60)
    _tab(dash_duo, "Parameter sweep")
    until(lambda: not any(c.is_displayed() for c in cells()), 30,
          "the previous image's grid hidden")
    # a new sweep shows its grid again
    dash_duo.find_element("#sweep-values-b").send_keys(Keys.CONTROL, "a")
    dash_duo.find_element("#sweep-values-b").send_keys("130")
    dash_duo.find_element("#sweep-run").click()
    until(lambda: len(cells()) == 2 and all(c.is_displayed() for c in cells()), 180,
          "the new image's grid")
    # (the measurements table's own console messages are its tests' business)
    severe = [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"
              and "dash_ag_grid" not in e.get("message", "")]
    assert not severe, [e["message"] for e in severe]


# The vmax line of the histogram: its centre on the screen, and the plot area's width.
VMAX_LINE_JS = """
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
const line = gd.querySelector('.shapelayer path[data-index="1"]');
const r = line.getBoundingClientRect();
return {x: r.left + r.width / 2, y: r.top + r.height / 2,
        width: gd._fullLayout._size.w, range: gd._fullLayout.xaxis.range.slice()};
"""


def test_a_line_dragged_on_a_zoomed_histogram_moves_finely(dash_duo, app_factory, tmp_path):
    """Issue 10 item 5: on a 16-bit image one pixel of the slider is ~200 grey levels; on
    the histogram zoomed around vmax, dragging its line moves vmax by the zoomed axis's
    resolution (here ~2 grey levels per pixel), as the Markers hint says."""
    _start(dash_duo, app_factory)
    tifffile.imwrite(tmp_path / "sixteen.tif", _disks(np.uint16, 3000, 42000))
    _upload(dash_duo, tmp_path / "sixteen.tif")
    assert "zoom the histogram" in dash_duo.find_element("#histogram-panel .hint").text
    vmin, vmax = _markers(dash_duo)
    dash_duo.find_element("#histogram-graph").location_once_scrolled_into_view
    # zoom the histogram's x axis to vmax ± 400 (as a box drawn over it does)
    _js(dash_duo, "Plotly.relayout(document.querySelector('#histogram-graph .js-plotly-plot'),"
                  " {'xaxis.range': [arguments[0] - 400, arguments[0] + 400]});", vmax)
    line = until(lambda: (lambda v: v if abs(v["range"][0] - (vmax - 400)) < 1 else None)(
        _js(dash_duo, VMAX_LINE_JS)), 10, "the zoomed histogram")
    per_px = (line["range"][1] - line["range"][0]) / line["width"]
    assert per_px < 3
    _drag_right(dash_duo, line["x"], line["y"], 2, 0.02)  # 20 px, in steps
    until(lambda: _markers(dash_duo) and _markers(dash_duo)[1] != vmax, 60, "the dragged vmax")
    new_vmin, new_vmax = _markers(dash_duo)
    assert new_vmin == vmin
    # 20 px of the zoomed axis: ~40 grey levels (the slider: ~4,000)
    assert 0 < new_vmax - vmax <= 20 * per_px + 2, (vmax, new_vmax, per_px)


# What the page shows of the vmin threshold: its box, its thumb (aria value, position along
# the track as a fraction), its tooltip, the histogram's vmin line and the text under the
# slider.
VMIN_SHOWN_JS = """
const slider = document.getElementById('thresholds-slider');
const box = slider.querySelector('input.dash-range-slider-min-input');
const thumb = slider.querySelectorAll('[role=slider]')[0];
const track = slider.querySelector('.dash-slider-track').getBoundingClientRect();
const t = thumb.getBoundingClientRect();
const tip = slider.querySelector('.dash-slider-thumb-1 .dash-slider-tooltip') ||
    slider.querySelectorAll('.dash-slider-tooltip')[0];
const gd = document.querySelector('#histogram-graph .js-plotly-plot');
const cs = getComputedStyle(box);
const canvas = document.createElement('canvas').getContext('2d');
canvas.font = cs.font;
return {box: box.value, aria: Number(thumb.getAttribute('aria-valuenow')),
        at: t.left + t.width / 2 - track.left, width: track.width, half: t.width / 2,
        lo: Number(box.getAttribute('min')),
        hi: Number(slider.querySelector('input.dash-range-slider-max-input').getAttribute('max')),
        step: Number(box.getAttribute('step')),
        tip: tip ? tip.textContent : null,
        line: gd && gd.layout.shapes ? gd.layout.shapes[0].x0 : null,
        text: document.getElementById('thresholds-text').textContent,
        fits: canvas.measureText(box.value).width <=
            box.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 16};
"""


def _vmin_shown(dash_duo, value):
    """What the page shows of vmin once its box and histogram line are at `value`."""
    shown = _js(dash_duo, VMIN_SHOWN_JS)
    return shown if shown["line"] == value and shown["box"] == f"{value:g}" else None


def _type(dash_duo, selector, text):
    box = dash_duo.find_element(selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text, Keys.ENTER)


def test_a_value_typed_finer_than_the_step_is_what_the_recipe_holds(dash_duo, app_factory,
                                                                   tmp_path):
    """Issue 10 item 2: on a float image (slider step 0.001) vmin typed 0.12345 with Enter is
    0.12345 in the recipe, the history, the text under the slider, the tooltip, the
    histogram's line and the exported script; the thumb sits at its position; the keys then
    move on the step grid; leaving the box without typing changes nothing (dash's RangeSlider
    snapped the value on every blur); a vmin typed above vmax is refused as typed."""
    _start(dash_duo, app_factory)
    tifffile.imwrite(tmp_path / "float.tif", _disks(np.float32, 0.1, 0.9, seed=2))
    _upload(dash_duo, tmp_path / "float.tif")
    vmax = _markers(dash_duo)[1]
    shown = _js(dash_duo, VMIN_SHOWN_JS)
    assert shown["step"] == 0.001, shown
    low = "#thresholds-slider input.dash-range-slider-min-input"
    _type(dash_duo, low, "0.12345")
    until(lambda: _step_text(dash_duo) == "step 2 of 2", 60, "the typed vmin's move")
    until(lambda: _markers(dash_duo) == (0.12345, vmax), 30, "vmin 0.12345 in the recipe")
    shown = until(lambda: _vmin_shown(dash_duo, 0.12345), 30, "the page's vmin")
    assert shown["aria"] == 0.12345 and shown["tip"] == "0.12345", shown
    assert "pixels < 0.12345" in shown["text"], shown
    assert shown["fits"], shown
    # the thumb at the value's place along the track (Radix keeps a thumb inside the track:
    # its centre is shifted by half its width, less towards the middle), within a pixel
    p = (0.12345 - shown["lo"]) / (shown["hi"] - shown["lo"])
    expected = p * shown["width"] + shown["half"] * (1 - 2 * p)
    assert abs(shown["at"] - expected) <= 1, (shown, expected)
    # leaving the box without typing: no move, the value kept (no snap to 0.123)
    box = dash_duo.find_element(low)
    box.click()
    dash_duo.find_element("#histogram-panel .hint").click()
    time.sleep(1)
    assert _step_text(dash_duo) == "step 2 of 2" and _markers(dash_duo) == (0.12345, vmax)
    # the exported script holds it
    dash_duo.find_element("#export-script-button").click()
    script = until(lambda: _download_text(dash_duo, "float_pipeline.py"), 60,
                   "the exported script")
    assert "VMIN = 0.12345\n" in script, [ln for ln in script.splitlines() if "VMIN" in ln]
    # a key press moves on the step grid from there: the next step up, 0.124
    handles = dash_duo.find_elements("#thresholds-slider [role=slider]")
    _key(dash_duo, handles[0], Keys.ARROW_RIGHT)
    until(lambda: _step_text(dash_duo) == "step 3 of 3", 60, "the arrow key's move")
    until(lambda: _markers(dash_duo) == (0.124, vmax), 30, "vmin on the grid: 0.124")
    # undo: the typed value again, everywhere
    dash_duo.find_element("#undo-button").click()
    until(lambda: _markers(dash_duo) == (0.12345, vmax), 30, "undo: 0.12345")
    until(lambda: _js(dash_duo, VMIN_SHOWN_JS)["box"] == "0.12345", 30, "undo: the box")
    # a vmin typed above vmax is refused with the value typed, beside the slider
    _type(dash_duo, low, f"{vmax + 0.05:g}")
    message = until(lambda: dash_duo.find_element("#param-message").text, 60, "the refusal")
    assert f"vmin ({vmax + 0.05:g}) must be below vmax ({vmax:g})" in message, message
    assert dash_duo.find_elements("#param-message .message-error"), message
    until(lambda: _js(dash_duo, VMIN_SHOWN_JS)["box"] == "0.12345", 30, "the box put back")
    assert _markers(dash_duo) == (0.12345, vmax)


def _download_text(dash_duo, name):
    from pathlib import Path

    path = Path(dash_duo.download_path) / name
    if path.exists() and path.stat().st_size:
        time.sleep(0.3)
        return path.read_text(encoding="utf-8")
    return None


# Each threshold tile: its method, the bounds of its title and its children against the
# tile's, and the value written under its thumbnail.
TILES_JS = """
return Array.from(document.querySelectorAll('#threshold-gallery .tile')).map(function (tile) {
    const t = tile.getBoundingClientRect();
    const title = tile.querySelector('.tile-title');
    const inside = Array.from(title.querySelectorAll('*')).concat([title]).every(function (e) {
        const r = e.getBoundingClientRect();
        return r.left >= t.left - 0.5 && r.right <= t.right + 0.5;
    });
    const method = tile.querySelector('.tile-method');
    const value = tile.querySelector('.tile-value');
    const img = tile.querySelector('img.thumb');
    return {method: method ? method.textContent : null, inside: inside,
            thumb: img ? Math.round(img.getBoundingClientRect().top - t.top) : null,
            clipped: title.scrollWidth > title.clientWidth + 1,
            value: value ? value.textContent : null};
});
"""


# The fraction of white pixels of a tile's thumbnail (execute_async_script; the method).
WHITE_JS = """
const done = arguments[arguments.length - 1];
const img = document.querySelector('#threshold-gallery img[alt="' + arguments[0] +
                                    ' binarisation"]');
const im = new Image();
im.onload = function () {
    const c = document.createElement('canvas');
    c.width = im.width; c.height = im.height;
    const g = c.getContext('2d');
    g.drawImage(im, 0, 0);
    const px = g.getImageData(0, 0, im.width, im.height).data;
    let white = 0;
    for (let i = 0; i < px.length; i += 4) { if (px[i] > 127) { white += 1; } }
    done(white / (px.length / 4));
};
im.src = img.src;
"""


def _tiles(dash_duo):
    tiles = _js(dash_duo, TILES_JS)
    return tiles if len(tiles) == 9 and all(t["method"] for t in tiles) else None


def test_threshold_tiles_name_their_method_in_full_and_write_values_alike(dash_duo,
                                                                        app_factory, tmp_path):
    """Seen on the page (issue 10): every tile's title was cut to
    "skimage.filters.threshold_is" and ran into the next tile, and one 16-bit image's
    values read 8695 beside 25,154. Each tile now names its method and its function inside
    the tile, and writes its value with thousands separators."""
    _start(dash_duo, app_factory)
    tifffile.imwrite(tmp_path / "sixteen.tif", _disks(np.uint16, 3000, 42000))
    _upload(dash_duo, tmp_path / "sixteen.tif")
    _tab(dash_duo, "Threshold discovery")
    tiles = until(lambda: _tiles(dash_duo), 120, "the nine tiles")
    assert [t["method"] for t in tiles] == ["isodata", "li", "mean", "minimum", "otsu",
                                           "triangle", "yen", "niblack", "sauvola"], tiles
    for tile in tiles:
        assert tile["inside"] and not tile["clipped"], tile
    # every thumbnail at the same height in its tile (titles of two lines each)
    assert len({t["thumb"] for t in tiles}) == 1, tiles
    values = [t["value"] for t in tiles[:7]]
    for value in values:
        assert re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d)?", value), values
    assert any("," in v for v in values), values
    links = [a.text for a in dash_duo.find_elements(".tile .doc-link")]
    assert "threshold_otsu" in links and "threshold_sauvola" in links, links
    # item 8: the Sauvola tile of an integer image is not solid black (r in the image's
    # units), nor solid white
    white = dash_duo.driver.execute_async_script(WHITE_JS, "sauvola")
    assert 0.01 < white < 0.99, white


# The vmax thumb's centre in the window (scrolled into view first).
VMAX_THUMB_JS = """
const thumb = document.querySelectorAll('#thresholds-slider [role=slider]')[1];
thumb.scrollIntoView({block: 'center'});
const b = thumb.getBoundingClientRect();
return [b.x + b.width / 2, b.y + b.height / 2];
"""


def test_dragging_the_vmax_thumb_off_an_overlapping_vmin_moves_vmax_only(dash_duo,
                                                                         app_factory,
                                                                         tmp_path):
    """Issue 10 item 5: on a float image the thumbs of close thresholds lie on top of each
    other, and dragging the vmax thumb moved vmin (0.490 -> 0.358). With vmin 0.49 and vmax
    0.5 typed in the boxes (2 px apart on the slider), the thumb under the pointer is vmax's,
    and dragging it right moves vmax only."""
    _start(dash_duo, app_factory)
    tifffile.imwrite(tmp_path / "float.tif", _disks(np.float32, 0.1, 0.9, seed=4))
    _upload(dash_duo, tmp_path / "float.tif")
    _type(dash_duo, "#thresholds-slider input.dash-range-slider-max-input", "0.5")
    until(lambda: _markers(dash_duo) and _markers(dash_duo)[1] == 0.5, 60, "vmax 0.5")
    _type(dash_duo, "#thresholds-slider input.dash-range-slider-min-input", "0.49")
    until(lambda: _markers(dash_duo) == (0.49, 0.5), 60, "vmin 0.49")
    steps = _step_text(dash_duo)
    x, y = _js(dash_duo, VMAX_THUMB_JS)
    _drag_right(dash_duo, x, y, 4, 0.03)  # 40 px, in steps
    until(lambda: _step_text(dash_duo) != steps, 60, "the drag's move")
    until(lambda: _markers(dash_duo) and _markers(dash_duo)[1] > 0.55, 30, "vmax dragged")
    vmin, vmax = _markers(dash_duo)
    assert vmin == 0.49, (vmin, vmax)
    # the dragged value is on the slider's step grid
    assert abs(vmax * 1000 - round(vmax * 1000)) < 1e-6, vmax


def _adopt(dash_duo, method, role):
    """Click "as vmin" / "as vmax" on a method's tile of the threshold gallery (retried while
    the gallery re-renders)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        tile = dash_duo.driver.find_element(
            By.XPATH, f"//div[contains(@class,'tile')][.//code[text()='threshold_{method}']]")
        tile.find_element(By.XPATH, f".//button[text()='as {role}']").click()
    except StaleElementReferenceException:
        return False
    return True


def test_an_adopted_threshold_reads_as_the_page_writes_it_and_is_kept_whole(dash_duo,
                                                                           app_factory):
    """Issue 10 (items 3 and 4): a threshold adopted from a method (li on coins:
    94.63159073954759) was written in full in the vmin box, beside 94.63 in the tooltip and
    the text. The box shows 94.63; the recipe keeps the method's value; Enter or Tab in the
    box without typing changes nothing, nor does typing in the other box; undo shows it
    again as 94.63."""
    _start(dash_duo, app_factory)
    vmin, vmax = _markers(dash_duo)
    _tab(dash_duo, "Threshold discovery")
    until(lambda: _adopt(dash_duo, "li", "vmin"), 120, "li's tile")
    until(lambda: _step_text(dash_duo) == "step 2 of 2", 60, "li adopted as vmin")
    _tab(dash_duo, "Recipe")
    until(lambda: _markers(dash_duo) and _markers(dash_duo)[0] != vmin, 30, "the recipe")
    li, _ = _markers(dash_duo)
    assert len(repr(li)) > 10 and _markers(dash_duo) == (li, vmax), li  # the method's value
    shown = until(lambda: (lambda s: s if s["line"] == li else None)(
        _js(dash_duo, VMIN_SHOWN_JS)), 30, "the page's vmin")
    assert shown["box"] == shown["tip"] == "94.63", shown
    assert "pixels < 94.63 " in shown["text"], shown
    assert shown["aria"] == li, shown  # the slider holds the value itself
    low = "#thresholds-slider input.dash-range-slider-min-input"
    # Enter, then Tab, in the box without typing: no move, the value kept whole
    for key in (Keys.ENTER, Keys.TAB):
        box = dash_duo.find_element(low)
        box.click()
        box.send_keys(key)
        time.sleep(1)
        assert _step_text(dash_duo) == "step 2 of 2", key
        assert _markers(dash_duo) == (li, vmax), key
        assert _js(dash_duo, VMIN_SHOWN_JS)["box"] == "94.63"
    # a value typed in the vmax box: vmin stays the method's value, not the 94.63 shown
    _type(dash_duo, "#thresholds-slider input.dash-range-slider-max-input", "140")
    until(lambda: _markers(dash_duo) == (li, 140), 60, "vmax 140, vmin whole")
    assert _step_text(dash_duo) == "step 3 of 3"
    assert _js(dash_duo, VMIN_SHOWN_JS)["box"] == "94.63"
    # undo, redo: the box shows it as the page writes it
    dash_duo.find_element("#undo-button").click()
    until(lambda: _markers(dash_duo) == (li, vmax), 30, "undo")
    dash_duo.find_element("#undo-button").click()
    until(lambda: _markers(dash_duo) == (vmin, vmax), 30, "undo the adoption")
    until(lambda: _js(dash_duo, VMIN_SHOWN_JS)["box"] == f"{vmin:g}", 30, "the box, undone")
    dash_duo.find_element("#redo-button").click()
    until(lambda: _markers(dash_duo) == (li, vmax), 30, "redo")
    until(lambda: _js(dash_duo, VMIN_SHOWN_JS)["box"] == "94.63", 30, "the box, redone")
