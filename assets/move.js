// The vmin / vmax slider: whether a handle is held down by the pointer (a drag, which the
// gate in callbacks/thresholds.py previews), and Enter in its number boxes applies the value
// (dash's RangeSlider applies it on blur only).
(function () {
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
    function release() { state().dragging = false; }
    document.addEventListener('pointerup', release, true);
    document.addEventListener('pointercancel', release, true);
    document.addEventListener('keydown', function (event) {
        const t = event.target;
        if (event.key === 'Enter' && t && t.matches &&
                t.matches('#thresholds-slider input.dash-range-slider-input')) {
            event.preventDefault();
            t.blur();
        }
    }, true);
})();
