/*
 * Keep every dcc.Graph drawing the latest figure.
 *
 * dcc.Graph (dash 4) draws one figure at a time: each new figure waits for the promise of the
 * previous Plotly.react. Two things can leave that promise unsettled or rejected, and the
 * graph then ignores every later update while the rest of the page moves on:
 *
 * - plotly.js's image trace waits for its PNG to load through one Image object per trace
 *   and replaces its onload handler when another redraw of the same trace (a resize, a zoom
 *   or pan) starts before the PNG has loaded: the first redraw's promise never settles.
 *   Seen under CPU load: the overlays froze after a few slider moves.
 * - plotly.js rejects a redraw while the user drags on the plot (it redraws itself once the
 *   drag ends).
 *
 * This wrapper gives dcc.Graph a Plotly.react promise that always settles: when plotly's
 * does, when the graph has drawn again since the call (plotly_afterplot), or after
 * LIMIT_MS. A rejection is logged and resolved (the redraw after the drag shows the figure).
 */
(function () {
    'use strict';

    var LIMIT_MS = 4000;

    function guard(Plotly) {
        if (!Plotly || typeof Plotly.react !== 'function' || Plotly.__pipexGuarded) {
            return;
        }
        var react = Plotly.react;
        Plotly.react = function (gd) {
            var result = react.apply(this, arguments);
            if (!result || typeof result.then !== 'function') {
                return result;
            }
            var div = typeof gd === 'string' ? document.getElementById(gd) : gd;
            return new Promise(function (resolve) {
                var done = false;
                var timer = null;
                function onAfterPlot() {
                    finish(div);
                }
                function finish(value) {
                    if (done) {
                        return;
                    }
                    done = true;
                    clearTimeout(timer);
                    if (div && typeof div.removeListener === 'function') {
                        div.removeListener('plotly_afterplot', onAfterPlot);
                    }
                    resolve(value);
                }
                result.then(finish, function (err) {
                    if (window.console) {
                        window.console.debug('Plotly.react did not redraw', err);
                    }
                    finish(div);
                });
                if (div && typeof div.on === 'function') {
                    div.on('plotly_afterplot', onAfterPlot);
                }
                timer = setTimeout(function () {
                    finish(div);
                }, LIMIT_MS);
            });
        };
        Plotly.react.unguarded = react;
        Plotly.__pipexGuarded = true;
    }

    if (window.Plotly) {
        guard(window.Plotly);
        return;
    }
    // plotly.js is loaded asynchronously: wrap it as soon as it is assigned.
    var value;
    try {
        Object.defineProperty(window, 'Plotly', {
            configurable: true,
            enumerable: true,
            get: function () {
                return value;
            },
            set: function (v) {
                value = v;
                guard(v);
            }
        });
    } catch (e) {
        var poll = setInterval(function () {
            if (window.Plotly) {
                clearInterval(poll);
                guard(window.Plotly);
            }
        }, 10);
    }
})();
