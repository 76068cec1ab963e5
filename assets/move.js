// The vmin / vmax slider: whether a handle is held down by the pointer (a drag, which the
// gate in callbacks/thresholds.py previews), and a value typed in its number boxes applied
// as typed, with Enter or on leaving the box.
//
// dash's RangeSlider applies a typed value on blur only, snapped to the slider's step: on a
// float image whose step is 0.001, 0.12345 became 0.123 (issue 10 item 2: what the person
// types is what the recipe holds). Its blur handler is not run for these boxes (the event
// stops at the document); the typed value, clamped to the slider's bounds, is set as the
// slider's value, which the gate commits as any other move. The thumb shows the value's
// position; the keys and a drag move on the step grid from there (Radix snaps them). The
// server keeps the value as typed (callbacks/params.py: integer images round to a whole
// number, which the box then shows). A value above vmax (or below vmin) goes to the server
// as typed, which refuses it and says so.
(function () {
    const BOX = '#thresholds-slider input.dash-range-slider-input';
    function state() {
        window.pipexMove = window.pipexMove ||
            {seq: 0, dragging: false, inflight: 0, queued: null};
        return window.pipexMove;
    }
    document.addEventListener('pointerdown', function (event) {
        const slider = event.target && event.target.closest &&
            event.target.closest('#thresholds-slider .dash-slider-root');
        if (slider) { state().dragging = true; }
    }, true);
    function release() {
        const st = state();
        if (!st.dragging) { return; }
        st.dragging = false;
        // the pair under the handle goes to the server now (assets/fastmove.js)
        if (window.pipexFast && window.pipexFast.released) { window.pipexFast.released(); }
    }
    document.addEventListener('pointerup', release, true);
    document.addEventListener('pointercancel', release, true);

    function isBox(t) { return Boolean(t && t.matches && t.matches(BOX)); }
    const edited = new WeakSet();  // boxes typed in (or spun) since they were last applied
    document.addEventListener('input', function (event) {
        if (isBox(event.target)) { edited.add(event.target); }
    }, true);
    document.addEventListener('keydown', function (event) {
        if (event.key === 'Enter' && isBox(event.target)) {
            event.preventDefault();
            event.target.blur();
        }
    }, true);
    document.addEventListener('focusout', function (event) {
        const box = event.target;
        if (!isBox(box)) { return; }
        event.stopPropagation();  // not to dash's onBlur: it would snap the value to the step
        if (!edited.has(box)) { return; }
        edited.delete(box);
        apply(box);
    }, true);

    // The pair the slider holds: each box's number, else the current recipe's.
    function held() {
        const ctx = state().ctx;
        const m = ctx && ctx.history && ctx.history.recipe && ctx.history.recipe.markers;
        return m ? [m.vmin, m.vmax] : null;
    }

    function apply(box) {
        const slider = document.getElementById('thresholds-slider');
        const dc = window.dash_clientside;
        if (!slider || !dc || !dc.set_props) { return; }
        const low = slider.querySelector('input.dash-range-slider-min-input');
        const high = slider.querySelector('input.dash-range-slider-max-input');
        if (!low || !high) { return; }
        const recipe = held();
        // the box typed in: its text; the other: the value it holds, not the shorter one it
        // shows (an adopted 103.21747934475349 shown as 103.2: assets/format.js)
        const boxes = window.pipexBoxes;
        const number = function (el, i) {
            const text = el === box || !boxes ? el.value : String(boxes.value(el));
            const v = text.trim() === '' ? NaN : Number(text);
            return isFinite(v) ? v : (recipe ? recipe[i] : NaN);
        };
        const i = box === low ? 0 : 1;
        const pair = [number(low, 0), number(high, 1)];
        if (!isFinite(pair[0]) || !isFinite(pair[1])) { return; }
        const lo = Number(low.getAttribute('min')), hi = Number(high.getAttribute('max'));
        if (isFinite(lo) && isFinite(hi)) { pair[i] = Math.min(hi, Math.max(lo, pair[i])); }
        dc.set_props('thresholds-slider', {value: pair});
    }
})();
