"""Synchronised zoom and pan between the image panels (original, filtered, result, comparison).

Runs in the browser (a client-side callback): the relayout of one graph is applied to the
other with ``Plotly.relayout``, with no server round trip. A guard skips ranges the other graph
already shows, which stops the ping-pong between the two.
"""

import json

from dash import Input, Output

from components import ids

#: Graphs whose zoom and pan follow each other (all show the same image geometry).
SYNCED = (ids.IMAGE_GRAPH, ids.FILTERED_GRAPH, ids.SEG_GRAPH, ids.COMPARE_GRAPH)

SYNC_JS = """
function() {
    const nu = window.dash_clientside.no_update;
    const cc = window.dash_clientside.callback_context;
    if (!cc.triggered || !cc.triggered.length || !window.Plotly) { return nu; }
    const source = cc.triggered[0].prop_id.split('.')[0];
    const rel = cc.triggered[0].value;
    if (!rel) { return nu; }
    const update = {};
    for (const ax of ['xaxis', 'yaxis']) {
        if ((ax + '.range[0]') in rel) {
            update[ax + '.range'] = [rel[ax + '.range[0]'], rel[ax + '.range[1]']];
        } else if ((ax + '.range') in rel) {
            update[ax + '.range'] = rel[ax + '.range'].slice();
        } else if (rel[ax + '.autorange']) {
            update[ax + '.autorange'] = ax === 'yaxis' ? 'reversed' : true;
        }
    }
    const keys = Object.keys(update);
    if (!keys.length) { return nu; }
    for (const target of %(ids)s) {
        if (target === source) { continue; }
        const holder = document.getElementById(target);
        const gd = holder && holder.querySelector('.js-plotly-plot');
        if (!gd || !gd.layout) { continue; }
        const same = keys.every(function (k) {
            const cur = gd.layout[k.split('.')[0]] || {};
            if (k.endsWith('autorange')) { return cur.autorange === update[k]; }
            const r = cur.range || [];
            return r.length === 2 && Math.abs(r[0] - update[k][0]) < 1e-6 &&
                Math.abs(r[1] - update[k][1]) < 1e-6;
        });
        if (!same) { window.Plotly.relayout(gd, update); }
    }
    return nu;
}
""" % {"ids": json.dumps(list(SYNCED))}


def register(app, services):
    """Wire the client-side zoom synchronisation."""
    del services  # runs entirely in the browser
    app.clientside_callback(
        SYNC_JS,
        Output(ids.ZOOM_SYNC, "data"),
        [Input(graph, "relayoutData") for graph in SYNCED],
        prevent_initial_call=True,
    )
