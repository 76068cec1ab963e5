// Panels out of view catch up when they come into view (callbacks/visibility.py).
//
// gate(store, panel, value): the value of SEG_SETTLED for the store that the panel's callback
// listens to. In view (or within MARGIN of the viewport): returned at once, so the panel
// updates as before. Out of view: kept (the latest wins), the panel marked "updating…"
// (data-pipex-stale, assets/style.css), and no_update returned; an IntersectionObserver on
// the panel sets the kept value on the store when the panel comes into view.
window.pipexVisible = (function () {
    'use strict';
    const MARGIN = 100;  // px: a panel about to scroll into view is updated already
    const gates = {};  // store id -> {panel, visible, pending, has, observer}

    function release(g) {
        if (!g.has) { return; }
        const value = g.pending;
        g.pending = undefined;
        g.has = false;
        const el = document.getElementById(g.panel);
        if (el) { el.removeAttribute('data-pipex-stale'); }
        window.dash_clientside.set_props(g.store, {data: value});
    }

    function inView(el) {
        if (!el || !el.getClientRects().length) { return false; }  // not displayed
        const r = el.getBoundingClientRect();
        const h = window.innerHeight || document.documentElement.clientHeight;
        const w = window.innerWidth || document.documentElement.clientWidth;
        return r.bottom >= -MARGIN && r.top <= h + MARGIN && r.right >= 0 && r.left <= w;
    }

    function observe(g, el) {
        if (g.observer || !el || !window.IntersectionObserver) { return; }
        g.observer = new IntersectionObserver(function (records) {
            records.forEach(function (r) { g.visible = r.isIntersecting; });
            if (g.visible) { release(g); }
        }, {rootMargin: MARGIN + 'px 0px'});
        g.observer.observe(el);
    }

    function gate(store, panel, value) {
        const g = gates[store] = gates[store] || {store: store, panel: panel};
        const el = document.getElementById(panel);
        observe(g, el);
        // the observer's state when it has reported, else measured now
        const visible = g.visible === undefined ? inView(el) : g.visible;
        if (visible || !el) {
            g.pending = undefined;
            g.has = false;
            return value;
        }
        g.pending = value;
        g.has = true;
        el.setAttribute('data-pipex-stale', '1');
        return window.dash_clientside.no_update;
    }

    // SEG_SETTLED passed on to the panels below the first row (callbacks/visibility.py,
    // GATES: the same pairs): {store: value} for the panels in view; the others keep it.
    // Run by the panels' gate callback and by a move's hand-off (assets/fastmove.js), which
    // sets SEG_SETTLED without a dash-renderer cycle and these stores itself.
    const SETTLED_GATES = [['compare-settled-store', 'compare-panel'],
                           ['measure-settled-store', 'measure-panel']];
    const VOLUME_TAB = 'volume', VOLUME_SIGNAL = 'volume-signal-store';

    function passOn(settled, tab) {
        const out = {};
        SETTLED_GATES.forEach(function (g) {
            const v = gate(g[0], g[1], settled);
            if (v !== window.dash_clientside.no_update) { out[g[0]] = v; }
        });
        // the 3D view: redrawn when the labels change, only while its tab is open
        if (tab === VOLUME_TAB) { out[VOLUME_SIGNAL] = {t: Date.now()}; }
        return out;
    }

    // what waits for a panel to come into view (read by tests and the benchmark)
    function waiting() {
        return Object.keys(gates).filter(function (k) { return gates[k].has; })
            .map(function (k) { return gates[k].panel; });
    }

    return {gate: gate, passOn: passOn, waiting: waiting,
            SETTLED_GATES: SETTLED_GATES, VOLUME_TAB: VOLUME_TAB, VOLUME_SIGNAL: VOLUME_SIGNAL};
})();
