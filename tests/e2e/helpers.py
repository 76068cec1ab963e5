"""Helpers of the browser tests."""

from __future__ import annotations

import time

#: The segmentation overlay's PNG (trace 2 of the segmentation graph), or None.
OVERLAY_JS = """
const gd = document.querySelector('#segmentation-graph .js-plotly-plot');
return gd && gd.data && gd.data.length > 2 ? gd.data[2].source : null;
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
