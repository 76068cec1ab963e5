// The pixels of a vmin / vmax move without dash-renderer's round trip (callbacks/fastpath.py).
//
// The gate (callbacks/thresholds.py) calls pipexFast.move / .drag with the request and the
// page's context. The answer's overlays are drawn at once (Plotly.restyle of the two overlay
// traces of the segmentation graph); the other outputs are then handed to Dash with
// dash_clientside.set_props, after the browser has painted, so the page's state is the one
// the callbacks would have set. A live preview is followed by the exact result the same way.
// Any failure hands the request to the Dash callbacks instead.
window.pipexFast = (function () {
    'use strict';
    const SEG = 'segmentation-graph';
    const PENDING = 'segmentation-pending-store';
    const IDS = {move: 'move-request-store', drag: 'drag-request-store'};

    function state() {
        window.pipexMove = window.pipexMove ||
            {seq: 0, dragging: false, inflight: 0, queued: null};
        return window.pipexMove;
    }

    function post(name, body) {
        return fetch('/_pipex/' + name, {
            method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
        }).then(function (r) {
            if (r.status === 204) { return null; }  // superseded: a later request draws
            if (!r.ok) { throw new Error(name + ': HTTP ' + r.status); }
            return r.json();
        });
    }

    function draw(overlays) {
        const holder = document.getElementById(SEG);
        const gd = holder && holder.querySelector('.js-plotly-plot');
        const traces = Object.keys(overlays || {}).map(Number);
        if (!gd || !gd.data || !window.Plotly || !traces.length) { return false; }
        if (traces.some(function (i) { return !gd.data[i]; })) { return false; }
        window.Plotly.restyle(gd, {source: traces.map(function (i) { return overlays[i]; })},
                              traces);
        return true;
    }

    function hand(outputs, skip) {
        const dc = window.dash_clientside;
        Object.keys(outputs || {}).forEach(function (id) {
            if (skip && skip.indexOf(id) >= 0) { return; }
            let target = id;
            if (id.charAt(0) === '{') { target = JSON.parse(id); }
            dc.set_props(target, outputs[id]);
        });
    }

    function later(fn) {  // after the browser has painted the overlays
        window.requestAnimationFrame(function () { setTimeout(fn, 0); });
    }

    function apply(res, skip) {
        const drawn = !res.full && draw(res.overlays);
        if (!drawn) { hand(res.outputs, skip); return; }
        later(function () { hand(res.outputs, skip); });
    }

    function settle(pending, ctx) {
        const body = Object.assign({}, ctx, {pending: pending});
        post('settle', body).then(function (res) {
            if (!res) { return; }
            const st = state();
            if (st.shown !== pending.key) { return; }  // the page has moved on
            apply(res);
        }).catch(function () {
            window.dash_clientside.set_props(PENDING, {data: pending});
        });
    }

    function move(request, ctx) {
        const st = state();
        post('move', Object.assign({}, ctx, {request: request})).then(function (res) {
            if (!res || request.seq < (st.applied || 0)) { return; }
            st.applied = request.seq;
            const out = res.outputs || {};
            const pending = out[PENDING] && out[PENDING].data;
            const history = out['history-store'] && out['history-store'].data;
            st.shown = pending ? pending.key : null;
            apply(res, [PENDING]);
            if (pending && history) {
                const base = out['segmentation-base-store'] ?
                    out['segmentation-base-store'].data : ctx.base;
                settle(pending, Object.assign({}, ctx, {history: history, base: base}));
            }
        }).catch(function () {
            window.dash_clientside.set_props(IDS.move, {data: request});
        });
    }

    function drag(request, ctx) {
        const st = state();
        st.inflight = performance.now();
        post('drag', Object.assign({}, ctx, {request: request})).then(function (res) {
            st.inflight = 0;
            if (res && request.seq >= (st.applied || 0)) {
                st.applied = request.seq;
                apply(res, ['drag-ack-store']);
            }
            if (st.queued && st.dragging) {
                const pair = st.queued;
                st.queued = null;
                drag({pair: pair, seq: ++st.seq}, ctx);
            } else {
                st.queued = null;
            }
        }).catch(function () {
            st.inflight = 0;
        });
    }

    return {move: move, drag: drag, draw: draw};
})();
