"""Issue 9, lab-sized data: a new image's first view and first overlay, fast at every size.

Callback bodies called directly, on a real store and cache in a temporary folder: the
segmentation graph's first view of a new image (its base, before any filtering, preview or
segmentation; ``display.image_update``), and what the segmentation callback sends onto it.
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
    fig, first = display.image_update(services, sid, camera, 0, 0, True)
    image_base = fig.to_plotly_json()["data"][0]["source"]
    assert first["key"] == display.base_key(camera, 0, 0)
    assert first["summary"] == display.FIRST_VIEW_SUMMARY and "computing" in first["summary"]
    data = first["figure"]["data"]
    assert len(data) == 4
    # the new image's base, as the Image panel draws it (a PNG, never a JSON array)
    assert data[0]["source"] == image_base and data[0]["source"].startswith(
        "data:image/png;base64,")
    assert _png_size(data[0]["source"]) == (512, 512)
    # no overlay yet: neither the old image's nor any other
    blank = display.blank_uri()
    assert data[1]["source"] == blank and data[2]["source"] == blank
    assert first["figure"]["layout"]["uirevision"] == display.uirevision(camera, 0)


def test_a_slice_change_draws_the_image_panel_only(services):
    sid = new_session_id()
    vol = (np.random.default_rng(0).random((6, 30, 40)) * 200).astype(np.uint8)
    meta = _upload(services, sid, vol, "vol.tif")
    fig, first = display.image_update(services, sid, meta, 0, 4, False)
    assert first is no_update and fig is not None
    fig, first = display.image_update(services, sid, meta, 0, 3, True)
    assert first["key"] == display.base_key(meta, 0, 3) == f"{meta['id']}:0:3"
    assert _png_size(first["figure"]["data"][0]["source"]) == (40, 30)


def test_a_large_image_first_view_is_its_display_level(services, monkeypatch):
    sid = new_session_id()
    big = (np.random.default_rng(1).random((1500, 1500)) * 60000).astype(np.uint16)
    meta = _upload(services, sid, big, "big.tif")
    _no_compute(services, monkeypatch)
    _, first = display.image_update(services, sid, meta, 0, 0, True)
    factor = display.display_of(meta, 0)
    assert factor == 2
    trace = first["figure"]["data"][0]
    assert _png_size(trace["source"]) == (750, 750)
    assert (trace["x0"], trace["dx"]) == ((factor - 1) / 2, factor)


def test_on_the_first_view_the_segmentation_sends_only_its_overlays(services):
    """The page shows the new image's base (SEG_BASE = the first view's key): the first
    overlay is a Patch of the overlays (the base is not encoded and sent again); a page
    that does not show it yet gets the whole figure, as before."""
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    _, first = display.image_update(services, sid, meta, 0, 0, True)
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
    _, first = display.image_update(services, sid, meta, 0, 0, True)
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
    display.image_update(services, sid, meta, 0, 0, True)
    display.image_update(services, sid, meta, 0, 0, True)
    assert calls.count((512, 512)) == 1


def test_another_session_never_reads_the_encoded_base(services):
    from pipeline.errors import InputError

    alice, bob = new_session_id(), new_session_id()
    meta = loading.load_image(services, alice, ids.SAMPLE, "camera", None, None, None).meta
    display.image_update(services, alice, meta, 0, 0, True)  # cached now
    with pytest.raises(InputError, match="no longer on the server"):
        display.image_update(services, bob, meta, 0, 0, True)
