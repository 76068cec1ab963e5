"""Try on a crop first (callbacks/crop.py): crop to the view, tune, apply to the whole image."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from app import create_app
from callbacks import crop, loading
from callbacks.params import current_recipe, load_history, recipe_action
from components import ids
from pipeline.config import Config
from pipeline.store import new_session_id


@pytest.fixture
def page(tmp_path):
    app = create_app(Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data"))
    services = app._pipex_services
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    return services, sid, meta, pointer


def _move(services, sid, meta, pointer, vmin, vmax):
    pointer, full, message = recipe_action(services, sid, ids.THRESHOLDS, pointer, meta,
                                           {"thresholds": [vmin, vmax]})
    assert not message, message
    return pointer


def test_tune_on_a_crop_then_apply_the_recipe_to_the_whole_image(page):
    services, sid, meta, pointer = page
    whole = services.store.get_image(sid, meta["id"])
    # the view: rows 50-200, columns 100-251 of coins
    outcome = crop.crop_to_view(services, sid, meta, {"x": [100.2, 250.7], "y": [200, 50]})
    new = outcome.meta
    assert new is not None, outcome.message
    assert new["shape"] == [151, 152] and new["parent"] == {"id": meta["id"],
                                                             "name": meta["name"]}
    assert "crop (rows 50–200, columns 100–251)" in new["name"]
    np.testing.assert_array_equal(services.store.get_image(sid, new["id"]),
                                  whole[50:201, 100:252])
    # the crop's history starts from the recipe as it was, thresholds included
    before = current_recipe(load_history(services.store, sid, pointer))
    crop_pointer, _, _ = recipe_action(services, sid, ids.IMAGE, pointer, new, {})
    on_crop = current_recipe(load_history(services.store, sid, crop_pointer))
    assert on_crop["markers"] == before["markers"]
    # tuned on the crop ...
    m = on_crop["markers"]
    crop_pointer = _move(services, sid, new, crop_pointer, m["vmin"] + 3, m["vmax"] - 7)
    tuned = current_recipe(load_history(services.store, sid, crop_pointer))
    # ... and applied to the whole image: its recipe is the tuned one
    back = crop.apply_to_whole(services, sid, new)
    assert back.meta["id"] == meta["id"] and back.meta["keep_markers"]
    whole_pointer, _, _ = recipe_action(services, sid, ids.IMAGE, crop_pointer, back.meta, {})
    applied = current_recipe(load_history(services.store, sid, whole_pointer))
    assert applied["markers"] == {"vmin": m["vmin"] + 3, "vmax": m["vmax"] - 7}
    assert applied == tuned
    # the session shows the whole image again (the fast path reads what it shows)
    assert services.store.is_current(sid, meta["id"], whole_pointer["rev"])


def test_a_crop_of_a_crop_applies_to_the_whole_image(page):
    services, sid, meta, _ = page
    first = crop.crop_to_view(services, sid, meta, {"x": [0, 200], "y": [0, 150]}).meta
    second = crop.crop_to_view(services, sid, first, {"x": [10, 100], "y": [10, 100]}).meta
    assert second["parent"]["id"] == meta["id"]
    assert crop.apply_to_whole(services, sid, second).meta["id"] == meta["id"]


@pytest.mark.parametrize("request_, match", [
    ({"x": [-0.5, 383.5], "y": [302.5, -0.5]}, "the view shows the whole image"),
    ({"x": [10, 12], "y": [10, 100]}, "zoom to a region of at least 8"),
    ({"x": ["a", 3], "y": [0, 10]}, "x_range must be two numbers"),
])
def test_a_view_that_is_not_a_crop_is_refused_with_a_message(page, request_, match):
    services, sid, meta, _ = page
    outcome = crop.crop_to_view(services, sid, meta, request_)
    assert outcome.meta is None and match in outcome.message
    image, info, message = crop.outputs_of(outcome)
    assert image is crop.no_update and info is crop.no_update  # the page keeps its image
    assert "Could not crop" in str(message.to_plotly_json())


def test_apply_says_why_when_the_whole_image_is_gone_or_there_is_none(page):
    services, sid, meta, _ = page
    outcome = crop.apply_to_whole(services, sid, meta)
    assert outcome.meta is None and "not a crop" in outcome.message
    new = crop.crop_to_view(services, sid, meta, {"x": [0, 200], "y": [0, 150]}).meta
    gone = copy.deepcopy(new)
    gone["parent"]["id"] = "0" * 32
    outcome = crop.apply_to_whole(services, sid, gone)
    assert outcome.meta is None and "no longer on the server: load it again" in outcome.message
