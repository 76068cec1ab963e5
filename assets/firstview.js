// A newly loaded image's first view, drawn as soon as the load's answer arrives
// (callbacks/loading.py, callbacks/display.py: load_first_view, FIRST_VIEW_JS).
//
// The loader's callback answers the segmentation graph's first view with the new image's
// metadata (at most 512² pixels: a labelled preview on blocks above that). dash-renderer
// applies that answer and fires the callbacks of the new metadata before its clientside
// callback hands the figure to dcc.Graph: 50-90 ms of the page's main thread on this app.
// This script reads the same answer when it arrives (a copy of the response) and draws the
// figure in the segmentation graph at once, with its summary (set_props), unless the graph
// shows that base already (SEG_BASE: the same image loaded again keeps its overlays);
// dash-renderer reads its own copy once the first view is painted (at most 0.3 s later).
// Dash then sets the same figure, SEG_BASE and summary as before (FIRST_VIEW_JS): its redraw
// only confirms these pixels. Nothing else is read or changed; any failure leaves the
// drawing to Dash.
(function () {
    'use strict';
    if (window.__pipexFirstView || typeof window.fetch !== 'function') { return; }
    window.__pipexFirstView = true;
    var SEG = 'segmentation-graph';
    var STORE = 'segmentation-first-view-store';
    var BASE = 'segmentation-base-store';
    var SUMMARY = 'segmentation-summary';
    var LIMIT_MS = 300;  // the longest dash-renderer waits for the first view's paint

    // A prop of a component as Dash holds it (assets/fastmove.js).
    function propOf(id, name) {
        var fast = window.pipexFast;
        return fast && fast.propOf ? fast.propOf(id, name) : undefined;
    }

    // Draws `first`; a promise settled once it is painted (or could not be drawn), at
    // most LIMIT_MS later.
    function draw(first) {
        if (!first || !first.key || !first.figure || !window.Plotly) { return null; }
        if (propOf(BASE, 'data') === first.key) { return null; }
        var holder = document.getElementById(SEG);
        var gd = holder && holder.querySelector('.js-plotly-plot');
        if (!gd || !gd.data) { return null; }  // not drawn yet: dcc.Graph draws it
        var fig = first.figure;
        var drawn;
        try {
            // labelled at once ("new image, preview (1/8 resolution): computing…"): one
            // store update of the summary, which Dash sets to the same text afterwards
            var dc = window.dash_clientside;
            if (typeof first.summary === 'string' && dc && typeof dc.set_props === 'function') {
                dc.set_props(SUMMARY, {children: first.summary});
            }
            // a copy: plotly writes into what it draws, Dash keeps its own; no config (the
            // graph's own stays)
            var copy = JSON.parse(JSON.stringify({data: fig.data, layout: fig.layout}));
            drawn = Promise.resolve(window.Plotly.react(gd, copy.data, copy.layout));
        } catch (err) {
            return null;  // Dash draws it (FIRST_VIEW_JS)
        }
        var painted = drawn.catch(function () {}).then(function () {
            return new Promise(function (resolve) {
                requestAnimationFrame(function () { setTimeout(resolve, 0); });
            });
        });
        return Promise.race([painted, new Promise(function (resolve) {
            setTimeout(resolve, LIMIT_MS);
        })]);
    }

    var fetch0 = window.fetch;
    window.fetch = function (input, init) {
        var p = fetch0.apply(this, arguments);
        var url = typeof input === 'string' ? input : (input && input.url) || '';
        var body = init && typeof init.body === 'string' ? init.body : '';
        // the loader's callback: the only one whose outputs hold the first-view store
        // without allow_duplicate (display's own first view is '...@<hash>')
        if (url.indexOf('_dash-update-component') < 0 ||
                body.slice(0, 2000).indexOf(STORE + '.data..') < 0) {
            return p;
        }
        // dash-renderer gets the answer once the first view is painted: its handling of the
        // answer (the new metadata's callbacks fired, ~0.1 s of script) would otherwise
        // come before the browser paints the first view
        return p.then(function (resp) {
            if (!resp || !resp.ok || resp.status !== 200) { return resp; }
            return resp.clone().json().then(function (answer) {
                var out = answer && answer.response && answer.response[STORE];
                return draw(out && out.data);
            }).catch(function () {}).then(function () { return resp; });
        });
    };
})();
