"""Panels out of view are not redrawn on every move; they catch up when they come into view.

After each exact segmentation (``SEG_SETTLED``) the comparison and the measurements panels
used to recompute and redraw: two requests and ≈ 160 ms of the browser's main thread per
key press on coins (``bench/bench_browser.py``, A/B), while a person tuning a threshold looks
at the first row (filtering, markers, segmentation) and those panels are below it. A
clientside gate per panel (``assets/visible.js``, an ``IntersectionObserver``) passes the
signal on at once when the panel is in view (or within 100 px of it), else keeps the latest
one and marks the panel "updating…" (``data-pipex-stale``); when the panel scrolls into
view the kept signal is passed on and the panel's callback runs as before. A panel
therefore never shows a result for a state the person has left without saying so, and
work no one looks at is never done while the thresholds move.

The 3D view follows the same signal only while its tab is open (``VOLUME_SIGNAL``,
:mod:`callbacks.volume`). The three gates are one clientside callback: each callback run
is a dash-renderer cycle of about ten store updates on the page's main thread, on every
move.
"""

from __future__ import annotations

import json

from dash import Input, Output

from components import ids

#: (the gated store, the panel it feeds): the store is the Input of the panel's callback.
GATES = ((ids.COMPARE_SETTLED, "compare-panel"), (ids.MEASURE_SETTLED, "measure-panel"))

GATE_JS = """
function(settled, measure, tab) {
    const dc = window.dash_clientside, nu = dc.no_update;
    const trig = (dc.callback_context.triggered || []).map(function (t) { return t.prop_id; });
    const vis = window.pipexVisible;
    const fresh = trig.indexOf('%(settled)s.data') >= 0 && settled !== undefined;
    // the panels below the first row: SEG_SETTLED passed on while the panel is in view
    // (assets/visible.js, passOn; a move's hand-off in assets/fastmove.js runs it too)
    const passed = fresh && vis ? vis.passOn(settled, tab) : {};
    const out = %(gates)s.map(function (g) {
        if (!fresh) { return nu; }
        if (!vis) { return settled; }
        return g[0] in passed ? passed[g[0]] : nu;
    });
    // the 3D view: redrawn when the labels or the measurements change, or the tab opens,
    // only while its tab is open
    out.push(tab === '%(tab)s' ? {t: Date.now()} : nu);
    return out;
}
"""


def gate_js() -> str:
    """The clientside gates of the panels that follow ``SEG_SETTLED`` (see the module
    docstring)."""
    return GATE_JS % {"gates": json.dumps([list(g) for g in GATES]),
                      "settled": ids.SEG_SETTLED, "tab": ids.VOLUME_TAB}


def register(app, services):  # noqa: ARG001 - the same signature as every module's
    """One clientside gate for the panels that follow the settled segmentation."""
    app.clientside_callback(
        gate_js(),
        *(Output(store, "data") for store, _panel in GATES),
        Output(ids.VOLUME_SIGNAL, "data"),
        Input(ids.SEG_SETTLED, "data"),
        Input(ids.MEASURE_SIGNAL, "data"),
        Input(ids.DISCOVERY_TABS, "value"),
        # the page opens on another tab than the 3D view's, and SEG_SETTLED is set by the
        # first segmentation: nothing to pass on before
        prevent_initial_call=True,
    )


__all__ = ["GATES", "gate_js", "register"]
