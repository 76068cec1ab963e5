import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.segment import (BACKGROUND, OBJECT, default_thresholds,
                              make_markers, threshold_step)


def test_markers_follow_thresholds():
    image = np.array([[0, 10, 20], [30, 40, 50]], dtype=np.uint8)
    markers = make_markers(image, 15, 35)
    np.testing.assert_array_equal(markers, [[1, 1, 0], [0, 2, 2]])
    assert markers.dtype == np.uint8


@pytest.mark.parametrize("vmin, vmax, message", [
    (-1, 35, "No background marker"),
    (15, 60, "No object marker"),
    (35, 15, "vmin .* must be below vmax"),
    (20, 20, "must be below vmax"),
])
def test_markers_refuse_empty_labels_and_crossed_thresholds(vmin, vmax, message):
    image = np.array([[0, 10, 20], [30, 40, 50]], dtype=np.uint8)
    with pytest.raises(InputError, match=message):
        make_markers(image, vmin, vmax)


def test_markers_refuse_when_nothing_is_left_to_decide():
    image = np.array([[0, 0], [9, 9]])
    with pytest.raises(InputError, match="nothing is left"):
        make_markers(image, 5, 6)


def test_markers_without_check_allow_empty_labels():
    markers = make_markers(np.zeros((3, 3)) + 5, 1, 2, check=False)
    assert (markers == OBJECT).all()
    assert not (markers == BACKGROUND).any()


def test_default_thresholds_bracket_otsu_on_coins():
    from skimage import data, filters

    coins = data.coins()
    vmin, vmax = default_thresholds(coins)
    t = filters.threshold_otsu(coins)
    assert coins.min() < vmin < t < vmax < coins.max()
    assert float(vmin).is_integer() and float(vmax).is_integer()
    markers = make_markers(coins, vmin, vmax)
    assert set(np.unique(markers)) == {0, 1, 2}


def test_threshold_step_integer_and_float():
    assert threshold_step(np.array([0, 255], dtype=np.uint8)) == 1
    assert threshold_step(np.array([0.0, 2.0])) == pytest.approx(0.002)


def test_default_thresholds_of_a_wide_integer_range_stay_bounded():
    # skimage's Otsu histograms an integer image with a bin per possible value: an int32
    # image holding 10**8 needed 4.8 GB. 256 bins over the range are used instead.
    import tracemalloc

    image = np.zeros((4, 4), np.int32)
    image[0, 0], image[1, 1] = 10**8, 5
    tracemalloc.start()
    try:
        vmin, vmax = default_thresholds(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert 0 <= vmin < vmax <= 10**8
    # 8- and 16-bit images keep skimage's exact integer histogram
    u16 = (np.arange(4096, dtype=np.uint16).reshape(64, 64) * 16)
    from skimage import filters
    t = filters.threshold_otsu(u16.ravel())
    lo, hi = default_thresholds(u16)
    assert lo <= t <= hi
