"""Helpers of the browser tests."""

from __future__ import annotations

import time

#: The segmentation overlay's PNG (trace 2 of the segmentation graph), or None.
OVERLAY_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd && gd.data && gd.data.length > 2 ? gd.data[2].source : null;
"""


# The segmentation graph's markers overlay decoded in the page, for execute_async_script:
# {colour "r,g,b": pixel count} of its opaque pixels. An optional first argument is another
# image's data URI to decode instead (e.g. the page's own markers drawing).
MARKER_PIXELS_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
const done = arguments[arguments.length - 1];
const given = arguments.length > 1 ? arguments[0] : null;
const img = new Image();
img.onload = function () {
    const c = document.createElement('canvas');
    c.width = img.width; c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const px = g.getImageData(0, 0, img.width, img.height).data;
    const counts = {};
    for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] === 0) { continue; }
        const k = px[i] + ',' + px[i + 1] + ',' + px[i + 2];
        counts[k] = (counts[k] || 0) + 1;
    }
    done(counts);
};
img.src = given || gd.data[1].source;
"""


def until(predicate, timeout=60, what="condition", interval=0.05):
    """Poll `predicate` until it returns something true (returned) or fail after `timeout` s."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


#: Panels whose callback runs (or that wait for a new image): ``.panel.busy``. A panel out
#: of view that waits to be seen (``data-pipex-stale``, assets/visible.js) is not working.
BUSY_SELECTOR = ".panel.busy:not([data-pipex-stale])"
BUSY_JS = f"return Array.from(document.querySelectorAll('{BUSY_SELECTOR}')).map(p => p.id);"
#: Panels out of view whose update waits until they are seen (assets/visible.js).
STALE_JS = ("return Array.from(document.querySelectorAll('.panel[data-pipex-stale]'))"
            ".map(p => p.id);")


def show(driver, selector):
    """Scroll the element `selector` into the middle of the window, as a person would to
    look at it (panels out of view catch up then: assets/visible.js)."""
    driver.execute_script(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});", selector)


# Every POST to /_dash-update-component since the last reset, with the outputs it asks for.
FETCH_HOOK_JS = """
if (!window.__posts) {
    window.__posts = [];
    const original = window.fetch;
    window.fetch = function (url, options) {
        const u = String(url);
        if (u.indexOf('_dash-update-component') >= 0) {
            let output = '';
            try { output = JSON.parse(options.body).output; } catch (e) { output = '?'; }
            window.__posts.push({output: output, bytes: (options.body || '').length});
        } else if (u.indexOf('/_pipex/') >= 0) {  // the fast path (callbacks/fastpath.py)
            window.__posts.push({output: 'fast:' + u.split('/_pipex/')[1],
                                 bytes: (options.body || '').length});
        }
        return original.apply(this, arguments);
    };
}
window.__posts.length = 0;
"""
POSTS_JS = "return window.__posts.slice();"


def exact_shown(browser):
    """Whether the segmentation panel shows an exact result (not a live preview)."""
    text = browser.find_element("#segmentation-summary").text
    return "labelled region" in text and "preview" not in text
