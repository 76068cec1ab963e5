"""The contract between a key press handled by the page and the callbacks it does not run.

A key press on a threshold handle, and the hand-off of a move's answer, set some props in
Dash's store without telling the callbacks that listen to them (assets/fastmove.js,
"Dash's store, quietly"): the page does what those callbacks would do for such a move. That
is true only of the listeners known when it was written. These tests list them: a new
callback listening to one of these props fails here, and whoever adds it checks the page's
shortcut (and updates the list).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app import create_app
from callbacks import visibility
from components import ids
from pipeline.config import Config

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@pytest.fixture(scope="module")
def callback_map(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quiet")
    app = create_app(Config(state_dir=tmp / "state", data_dir=tmp / "data"))
    return app.callback_map


def _listeners(callback_map, component, prop):
    """The outputs of every callback with `component.prop` as an Input."""
    return sorted(key for key, cb in callback_map.items()
                  if any(i["id"] == component and i["property"] == prop
                         for i in cb["inputs"]))


def _outputs_named(listeners):
    return sorted(re.sub(r"@[0-9a-f]+", "", key) for key in listeners)


def test_the_history_pointer_s_listeners_are_the_three_the_page_stands_in_for(callback_map):
    # drawnThresholds(): the router fires nothing for a drawn thresholds move, the context
    # mirror is kept by move(), the sweep's current cell is handed over normally while a
    # sweep's cells are shown
    outputs = _outputs_named(_listeners(callback_map, ids.HISTORY, "data"))
    assert len(outputs) == 3, outputs
    router = [o for o in outputs if ids.SEG_SIGNAL + ".data" in o]
    mirror = [o for o in outputs if o.strip(".") == ids.CLIENT_SINK + ".data"]
    cells = [o for o in outputs if ids.SWEEP_ADOPT in o]
    assert len(router) == len(mirror) == len(cells) == 1, outputs


def test_the_settled_signal_s_one_listener_is_the_panels_gate(callback_map):
    listeners = _listeners(callback_map, ids.SEG_SETTLED, "data")
    assert len(listeners) == 1, listeners
    # ...whose stores the hand-off sets itself (assets/visible.js, passOn)
    for store, _panel in visibility.GATES:
        assert store + ".data" in listeners[0]
    assert ids.VOLUME_SIGNAL + ".data" in listeners[0]


def test_the_slider_s_value_has_one_listener_the_gate(callback_map):
    # a key press sets value and drag_value quietly and does the gate's work itself
    for prop in ("value", "drag_value"):
        listeners = _listeners(callback_map, ids.THRESHOLDS, prop)
        assert len(listeners) == 1, (prop, listeners)
        assert ids.MOVE_REQUEST + ".data" in listeners[0]
        assert ids.THRESHOLDS_TEXT + ".children" in listeners[0]
    # the text under the slider, set quietly, has no listener
    assert _listeners(callback_map, ids.THRESHOLDS_TEXT, "children") == []


def test_the_page_s_copies_of_the_ids_are_the_app_s():
    visible = (ASSETS / "visible.js").read_text()
    gates = re.search(r"SETTLED_GATES = (\[.*?\]);", visible, re.S).group(1)
    assert json.loads(gates.replace("'", '"')) == [list(g) for g in visibility.GATES]
    assert f"VOLUME_TAB = '{ids.VOLUME_TAB}'" in visible
    assert f"VOLUME_SIGNAL = '{ids.VOLUME_SIGNAL}'" in visible
    fast = (ASSETS / "fastmove.js").read_text()
    for name, value in (("HISTORY", ids.HISTORY), ("SETTLED", ids.SEG_SETTLED),
                        ("TABS", ids.DISCOVERY_TABS), ("SLIDER", ids.THRESHOLDS),
                        ("TEXT", ids.THRESHOLDS_TEXT), ("HIST", ids.HIST_GRAPH),
                        ("SEG", ids.SEG_GRAPH), ("IMAGE", ids.IMAGE)):
        assert re.search(rf"\b{name} = '{re.escape(value)}'", fast), name
    assert "propOf(IMAGE, 'data')" in fast
    assert f'"type":"{ids.SWEEP_ADOPT}"' in fast
