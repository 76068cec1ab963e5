"""Issue 9, lab-sized data: a new image's first view and first overlay, fast at every size.

Callback bodies called directly, on a real store and cache in a temporary folder: the
segmentation graph's first view of a new image (its base, before any filtering, preview or
segmentation; ``display.first_view``), and what the segmentation callback sends onto it.
"""

from __future__ import annotations

import base64
import io as _io

import numpy as np
import pytest
import tifffile
from dash import Patch, no_update
from PIL import Image

from callbacks import display, loading
from callbacks.params import recipe_action
from callbacks.services import Services
from components import ids
from pipeline.config import Config
from pipeline.store import new_session_id

VIEW = dict(style="contour", show=["markers"], view="labels")


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=64,
                 max_pixels=40_000_000, quick_exact_s=0, job_after_s=1e9)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _upload(services, sid, array, name):
    buf = _io.BytesIO()
    tifffile.imwrite(buf, array)
    url = "data:image/tiff;base64," + base64.b64encode(buf.getvalue()).decode()
    out = loading.load_image(services, sid, ids.UPLOAD, None, url, name, None)
    assert out.meta is not None, out.message
    return out.meta


def _png_size(uri):
    return Image.open(_io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def _no_compute(services, monkeypatch):
    """Every stage of the pipeline raises: the first view must need none of them."""
    def refuse(*_a, **_k):
        raise AssertionError("the first view computed a pipeline stage")

    for name in ("run", "preview", "filtered", "filter_run", "mask", "histogram",
                 "thresholds"):
        monkeypatch.setattr(type(services), name, refuse)


def test_a_new_image_answers_its_base_for_the_segmentation_graph_before_any_stage(
        services, monkeypatch):
    sid = new_session_id()
    coins = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    camera = loading.load_image(services, sid, ids.SAMPLE, "camera", None, None, None).meta
    assert coins["id"] != camera["id"]
    _no_compute(services, monkeypatch)
    first = display.first_view(services, sid, camera, 0)
    image = display.image_panel(services, sid, camera, 0, 0).to_plotly_json()
    assert first["key"] == display.base_key(camera, 0, 0)
    assert first["summary"] == display.FIRST_VIEW_SUMMARY and "computing" in first["summary"]
    data = first["figure"]["data"]
    assert len(data) == 4
    # the new image's base, as the Image panel draws it (a PNG, never a JSON array)
    assert data[0]["source"] == image["data"][0]["source"]
    assert data[0]["source"].startswith("data:image/png;base64,")
    assert _png_size(data[0]["source"]) == (512, 512)
    # no overlay yet: neither the old image's nor any other
    blank = display.blank_uri()
    assert all(t["source"] == blank for t in data[1:])
    assert first["figure"]["layout"]["uirevision"] == display.uirevision(camera, 0)


def test_a_volumes_first_view_is_the_slice_the_controls_start_at(services):
    sid = new_session_id()
    vol = (np.random.default_rng(0).random((6, 30, 40)) * 200).astype(np.uint8)
    meta = _upload(services, sid, vol, "vol.tif")
    first = display.first_view(services, sid, meta, 0)
    assert display.slice_settings(meta, 0)[2] == 3
    assert first["key"] == display.base_key(meta, 0, 3) == f"{meta['id']}:0:3"
    assert first["figure"]["data"][0]["source"] == \
        display.image_panel(services, sid, meta, 0, 3).to_plotly_json()["data"][0]["source"]
    first = display.first_view(services, sid, meta, 2)
    assert first["key"] == f"{meta['id']}:2:20"
    assert _png_size(first["figure"]["data"][0]["source"]) == (30, 6)


def test_a_large_image_first_view_is_its_display_level(services, monkeypatch):
    sid = new_session_id()
    big = (np.random.default_rng(1).random((1500, 1500)) * 60000).astype(np.uint16)
    meta = _upload(services, sid, big, "big.tif")
    _no_compute(services, monkeypatch)
    first = display.first_view(services, sid, meta, 0)
    factor = display.display_of(meta, 0)
    assert factor == 2
    base = first["figure"]["data"][0]["source"]
    assert _png_size(base) == (750, 750)
    # block means (lossy already) as a JPEG: half a PNG's bytes, encoded 20x faster
    assert base.startswith("data:image/jpeg;base64,")
    assert all(t["source"].startswith("data:image/png") for t in first["figure"]["data"][1:])
    for trace in first["figure"]["data"]:
        assert (trace["x0"], trace["dx"]) == ((factor - 1) / 2, factor)


def test_on_the_first_view_the_segmentation_sends_only_its_overlays(services):
    """The page shows the new image's base (SEG_BASE = the first view's key): the first
    overlay is a Patch of the overlays (the base is not encoded and sent again); a page
    that does not show it yet gets the whole figure, as before."""
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    first = display.first_view(services, sid, meta, 0)
    out = display.segmentation_update(services, sid, meta, pointer, 0, 0, **VIEW,
                                      base=first["key"], allow_preview=True)
    fig, summary, *_, new_base = out
    assert isinstance(fig, Patch) and new_base is no_update
    assert "labelled region" in summary
    whole = display.segmentation_update(services, sid, meta, pointer, 0, 0, **VIEW,
                                        base=None, allow_preview=True)
    assert not isinstance(whole[0], Patch) and whole[-1] == first["key"]


def test_a_large_new_image_preview_is_a_patch_on_its_first_view(services):
    sid = new_session_id()
    rng = np.random.default_rng(2)
    big = rng.normal(90, 15, (800, 700)).clip(0, 255).astype(np.uint8)
    big[200:600, 150:500] += 90
    meta = _upload(services, sid, big, "big.tif")
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    first = display.first_view(services, sid, meta, 0)
    out = display.segmentation_update(services, sid, meta, pointer, 0, 0, **VIEW,
                                      base=first["key"], allow_preview=True)
    fig, summary, _, _, pending, _, new_base = out
    assert isinstance(fig, Patch) and new_base is no_update
    assert "live preview (at 1/5 resolution" in summary and pending["key"]


def test_the_first_view_shares_the_image_panels_encoded_base(services, monkeypatch):
    """The base is encoded once per image and slice: the Image panel, the first view and a
    whole segmentation figure read the same PNG."""
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "camera", None, None, None).meta
    calls = []
    real = display.render.png_data_uri
    monkeypatch.setattr(display.render, "png_data_uri",
                        lambda a, *k, **kw: calls.append(a.shape) or real(a, *k, **kw))
    display.first_view(services, sid, meta, 0)
    display.image_panel(services, sid, meta, 0, 0)
    assert calls.count((512, 512)) == 1


def test_another_session_never_reads_the_encoded_base(services):
    from pipeline.errors import InputError

    alice, bob = new_session_id(), new_session_id()
    meta = loading.load_image(services, alice, ids.SAMPLE, "camera", None, None, None).meta
    display.first_view(services, alice, meta, 0)  # cached now
    with pytest.raises(InputError, match="no longer on the server"):
        display.first_view(services, bob, meta, 0)
    with pytest.raises(InputError, match="no longer on the server"):
        display.image_panel(services, bob, meta, 0, 0)


# --------------------------------------------------------------------------- first overlay


def _blobs(shape, seed=0):
    """Smooth blobs (about 40 % object) with noise, uint8: a volume or a 2D image."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    coarse = ndi.gaussian_filter(rng.random(tuple(max(4, s // 8) for s in shape)), 1.0)
    zoom = [s / c for s, c in zip(shape, coarse.shape)]
    blobs = ndi.zoom(coarse, zoom, order=1)[tuple(slice(0, s) for s in shape)]
    image = 60 + 120 * (blobs > np.quantile(blobs, 0.6)) + rng.normal(0, 15, shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _first_overlay(services, sid, meta, axis, index):
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    first = display.first_view(services, sid, meta, axis)
    assert first["key"] == display.base_key(meta, axis, index)
    out = display.segmentation_update(services, sid, meta, pointer, axis, index, **VIEW,
                                      base=first["key"], allow_preview=True)
    return pointer, out


def _filter_cached(services, sid, meta, pointer):
    from callbacks.params import current_recipe

    return services.cached_filtered(sid, meta["id"], current_recipe(pointer)) is not None


def test_a_new_volumes_first_overlay_is_its_slab_before_the_filter_stage(services):
    """The first overlay of a new volume is the slab around the shown slice, made from the
    image's slab alone: the whole volume's filter stage has not run (it runs for the exact
    result, as before)."""
    sid = new_session_id()
    meta = _upload(services, sid, _blobs((16, 96, 96)), "vol.tif")
    pointer, out = _first_overlay(services, sid, meta, 0, 8)
    fig, summary, _, _, pending, _, _ = out
    assert isinstance(fig, Patch) and pending["key"]
    assert "live preview (slices 4–12 around this one" in summary, summary
    assert not _filter_cached(services, sid, meta, pointer)
    # the markers are drawn from the slab's filtered slice
    marker = Image.open(_io.BytesIO(base64.b64decode(
        fig.to_plotly_json()["operations"][0]["params"]["value"].split(",", 1)[1])))
    assert marker.size == (96, 96)
    # the exact result follows from the whole filtered volume
    exact = display.settle_update(services, sid, meta, pointer, pending, 0, 8, **VIEW,
                                  base=display.base_key(meta, 0, 8))
    assert "labelled region" in exact[1] and "preview" not in exact[1]
    assert _filter_cached(services, sid, meta, pointer)


def test_a_tall_volume_is_previewed_on_the_slab_around_the_shown_slice(services):
    """Slices too large for 9 of them (512×512×128: 2.4 M voxels, whose preview was the
    whole volume's reduced grid, 0.8-1.9 s) keep fewer slices around the shown one."""
    from pipeline import randomwalker as rw

    assert rw.slab_half_width((256, 256, 256), 0) == 4
    assert rw.slab_half_width((128, 512, 512), 0) == 0  # the shown slice alone
    assert rw.slab_half_width((512, 128, 512), 1) == 0
    assert rw.slab_half_width((128, 512, 512), 1) == 4  # 128×512 slices: 9 of them
    assert rw.slab_half_width((8, 1024, 1024), 0) is None  # one slice above the limit
    # a slab of one slice says so
    from pipeline.compute import PreviewResult
    alone = PreviewResult(filtered=None, mask=np.zeros((4, 4), bool), seconds=0.02,
                          slab=(0, 64, 64, 64))
    text = display.preview_summary(alone, {"postprocess": []})
    assert "live preview (this slice solved alone, 0.020 s)" in text, text
    sid = new_session_id()
    vol = _blobs((20, 420, 420))  # 9 slices: 1.59 M voxels, above the old 1.5 M too
    meta = _upload(services, sid, vol, "tall.tif")
    pointer, out = _first_overlay(services, sid, meta, 0, 10)
    assert "live preview (slices 9–11 around this one" in out[1], out[1]
    from callbacks.params import current_recipe

    recipe = current_recipe(pointer)
    quick = services.preview(sid, meta["id"], recipe, (), shown=(0, 10))
    assert quick.quick and quick.slab == (0, 10, 9, 11)
    # once the filtered volume is cached (the filter callback ran): the same slab, the same
    # slice (the filter is none: the image's values; the same standard deviation)
    services.filtered(sid, meta["id"], recipe)
    usual = services.preview(sid, meta["id"], recipe, (), shown=(0, 10))
    assert not usual.quick and usual.slab == quick.slab
    assert np.array_equal(usual.mask, quick.mask) and usual.mask.shape == (420, 420)


def test_a_large_new_images_reduced_grid_preview_needs_no_filter_stage(services):
    """2D: the first overlay of a large new image is the reduced grid's preview made from
    the image's block means (the filter none: the very preview made from the filtered
    image), before the filter stage."""
    from callbacks.params import current_recipe

    sid = new_session_id()
    rng = np.random.default_rng(2)
    big = rng.normal(90, 15, (800, 700)).clip(0, 255).astype(np.uint8)
    big[200:600, 150:500] += 90
    meta = _upload(services, sid, big, "big.tif")
    pointer, out = _first_overlay(services, sid, meta, 0, 0)
    assert "live preview (at 1/5 resolution" in out[1], out[1]
    assert not _filter_cached(services, sid, meta, pointer)
    recipe = current_recipe(pointer)
    quick = services.preview(sid, meta["id"], recipe, ())
    assert quick.quick and quick.filtered is None
    services.filtered(sid, meta["id"], recipe)  # the filter stage, as its callback runs it
    usual = services.preview(sid, meta["id"], recipe, ())
    assert not usual.quick and usual.factor == quick.factor == 5
    assert np.array_equal(usual.mask, quick.mask)


def test_with_a_filter_the_reduced_grid_is_filtered_and_says_so(services):
    from callbacks.params import current_recipe
    from pipeline import recipe as recipes

    sid = new_session_id()
    rng = np.random.default_rng(3)
    big = rng.normal(90, 15, (800, 700)).clip(0, 255).astype(np.uint8)
    big[200:600, 150:500] += 90
    meta = _upload(services, sid, big, "big.tif")
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    recipe = recipes.validate({**current_recipe(pointer),
                               "filter": {"name": "gaussian", "params": {"sigma": 2.0}}})
    found = services.preview(sid, meta["id"], recipe, ())
    assert found.quick and found.filtered_reduced and found.factor == 5
    assert services.cached_filtered(sid, meta["id"], recipe) is None
    # about the object the exact solve finds
    frac = found.mask.mean()
    assert 0.2 < frac < 0.35, frac
    html = display.preview_panel(services, sid, meta, recipe, 0, 0, "contour", True,
                                 "labels", ())
    assert "filtered at that resolution" in html[1]


def test_a_volumes_slab_with_a_local_filter_is_the_whole_filters_slab(services):
    """A local filter (Gaussian) on the slab and its reach gives the whole volume's filter
    values on the slab: the quick slab preview is the slab preview of the filtered volume."""
    from callbacks.params import current_recipe
    from pipeline import recipe as recipes

    sid = new_session_id()
    meta = _upload(services, sid, _blobs((16, 80, 80), seed=4), "vol.tif")
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    recipe = recipes.validate({**current_recipe(pointer),
                               "filter": {"name": "gaussian", "params": {"sigma": 1.0}}})
    quick = services.preview(sid, meta["id"], recipe, (), shown=(0, 7))
    assert quick.quick and quick.slab == (0, 7, 3, 11)
    filtered = services.filtered(sid, meta["id"], recipe)
    np.testing.assert_allclose(quick.shown, filtered[7])
    usual = services.preview(sid, meta["id"], recipe, (), shown=(0, 7))
    assert not usual.quick
    # the slab's own standard deviation instead of the volume's: nearly every pixel agrees
    assert (usual.mask == quick.mask).mean() > 0.99


# --------------------------------------------------------------------------- with the load


def _jpeg_size(uri):
    assert uri.startswith("data:image/jpeg;base64,")
    return _png_size(uri)


def test_the_load_answers_the_first_view_of_an_image_it_shows_whole(services, monkeypatch):
    """The loader's callback answers the segmentation graph's first view with the new
    metadata (no request behind the load): at most 512² pixels, here the display level
    itself — the base the Image panel shows — and the metadata says it was sent, so that
    the first-view callback its metadata fires sends nothing."""
    sid = new_session_id()
    loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None)
    meta = loading.load_image(services, sid, ids.SAMPLE, "camera", None, None, None).meta
    _no_compute(services, monkeypatch)
    assert not display.first_view_sent(meta)
    first = loading.with_first_view(services, sid, meta, 0)
    assert first["key"] == display.base_key(meta, 0, 0) == meta["first_view"]
    assert display.first_view_sent(meta)
    assert first["factor"] == 1 and first["summary"] == display.FIRST_VIEW_SUMMARY
    data = first["figure"]["data"]
    assert data[0]["source"] == \
        display.image_panel(services, sid, meta, 0, 0).to_plotly_json()["data"][0]["source"]
    assert all(t["source"] == display.blank_uri() for t in data[1:])
    # the first view the new metadata fires would be the same; the load's is drawn already
    assert display.first_view(services, sid, meta, 0)["key"] == first["key"]


def test_nothing_loaded_answers_no_first_view(services):
    sid = new_session_id()
    assert loading.with_first_view(services, sid, no_update, 0) is no_update
    assert loading.with_first_view(services, sid, None, 0) is no_update
    # a load that failed: no first view, the page keeps its image
    out = loading.load_outputs(services, sid, ids.UPLOAD, None, "data:x;base64,AAAA", "x.tif",
                               None)
    assert out[0] is no_update
    assert loading.with_first_view(services, sid, out[0], 0) is no_update


def test_a_large_images_first_view_with_the_load_is_a_labelled_preview(services, monkeypatch):
    """Above 512² pixels at its display level, the load's first view is a preview on coarser
    blocks (their means, a JPEG of at most 512² pixels) in the image's pixel axes, labelled
    with its resolution; its key is never a display-level base, so the segmentation's first
    answer onto it is a whole figure with the display level's base."""
    sid = new_session_id()
    rng = np.random.default_rng(3)
    big = rng.normal(90, 15, (1100, 1000)).clip(0, 255).astype(np.uint8)
    big[300:800, 200:700] += 90
    meta = _upload(services, sid, big, "big.tif")
    assert display.display_of(meta, 0) == 1  # 1.1 M pixels: shown whole
    with monkeypatch.context() as m:
        _no_compute(services, m)
        first = loading.with_first_view(services, sid, meta, 0)
    assert first["factor"] == 3  # 367 × 334 blocks ≤ 512²
    key = display.base_key(meta, 0, 0)
    assert first["key"] == display.preview_key(key, 3) != key
    assert meta["first_view"] == first["key"] and display.first_view_sent(meta)
    assert "preview (1/3 resolution)" in first["summary"] and "computing" in first["summary"]
    data = first["figure"]["data"]
    assert _jpeg_size(data[0]["source"]) == (334, 367)
    for trace in data:
        assert (trace["x0"], trace["y0"], trace["dx"], trace["dy"]) == (1.0, 1.0, 3, 3)
    assert all(t["source"] == display.blank_uri() for t in data[1:])
    assert first["figure"]["layout"]["uirevision"] == display.uirevision(meta, 0)
    # the pixels: the blocks' means, scaled for display (JPEG: within a few levels)
    from pipeline import render

    want = render.to_uint8(render.reduce_mean(big, 3), *meta["display"]).astype(float)
    got = np.asarray(Image.open(_io.BytesIO(base64.b64decode(
        data[0]["source"].split(",", 1)[1]))).convert("L"), dtype=float)
    assert np.abs(got - want).mean() < 6 and np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9
    # the segmentation's first answer onto the preview: the whole figure, at the display
    # level, with its overlays
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    out = display.segmentation_update(services, sid, meta, pointer, 0, 0, **VIEW,
                                      base=first["key"], allow_preview=True)
    fig, *_, new_base = out
    assert not isinstance(fig, Patch) and new_base == key
    whole = fig.to_plotly_json()["data"]
    assert whole[0]["source"] == \
        display.image_panel(services, sid, meta, 0, 0).to_plotly_json()["data"][0]["source"]
    assert whole[2]["source"] != display.blank_uri()


def test_a_large_volume_slices_first_view_with_the_load(services):
    sid = new_session_id()
    vol = (np.random.default_rng(4).random((6, 600, 520)) * 250).astype(np.uint8)
    meta = _upload(services, sid, vol, "vol.tif")
    assert meta["ndim"] == 3
    first = loading.with_first_view(services, sid, meta, 0)
    assert first["factor"] == 2
    assert first["key"] == display.preview_key(f"{meta['id']}:0:3", 2)
    assert _jpeg_size(first["figure"]["data"][0]["source"]) == (260, 300)
    # another slicing axis: its own slice (600 × 6 pixels: shown whole)
    first = loading.with_first_view(services, sid, dict(meta), 2)
    assert first["factor"] == 1 and first["key"] == f"{meta['id']}:2:260"


def test_the_load_callback_answers_the_first_view_and_the_metadata_callback_skips_it(
        services):
    """Wired: the loader's callback has the first-view store as an output (the first
    answer of the page's load too); the first-view callback fired by new metadata is a
    duplicate output that sends nothing for metadata a load answered."""
    from dash.exceptions import PreventUpdate

    from app import create_app

    app = create_app(services.config)
    loaders = [k for k, v in app.callback_map.items()
               if "image-store.data" in k and f"{ids.SEG_FIRST_VIEW}.data" in k
               and not k.startswith(ids.SEG_FIRST_VIEW)]
    assert len(loaders) == 1
    states = {s["id"] for s in app.callback_map[loaders[0]]["state"]}
    # what the first overlay with the load needs (display.first_preview)
    assert {ids.SLICE_AXIS, ids.HISTORY, ids.OVERLAY_STYLE, ids.SHOW_MARKERS} <= states
    own = [k for k in app.callback_map if k.startswith(f"{ids.SEG_FIRST_VIEW}.data@")]
    assert len(own) == 1
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "camera", None, None, None).meta
    fn = app.callback_map[own[0]]["callback"]
    plain = fn.__wrapped__  # the body, without Dash's request context
    first = plain(meta, 0, sid)  # a channel's or a crop's new metadata: answered here
    assert first["key"] == display.base_key(meta, 0, 0)
    loading.with_first_view(services, sid, meta, 0)
    with pytest.raises(PreventUpdate):  # a load's: answered with the load
        plain(meta, 0, sid)


# --- the first overlay with the load --------------------------------------------------------

def _big(seed=3):
    rng = np.random.default_rng(seed)
    big = rng.normal(90, 15, (1100, 1000)).clip(0, 255).astype(np.uint8)
    big[300:800, 200:700] += 90
    return big


def _no_stage_but_the_preview(services, monkeypatch):
    """Every stage but the preview raises: the load's first overlay needs no filter stage,
    segmentation or histogram."""
    def refuse(*_a, **_k):
        raise AssertionError("the load computed a pipeline stage")

    for name in ("run", "filtered", "filter_run", "mask", "histogram", "thresholds"):
        monkeypatch.setattr(type(services), name, refuse)


def test_a_large_images_first_view_with_the_load_brings_its_first_overlay(services,
                                                                         monkeypatch):
    """Given the page's overlay options, the load's first view of a large image comes with
    its first overlay: the reduced grid's preview of the recipe its history starts from,
    made from the image itself (no filter stage), drawn on the view's blocks and labelled."""
    from callbacks.params import current_recipe

    sid = new_session_id()
    big = _big()
    meta = _upload(services, sid, big, "big.tif")
    with monkeypatch.context() as m:
        _no_stage_but_the_preview(services, m)
        first = loading.with_first_view(services, sid, meta, 0, None, "contour", ["markers"])
    assert first["overlaid"] and first["factor"] == 3
    assert first["key"] == display.preview_key(display.base_key(meta, 0, 0), 3)
    summary = first["summary"]
    assert summary.startswith("new image, preview (1/3 resolution) · object: ")
    assert "live preview (at 1/6 resolution" in summary and "running" in summary
    data = first["figure"]["data"]
    blank = display.blank_uri()
    # the markers on the view's blocks, the preview on its own grid (1/6: 184 × 167)
    assert data[1]["source"] != blank and _png_size(data[1]["source"]) == (334, 367)
    assert (data[1]["dx"], data[1]["dy"]) == (3, 3)
    assert data[2]["source"] != blank and _png_size(data[2]["source"]) == (167, 184)
    assert (data[2]["dx"], data[2]["dy"]) == (6, 6)
    assert data[3]["source"] == blank or not data[3].get("visible", True)
    # the very preview the segmentation callback shows on its first answer
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    recipe = current_recipe(pointer)
    assert services.cached_filtered(sid, meta["id"], recipe) is None
    found = services.preview(sid, meta["id"], recipe, ())
    assert found.quick and found.factor == 6
    want = display.overlay_uris(None, found.mask.astype(np.int32), recipe, "contour", False,
                                None, factor=6, display=3)[1]
    assert data[2]["source"] == want
    # the object is where it is: the preview's mask covers the bright square
    assert 0.15 < found.mask.mean() < 0.35


def test_the_first_overlay_follows_the_recipe_the_new_history_starts_from(services):
    """The recipe is the one the history callback makes for the new image
    (``initial_history`` of the page's history): the previous image's filter is kept (the
    preview filtered on its grid, and says so); another method than the random walker has
    no first overlay; hidden markers are not drawn."""
    from callbacks.params import current_recipe, initial_history
    from pipeline import recipe as recipes

    sid = new_session_id()
    coins = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    before = current_recipe(initial_history(coins))
    gauss = recipes.validate({**before, "filter": {"name": "gaussian",
                                                   "params": {"sigma": 2.0}}})
    meta = _upload(services, sid, _big(4), "big.tif")
    history = {"image_id": coins["id"], "states": [gauss], "index": 0}
    first = loading.with_first_view(services, sid, dict(meta), 0, history, "fill", [])
    assert first["overlaid"] and "filtered at that resolution" in first["summary"]
    data = first["figure"]["data"]
    assert data[1]["source"] == display.blank_uri() and data[2]["source"] != display.blank_uri()
    other = next(n for n in display.SEGMENTERS if n != "random_walker")
    other_recipe = recipes.default_recipe(coins["vmin"], coins["vmax"])
    other_recipe["segmentation"] = {"name": other, "params": {}}
    other_recipe = recipes.validate(other_recipe)
    history = {"image_id": coins["id"], "states": [other_recipe], "index": 0}
    first = loading.with_first_view(services, sid, dict(meta), 0, history, "contour",
                                    ["markers"])
    assert not first["overlaid"]
    assert all(t["source"] == display.blank_uri() for t in first["figure"]["data"][1:])


def test_a_volumes_first_view_with_the_load_brings_its_slab_preview(services):
    """A volume's first overlay with the load: the shown slice solved on a thin slab around
    it (at most ``FIRST_SLAB_VOXELS``), from the image itself."""
    sid = new_session_id()
    rng = np.random.default_rng(6)
    vol = rng.normal(80, 12, (40, 120, 120)).clip(0, 255).astype(np.uint8)
    vol[:, 30:90, 30:90] += 100
    meta = _upload(services, sid, vol, "vol.tif")
    first = loading.with_first_view(services, sid, meta, 0, None, "contour", ["markers"])
    assert first["overlaid"] and first["factor"] == 1
    half = __import__("pipeline.randomwalker", fromlist=["x"]).slab_half_width(
        vol.shape, 0, max_voxels=display.FIRST_SLAB_VOXELS)
    assert f"slices {20 - half}–{20 + half} around this one" in first["summary"], \
        first["summary"]
    seg = first["figure"]["data"][2]["source"]
    assert seg != display.blank_uri() and _png_size(seg) == (120, 120)


def test_a_failed_or_small_first_overlay_leaves_the_first_view(services, monkeypatch):
    """The load never fails for its first overlay: a preview that raises leaves the first
    view as it was (empty overlays, its summary); an image small enough for its chain to be
    quick (coins) gets none."""
    sid = new_session_id()
    meta = _upload(services, sid, _big(5), "big.tif")

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(type(services), "preview", broken)
        first = loading.with_first_view(services, sid, meta, 0, None, "contour", ["markers"])
    assert not first["overlaid"] and "computing its segmentation" in first["summary"]
    assert all(t["source"] == display.blank_uri() for t in first["figure"]["data"][1:])
    coins = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    first = loading.with_first_view(services, sid, coins, 0, None, "contour", ["markers"])
    assert not first["overlaid"] and first["summary"] == display.FIRST_VIEW_SUMMARY


def test_the_loads_first_view_and_overlay_read_the_image_it_holds(services, monkeypatch,
                                                                  tmp_path):
    """The load keeps the image it read (``held``): its first view and first overlay read
    that array, not the file it has just stored (slow to map in right after the write)."""
    sid = new_session_id()
    vol = np.random.default_rng(7).normal(80, 12, (30, 100, 90)).clip(0, 255)
    vol[:, 20:70, 20:60] += 100
    vol = vol.astype(np.uint8)
    tifffile.imwrite(tmp_path / "data" / "vol.tif", vol)
    held = {}
    out = loading.loader_outputs(services, sid, ids.DATA_FILE, None, None, None, "vol.tif", 0,
                                 None, held=held)
    meta = out[0]
    assert meta["ndim"] == 3 and np.array_equal(held["array"], vol)
    assert np.array_equal(services.image(sid, meta["id"]), held["array"])
    with monkeypatch.context() as m:
        def refuse(*_a, **_k):
            raise AssertionError("read the stored image")

        m.setattr(type(services.store), "get_image", refuse)
        first = loading.with_first_view(services, sid, meta, 0, None, "contour", ["markers"],
                                        image=held["array"])
    assert first["overlaid"] and "around this one" in first["summary"]
    # the same view as from the store
    again = loading.with_first_view(services, sid, dict(meta), 0, None, "contour",
                                    ["markers"])
    assert again["figure"] == first["figure"]
    # nothing held when nothing is loaded
    held = {}
    loading.loader_outputs(services, sid, ids.DATA_FILE, None, None, None, "nope.tif", 0, None,
                           held=held)
    assert held.get("array") is None


def test_the_first_view_is_made_once_the_image_is_described_before_it_is_stored(
        services, tmp_path):
    """The loader makes the first view and its overlay as soon as the image is read and
    described (``on_described``), beside the store's write: made from the array the load
    holds, they need no stored image."""
    from concurrent.futures import ThreadPoolExecutor

    sid = new_session_id()
    tifffile.imwrite(tmp_path / "data" / "big.tif", _big(8))
    seen = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        def described(meta, array):
            seen["stored"] = services.store.has_image(sid, meta["id"])
            # made here, synchronously: before the image is stored
            seen["now"] = display.load_first_view(services, sid, dict(meta), 0, None,
                                                  "contour", ["markers"], image=array)
            seen["future"] = pool.submit(display.load_first_view, services, sid, meta, 0,
                                         None, "contour", ["markers"], image=array)

        held = {}
        out = loading.loader_outputs(services, sid, ids.DATA_FILE, None, None, None,
                                     "big.tif", 0, None, held=held, on_described=described)
        assert seen["stored"] is False  # described before the image was stored
        assert seen["now"]["overlaid"]
        first = loading.with_first_view(services, sid, out[0], 0, None, "contour",
                                        ["markers"], image=held["array"],
                                        made=seen["future"])
    assert first is seen["future"].result() and out[0]["first_view"] == first["key"]
    assert first["overlaid"] and "preview (1/3 resolution) · object:" in first["summary"]
    assert first["figure"] == seen["now"]["figure"]
    # no options, no preview started (a channel's or a crop's first view)
    assert display.start_first_preview(None, services, sid, out[0], 0, None, None, None) is None


def test_the_load_hashes_and_describes_an_image_at_once_as_one_after_the_other():
    """Issue 9: the content hash (the image's id) and the description run on two threads;
    the metadata is the one made one after the other."""
    from pipeline import io

    rng = np.random.default_rng(3)
    image = rng.integers(0, 4096, size=(6, 64, 48)).astype(np.uint16)
    loaded = io.LoadedImage(image, "stack.tif", ("a note",))
    meta = loading.hashed_meta(image, loaded)
    assert meta == loading.image_meta(image, loaded, io.content_hash(image))
    assert meta["id"] == io.content_hash(image)
    assert meta["slider"] == [float(image.min()), float(image.max())]
