// Numbers as a person reads them, for the threshold slider's tooltips (dcc.RangeSlider's
// tooltip.transform names a function of window.dccFunctions): integers with thousands
// separators (7,347), others with 4 significant digits (0.2910 -> 0.291), never a float's
// raw digits (0.29101560765411705).
window.dccFunctions = window.dccFunctions || {};
window.dccFunctions.pipexNumber = (function () {
    'use strict';
    const whole = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});
    const large = new Intl.NumberFormat('en-US', {maximumFractionDigits: 1});
    const small = new Intl.NumberFormat('en-US', {maximumSignificantDigits: 4});
    return function (value) {
        const v = Number(value);
        if (!isFinite(v)) { return String(value); }
        if (Number.isInteger(v)) { return whole.format(v); }
        if (Math.abs(v) >= 1000) { return large.format(v); }
        if (v !== 0 && Math.abs(v) < 1e-3) { return v.toExponential(3); }
        return small.format(v);
    };
})();
