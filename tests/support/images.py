"""Test images shared by unit and browser tests."""

from __future__ import annotations

import numpy as np


def sixteen_bit_cells():
    """A 16-bit fluorescence-like image (512²): a dark, noisy background over the three
    darkest bins of its histogram (a camera's offset) and a few bright cells spread over the
    rest of the range."""
    rng = np.random.default_rng(10)
    image = (100 + rng.integers(0, 700, (512, 512))).astype(np.uint16)
    yy, xx = np.mgrid[:512, :512]
    for cy, cx, r in [(120, 130, 60), (300, 350, 80), (400, 120, 50), (200, 400, 40)]:
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        image[cell] = (rng.gamma(2.0, 5000, cell.sum()).clip(0, 60000) + 800).astype(np.uint16)
    return image
