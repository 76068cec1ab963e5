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
"""

from __future__ import annotations

from dash import Input, Output

from components import ids

#: (the gated store, the panel it feeds): the store is the Input of the panel's callback.
GATES = ((ids.COMPARE_SETTLED, "compare-panel"), (ids.MEASURE_SETTLED, "measure-panel"))

GATE_JS = """
function(settled) {
    return window.pipexVisible ? window.pipexVisible.gate('%(store)s', '%(panel)s', settled)
                               : settled;
}
"""


def gate_js(store: str, panel: str) -> str:
    """The clientside gate passing ``SEG_SETTLED`` on to `store` while `panel` is in view."""
    return GATE_JS % {"store": store, "panel": panel}


def register(app, services):  # noqa: ARG001 - the same signature as every module's
    """A clientside gate per panel below the first row (see the module docstring)."""
    for store, panel in GATES:
        app.clientside_callback(
            gate_js(store, panel),
            Output(store, "data"),
            Input(ids.SEG_SETTLED, "data"),
            prevent_initial_call=True,
        )


__all__ = ["GATES", "gate_js", "register"]
