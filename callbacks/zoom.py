"""Synchronised zoom and pan between the Image and Binarization panels.

Runs in the browser (a client-side callback): the relayout of one graph is applied to the
other with ``Plotly.relayout``, with no server round trip. A guard skips ranges the other graph
already shows, which stops the ping-pong between the two.
"""

from dash import Input, Output

from components import ids

SYNC_JS = """
function(relayoutA, relayoutB) {
    const nu = window.dash_clientside.no_update;
    const cc = window.dash_clientside.callback_context;
    if (!cc.triggered || !cc.triggered.length || !window.Plotly) { return nu; }
    const source = cc.triggered[0].prop_id.split('.')[0];
    const ids = {A: '%(a)s', B: '%(b)s'};
    const rel = source === ids.A ? relayoutA : relayoutB;
    const target = source === ids.A ? ids.B : ids.A;
    if (!rel) { return nu; }
    const holder = document.getElementById(target);
    const gd = holder && holder.querySelector('.js-plotly-plot');
    if (!gd || !gd.layout) { return nu; }
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
    const same = keys.every(function (k) {
        const ax = k.split('.')[0];
        const cur = gd.layout[ax] || {};
        if (k.endsWith('autorange')) { return cur.autorange === update[k]; }
        const r = cur.range || [];
        return r.length === 2 && Math.abs(r[0] - update[k][0]) < 1e-6 &&
            Math.abs(r[1] - update[k][1]) < 1e-6;
    });
    if (!same) { window.Plotly.relayout(gd, update); }
    return nu;
}
""" % {"a": ids.IMAGE_GRAPH, "b": ids.SEG_GRAPH}


def register(app, services):
    """Wire the client-side zoom synchronisation."""
    del services  # runs entirely in the browser
    app.clientside_callback(
        SYNC_JS,
        Output(ids.ZOOM_SYNC, "data"),
        Input(ids.IMAGE_GRAPH, "relayoutData"),
        Input(ids.SEG_GRAPH, "relayoutData"),
        prevent_initial_call=True,
    )
