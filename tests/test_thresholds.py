"""Tests of pipeline.thresholds: global methods as skimage, failures per method, local ones."""

import importlib
import math

import numpy as np
import pytest
from skimage import data, filters

from pipeline.errors import InputError
from pipeline.thresholds import (GLOBAL_METHODS, LOCAL_METHODS, MAX_SAMPLE, THRESHOLD_FUNCTIONS,
                                 binarize, global_thresholds, local_binarization)


@pytest.fixture(scope="module")
def coins():
    return data.coins()


@pytest.mark.parametrize("as_float", [False, True])
def test_all_seven_match_skimage_on_coins(coins, as_float):
    image = coins.astype(np.float64) if as_float else coins
    got = global_thresholds(image)
    assert tuple(got) == GLOBAL_METHODS
    for name in GLOBAL_METHODS:
        expected = float(getattr(filters, f"threshold_{name}")(image))
        assert got[name] == expected, name
        assert isinstance(got[name], float)


def test_minimum_fails_on_a_unimodal_image_and_the_others_still_work():
    values = np.arange(256)
    counts = np.round(400 * np.exp(-((values - 128.0) ** 2) / (2 * 25.0**2))).astype(int)
    image = np.repeat(values, counts).astype(np.uint8)  # one smooth peak
    image = image[: image.size // 100 * 100].reshape(-1, 100)
    got = global_thresholds(image)
    assert isinstance(got["minimum"], str) and got["minimum"].startswith("failed: ")
    for name in GLOBAL_METHODS:
        if name != "minimum":
            assert got[name] == float(getattr(filters, f"threshold_{name}")(image)), name


def test_constant_image_fails_every_method_without_raising():
    got = global_thresholds(np.full((10, 10), 7.0))
    assert all(v == "failed: the image is constant (every pixel is 7)" for v in got.values())


def test_large_images_use_a_deterministic_subsample():
    rng = np.random.default_rng(1)
    image = np.where(rng.random((1100, 2000)) < 0.4, 50.0, 180.0) + rng.normal(0, 15, (1100, 2000))
    assert image.size > MAX_SAMPLE
    a, b = global_thresholds(image), global_thresholds(image)
    assert a == b
    bin_width = (image.max() - image.min()) / 256
    assert abs(a["otsu"] - filters.threshold_otsu(image)) < 2 * bin_width


def test_3d_volume():
    vol = np.zeros((6, 20, 20))
    vol[:, 5:15, 5:15] = 100.0
    got = global_thresholds(vol)
    assert 0 <= got["otsu"] < 100


@pytest.mark.parametrize("image, pattern", [
    (np.zeros((3,)), r"thresholds: image must be a 2D image or a 3D volume"),
    (np.zeros((0, 4)), r"empty"),
    (np.array([[np.inf, 1.0]]), r"NaN or infinite"),
    (np.array([["a", "b"]]), r"real numbers"),
])
def test_bad_images(image, pattern):
    with pytest.raises(InputError, match=pattern):
        global_thresholds(image)


def test_threshold_functions_exist_for_the_ui_links():
    assert set(THRESHOLD_FUNCTIONS) == set(GLOBAL_METHODS + LOCAL_METHODS)
    for qualname in THRESHOLD_FUNCTIONS.values():
        module, name = qualname.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("method", LOCAL_METHODS)
def test_local_binarization_matches_skimage(coins, method):
    small = coins[:100, :120]
    got = local_binarization(small, method, window_size=25, k=0.1)
    expected = small > getattr(filters, f"threshold_{method}")(small, window_size=25, k=0.1)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)
    vol = np.stack([small[:40, :40]] * 3).astype(float)
    assert local_binarization(vol, method, window_size=5).shape == vol.shape


@pytest.mark.parametrize("kwargs, pattern", [
    ({"window_size": 14}, r"niblack: window_size must be an odd number of at least 3, got 14"),
    ({"window_size": 1}, r"niblack: window_size must be an odd number of at least 3, got 1"),
    ({"window_size": 15.0}, r"niblack: window_size must be a whole number"),
    ({"window_size": 5001}, r"niblack: window_size must be at most"),
    ({"k": 7}, r"niblack: k must be between -2 and 2"),
    ({"k": "x"}, r"niblack: k must be a number"),
])
def test_local_binarization_checks(coins, kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        local_binarization(coins, "niblack", **kwargs)


def test_local_binarization_unknown_method(coins):
    with pytest.raises(InputError, match=r"niblack, sauvola"):
        local_binarization(coins, "bernsen")


def test_binarize(coins):
    np.testing.assert_array_equal(binarize(coins, 100), coins > 100)
    for bad in (math.nan, "high", None, True):
        with pytest.raises(InputError, match=r"threshold: threshold must be"):
            binarize(coins, bad)


def test_sauvola_on_an_integer_image_in_its_own_units():
    # The app thresholds the image converted to float64 in its own units (0..255): with
    # skimage's default r (half the float dtype's range, 1) every pixel fell below its
    # threshold; r = half the 8-bit range gives the objects.
    from skimage import data

    blobs = data.binary_blobs(256, rng=1).astype(np.uint8) * 160 + 40
    image = blobs.astype(np.float64)
    got = local_binarization(image, "sauvola", window_size=25, r=127.5)
    np.testing.assert_array_equal(
        got, image > filters.threshold_sauvola(image, window_size=25, r=127.5))
    assert 0.2 < got.mean() < 0.9
    assert (got == (blobs > 100)).mean() > 0.8  # the blobs, not noise


@pytest.mark.parametrize("r", [0, -1, float("nan"), "x", True])
def test_sauvola_r_is_checked(coins, r):
    with pytest.raises(InputError, match=r"sauvola: r must be"):
        local_binarization(coins, "sauvola", r=r)
