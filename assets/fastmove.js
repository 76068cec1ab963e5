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

    // The restyle of the overlay traces: their PNGs and, where the answer gives it, where
    // their pixels sit (x0, y0, dx, dy: a preview drawn on blocks, figures.seg_geometry).
    function overlayUpdate(overlays, geometry, traces) {
        const update = {source: traces.map(function (i) { return overlays[i]; })};
        ['x0', 'y0', 'dx', 'dy'].forEach(function (key) {
            if (!traces.some(function (i) { return geometry && geometry[i] &&
                                                   key in geometry[i]; })) { return; }
            update[key] = traces.map(function (i) {
                return geometry && geometry[i] && key in geometry[i] ? geometry[i][key] :
                    undefined;
            });
        });
        return update;
    }

    function draw(overlays, summary, geometry) {
        const holder = document.getElementById(SEG);
        const gd = holder && holder.querySelector('.js-plotly-plot');
        const traces = Object.keys(overlays || {}).map(Number);
        if (!gd || !gd.data || !window.Plotly || !traces.length) { return false; }
        if (traces.some(function (i) { return !gd.data[i]; })) { return false; }
        // what is drawn, until Dash sets the summary text (read by bench/bench_browser.py)
        if (typeof summary === 'string') { holder.dataset.summary = summary; }
        // settles once the overlays' PNGs are decoded and drawn (plotly's image trace waits
        // for them); at most 1 s (a redraw raced by another may never settle, see
        // assets/graph_guard.js)
        skipConfirmingReacts();
        gd.__pipexRestyled = true;  // the next react may only confirm these overlays
        // overlays the graph shows already (a drag's answer for the pair then released, on
        // an image whose drags solve exactly): nothing to redraw
        const update = overlayUpdate(overlays, geometry, traces);
        if (traces.every(function (i, n) {
            return Object.keys(update).every(function (key) {
                return update[key][n] === undefined || gd.data[i][key] === update[key][n];
            });
        })) { return Promise.resolve(); }
        const drawn = Promise.resolve(restyleQuietly(gd, update, traces));
        return Promise.race([drawn.catch(function () {}),
                             new Promise(function (resolve) { setTimeout(resolve, 1000); })]);
    }

    // Plotly.restyle(gd, update, traces) of the segmentation graph whose plotly_restyle event
    // is not passed on: dcc.Graph would set its restyleData prop to it (the overlays' PNGs,
    // compared and stored: a store update and a re-render of the graph, 3 React commits per
    // key press) while no callback listens to it. Where one does, the event goes as before.
    function restyleQuietly(gd, update, traces) {
        const at = located(SEG);
        if (!at || listened(at.state, SEG, {restyleData: true})) {
            return window.Plotly.restyle(gd, update, traces);
        }
        const swapped = swapSources(gd, update, traces);
        if (swapped) { return swapped; }
        if (!gd.__pipexRestyles) {
            const emit = gd.emit, own = gd.__pipexRestyles = [];
            gd.emit = function (name, data) {
                if (name === 'plotly_restyle' && own.length && Array.isArray(data) &&
                        data[0] && typeof data[0] === 'object' &&
                        JSON.stringify([Object.keys(data[0]).sort(), data[1]]) === own[0]) {
                    own.shift();
                    return undefined;
                }
                return emit.apply(this, arguments);
            };
        }
        const call = JSON.stringify([Object.keys(update).sort(), traces]);
        gd.__pipexRestyles.push(call);
        const forget = function () {  // a restyle that emitted nothing (or failed)
            const i = gd.__pipexRestyles.indexOf(call);
            if (i >= 0) { gd.__pipexRestyles.splice(i, 1); }
        };
        const done = Promise.resolve(window.Plotly.restyle(gd, update, traces));
        done.then(forget, forget);
        return done;
    }

    // The overlays' new PNGs put into the <image> elements plotly drew for them, instead of
    // Plotly.restyle: a restyle of an image trace's `source` is a whole recalculation and
    // redraw of the graph (supplyDefaults, every image's size read from its PNG, axes,
    // layers: ~7 ms of the main thread per key press on coins), and plotly loads each new
    // PNG a second time into an Image of its own to draw it on a hover canvas (a decode
    // and a load event per overlay; the overlays have hoverinfo 'skip'). What plotly would
    // draw is the same <image> with the new href when every overlay keeps its size in
    // pixels and its geometry (x0, y0, dx, dy) and is drawn as a real image (plotly's
    // `_realImage`: its href is its source): then only the hrefs change here, and plotly's
    // data (gd.data, gd._fullData: the source it would have set) says the same; the stale
    // hover canvas is rebuilt by plotly's next redraw (it compares its source). The graph
    // then emits plotly_afterplot, as plotly does once a redraw's images are loaded.
    // Anything else (a preview on blocks, another size, a hidden trace) returns null: the
    // caller restyles.
    const XLINK = 'http://www.w3.org/1999/xlink';

    function pngSize(uri) {  // [width, height] from a PNG data URI's IHDR, or null
        if (typeof uri !== 'string' || uri.indexOf('data:image/png;base64,') !== 0) {
            return null;
        }
        let head;
        try { head = atob(uri.slice(22, 22 + 32)); } catch (e) { return null; }
        if (head.length < 24 || head.slice(12, 16) !== 'IHDR') { return null; }
        const u32 = function (o) {
            return ((head.charCodeAt(o) << 24) >>> 0) + (head.charCodeAt(o + 1) << 16) +
                (head.charCodeAt(o + 2) << 8) + head.charCodeAt(o + 3);
        };
        return [u32(16), u32(20)];
    }

    function swapSources(gd, update, traces) {
        const full = gd._fullData, calc = gd.calcdata;
        if (!Array.isArray(full) || !Array.isArray(calc) || !update.source ||
                !gd._fullLayout || gd._transitioning) { return null; }
        const images = gd.querySelectorAll('.imagelayer .im image');
        const swaps = [];
        for (let n = 0; n < traces.length; n++) {
            const i = traces[n], t = gd.data[i], src = update.source[n];
            const k = full.findIndex(function (f) { return f && f.index === i; });
            const f = full[k], cd = calc[k];
            if (!t || !f || f.type !== 'image' || f.visible !== true || !f._realImage ||
                    !f._hasSource || f._hasZ || !cd || !cd[0] || cd[0].trace !== f ||
                    typeof src !== 'string') { return null; }
            // the geometry as drawn
            const same = Object.keys(update).every(function (key) {
                return key === 'source' || update[key][n] === undefined ||
                    update[key][n] === f[key];
            });
            if (!same) { return null; }
            let el = null;
            for (let j = 0; j < images.length; j++) {
                const d = images[j].__data__;
                if (d && d[0] === cd[0]) { el = images[j]; break; }
            }
            const href = el && (el.getAttributeNS(XLINK, 'href') || el.getAttribute('href'));
            if (!el || href !== f.source || t.source !== f.source) { return null; }
            const size = pngSize(src);
            if (!size || size[0] !== cd[0].w || size[1] !== cd[0].h) { return null; }
            swaps.push({i: i, t: t, f: f, el: el, src: src, n: n});
        }
        const loads = swaps.map(function (s) {
            // what Plotly.restyle sets in the trace's data (the keys given), and the source
            // of plotly's full trace; then the href, as plotly's image plot sets it
            Object.keys(update).forEach(function (key) {
                if (update[key][s.n] !== undefined) { s.t[key] = update[key][s.n]; }
            });
            s.f.source = s.src;
            if (s.el.getAttributeNS(XLINK, 'href') === s.src) { return Promise.resolve(); }
            return new Promise(function (resolve) {
                const done = function () {
                    s.el.removeEventListener('load', done);
                    s.el.removeEventListener('error', done);
                    resolve();
                };
                s.el.addEventListener('load', done);
                s.el.addEventListener('error', done);
                s.el.setAttributeNS(XLINK, 'xlink:href', s.src);
            });
        });
        return Promise.all(loads).then(function () {
            // a redraw of the graph since (a zoom, a react) drew what it drew: its own event
            if (swaps.every(function (s) { return s.el.isConnected; })) {
                gd.emit('plotly_afterplot');
            }
            return gd;
        });
    }

    // Whether setting `props` on the element `id` would change what it shows: every
    // set_props is a whole dash-renderer cycle, so unchanged texts, empty messages and
    // buttons already in that state are not handed over.
    function changes(id, props) {
        const el = document.getElementById(id);
        if (!el) { return true; }
        return Object.keys(props).some(function (prop) {
            const v = props[prop];
            if (prop === 'disabled') { return el.disabled !== Boolean(v); }
            if (prop === 'children' && (v === null || typeof v === 'string')) {
                return el.textContent !== (v || '');
            }
            return true;
        });
    }

    // dcc.Graph re-reacts a figure whose overlays this page has just restyled (the hand-off
    // of a move's answer sets the figure Dash holds): plotly would only confirm what is
    // drawn (8-11 ms of supplyDefaults and a redraw of the graph's chrome per key press).
    // A react of the segmentation graph whose figure is the previous one with just those
    // overlay props, equal to what is drawn, is skipped; anything else goes to plotly.
    function sameValue(a, b) {
        if (a === b) { return true; }
        if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
            return false;
        }
        return JSON.stringify(a) === JSON.stringify(b);
    }

    function onlyDrawn(gd, fig, last) {
        // the layout and config as they were handed over (plotly writes into the layout it
        // draws: ranges, autorange), compared as JSON taken before each react
        if (!last || !fig || !Array.isArray(fig.data) || !Array.isArray(last.data) ||
                fig.data.length !== last.data.length || !gd.data ||
                gd.data.length !== fig.data.length || fig.frames || last.frames ||
                fig.__pipexJSON !== last.__pipexJSON) {
            return false;
        }
        return fig.data.every(function (t, i) {
            const before = last.data[i], drawn = gd.data[i];
            if (t === before) { return true; }
            if (!t || !before) { return false; }
            const keys = Object.keys(Object.assign({}, t, before));
            return keys.every(function (k) {
                if (OVERLAY_KEYS.indexOf(k) >= 0) { return sameValue(t[k], drawn[k]); }
                return sameValue(t[k], before[k]);
            });
        });
    }
    const OVERLAY_KEYS = ['source', 'x0', 'y0', 'dx', 'dy'];

    function skipConfirmingReacts() {
        const P = window.Plotly;
        if (!P || P.__pipexSkips) { return; }
        const react = P.react;
        P.react = function (gd, fig) {
            const div = typeof gd === 'string' ? document.getElementById(gd) : gd;
            const segmentation = div && div.closest && div.closest('#' + SEG);
            if (segmentation && fig && typeof fig === 'object' && !Array.isArray(fig)) {
                const last = div.__pipexFigure;
                div.__pipexFigure = {data: fig.data, frames: fig.frames,
                                     __pipexJSON: JSON.stringify([fig.layout, fig.config])};
                fig = div.__pipexFigure;
                if (div.__pipexRestyled && onlyDrawn(div, fig, last)) {
                    div.__pipexRestyled = false;
                    return Promise.resolve(div);
                }
                div.__pipexRestyled = false;
            }
            return react.apply(this, arguments);
        };
        Object.keys(react).forEach(function (k) { P.react[k] = react[k]; });
        P.__pipexSkips = true;
    }

    function hand(outputs, skip, overlays, geometry, token) {
        const dc = window.dash_clientside;
        const holder = document.getElementById(SEG);
        if (holder && token >= HAND.drawn) { delete holder.dataset.summary; }
        const traces = Object.keys(overlays || {});
        // the figure's state: the overlays drawn by draw(), unless newer overlays have been
        // drawn since (their own hand-off sets them; setting these would redraw older ones)
        const latest = traces.length > 0 && token === HAND.overlays;
        const fig = latest ? withOverlays(propOf(SEG, 'figure'), traces, overlays, geometry) :
            null;
        if (latest && !(fig && quiet(SEG, {figure: fig}))) {
            const patch = new dc.Patch();
            traces.forEach(function (i) {
                patch.assign(['data', Number(i), 'source'], overlays[i]);
                const g = (geometry || {})[i] || {};
                Object.keys(g).forEach(function (key) {
                    patch.assign(['data', Number(i), key], g[key]);
                });
            });
            dc.set_props(SEG, {figure: patch.build()});
        }
        Object.keys(outputs || {}).forEach(function (id) {
            if (skip && skip.indexOf(id) >= 0) { return; }
            if (!changes(id, outputs[id])) { return; }  // a pattern id is its JSON in the DOM
            if (id === HISTORY && drawnThresholds(outputs[id].data)) {
                // the router has nothing to fire and the context is mirrored already
                // (move(): st.ctx); see drawnThresholds
                quiet(HISTORY, outputs[id], true);
                return;
            }
            if (id === SETTLED && window.pipexVisible && window.pipexVisible.passOn) {
                // the panels' gate (callbacks/visibility.py), run here rather than by a
                // dash-renderer cycle: the panels in view get the signal, the others wait
                quiet(SETTLED, outputs[id], true);
                const out = window.pipexVisible.passOn(outputs[id].data, propOf(TABS, 'value'));
                Object.keys(out).forEach(function (store) {
                    dc.set_props(store, {data: out[store]});
                });
                return;
            }
            setProps(id.charAt(0) === '{' ? JSON.parse(id) : id, outputs[id]);
        });
    }

    // The figure `fig` with the overlay traces' sources (and geometry) of an answer: what
    // the Patch of the hand-off makes of it, built here to be set quietly (no callback
    // listens to the figure); null if `fig` lacks one of the traces.
    function withOverlays(fig, traces, overlays, geometry) {
        if (!fig || !Array.isArray(fig.data) ||
                traces.some(function (i) { return !fig.data[Number(i)]; })) { return null; }
        const data = fig.data.slice();
        traces.forEach(function (i) {
            data[Number(i)] = Object.assign({}, data[Number(i)], {source: overlays[i]},
                                            (geometry || {})[i] || {});
        });
        return Object.assign({}, fig, {data: data});
    }

    // ---- Dash's store, quietly
    // dash_clientside.set_props updates a prop and tells dash-renderer, which runs the
    // callbacks listening to it: a cycle of some ten store updates, each ~1 ms of the main
    // thread on this page (every mounted component's selector runs per update). A prop no
    // callback listens to is set in the store only (the component re-renders, as with
    // set_props; nothing else would have happened). Values holding components go through
    // set_props (their paths must be recomputed).
    const HISTORY = 'history-store', SETTLED = 'segmentation-settled-store',
        TABS = 'discovery-tabs', SLIDER = 'thresholds-slider', TEXT = 'thresholds-text',
        IMAGE = 'image-store';

    function dashStore() {
        const s = window.dash_stores;
        return s && s.length === 1 && s[0].getState && s[0].dispatch ? s[0] : null;
    }

    // Dash's store, its state and the path of the component `id` (a string id) in its
    // layout; null without the store or the component.
    function located(id) {
        const store = dashStore();
        if (!store) { return null; }
        const state = store.getState();
        const path = typeof id === 'string' && state.paths && state.paths.strs ?
            state.paths.strs[id] : null;
        return path ? {store: store, state: state, path: path} : null;
    }

    function listened(state, id, props) {
        const map = state.graphs && state.graphs.inputMap;
        if (!map) { return true; }
        const mine = map[id] || {};
        return Object.keys(props).some(function (p) { return Boolean((mine[p] || []).length); });
    }

    function plain(v) {  // no component inside
        if (v === null || typeof v !== 'object') { return true; }
        if (!Array.isArray(v) && typeof v.type === 'string' && typeof v.namespace === 'string') {
            return false;
        }
        return Object.keys(v).every(function (k) { return plain(v[k]); });
    }

    // Set `props` of `id` in Dash's store without telling its callbacks; false (nothing
    // done) where a callback listens to one of them, unless `theirs` says the caller does
    // what those callbacks would do.
    function quiet(id, props, theirs) {
        const at = located(id);
        if (!at || !plain(props) || (!theirs && listened(at.state, id, props))) {
            return false;
        }
        at.store.dispatch({type: 'ON_PROP_CHANGE',
                           payload: {props: props, itempath: at.path,
                                     renderType: 'clientsideApi'}});
        return true;
    }

    function setProps(id, props) {
        if (!quiet(id, props)) { window.dash_clientside.set_props(id, props); }
    }

    // A prop of a component with a string id, as Dash holds it.
    function propOf(id, name) {
        const at = located(id);
        if (!at) { return undefined; }
        let node = at.state.layout;
        for (let i = 0; i < at.path.length && node; i++) { node = node[at.path[i]]; }
        return node && node.props ? node.props[name] : undefined;
    }

    // A move drawn by the page that changed the thresholds only: the history pointer's
    // listeners have nothing to do — the router (callbacks/thresholds.py, ROUTE_JS) fires
    // no panel for it, the context mirror (CONTEXT_JS) is kept by move(), and the sweep's
    // current cell (callbacks/discovery.py) matters only when a sweep's cells are shown.
    function drawnThresholds(history) {
        const ch = history && history.changed;
        return Boolean(history && history.drawn && Array.isArray(ch) && ch.length === 1 &&
                       ch[0] === 'markers' &&
                       !document.querySelector('[id*=\'"type":"sweep-adopt"\']'));
    }

    // ---- the markers, drawn by the page itself
    // A vmin / vmax move changes the markers at once: pixels < vmin are background, > vmax
    // object (pipeline.segment.make_markers). The page keeps the shown slice of the filtered
    // image (POST /_pipex/values: 16-bit packed PNG, render.pack_values16) and redraws the
    // markers overlay itself on a key press or while a handle is dragged, before the
    // server's answer (which then replaces it with its own, identical for integer images).
    const VAL = {key: null, data: null, loading: null, retryAt: 0, want: null, drawn: null,
                 frame: 0};

    function valuesKey(ctx) {
        const r = ctx && ctx.history && ctx.history.recipe;
        const v = (ctx && ctx.view) || {};
        // what the filtered slice depends on: the image (and its channel), filter, slice
        return JSON.stringify([ctx && ctx.image, r && r.image, r && r.filter, v.axis, v.index]);
    }

    function unpack(res, key) {
        const raw = atob(res.values.slice(res.values.indexOf(',') + 1));
        const bytes = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
        return window.createImageBitmap(new Blob([bytes], {type: 'image/png'}),
            {premultiplyAlpha: 'none', colorSpaceConversion: 'none'}).then(function (bmp) {
            const canvas = document.createElement('canvas');
            canvas.width = bmp.width;
            canvas.height = bmp.height;
            const g = canvas.getContext('2d', {willReadFrequently: true});
            g.drawImage(bmp, 0, 0);
            const px = g.getImageData(0, 0, bmp.width, bmp.height).data;
            const n = bmp.width * bmp.height, v = new Float64Array(n);
            for (let i = 0; i < n; i++) {
                v[i] = res.lo + (px[4 * i] * 256 + px[4 * i + 1]) * res.scale;
            }
            return {key: key, v: v, canvas: canvas, g: g, image: g.createImageData(bmp.width,
                    bmp.height), trace: res.trace, colors: res.colors,
                    factor: res.factor || 1};  // a value per block of the display level
        });
    }

    // Fetch the values of the page's context (once per image, filter and slice).
    function prefetch(ctx) {
        if (!ctx || !ctx.history || !window.createImageBitmap || !window.atob) { return; }
        const key = valuesKey(ctx);
        if (VAL.key === key && (VAL.data || VAL.loading)) { return; }
        if (VAL.key === key && performance.now() < VAL.retryAt) { return; }
        VAL.key = key;
        VAL.data = null;
        const loading = VAL.loading = post('values', ctx).then(function (res) {
            if (!res) { VAL.retryAt = performance.now() + 1000; return null; }  // not ready
            return unpack(res, key);
        }).then(function (data) {
            if (VAL.loading !== loading) { return; }
            VAL.loading = null;
            if (data && VAL.key === key) { VAL.data = data; }
        }).catch(function () {
            if (VAL.loading === loading) { VAL.loading = null; }
            VAL.retryAt = performance.now() + 5000;
        });
    }

    // The page's markers are painted on a canvas laid over the plot area (no PNG to encode
    // or decode, no plotly redraw: ~5 ms for 1 M pixels), the graph's own markers image
    // hidden meanwhile; any redraw of the graph (the server's overlays, a zoom) removes it.
    function overlayCanvas(gd) {
        let c = gd.querySelector('canvas.pipex-markers');
        if (!c) {
            c = document.createElement('canvas');
            c.className = 'pipex-markers';
            c.style.position = 'absolute';
            c.style.pointerEvents = 'none';
            gd.appendChild(c);
            // a redraw of the graph: its own markers are current again, unless a handle is
            // still dragged (the page's are newer: repainted, in the new geometry)
            const redrawn = function () {
                if (state().dragging && VAL.want) { paintMarkers(); } else { hideCanvas(gd); }
            };
            gd.on('plotly_afterplot', redrawn);
            gd.on('plotly_relayout', redrawn);
        }
        return c;
    }

    function markerImage(gd, trace) {
        const src = gd.data[trace] && gd.data[trace].source;
        const images = gd.querySelectorAll('.imagelayer image');
        for (let i = 0; i < images.length; i++) {
            const href = images[i].getAttribute('href') || images[i].getAttribute('xlink:href');
            if (href === src) { return images[i]; }
        }
        return null;
    }

    function hideCanvas(gd) {
        const c = gd && gd.querySelector('canvas.pipex-markers');
        if (!c || c.style.display === 'none') { return; }
        c.style.display = 'none';
        gd.querySelectorAll('.imagelayer image[data-pipex-hidden]').forEach(function (im) {
            im.style.visibility = '';
            im.removeAttribute('data-pipex-hidden');
        });
    }

    // One 32-bit RGBA word per pixel, written as the colour of its class (bytes in memory
    // order, whatever the platform's endianness)
    function rgba32(c) {
        const word = new Uint32Array(1);
        const bytes = new Uint8ClampedArray(word.buffer);
        bytes[0] = c[0]; bytes[1] = c[1]; bytes[2] = c[2]; bytes[3] = c[3];
        return word[0];
    }

    // The markers of (vmin, vmax) into the values' ImageData: background below vmin, object
    // above vmax, transparent between (pipeline.segment.make_markers). One word per pixel in
    // a small loop of its own (the byte-wise loop took 3-6 ms a key press on coins' 116,000
    // pixels; this one well under 1 ms once compiled).
    function classify(d, vmin, vmax) {
        if (!d.words) {
            d.words = new Uint32Array(d.image.data.buffer, d.image.data.byteOffset,
                                      d.image.data.length >> 2);
            d.bg = rgba32(d.colors['1']);
            d.ob = rgba32(d.colors['2']);
        }
        const words = d.words, v = d.v, n = v.length, bg = d.bg, ob = d.ob;
        for (let i = 0; i < n; i++) {
            const x = v[i];
            words[i] = x < vmin ? bg : (x > vmax ? ob : 0);
        }
    }

    function paintMarkers() {
        const want = VAL.want, d = VAL.data;
        VAL.drawn = want;
        if (!want || !d || d.key !== valuesKey(want.ctx)) { return; }
        const holder = document.getElementById(SEG);
        const gd = holder && holder.querySelector('.js-plotly-plot');
        const full = gd && gd._fullLayout;
        if (!full || !full._size || !full.xaxis || !full.yaxis || !gd.data[d.trace]) { return; }
        const vmin = want.pair[0], vmax = want.pair[1];
        if (!d.classified || d.classified[0] !== vmin || d.classified[1] !== vmax) {
            classify(d, vmin, vmax);
            d.g.putImageData(d.image, 0, 0);
            d.classified = [vmin, vmax];
        }
        const xa = full.xaxis, ya = full.yaxis;
        const drag = gd.querySelector('.nsewdrag');  // plotly's layer over the plot area
        if (!drag) { return; }
        const canvas = overlayCanvas(gd);
        canvas.style.display = 'block';  // positioned from its offset parent, laid over it
        const area = drag.getBoundingClientRect();
        const parent = canvas.offsetParent || document.body;
        const origin = parent.getBoundingClientRect();
        const w = area.width, h = area.height, ratio = window.devicePixelRatio || 1;
        canvas.style.left = (area.left - origin.left + parent.scrollLeft) + 'px';
        canvas.style.top = (area.top - origin.top + parent.scrollTop) + 'px';
        canvas.style.width = w + 'px';
        canvas.style.height = h + 'px';
        if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); }
        if (canvas.height !== Math.round(h * ratio)) { canvas.height = Math.round(h * ratio); }
        const g = canvas.getContext('2d');
        g.setTransform(ratio, 0, 0, ratio, 0, 0);
        g.clearRect(0, 0, w, h);
        g.imageSmoothingEnabled = false;
        // image pixel (row r, column c) spans [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]; a
        // value of the display level covers a block of `factor` pixels a side (the last
        // ones may be cut by the image's edge: the graph's own overlays are drawn alike);
        // l2p: pixels from the start of the axis, i.e. of the plot area
        const iw = d.canvas.width * d.factor, ih = d.canvas.height * d.factor;
        const x0 = xa.l2p(-0.5), x1 = xa.l2p(iw - 0.5), y0 = ya.l2p(-0.5), y1 = ya.l2p(ih - 0.5);
        g.drawImage(d.canvas, Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0),
                    Math.abs(y1 - y0));
        const own = markerImage(gd, d.trace);
        if (own) { own.style.visibility = 'hidden'; own.setAttribute('data-pipex-hidden', '1'); }
        holder.dataset.markers = vmin + ',' + vmax;  // what is drawn (read by tests, bench)
        holder.dataset.markersSpan = iw + ',' + ih;  // over which pixels of the image
    }

    // Draw the markers of `pair` now, or at the next frame if some were drawn in this one
    // (a drag: the latest pair wins); false if the values of this context are not at hand
    // (the server's markers come with its answer).
    function markers(pair, ctx) {
        if (!ctx || !ctx.view || (ctx.view.show || []).indexOf('markers') < 0) { return false; }
        // strokes drawn by hand (callbacks/scribbles.py) are painted over the thresholds by
        // the server: the page cannot draw those markers from the values alone
        const drawn = ctx.history && ctx.history.recipe && ctx.history.recipe.markers &&
            ctx.history.recipe.markers.scribbles;
        if (Array.isArray(drawn) && drawn.length) { return false; }
        prefetch(ctx);
        if (!VAL.data || VAL.data.key !== valuesKey(ctx)) { return false; }
        VAL.want = {pair: pair.slice(), ctx: ctx};
        if (!VAL.frame) {
            paintMarkers();
            VAL.frame = window.requestAnimationFrame(function () {
                VAL.frame = 0;
                if (VAL.want !== VAL.drawn) { paintMarkers(); }
            });
        }
        return true;
    }

    function painted() {  // after the browser has painted what is drawn now
        return new Promise(function (resolve) {
            window.requestAnimationFrame(function () { setTimeout(resolve, 0); });
        });
    }

    // Answers are handed to Dash in the order they came, each once its overlays are drawn
    // and painted: dash-renderer's work (a cycle per set_props, the figure re-reacted) must
    // not delay the pixels the person is waiting for.
    const HAND = {chain: Promise.resolve(), seq: 0, drawn: 0, overlays: 0};

    function apply(res, skip) {
        const s = res.outputs && res.outputs['segmentation-summary'];
        const token = ++HAND.seq;
        if (Object.keys(res.overlays || {}).length || res.full) { HAND.overlays = token; }
        const drawn = !res.full && draw(res.overlays, s ? s.children : undefined,
                                        res.geometry);
        if (drawn) { HAND.drawn = token; }
        const ready = drawn ? drawn.then(painted) : null;
        HAND.chain = HAND.chain.then(function () { return ready; }).then(function () {
            hand(res.outputs, skip, res.overlays, res.geometry, token);
        }).catch(function () {});
    }

    // ---- the next step, prepared while the person looks
    // A key press on a handle is mostly followed by another in the same direction (or by
    // one back, to a pair solved already): once a move's exact result is drawn, the server
    // is asked to solve the next step into its caches (callbacks/thresholds.py,
    // prefetch_update: bounded, never waiting for a slot, stopped by any newer request).
    function decimals(v) {
        const t = String(v), e = t.indexOf('e-');
        if (e >= 0) { return Number(t.slice(e + 2)) + Math.max(0, t.indexOf('.') >= 0 ?
                                                                  e - t.indexOf('.') - 1 : 0); }
        return t.indexOf('.') >= 0 ? t.length - t.indexOf('.') - 1 : 0;
    }

    // The pair one more step of the handle that moved from `before` to `pair` would give,
    // rounded as the slider rounds its steps; null if both or neither moved.
    function nextPair(before, pair) {
        const moved = [0, 1].filter(function (i) { return before[i] !== pair[i]; });
        if (moved.length !== 1) { return null; }
        const i = moved[0], p = Math.max(decimals(before[i]), decimals(pair[i]));
        const next = pair.slice();
        next[i] = Number((2 * pair[i] - before[i]).toFixed(Math.min(p, 15)));
        return next[0] < next[1] ? next : null;
    }

    // Asked once this answer is handed to Dash and painted: the server's solve of the next
    // step (a core for ~50 ms on coins) then does not share the CPU with the page still
    // drawing this one (on a 2-core machine both stretched the hand-off's tasks).
    function prepareNext(request, ctx, history, base) {
        const st = state();
        if (!request.next || st.dragging || request.seq !== st.seq) { return; }
        const body = Object.assign({}, ctx, {history: history, base: base,
                                             request: {pair: request.next, seq: request.seq}});
        HAND.chain.then(painted).then(function () {
            if (st.dragging || request.seq !== st.seq) { return; }  // moved on meanwhile
            post('prefetch', body).catch(function () {});  // only a cache is warmed
        });
    }

    function settle(pending, ctx, request) {
        const body = Object.assign({}, ctx, {pending: pending});
        post('settle', body).then(function (res) {
            if (!res) { return; }
            const st = state();
            if (st.shown !== pending.key) { return; }  // the page has moved on
            apply(res);
            if (request) { prepareNext(request, ctx, ctx.history, ctx.base); }
        }).catch(function () {
            window.dash_clientside.set_props(PENDING, {data: pending});
        });
    }

    function move(request, ctx) {
        const st = state();
        const sent = post('move', Object.assign({}, ctx, {request: request}));
        const cur = ctx.history && ctx.history.recipe && ctx.history.recipe.markers;
        if (cur && !request.exact) {
            request = Object.assign({}, request,
                                    {next: nextPair([cur.vmin, cur.vmax], request.pair)});
        }
        markers(request.pair, ctx);  // drawn while the request is on its way
        sent.then(function (res) {
            if (!res || request.seq < (st.applied || 0)) { return; }
            st.applied = request.seq;
            const out = res.outputs || {};
            if (!res.full && !Object.keys(res.overlays || {}).length) {
                // refused (the slider goes back): the markers of the kept pair again
                const m = ctx.history && ctx.history.recipe && ctx.history.recipe.markers;
                if (m) { markers([m.vmin, m.vmax], ctx); }
            }
            const pending = out[PENDING] && out[PENDING].data;
            const history = out['history-store'] && out['history-store'].data;
            st.shown = pending ? pending.key : null;
            if (history && st.ctx) { st.ctx = Object.assign({}, st.ctx, {history: history}); }
            apply(res, [PENDING]);
            const base = out['segmentation-base-store'] ?
                out['segmentation-base-store'].data : ctx.base;
            if (pending && history) {
                settle(pending, Object.assign({}, ctx, {history: history, base: base}),
                       request);
            } else if (history && Object.keys(res.overlays || {}).length) {
                prepareNext(request, ctx, history, base);  // the exact result is drawn
            }
        }).catch(function () {
            window.dash_clientside.set_props(IDS.move, {data: request});
        });
    }

    function drag(request, ctx) {
        const st = state();
        st.inflight = performance.now();
        const sent = post('drag', Object.assign({}, ctx, {request: request}));
        markers(request.pair, ctx);
        sent.then(function (res) {
            st.inflight = 0;
            if (res && request.seq >= (st.applied || 0)) {
                st.applied = request.seq;
                const w = VAL.want, d = VAL.data;
                if (w && d && res.overlays && (w.pair[0] !== request.pair[0] ||
                                               w.pair[1] !== request.pair[1])) {
                    // the page draws the markers of a newer pair already: keep them
                    delete res.overlays[String(d.trace)];
                }
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

    // A key press on a handle: start the move at once, from the thumbs' aria-valuenow (React
    // renders it in the key's own event), instead of after dash-renderer has processed the
    // slider's new value and run the gate; the gate then sees the pair was sent already.
    // The page's context (history pointer, view) is mirrored by a clientside callback
    // (callbacks/thresholds.py, CONTEXT_JS).
    function early() {
        const st = state();
        const active = document.activeElement;
        if (st.dragging || !active || !active.matches ||
                !active.matches('#thresholds-slider [role=slider]')) { return; }
        const pair = newPair(st.ctx);
        if (!pair) { return; }
        const sameAsSent = st.sent && st.sent[0] === pair[0] && st.sent[1] === pair[1];
        if (sameAsSent && performance.now() - st.sentAt < 1000) { return; }
        send(pair, false);
    }
    // The release of a handle (or a click on the track): the pair under it is sent at once,
    // as a key press's is, instead of after dash-renderer has committed the slider's value
    // and run the gate (which then sees it sent). After a drag whose preview of this pair
    // is on the screen it asks for the exact result straight away; a click on the track
    // is a move like a key press (a live preview first where the exact one is slow).
    // Called by assets/move.js on pointerup.
    function released() {
        const st = state();
        const pair = newPair(st.ctx);
        if (!pair) { return; }
        const dragged = Boolean(st.dragged && st.dragged[0] === pair[0] &&
                                st.dragged[1] === pair[1]);
        st.queued = null;
        st.dragged = null;
        send(pair, dragged);
    }

    // The pair the thumbs show, if it is not the recipe's (null otherwise, or without a
    // context).
    function newPair(ctx) {
        const cur = ctx && ctx.history && ctx.history.recipe && ctx.history.recipe.markers;
        const thumbs = document.querySelectorAll('#thresholds-slider [role=slider]');
        if (!cur || thumbs.length !== 2) { return null; }
        const pair = [Number(thumbs[0].getAttribute('aria-valuenow')),
                      Number(thumbs[1].getAttribute('aria-valuenow'))];
        if (!isFinite(pair[0]) || !isFinite(pair[1])) { return null; }
        return pair[0] === cur.vmin && pair[1] === cur.vmax ? null : pair;
    }

    // A move of `pair` started by the page's own triggers; the gate skips it (st.sent).
    function send(pair, exact) {
        const st = state();
        st.sent = pair;
        st.sentAt = performance.now();
        move({pair: pair, seq: ++st.seq, exact: exact}, st.ctx);
    }

    // ---- the thresholds shown: the histogram's vmin / vmax lines and shaded ranges, and
    // the text under the slider (the gate, callbacks/thresholds.py GATE_JS, and keyed())
    const HIST = 'histogram-graph';

    // The text under the slider for `pair` on the image `meta`, numbers written as the
    // slider's tooltips write them (assets/format.js: 8,715, 0.2910).
    function pairText(pair, meta) {
        const fmt = window.dccFunctions && window.dccFunctions.pipexNumber;
        const g = function (v) {
            return fmt ? fmt(v) : String(Number(Number(v).toPrecision(6)));
        };
        return 'background marker: pixels < ' + g(pair[0]) +
            '   \u00b7   object marker: pixels > ' + g(pair[1]) +
            '   \u00b7   image range ' + g(meta.min) + ' \u2026 ' + g(meta.max);
    }

    // Move the lines of the drawn histogram to `pair` (`shapes`: the figure's four, in the
    // order of components.figures.threshold_shapes) with Plotly.relayout: ~5 ms, where a
    // Patch of the figure makes dcc.Graph re-react it and plotly recalculate every trace
    // (35-40 ms). dcc.Graph copies a relayout's keys into its figure prop (another
    // re-react): this relayout's event is not passed on (relayoutQuietly). The figure Dash
    // holds keeps its old lines: LOG_JS, the one patch of it, carries the drawn ones.
    function drawLines(shapes, pair, meta) {
        const gd = document.querySelector('#' + HIST + ' .js-plotly-plot');
        if (!gd || !gd.data || !gd.data.length || !gd.layout || !window.Plotly ||
                !shapes || shapes.length < 4) { return; }
        shapes = JSON.parse(JSON.stringify(shapes));
        shapes[0].x0 = shapes[0].x1 = pair[0];
        shapes[1].x0 = shapes[1].x1 = pair[1];
        shapes[2].x0 = meta.min; shapes[2].x1 = pair[0];
        shapes[3].x0 = pair[1]; shapes[3].x1 = meta.max;
        const drawn = (gd.layout.shapes || []).map(function (s) { return [s.x0, s.x1]; });
        const want = shapes.map(function (s) { return [s.x0, s.x1]; });
        if (JSON.stringify(drawn) !== JSON.stringify(want)) {
            relayoutQuietly(gd, {shapes: shapes});
        }
    }

    // ---- a key press on a handle, without a dash-renderer cycle
    // The arrow keys (ten steps with Shift) and Page Up / Down move a handle as the
    // slider's own keys do (Radix: a step, snapped to the step grid from the minimum,
    // within the bounds). Here the new value is set in Dash's store quietly (the slider
    // and its boxes re-render), the lines and the text drawn and the move sent: the gate's
    // work for a key press (callbacks/thresholds.py, GATE_JS), without its callback cycle
    // (about 20 ms of the main thread). Anything else — Home / End, a handle at its bound
    // or onto the other one, a page without its context yet — goes to the slider as before.
    const STEP_KEYS = {ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1,
                       PageUp: 10, PageDown: -10};

    function keyed(event) {
        const dir = STEP_KEYS[event.key], t = event.target;
        if (!dir || event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented ||
                !t || !t.matches || !t.matches('#' + SLIDER + ' [role=slider]')) { return; }
        const st = state();
        if (st.dragging || !st.ctx || !st.ctx.history) { return; }
        const thumbs = Array.prototype.slice.call(
            document.querySelectorAll('#' + SLIDER + ' [role=slider]'));
        const i = thumbs.indexOf(t);
        const value = propOf(SLIDER, 'value'), step = Number(propOf(SLIDER, 'step'));
        const lo = Number(propOf(SLIDER, 'min')), hi = Number(propOf(SLIDER, 'max'));
        const meta = propOf(IMAGE, 'data');
        if (thumbs.length !== 2 || i < 0 || !Array.isArray(value) || value.length !== 2 ||
                !(step > 0) || !isFinite(lo) || !isFinite(hi) || !meta ||
                meta.id !== st.ctx.image) { return; }
        const n = (Math.abs(dir) === 10 || event.shiftKey ? 10 : 1) * (dir > 0 ? 1 : -1);
        const snapped = lo + Math.round((Number(value[i]) + n * step - lo) / step) * step;
        const v = Math.min(hi, Math.max(lo, Number(snapped.toFixed(Math.min(decimals(step),
                                                                              15)))));
        const pair = value.slice();
        pair[i] = v;
        if (v === value[i] || !(pair[0] < pair[1])) { return; }
        if (!quiet(SLIDER, {value: pair, drag_value: pair}, true)) { return; }
        event.preventDefault();
        event.stopPropagation();
        const hist = document.querySelector('#' + HIST + ' .js-plotly-plot');
        drawLines(hist && hist.layout && hist.layout.shapes, pair, meta);
        setProps(TEXT, {children: pairText(pair, meta)});
        send(pair, false);
    }
    document.addEventListener('keydown', keyed, true);

    const observer = new MutationObserver(function (records) {
        if (records.some(function (r) { return r.attributeName === 'aria-valuenow'; })) {
            early();
        }
    });
    function watch() {
        const slider = document.getElementById('thresholds-slider');
        if (!slider) { setTimeout(watch, 200); return; }
        observer.observe(slider, {subtree: true, attributes: true,
                                  attributeFilter: ['aria-valuenow']});
    }
    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', watch);
    } else { watch(); }

    // Plotly.relayout(gd, update) whose plotly_relayout event is not passed on: dcc.Graph
    // copies a relayout's keys into its figure prop, and that new figure is re-reacted
    // (plotly recalculates every trace: 30-40 ms on the histogram) to draw what is drawn.
    // The keys changed quietly are added to the next event passed on (a zoom, a dragged
    // line): dcc.Graph then copies them too, and never re-reacts the old ones.
    function relayoutQuietly(gd, update) {
        const keys = JSON.stringify(Object.keys(update).sort());
        if (!gd.__pipexQuiet) {
            const emit = gd.emit, quiet = gd.__pipexQuiet = [], dirty = {};
            gd.emit = function (name, data) {
                if (name !== 'plotly_relayout' || !data) { return emit.apply(this, arguments); }
                const own = Object.keys(data);
                if (quiet.length && JSON.stringify(own.slice().sort()) === quiet[0].keys) {
                    quiet.shift();
                    own.forEach(function (k) { dirty[k] = true; });
                    return undefined;
                }
                const more = Object.keys(dirty).filter(function (k) { return !(k in data); });
                Object.keys(dirty).forEach(function (k) { delete dirty[k]; });
                if (!more.length) { return emit.apply(this, arguments); }
                const full = Object.assign({}, data);
                more.forEach(function (k) { full[k] = gd.layout[k]; });
                return emit.call(this, name, full);
            };
        }
        const call = {keys: keys};
        gd.__pipexQuiet.push(call);
        const forget = function () {  // a relayout that emitted nothing
            const i = gd.__pipexQuiet.indexOf(call);
            if (i >= 0) { gd.__pipexQuiet.splice(i, 1); }
        };
        return Promise.resolve(window.Plotly.relayout(gd, update)).then(forget, forget);
    }

    function hasValues() { return Boolean(VAL.data); }
    // the page's markers image, at the image's resolution (for tests)
    function markersImage() { return VAL.data ? VAL.data.canvas.toDataURL('image/png') : null; }

    return {move: move, drag: drag, released: released, draw: draw, markers: markers,
            prefetch: prefetch, pairText: pairText, drawLines: drawLines,
            hasValues: hasValues, markersImage: markersImage, relayoutQuietly: relayoutQuietly,
            propOf: propOf};
})();
