"""The recipe history and the controls (callbacks.params), called directly."""

import json

import pytest
from dash.exceptions import PreventUpdate

from callbacks.params import control_values, next_state, param_values, postprocess_from_controls
from components import ids

META = {"id": "a" * 32, "min": 1.0, "max": 252.0, "step": 1.0, "vmin": 83, "vmax": 131}


def _start():
    return next_state(ids.IMAGE, None, META, {})[0]


def _slider(history, vmin, vmax):
    return next_state(ids.THRESHOLDS, history, META, {"thresholds": [vmin, vmax]})


def _recipe(history):
    return history["states"][history["index"]]


def test_new_image_starts_a_history_at_its_defaults():
    h = _start()
    assert h["index"] == 0 and len(h["states"]) == 1
    r = _recipe(h)
    assert r["markers"] == {"vmin": 83, "vmax": 131}
    assert r["filter"]["name"] == "none" and r["segmentation"]["name"] == "random_walker"
    assert [op["name"] for op in r["postprocess"]] == ["label"]


def test_no_image_no_update():
    with pytest.raises(PreventUpdate):
        next_state(ids.THRESHOLDS, None, None, {})


def test_undo_redo_cover_every_step_and_walk_back_to_the_first_state():
    h = _start()
    h, _ = _slider(h, 90, 131)
    h, _ = next_state(ids.FILTER_METHOD, h, META, {"filter_method": "gaussian"})
    h, m = next_state({"type": ids.PARAM, "stage": "filter", "method": "gaussian",
                       "name": "sigma"}, h, META, {"params": {"filter": {"sigma": 2.5}}})
    assert m == ""
    h, _ = next_state(ids.POST_OPS, h, META, {"post_ops": ["fill_holes"],
                                              "post": {"label": 1}})
    assert len(h["states"]) == 5
    assert _recipe(h)["filter"] == {"name": "gaussian", "params": {"sigma": 2.5}}
    expected_back = [["label"], ["label"], ["label"], ["label"]]
    names = []
    for _ in range(4):
        h, _ = next_state(ids.UNDO, h, META, {})
        names.append([op["name"] for op in _recipe(h)["postprocess"]])
    assert names == expected_back
    assert _recipe(h)["markers"]["vmin"] == 83 and _recipe(h)["filter"]["name"] == "none"
    assert control_values(h, META)["undo_disabled"]
    h, _ = next_state(ids.UNDO, h, META, {})  # already at the first state
    assert h["index"] == 0
    h, _ = next_state(ids.REDO, h, META, {})
    assert _recipe(h)["markers"]["vmin"] == 90
    h, _ = _slider(h, 95, 131)  # a new change after undo drops the redo tail
    assert len(h["states"]) == 3 and control_values(h, META)["redo_disabled"]


def test_same_values_do_not_grow_history():
    h = _start()
    h2, _ = _slider(h, 83, 131)
    assert h2 is h


def test_new_image_keeps_the_other_steps():
    h = _start()
    h, _ = next_state(ids.SEG_METHOD, h, META, {"seg_method": "watershed"})
    other = dict(META, id="b" * 32, vmin=10, vmax=20)
    h2, _ = next_state(ids.IMAGE, h, other, {})
    assert len(h2["states"]) == 1
    assert _recipe(h2)["segmentation"]["name"] == "watershed"
    assert _recipe(h2)["markers"] == {"vmin": 10, "vmax": 20}


@pytest.mark.parametrize("stage, method, params, message", [
    ("segmentation", "random_walker", {"beta": -5}, "beta"),
    ("segmentation", "random_walker", {"beta": None}, "beta"),
    ("segmentation", "random_walker", {"tol": 0.5}, "tol"),
])
def test_bad_parameters_are_refused_and_history_kept(stage, method, params, message):
    h = _start()
    pid = {"type": ids.PARAM, "stage": stage, "method": method, "name": list(params)[0]}
    h2, msg = next_state(pid, h, META, {"params": {stage: params}})
    assert h2 is h
    assert message in msg


def test_negative_sigma_is_refused():
    h = _start()
    h, _ = next_state(ids.FILTER_METHOD, h, META, {"filter_method": "gaussian"})
    pid = {"type": ids.PARAM, "stage": "filter", "method": "gaussian", "name": "sigma"}
    h2, msg = next_state(pid, h, META, {"params": {"filter": {"sigma": -1}}})
    assert h2 is h and "sigma" in msg


@pytest.mark.parametrize("pair, message", [
    ([0, 131], "No background marker"),
    ([83, 252], "No object marker"),
])
def test_thresholds_that_empty_a_marker_label_are_refused(pair, message):
    h = _start()
    h2, msg = _slider(h, *pair)
    assert h2 is h and message in msg


def test_crossed_thresholds_are_refused():
    # a histogram line dragged past the other one sets the slider to a crossed pair
    h = _start()
    h2, msg = _slider(h, 200, 131)
    assert h2 is h and "vmin" in msg


def test_adopting_a_threshold_from_the_gallery():
    h = _start()
    trigger = {"type": ids.ADOPT, "method": "otsu", "as": "vmax", "value": 107.5}
    h, msg = next_state(trigger, h, META, {})
    assert msg == "" and _recipe(h)["markers"] == {"vmin": 83, "vmax": 107.5}


def test_loading_a_recipe_and_refusing_a_bad_one():
    from pipeline import recipe as recipes

    h = _start()
    other = recipes.default_recipe(70, 140)
    h, msg = next_state(ids.LOAD_RECIPE, h, META, {"recipe_text": recipes.dumps(other)})
    assert msg == "" and _recipe(h)["markers"] == {"vmin": 70, "vmax": 140}
    h2, msg = next_state(ids.LOAD_RECIPE, h, META, {"recipe_text": "{not json"})
    assert h2 is h and "JSON" in msg
    bad = dict(other, version=99)
    h3, msg = next_state(ids.LOAD_RECIPE, h, META, {"recipe_text": json.dumps(bad)})
    assert h3 is h and "version" in msg
    # a recipe tuned on another image series: its steps, not its series (the loader's)
    h4, msg = next_state(ids.LOAD_RECIPE, h, META,
                         {"recipe_text": recipes.dumps(recipes.with_series(other, 2))})
    assert msg == "" and "input" not in _recipe(h4) and _recipe(h4)["markers"]["vmin"] == 70


def test_adopting_a_sweep_cell():
    from pipeline import recipe as recipes

    h = _start()
    cell = recipes.default_recipe(60, 150)
    h, _ = next_state({"type": ids.SWEEP_ADOPT, "index": 1}, h, META,
                      {"sweep": [{"recipe": recipes.default_recipe(61, 150)}, {"recipe": cell}]})
    assert _recipe(h)["markers"] == {"vmin": 60, "vmax": 150}


def test_param_values_fill_only_the_current_methods_inputs():
    h = _start()
    ids_on_page = [{"type": ids.PARAM, "stage": "segmentation", "method": "random_walker",
                    "name": "beta"},
                   {"type": ids.PARAM, "stage": "filter", "method": "gaussian", "name": "sigma"}]
    values = param_values(h, ids_on_page)
    assert values[0] == 130
    assert values[1] is not None and not isinstance(values[1], (int, float))  # no_update


def test_postprocess_order_is_the_pipeline_order():
    ops = postprocess_from_controls(["clear_border", "closing", "remove_small_objects"],
                                    {"closing": 2, "remove_small_objects": 30, "label": 2})
    assert [o["name"] for o in ops] == ["closing", "label", "remove_small_objects",
                                        "clear_border"]
    assert ops[0]["params"] == {"radius": 2} and ops[1]["params"] == {"connectivity": 2}


def test_a_snapped_pair_goes_through_history():
    # a histogram click lands between slider steps: the recipe holds the snapped value
    h = _start()
    h, _ = _slider(h, 99.6, 131)
    assert _recipe(h)["markers"]["vmin"] == 100


def test_min_size_larger_than_the_image_is_refused():
    meta = dict(META, shape=[303, 384])
    h = next_state(ids.IMAGE, None, meta, {})[0]
    h2, msg = next_state(ids.POST_OPS, h, meta, {"post_ops": ["remove_small_objects"],
                                                 "post": {"label": 1,
                                                          "remove_small_objects": 10**6}})
    assert h2 is h and "larger than the image" in msg


def test_random_walker_gets_the_image_types_scale():
    meta = dict(META, scale=255.0)
    h = next_state(ids.IMAGE, None, meta, {})[0]
    assert _recipe(h)["segmentation"]["params"]["intensity_scale"] == 255.0
    h, _ = next_state(ids.SEG_METHOD, h, meta, {"seg_method": "watershed"})
    h, _ = next_state(ids.SEG_METHOD, h, meta, {"seg_method": "random_walker"})
    assert _recipe(h)["segmentation"]["params"]["intensity_scale"] == 255.0
    float_meta = dict(META, id="c" * 32, scale=1.0)
    h2 = next_state(ids.IMAGE, h, float_meta, {})[0]
    assert _recipe(h2)["segmentation"]["params"]["intensity_scale"] == 1.0


def test_a_volume_after_a_2d_image_keeps_no_2d_only_measurements():
    h = _start()
    props = _recipe(h)["measure"]["properties"]
    assert "perimeter" in props and "solidity" in props
    volume = dict(META, id="b" * 32, ndim=3, shape=[16, 32, 32])
    h3 = next_state(ids.IMAGE, h, volume, {})[0]
    kept = _recipe(h3)["measure"]["properties"]
    assert not {"perimeter", "eccentricity", "orientation", "solidity"} & set(kept)
    assert "area" in kept and "label" in kept


def test_split_touching_from_the_checklist_takes_its_inputs_and_the_label_connectivity():
    h = _start()
    controls = {"post_ops": ["remove_small_objects", "split_touching", "clear_border"],
                "post": {"label": 2, "remove_small_objects": 30,
                         "split_touching": {"min_distance": 7, "sigma": 1.5}}}
    h, message = next_state(ids.POST_OPS, h, META, controls)
    assert message == ""
    ops = _recipe(h)["postprocess"]
    assert [o["name"] for o in ops] == ["label", "remove_small_objects", "split_touching",
                                        "clear_border"]
    assert ops[2]["params"] == {"min_distance": 7, "sigma": 1.5, "connectivity": 2}
    v = control_values(h, META)
    assert v["post_ops"] == ["remove_small_objects", "split_touching", "clear_border"]
    assert (v["split_distance"], v["split_sigma"]) == (7, 1.5)
    # a new min distance typed in its box: one more state; a bad one is refused with a message
    h2, _ = next_state(ids.POST_SPLIT_DISTANCE, h, META, {
        **controls, "post": {**controls["post"],
                             "split_touching": {"min_distance": 12, "sigma": 1.5}}})
    assert len(h2["states"]) == 3 and _recipe(h2)["postprocess"][2]["params"]["min_distance"] == 12
    h3, message = next_state(ids.POST_SPLIT_DISTANCE, h2, META, {
        **controls, "post": {**controls["post"],
                             "split_touching": {"min_distance": 0, "sigma": 1.5}}})
    assert h3 is h2 and "min_distance must be at least 1" in message


# --- the random walker's intensity scale: information, not a control (issue 10 item 9) ------

def test_the_segmentation_form_has_no_intensity_scale_input():
    from components.forms import param_form
    from pipeline.segmentation import SEGMENTERS

    rows = param_form("segmentation", SEGMENTERS["random_walker"], {"intensity_scale": 255.0})
    names = [row.children[1].id["name"] for row in rows]
    assert "intensity_scale" not in names and {"beta", "mode", "tol"} <= set(names)


def test_the_panel_shows_the_intensity_scale_as_information():
    from components.panels import binarization_panel, intensity_info
    from pipeline.segmentation import SEGMENTERS

    info = intensity_info()
    assert info.id == ids.INTENSITY_INFO and type(info).__name__ == "Details"
    summary = info.children[0]
    assert summary.children[1].id == ids.INTENSITY_VALUE and "read-only" in str(summary)
    assert "img_as_float" in str(info.children[1]) and "exported script" in str(info.children[1])
    assert ids.INTENSITY_INFO in str(binarization_panel(SEGMENTERS).to_plotly_json())


def test_a_parameter_change_keeps_the_image_types_intensity_scale():
    meta = dict(META, scale=255.0)
    h = next_state(ids.IMAGE, None, meta, {})[0]
    # the form sends its inputs: beta, mode and tol, no intensity scale
    pid = {"type": ids.PARAM, "stage": "segmentation", "method": "random_walker", "name": "beta"}
    h, msg = next_state(pid, h, meta, {"params": {"segmentation": {"beta": 90.0, "mode": "cg_mg",
                                                                   "tol": 1e-3}}})
    assert msg == "" and len(h["states"]) == 2
    params = _recipe(h)["segmentation"]["params"]
    assert params["beta"] == 90.0 and params["intensity_scale"] == 255.0


def test_a_loaded_recipe_keeps_its_intensity_scale_and_its_script_too():
    from pipeline import recipe as recipes
    from pipeline.script import to_script

    meta = dict(META, scale=255.0)
    h = next_state(ids.IMAGE, None, meta, {})[0]
    other = recipes.default_recipe(83, 131)
    other["segmentation"]["params"]["intensity_scale"] = 1.0  # made on a float image
    h, msg = next_state(ids.LOAD_RECIPE, h, meta, {"recipe_text": json.dumps(other)})
    assert msg == ""
    loaded = _recipe(h)
    assert loaded["segmentation"]["params"]["intensity_scale"] == 1.0  # reproducible as saved
    assert json.loads(recipes.dumps(loaded))["segmentation"]["params"]["intensity_scale"] == 1.0
    assert "fast_random_walker(filtered / 1.0," in to_script(loaded)
    own = _recipe(next_state(ids.IMAGE, None, meta, {})[0])
    assert "fast_random_walker(filtered / 255.0," in to_script(own)


def test_refused_thresholds_are_written_for_a_person():
    """Issue 10 item 3: 65,535 and 58,985 on a 16-bit image, not 65535 / 58985."""
    meta = dict(META, min=0.0, max=58985.0, dtype="uint16", vmin=8715, vmax=19811, scale=65535.0)
    h = next_state(ids.IMAGE, None, meta, {})[0]
    h2, msg = next_state(ids.THRESHOLDS, h, meta, {"thresholds": [8715, 65535]})
    assert h2 is h
    assert "no pixel is above vmax = 65,535 (the brightest pixel is 58,985)" in msg
