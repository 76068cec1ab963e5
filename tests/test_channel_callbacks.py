"""The Channel menu (callbacks.channels) and the split step through the page's callbacks,
called directly on a real store and cache in a temporary folder."""

from __future__ import annotations

import base64
import io as _io

import numpy as np
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate
from PIL import Image

from callbacks import channels, loading
from callbacks.params import current_recipe, next_state, recipe_action
from callbacks.services import Services
from components import ids
from pipeline import recipe as R
from pipeline.config import Config
from pipeline.store import new_session_id


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=4,
                 max_pixels=4_000_000)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _colour_png():
    """Red disks on a green background (uint8 RGB)."""
    yy, xx = np.indices((90, 120))
    disks = np.zeros((90, 120), dtype=bool)
    for cy, cx in ((30, 30), (30, 86), (66, 58)):
        disks |= (yy - cy) ** 2 + (xx - cx) ** 2 < 13 ** 2
    rgb = np.empty((90, 120, 3), dtype=np.uint8)
    rgb[..., 0] = np.where(disks, 220, 30)
    rgb[..., 1] = np.where(disks, 50, 140)
    rgb[..., 2] = 70
    rgb += np.random.default_rng(2).integers(0, 10, rgb.shape, dtype=np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue(), rgb


def _load(services, sid, raw, name="colour.png"):
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    return loading.load_image(services, sid, ids.UPLOAD, None, url, name, None)


def test_a_colour_upload_offers_its_channels_and_a_gray_one_does_not(services):
    sid = new_session_id()
    raw, rgb = _colour_png()
    meta = _load(services, sid, raw).meta
    assert meta["channels"] == ["red", "green", "blue"] and "channel" not in meta
    stored = services.store.get_image(sid, meta["channels_id"])
    np.testing.assert_array_equal(stored, rgb)
    style, value, weights_style, _ = channels.controls_of(meta)
    assert style == {} and value == "luminance" and weights_style == {"display": "none"}
    gray = loading.load_image(services, sid, None, "coins", None, None, None).meta
    assert "channels" not in gray
    assert channels.controls_of(gray)[0] == {"display": "none"}


def test_choosing_a_channel_makes_it_the_image_and_the_recipe_says_so(services):
    sid = new_session_id()
    raw, rgb = _colour_png()
    lum = _load(services, sid, raw).meta
    history = recipe_action(services, sid, ids.IMAGE, None, lum, {})[0]
    # the page had split touching objects on: the new image keeps it
    history = recipe_action(services, sid, ids.POST_OPS, history, lum, {
        "post_ops": ["split_touching"],
        "post": {"label": 1, "split_touching": {"min_distance": 5, "sigma": 0}}})[0]

    image, info, message, row = channels.choose_outputs(services, sid, lum, "red", {})
    assert image["dtype"] == "uint8" and image["channel"] == {"name": "channel",
                                                              "params": {"index": 0}}
    assert image["source"] == lum["id"] and image["id"] != lum["id"]
    assert image["max"] > 200 and image["scale"] == 255.0  # the red channel's own range
    assert "red channel" in image["name"] and row == {"display": "none"}
    np.testing.assert_array_equal(services.store.get_image(sid, image["id"]), rgb[..., 0])
    assert services.store.is_current(sid, image["id"])

    # the page's recipe callback starts the new image's history: the image stage is the red
    # channel, the other steps are kept, the thresholds are the channel's
    pointer, full, msg = recipe_action(services, sid, ids.IMAGE, history, image, {})
    recipe = current_recipe(full)
    assert msg == "" and recipe["image"] == image["channel"]
    assert [op["name"] for op in recipe["postprocess"]] == ["label", "split_touching"]
    assert recipe["markers"] == {"vmin": image["vmin"], "vmax": image["vmax"]}
    assert recipe["segmentation"]["params"]["intensity_scale"] == 255.0

    # the app's cached result is the CLI's run of that recipe on the file
    loaded_labels = services.run(sid, image["id"], recipe).labels
    from pipeline.io import read_image_bytes
    loaded = read_image_bytes(raw, "colour.png", max_bytes=2**22, max_pixels=2**22)
    expected = R.run(loaded.array, recipe, channels=loaded.channels)
    np.testing.assert_array_equal(loaded_labels, expected.labels)
    assert len(np.unique(expected.labels[expected.labels > 0])) == 3

    # back to the luminance: the loaded image itself, as its own metadata
    back = channels.choose_outputs(services, sid, image, "luminance", {})[0]
    assert back == lum


def test_weighted_channels_and_their_inputs(services):
    sid = new_session_id()
    raw, _ = _colour_png()
    lum = _load(services, sid, raw).meta
    weights = {"red": 1.0, "green": -1.0, "blue": 0.0}
    image = channels.choose_outputs(services, sid, lum, "weighted", weights)[0]
    assert image["dtype"] == "float64"
    assert image["channel"] == {"name": "weighted", "params": weights}
    assert channels.controls_of(image) == ({}, "weighted", {}, [1.0, -1.0, 0.0])
    # the same weights again (the inputs set from the image): nothing to do
    with pytest.raises(PreventUpdate):
        channels.choose_outputs(services, sid, image, "weighted", weights, weights_changed=True)
    # a weight typed while another choice is shown: nothing either
    with pytest.raises(PreventUpdate):
        channels.choose_outputs(services, sid, lum, "luminance", weights, weights_changed=True)
    # all-zero weights: a constant image, refused with a message; the page keeps its image
    out = channels.choose_outputs(services, sid, image, "weighted",
                                  {"red": 0, "green": 0, "blue": 0}, weights_changed=True)
    assert out[0] is no_update and "value 0 everywhere" in out[2].children
    out = channels.choose_outputs(services, sid, image, "weighted",
                                  {"red": None, "green": 0, "blue": 0}, weights_changed=True)
    assert out[0] is no_update and "Channel weights" in out[2].children


def test_a_recipe_for_another_channel_is_refused_with_what_to_do(services):
    sid = new_session_id()
    raw, _ = _colour_png()
    lum = _load(services, sid, raw).meta
    green = channels.choose_outputs(services, sid, lum, "green", {})[0]
    history = next_state(ids.IMAGE, None, green, {})[0]
    text = R.dumps(current_recipe(history))
    # loaded on the luminance: refused, saying which channel to choose
    h = next_state(ids.IMAGE, None, lum, {})[0]
    h2, message = next_state(ids.LOAD_RECIPE, h, lum, {"recipe_text": text})
    assert h2 is h and "green channel in the Channel menu" in message
    # on a gray image: no channel to choose
    coins = loading.load_image(services, sid, None, "coins", None, None, None).meta
    h = next_state(ids.IMAGE, None, coins, {})[0]
    assert "has no colour channels" in next_state(ids.LOAD_RECIPE, h, coins,
                                                  {"recipe_text": text})[1]
    # on the green channel itself: accepted
    h = next_state(ids.IMAGE, None, green, {})[0]
    h3, message = next_state(ids.LOAD_RECIPE, h, green, {"recipe_text": text})
    assert message == "" and current_recipe(h3)["image"]["params"]["index"] == 1


def test_no_channel_menu_work_on_a_gray_image(services):
    sid = new_session_id()
    coins = loading.load_image(services, sid, None, "coins", None, None, None).meta
    with pytest.raises(PreventUpdate):
        channels.choose_outputs(services, sid, coins, "red", {})
    assert channels.choose_channel(services, sid, coins, "red").meta is None
