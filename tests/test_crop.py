"""pipeline.crop: the region a view shows, cropped."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import crop as crops
from pipeline.errors import InputError


def test_view_box_covers_the_pixels_at_least_half_shown():
    # pixel centres at integers: [9.6, 30.4] shows pixels 10 ... 30
    rows, cols = crops.view_box((100, 200), x_range=[9.6, 30.4], y_range=[70.2, 19.5])
    assert cols == (10, 31) and rows == (20, 71)  # y given top-down (image axes) is fine
    # clipped to the image
    rows, cols = crops.view_box((100, 200), [-50, 40], [50, 500])
    assert cols == (0, 41) and rows == (50, 100)


def test_view_box_of_a_volume_uses_the_shown_axes():
    rows, cols = crops.view_box((10, 100, 200), [0, 49], [0, 8], axis=1)
    assert rows == (0, 9) and cols == (0, 50)  # rows: axis 0 (10 slices), cols: axis 2


@pytest.mark.parametrize("x, y, match", [
    ([0, 3], [0, 50], "zoom to a region of at least"),
    ([-0.5, 199.5], [-0.5, 99.5], "whole image"),
    ([0, "a"], [0, 50], "two numbers"),
    ([0, float("nan")], [0, 50], "finite"),
    ([0], [0, 50], "range"),
    ([500, 600], [0, 50], "0 columns"),
])
def test_view_box_refuses_what_is_not_a_crop(x, y, match):
    with pytest.raises(InputError, match=match):
        crops.view_box((100, 200), x, y)


def test_crop_keeps_the_dtype_and_every_slice_of_a_volume():
    image = np.arange(100 * 200, dtype=np.uint16).reshape(100, 200)
    out = crops.crop(image, (20, 71), (10, 31))
    np.testing.assert_array_equal(out, image[20:71, 10:31])
    assert out.dtype == np.uint16 and out.flags.c_contiguous
    vol = np.arange(4 * 30 * 40, dtype=np.float32).reshape(4, 30, 40)
    np.testing.assert_array_equal(crops.crop(vol, (5, 15), (0, 10), axis=0), vol[:, 5:15, :10])
    np.testing.assert_array_equal(crops.crop(vol, (1, 3), (0, 10), axis=1), vol[1:3, :, :10])
    with pytest.raises(InputError, match="cols must be within"):
        crops.crop(image, (0, 10), (190, 201))
    with pytest.raises(InputError, match="axis"):
        crops.crop(vol, (0, 2), (0, 2), axis=5)
