"""pipeline.render's deterministic subsample (display range, histograms): the same values
whether the image is C-contiguous (a flat index, fast) or not (unravelled indices)."""

from __future__ import annotations

import numpy as np

from pipeline import render


def test_the_subsample_is_the_same_for_any_memory_layout():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60000, (40, 300, 301), dtype=np.uint16)
    fortran = np.asfortranarray(image)
    strided = np.ascontiguousarray(np.repeat(image, 2, axis=2))[:, :, ::2]
    assert image.size > render._SUBSAMPLE
    a = render._subsample(image)
    assert not fortran.flags.c_contiguous and not strided.flags.c_contiguous
    np.testing.assert_array_equal(a, render._subsample(fortran))
    np.testing.assert_array_equal(a, render._subsample(strided))
    assert render.display_range(image) == render.display_range(fortran)
    small = image[:2, :10, :10]
    np.testing.assert_array_equal(render._subsample(small), small.reshape(-1))
