// Numbers as a person reads them, for the threshold slider's tooltips (dcc.RangeSlider's
// tooltip.transform names a function of window.dccFunctions) and the text under it:
// integers with thousands separators (7,347); a value of at most 6 significant digits (on
// the slider's grid, or typed: 0.12345) with all of them, as the recipe holds it; others
// (computed: 0.29101560765411705, 7347.4609375) with 4 significant digits, or one decimal
// from 1,000 on (0.291, 7,347.5). Never a float's raw digits.
window.dccFunctions = window.dccFunctions || {};
window.dccFunctions.pipexNumber = (function () {
    'use strict';
    const whole = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});
    const large = new Intl.NumberFormat('en-US', {maximumFractionDigits: 1});
    const small = new Intl.NumberFormat('en-US', {maximumSignificantDigits: 4});
    const exact = {};
    // the significant digits of the shortest decimal that is this double (0.12345: 5)
    function digits(v) {
        const m = Math.abs(v).toExponential().split('e')[0].replace('.', '');
        return m.replace(/0+$/, '').length || 1;
    }
    return function (value) {
        const v = Number(value);
        if (!isFinite(v)) { return String(value); }
        if (Number.isInteger(v) && Math.abs(v) < 1e21) { return whole.format(v); }
        const d = digits(v);
        if (v !== 0 && Math.abs(v) < 1e-3) {  // 1.235e-4; typed: 1.23456e-4
            return v.toExponential(d <= 6 ? Math.max(3, d - 1) : 3);
        }
        if (d <= 6) {
            exact[d] = exact[d] || new Intl.NumberFormat('en-US', {maximumSignificantDigits: d});
            return exact[d].format(v);
        }
        if (Math.abs(v) >= 1000) { return large.format(v); }
        return small.format(v);
    };
})();

// The vmin / vmax number boxes hold every value of the image's range at the slider's step
// (issue 10): dcc.RangeSlider sizes them for at most 2 decimals (0.2910 was cut to 0.291 on a
// float image, 5-digit 16-bit values filled the box to its edge). The width follows the
// boxes' own min / max / step attributes (the image's range and step, set by
// callbacks/params.py): integer digits of the widest bound, a sign, the step's decimals,
// and room for the spin buttons. Set as a CSS variable on the slider (style.css, issue 10),
// and on a box whose value needs more (its own variable wins over the slider's).
window.pipexBoxes = (function () {
    'use strict';
    function decimals(step) {
        const s = String(step);
        const exp = s.match(/e-(\d+)$/);
        if (exp) {
            const mantissa = s.split('e')[0].split('.')[1] || '';
            return Number(exp[1]) + mantissa.length;
        }
        return (s.split('.')[1] || '').length;
    }
    function chars(lo, hi, step) {
        const digits = Math.max(String(Math.trunc(Math.abs(lo))).length,
                                String(Math.trunc(Math.abs(hi))).length);
        const d = decimals(step);
        return digits + (lo < 0 ? 1 : 0) + (d ? d + 1 : 0);
    }
    // Each box shows its value as the tooltips write it (an adopted threshold
    // 103.21747934475349 as 103.2, a typed 0.12345 as typed; no separators: a number box
    // takes none) and keeps the value itself: the recipe holds the method's full precision,
    // and leaving the box, or Enter in it, without typing changes nothing (assets/move.js
    // applies a box only when typed in, and takes the other box's value from here). dash's
    // RangeSlider writes the box's `value` (React, on each render of the slider, with the
    // slider's value): the box's own `value` property (React's value tracker) is wrapped,
    // so what dash writes is kept as the exact value and shown formatted, unless the box
    // has the focus (being typed in).
    const exact = new WeakMap();
    function written(v) {
        const fmt = window.dccFunctions.pipexNumber;
        const n = Number(v);
        if (v === '' || v === null || !isFinite(n)) { return v; }
        const text = fmt(n).replace(/,/g, '');
        return Number(text) === n ? v : text;
    }
    function wrap(box) {
        if (exact.has(box)) { return; }
        const own = Object.getOwnPropertyDescriptor(box, 'value') ||
            Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value');
        exact.set(box, own.get.call(box));
        Object.defineProperty(box, 'value', {
            configurable: true,
            get: function () { return own.get.call(this); },
            set: function (v) {
                exact.set(this, String(v));
                own.set.call(this, document.activeElement === this ? v : written(v));
            }
        });
        own.set.call(box, written(exact.get(box)));
    }
    // The value a box holds: dash's (the slider's), not the shorter one it shows.
    function value(box) { return exact.has(box) ? exact.get(box) : box.value; }
    // A box left: typed in, it holds what was typed (assets/move.js applies it); else its
    // value, formatted again.
    const typed = new WeakSet();
    document.addEventListener('input', function (event) {
        if (exact.has(event.target)) { typed.add(event.target); }
    }, true);
    document.addEventListener('focusout', function (event) {
        const box = event.target;
        if (!exact.has(box)) { return; }
        // once every listener of this event has read the box (assets/move.js)
        window.setTimeout(function () {
            if (document.activeElement === box) { return; }
            const v = typed.has(box) ? box.value : exact.get(box);
            typed.delete(box);
            box.value = v;  // the focus is gone: shown formatted
        }, 0);
    }, true);

    function size() {
        const slider = document.getElementById('thresholds-slider');
        if (!slider) { return; }
        const low = slider.querySelector('input.dash-range-slider-min-input');
        const high = slider.querySelector('input.dash-range-slider-max-input');
        if (!low || !high) { return; }
        wrap(low);
        wrap(high);
        const lo = Number(low.getAttribute('min')), hi = Number(high.getAttribute('max'));
        const step = high.getAttribute('step') || '1';
        if (!isFinite(lo) || !isFinite(hi)) { return; }
        // the digits, the box's padding and border, and the spin buttons (about 2 ch)
        const width = function (n) { return 'calc(' + (n + 1) + 'ch + 34px)'; };
        // the widest value at the step, for both boxes
        const n = chars(lo, hi, step);
        if (slider.getAttribute('data-pipex-box') !== String(n)) {
            slider.style.setProperty('--pipex-box-width', width(n));
            slider.setAttribute('data-pipex-box', String(n));
        }
        // a box whose shown value is finer than the step (typed: 0.12345; an adopted
        // 103.21747934475349 shows as 103.2, above) widens to show all of it, the other box
        // keeps its width (the slider's track keeps the room left)
        [low, high].forEach(function (box) {
            const own = Math.max(n, box.value.length);
            if (box.getAttribute('data-pipex-box') === String(own)) { return; }
            // (dash's own rule caps a box at ~120 px: lifted for such a value)
            if (own > n) {
                box.style.setProperty('--pipex-box-width', width(own));
                box.style.maxWidth = 'none';
            } else {
                box.style.removeProperty('--pipex-box-width');
                box.style.maxWidth = '';
            }
            box.setAttribute('data-pipex-box', String(own));
        });
    }
    let scheduled = false;
    function schedule() {
        if (scheduled) { return; }
        scheduled = true;
        window.requestAnimationFrame(function () { scheduled = false; size(); });
    }
    // Watch the page only until the slider is rendered, then the slider's own boxes (their
    // min / max / step change with the image): nothing runs on the rest of the page's
    // updates (a move redraws the overlays, not the slider's bounds).
    function attach() {
        const slider = document.getElementById('thresholds-slider');
        if (!slider) { return false; }
        new MutationObserver(schedule).observe(slider, {
            childList: true, subtree: true, attributes: true,
            attributeFilter: ['min', 'max', 'step', 'value']});
        schedule();
        return true;
    }
    function start() {
        if (attach()) { return; }
        const page = new MutationObserver(function () {
            if (attach()) { page.disconnect(); }
        });
        page.observe(document.body, {childList: true, subtree: true});
    }
    if (document.body) { start(); } else { document.addEventListener('DOMContentLoaded', start); }
    return {chars: chars, size: size, value: value};
})();
