"""A new image's base is drawn before its first overlay, in headless Chromium (issue 9,
lab-sized data): with the new image's segmentation held back (a test hook slows the
segmentation callback for it), the segmentation graph shows the new image's base with no
overlay and says it is computing (a large image: with the first overlay made inside the
load's request); the old image's overlays are never drawn on the new base; the first overlay
then comes as the new image's own."""

from __future__ import annotations

import time

import pytest

from callbacks import display
from tests.e2e.helpers import OVERLAY_JS, until

pytestmark = pytest.mark.browser

HOLD_S = 3.0

#: Every 10 ms: what the segmentation graph draws (base, overlay) and the summary, when it
#: changes.
WATCH_JS = """
window.__fv = [];
const t0 = performance.now();
window.__fvTimer = setInterval(function () {
    const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
    const s = document.getElementById('segmentation-summary');
    const row = {base: gd && gd.data && gd.data[0] ? gd.data[0].source : null,
                 overlay: gd && gd.data && gd.data[2] ? gd.data[2].source : null,
                 summary: s ? s.textContent : ''};
    const last = window.__fv[window.__fv.length - 1];
    if (!last || last.base !== row.base || last.overlay !== row.overlay ||
            last.summary !== row.summary) {
        row.t = (performance.now() - t0) / 1000;
        window.__fv.push(row);
    }
}, 10);
"""

BASE_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd && gd.data && gd.data[0] ? gd.data[0].source : null;
"""


def hold_first_overlay(monkeypatch, name):
    """Slow the segmentation callback by HOLD_S for the image `name`: its first overlay
    comes late, so what the graph draws before it can be seen."""
    real = display.segmentation_update

    def held(services, session_id, meta, *args, **kwargs):
        if meta and meta.get("name") == name:
            time.sleep(HOLD_S)  # the new image's first overlay comes late
        return real(services, session_id, meta, *args, **kwargs)

    monkeypatch.setattr(display, "segmentation_update", held)


def test_a_new_images_base_is_drawn_before_its_first_overlay(dash_duo, app_factory,
                                                            monkeypatch):
    hold_first_overlay(monkeypatch, "camera")
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    old_base = dash_duo.driver.execute_script(BASE_JS)
    old_overlay = dash_duo.driver.execute_script(OVERLAY_JS)
    blank = display.blank_uri()
    assert old_base and old_overlay and old_overlay != blank

    dash_duo.driver.execute_script(WATCH_JS)
    dash_duo.select_dcc_dropdown("#sample-dropdown", value="camera")
    until(lambda: "camera" in dash_duo.find_element("#image-info").text, 60, "camera loaded")
    until(lambda: "labelled region" in dash_duo.find_element("#segmentation-summary").text
          and dash_duo.driver.execute_script(OVERLAY_JS) not in (old_overlay, blank),
          120, "camera's overlay")
    time.sleep(0.3)
    rows = dash_duo.driver.execute_script("clearInterval(window.__fvTimer); return window.__fv;")
    new = [r for r in rows if r["base"] and r["base"] != old_base]
    assert new, rows
    # the old image's overlays never on the new base
    assert not [r for r in new if r["overlay"] == old_overlay], \
        [(r["t"], r["summary"]) for r in new if r["overlay"] == old_overlay]
    # the new base, first drawn with no overlay and saying the overlay is being computed
    first = new[0]
    assert first["overlay"] == blank, (first["t"], first["summary"])
    assert "computing" in first["summary"], first["summary"]
    # ... well before its first overlay (held back by HOLD_S)
    overlaid = [r for r in new if r["overlay"] != blank]
    assert overlaid, rows
    assert overlaid[0]["t"] - first["t"] > HOLD_S / 2, (first["t"], overlaid[0]["t"])
    # the base drawn meanwhile is the one the overlay is drawn on
    assert overlaid[0]["base"] == first["base"]
    severe = [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]
    assert severe == [], severe


#: What the segmentation graph's base trace is drawn as: its source's kind and its blocks.
TRACE0_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
const t = gd && gd.data && gd.data[0];
return t ? {kind: (t.source || '').slice(0, 15), dx: t.dx === undefined ? 1 : t.dx} : null;
"""


def test_a_large_images_first_view_is_a_labelled_preview_then_its_display_level(
        dash_duo, app_factory, monkeypatch, tmp_path):
    """A data-folder image above 512² pixels: the load's answer draws a preview on blocks
    (a JPEG, 1/3 resolution) with its first overlay (the reduced grid's live preview, made
    inside the load's request), labelled so; the segmentation callback's overlay then
    comes on the display level's base (one pixel per pixel: a PNG)."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(5)
    big = rng.normal(90, 15, (1100, 1000)).clip(0, 255).astype(np.uint8)
    big[300:800, 200:700] += 90
    (tmp_path / "data").mkdir(exist_ok=True)
    tifffile.imwrite(tmp_path / "data" / "big.tif", big)
    hold_first_overlay(monkeypatch, "big.tif")
    dash_duo.start_server(app_factory())
    dash_duo.wait_for_contains_text("#segmentation-summary", "labelled regions", timeout=120)
    old_base = dash_duo.driver.execute_script(BASE_JS)
    blank = display.blank_uri()
    dash_duo.driver.execute_script(WATCH_JS)
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('data-file-dropdown', {value: 'big.tif'})")
    until(lambda: (dash_duo.driver.execute_script(TRACE0_JS) or {}).get("dx") == 3, 60,
          "the preview drawn")
    preview = dash_duo.driver.execute_script(TRACE0_JS)
    assert preview["kind"] == "data:image/jpeg"
    until(lambda: "preview (1/3 resolution)" in
          dash_duo.find_element("#segmentation-summary").text, 10, "the preview's label")
    assert "live preview (at 1/6 resolution" in \
        dash_duo.find_element("#segmentation-summary").text
    until(lambda: "big.tif" in dash_duo.find_element("#image-info").text, 60, "big.tif loaded")
    until(lambda: (dash_duo.driver.execute_script(TRACE0_JS) or {}).get("dx") == 1
          and "labelled region" in dash_duo.find_element("#segmentation-summary").text, 120,
          "big.tif's exact result on the display level")
    time.sleep(0.3)
    rows = dash_duo.driver.execute_script("clearInterval(window.__fvTimer); return window.__fv;")
    new = [r for r in rows if r["base"] and r["base"] != old_base]
    assert new and new[0]["base"].startswith("data:image/jpeg"), rows[:3]
    # the first view comes with its first overlay: never an empty one, nor the old image's
    assert all(r["overlay"] not in (blank, None) for r in new), \
        [(r["t"], r["summary"][:60]) for r in new]
    first = new[0]
    assert "preview (1/3 resolution) · object:" in first["summary"], first["summary"]
    # then the segmentation callback's answer (held back by HOLD_S) on the display level's
    # base, with its own overlay
    later = [r for r in new if r["base"].startswith("data:image/png")]
    assert later, [(r["t"], r["base"][:20]) for r in new]
    assert later[0]["t"] - first["t"] > HOLD_S / 2, (first["t"], later[0]["t"])
    assert later[-1]["overlay"] != first["overlay"]  # the exact result, at full resolution
    severe = [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]
    assert severe == [], severe
