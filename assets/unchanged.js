// A clientside callback fired by every history change (each move) sets a prop only when
// it changes what the page shows: each prop set costs dash-renderer an update and React a
// render (≈ 40 ms of the browser's main thread per key press on coins for the four
// callbacks below, measured with bench/bench_browser.py). Compared with the page itself,
// so that a prop another callback set meanwhile is never taken for the last value sent.
//
// pipexUnchanged(id, prop, value): value as it is to be returned, or no_update when the
// element `id` shows it already (prop 'children': its text; 'className'; 'value').
window.pipexUnchanged = function (id, prop, value) {
    'use strict';
    const nu = window.dash_clientside.no_update;
    if (value === nu) { return nu; }
    const el = document.getElementById(id);
    if (!el) { return value; }
    if (prop === 'children') {
        if (value === null || value === undefined || typeof value === 'string' ||
                typeof value === 'number') {
            return el.textContent === String(value === null || value === undefined ? '' : value)
                ? nu : value;
        }
        return value;
    }
    if (prop === 'className') { return el.className === (value || '') ? nu : value; }
    if (prop === 'value') { return String(el.value) === String(value) ? nu : value; }
    return value;
};
