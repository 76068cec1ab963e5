"""The undo history and the parameter controls (callbacks.params), called directly."""

import pytest
from dash.exceptions import PreventUpdate

from callbacks.params import (control_values, initial_history, next_state,
                              thresholds_from_click, thresholds_from_relayout)
from components import ids

META = {"id": "a" * 32, "min": 1.0, "max": 252.0, "step": 1.0, "vmin": 54, "vmax": 180}
CONTROLS = {"thresholds": [54, 180], "beta": 130, "mode": "cg_mg", "tol": 1e-3}


def _slider(history, vmin, vmax):
    return next_state(ids.THRESHOLDS, history, META, dict(CONTROLS, thresholds=[vmin, vmax]))


def test_new_image_starts_a_history_at_its_defaults():
    history, message = next_state(ids.IMAGE, None, META, CONTROLS)
    assert message == ""
    assert history["index"] == 0 and len(history["states"]) == 1
    assert history["states"][0]["vmin"] == 54 and history["states"][0]["vmax"] == 180


def test_no_image_no_update():
    with pytest.raises(PreventUpdate):
        next_state(ids.THRESHOLDS, None, None, CONTROLS)


def test_undo_redo_walk_back_to_the_first_state_and_forward():
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h, _ = _slider(h, 60, 180)
    h, _ = _slider(h, 60, 170)
    h, _ = next_state(ids.BETA, h, META, dict(CONTROLS, thresholds=[60, 170], beta=500))
    assert len(h["states"]) == 4
    for expected in ([60, 170, 130], [60, 180, 130], [54, 180, 130]):
        h, _ = next_state(ids.UNDO, h, META, CONTROLS)
        p = h["states"][h["index"]]
        assert [p["vmin"], p["vmax"], p["beta"]] == expected
    h, _ = next_state(ids.UNDO, h, META, CONTROLS)  # already at the first state
    assert h["index"] == 0
    assert control_values(h, META)["undo_disabled"]
    h, _ = next_state(ids.REDO, h, META, CONTROLS)
    assert h["states"][h["index"]]["vmin"] == 60
    # A new change after undo drops the redo tail.
    h, _ = _slider(h, 70, 180)
    assert len(h["states"]) == 3 and control_values(h, META)["redo_disabled"]


def test_same_values_do_not_grow_history():
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h2, _ = _slider(h, 54, 180)
    assert h2 is h


def test_new_image_keeps_solver_settings():
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h, _ = next_state(ids.MODE, h, META, dict(CONTROLS, mode="cg_j"))
    other = dict(META, id="b" * 32, vmin=10, vmax=20)
    h2, _ = next_state(ids.IMAGE, h, other, CONTROLS)
    assert h2["states"] == [dict(h2["states"][0], mode="cg_j")]
    assert h2["states"][0]["vmin"] == 10


@pytest.mark.parametrize("controls, message", [
    (dict(CONTROLS, beta=-5), "beta must be in"),
    (dict(CONTROLS, beta=None), "beta must be a number"),
    (dict(CONTROLS, tol=0.5), "tol must be in"),
])
def test_bad_solver_settings_are_refused_and_history_kept(controls, message):
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h2, msg = next_state(ids.BETA, h, META, controls)
    assert h2 is h
    assert message in msg
    # The controls are reset to the kept values.
    assert control_values(h2, META)["beta"] == 130


@pytest.mark.parametrize("pair, message", [
    ([0, 180], "No background marker"),
    ([54, 252], "No object marker"),
])
def test_thresholds_that_empty_a_marker_label_are_refused(pair, message):
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h2, msg = _slider(h, *pair)
    assert h2 is h and message in msg


def test_crossed_thresholds_from_the_histogram_are_refused():
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h2, msg = next_state(ids.HIST_GRAPH + ".relayoutData", h, META, CONTROLS,
                         relayout={"shapes[0].x0": 200, "shapes[0].x1": 200})
    assert h2 is h and "must be below vmax" in msg


def test_click_moves_the_nearest_threshold():
    p = {"vmin": 50, "vmax": 150}
    assert thresholds_from_click(p, {"points": [{"x": 60}]}) == (60, 150)
    assert thresholds_from_click(p, {"points": [{"x": 140}]}) == (50, 140)
    assert thresholds_from_click(p, {"points": []}) is None


def test_click_goes_through_history():
    h, _ = next_state(ids.IMAGE, None, META, CONTROLS)
    h, _ = next_state(ids.HIST_GRAPH + ".clickData", h, META, CONTROLS,
                      click_data={"points": [{"x": 99.6}]})
    assert h["states"][-1]["vmin"] == 100  # snapped to the slider step


def test_dragging_lines_and_ranges():
    p = {"vmin": 50, "vmax": 150}
    assert thresholds_from_relayout(p, {"shapes[0].x0": 40, "shapes[0].x1": 40}) == (40, 150)
    assert thresholds_from_relayout(p, {"shapes[1].x0": 160, "shapes[1].x1": 160}) == (50, 160)
    assert thresholds_from_relayout(p, {"shapes[2].x1": 45}) == (45, 150)
    assert thresholds_from_relayout(p, {"shapes[3].x0": 155}) == (50, 155)
    assert thresholds_from_relayout(p, {"xaxis.range[0]": 3}) is None
    assert thresholds_from_relayout(p, None) is None
