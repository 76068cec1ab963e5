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


def test_float_thresholds_sit_on_a_round_grid_so_typed_values_stay_exact():
    """Issue 10 item 2: on a float image in −0.000268 … 0.99865 the slider's grid is
    0.001 wide from −0.01 to 1, so 0 and 1 are on it (they became −0.000268178 and
    0.998651822 when the grid started at the image's minimum)."""
    from pipeline.segment import threshold_range, threshold_step

    image = np.linspace(-0.000268178, 0.998651822, 1000).reshape(20, 50)
    assert threshold_step(image) == 0.001
    assert threshold_range(image) == (-0.01, 1.0)
    for span, step in ((255.0, 0.2), (0.37, 0.0005), (5e4, 50.0), (1.0, 0.001)):
        values = np.array([[0.0, span]])
        assert threshold_step(values) == step
    ints = np.array([[3, 250]], dtype=np.uint8)
    assert threshold_step(ints) == 1.0 and threshold_range(ints) == (3.0, 250.0)
    vmin, vmax = default_thresholds(image)
    k = (np.array([vmin, vmax]) + 0.01) / 0.001
    np.testing.assert_allclose(k, np.round(k), atol=1e-6)  # on the grid


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int64", "float32", "float64",
                                   "bool"])
def test_markers_select_exactly_the_pixels_below_vmin_and_above_vmax(dtype):
    """The fast comparison (integer thresholds for integer images, no masked assignment)
    gives the markers of the plain definition, for thresholds on and off the integers,
    outside the dtype's range, and NaN pixels (never a marker)."""
    rng = np.random.default_rng(3)
    image = rng.integers(-40, 300, (37, 53)).astype(np.float64)
    if dtype == "bool":
        image = image > 100
    elif np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        image = image.clip(max(info.min, -40), min(info.max, 300)).astype(dtype)
        image.flat[:2] = (info.min, info.max)
    else:
        image = image.astype(dtype)
        image.flat[5] = np.nan
    pairs = [(0.5, 0.7), (10, 200), (10.5, 199.5), (-1e9, 1e9), (-41, -40), (255, 255.5),
             (65535, 1e6), (-1e6, 0), (3e38, 4e38), (0, 1)]
    for vmin, vmax in pairs:
        want = np.zeros(image.shape, np.uint8)
        want[image < vmin] = 1
        want[image > vmax] = 2
        got = make_markers(image, vmin, vmax, check=False)
        assert got.dtype == np.uint8 and got.shape == image.shape
        assert np.array_equal(got, want), (dtype, vmin, vmax)


# --- the markers of blocks (a reduced-grid preview) ----------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int64, np.float32,
                                   np.float64, bool])
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (9, 17, 23)])
def test_block_markers_are_the_coarsened_markers(dtype, shape):
    """From the blocks' extrema, the same as coarsening the full-resolution markers: a label
    where a block holds markers of that label only (partial last blocks, NaN pixels no
    markers, fractional and out-of-range thresholds, float32 thresholds that round)."""
    from pipeline import randomwalker as rw
    from pipeline.segment import block_markers

    rng = np.random.default_rng(sum(shape))
    if dtype is bool:
        image = rng.random(shape) > 0.5
    elif np.dtype(dtype).kind == "f":
        image = rng.normal(size=shape).astype(dtype)
        image.flat[::7] = np.nan
        image[(0,) * len(shape)] = np.nan
    else:
        image = rng.integers(0, 200, size=shape).astype(dtype)
    pairs = [(0.3, 0.7), (50, 120), (-0.5, 0.5), (99.5, 100.5), (0.1000000016, 0.2),
             (-1e9, 1e9), (-1e9, -1e8)]
    for factor in (1, 2, 3, 5, 8):
        for vmin, vmax in pairs:
            want = rw._coarsen_markers(make_markers(image, vmin, vmax, check=False), factor)
            got = block_markers(image, vmin, vmax, factor)
            assert got.dtype == np.uint8 and got.shape == want.shape
            assert np.array_equal(got, want), (factor, vmin, vmax)


def test_block_markers_check_their_arguments():
    from pipeline.segment import block_markers

    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    with pytest.raises(InputError, match="vmin"):
        block_markers(image, 50, 20, 2)
    with pytest.raises(InputError, match="vmax"):
        block_markers(image, 0, float("nan"), 2)
    with pytest.raises(InputError, match="factor"):
        block_markers(image, 10, 20, 0)
    with pytest.raises(InputError, match="dtype"):
        block_markers(image.astype(np.complex64), 10, 20, 2)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_known_extrema_give_the_same_slider_and_thresholds(dtype):
    """Issue 9: the load reads an image's minimum and maximum once and hands them on; the
    slider's step and bounds and the default thresholds are those found without them."""
    from pipeline.segment import threshold_range, threshold_step

    rng = np.random.default_rng(2)
    image = (rng.random((40, 30)) * (200 if dtype.startswith("uint") else 0.73) + 3)
    image = image.astype(dtype)
    extrema = (float(image.min()), float(image.max()))
    assert threshold_step(image, extrema) == threshold_step(image)
    assert threshold_range(image, extrema) == threshold_range(image)
    assert default_thresholds(image, extrema) == default_thresholds(image)
    with pytest.raises(InputError, match="extrema"):
        threshold_range(image, (1.0,))
