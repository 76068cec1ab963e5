"""Tests of pipeline.segmentation: each method's mask, its checks and its code for scripts."""

import types
import warnings

import numpy as np
import pytest
from skimage import data, filters
from skimage.segmentation import random_walker as sk_random_walker

from pipeline.errors import InputError
from pipeline.segment import make_markers
from pipeline.segmentation import SEGMENTERS, agreement, segment

VMIN, VMAX = 80.0, 130.0
VOL_VMIN, VOL_VMAX = 0.3, 0.6


@pytest.fixture(scope="module")
def coins():
    return data.coins()[40:160, 20:180].astype(np.float64)


@pytest.fixture(scope="module")
def volume():
    vol = data.binary_blobs(length=24, n_dim=3, volume_fraction=0.35, rng=3).astype(float)
    vol = filters.gaussian(vol, sigma=1.5)
    return vol + 0.05 * np.random.default_rng(3).standard_normal(vol.shape)


def inputs(ndim, coins, volume):
    if ndim == 2:
        return coins, make_markers(coins, VMIN, VMAX), VMIN, VMAX
    return volume, make_markers(volume, VOL_VMIN, VOL_VMAX), VOL_VMIN, VOL_VMAX


CASES = [
    ("random_walker", {}),
    ("random_walker", {"beta": 250.5, "mode": "cg_j", "tol": 1e-4}),
    ("random_walker", {"mode": "bf"}),
    ("watershed", {}),
    ("threshold", {}),
    ("hysteresis", {}),
]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("key, params", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_code_gives_the_same_mask_as_apply(key, params, ndim, coins, volume):
    image, markers, vmin, vmax = inputs(ndim, coins, volume)
    step = SEGMENTERS[key]
    expected = segment(image, markers, key, params, vmin, vmax)
    namespace = {"image": image.copy(), "markers": markers.copy()}
    lines = step.code("image", "markers", "mask", vmin=vmin, vmax=vmax, **step.check(params))
    exec("\n".join((*step.imports, *lines)), namespace)
    got = namespace["mask"]
    assert got.dtype == expected.dtype == np.bool_
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("key", list(SEGMENTERS))
def test_masks_respect_the_markers(key, ndim, coins, volume):
    image, markers, vmin, vmax = inputs(ndim, coins, volume)
    mask = segment(image, markers, key, {}, vmin, vmax)
    assert mask.shape == image.shape and mask.dtype == bool
    assert mask[markers == 2].all()
    assert not mask[markers == 1].any()
    assert 0.05 < mask.mean() < 0.95


def test_random_walker_agrees_with_skimage(coins):
    markers = make_markers(coins, VMIN, VMAX)
    mask = segment(coins, markers, "random_walker", {"mode": "bf"}, VMIN, VMAX)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = sk_random_walker(coins, markers, beta=130.0, mode="bf") == 2
    assert agreement(mask, reference) >= 0.995


def test_random_walker_code_names_the_skimage_equivalent():
    lines = SEGMENTERS["random_walker"].code("image", "markers", "mask", vmin=1.0, vmax=2.0,
                                             beta=130.0, mode="cg_mg", tol=0.001,
                                             intensity_scale=255.0)
    assert lines[0] == ("mask = fast_random_walker(image / 255.0, markers, beta=130.0, "
                        "mode='cg_mg', tol=0.001) == 2")
    assert lines[1] == ("# equivalent: skimage.segmentation.random_walker(image / 255.0, markers, "
                        "beta=130.0, mode='cg_mg', tol=0.001) == 2 (same labels on >= 99.5 % "
                        "of pixels)")


def test_random_walker_with_the_type_scale_agrees_with_skimage_on_uint8(coins):
    """The pipeline keeps intensities in the image's units; dividing by the type's scale gives
    beta its skimage meaning (skimage's random_walker rescales uint8 to [0, 1])."""
    from skimage.segmentation import random_walker

    coins8 = coins.astype(np.uint8)  # the fixture is coins as float64, in uint8 units
    markers = make_markers(coins8, VMIN, VMAX)
    mask = SEGMENTERS["random_walker"].apply(
        coins8.astype(np.float64), markers, vmin=VMIN, vmax=VMAX, beta=130.0, mode="cg_mg",
        tol=1e-3, intensity_scale=255.0)
    reference = random_walker(coins8, markers, beta=130.0, mode="cg_mg", tol=1e-3) == 2
    assert agreement(mask, reference) >= 0.995


def test_threshold_and_hysteresis(coins):
    markers = make_markers(coins, VMIN, VMAX)
    np.testing.assert_array_equal(segment(coins, markers, "threshold", {}, VMIN, VMAX),
                                  coins > 105.0)
    np.testing.assert_array_equal(segment(coins, markers, "hysteresis", {}, VMIN, VMAX),
                                  filters.apply_hysteresis_threshold(coins, VMIN, VMAX))


def test_values_are_written_exactly():
    vmin, vmax = 0.1 + 0.2, 1 / 3
    line, = SEGMENTERS["threshold"].code("image", "markers", "mask", vmin=vmin, vmax=vmax)
    assert line == f"mask = image > ({vmin!r} + {vmax!r}) / 2"
    line, = SEGMENTERS["hysteresis"].code("f", "m", "mask", vmin=np.float64(2), vmax=3)
    assert line == "mask = filters.apply_hysteresis_threshold(f, 2.0, 3.0)"


def test_registry():
    assert isinstance(SEGMENTERS, types.MappingProxyType)
    assert list(SEGMENTERS) == ["random_walker", "watershed", "threshold", "hysteresis"]
    for key, step in SEGMENTERS.items():
        assert step.key == key and step.stage == "segment" and step.function


@pytest.mark.parametrize("name, params, pattern", [
    ("random_walker", {"beta": 0}, r"Random walker: beta must be at least"),
    ("random_walker", {"beta": 1e9}, r"Random walker: beta must be at most"),
    ("random_walker", {"mode": "fast"}, r"Random walker: mode must be one of cg_mg, cg_j, bf"),
    ("random_walker", {"tol": 0.5}, r"Random walker: tol must be at most 0.1"),
    ("watershed", {"compactness": 1}, r"Watershed: unknown parameter compactness"),
    ("kmeans", {}, r"unknown method 'kmeans'.*random_walker, watershed"),
])
def test_bad_parameters(coins, name, params, pattern):
    markers = make_markers(coins, VMIN, VMAX)
    with pytest.raises(InputError, match=pattern):
        segment(coins, markers, name, params, VMIN, VMAX)


def test_bad_inputs(coins):
    markers = make_markers(coins, VMIN, VMAX)
    with pytest.raises(InputError, match=r"Watershed: markers must be an array of the image's"):
        segment(coins, markers[:10], "watershed", {}, VMIN, VMAX)
    with pytest.raises(InputError, match=r"Watershed: markers must hold 0"):
        segment(coins, markers * 2, "watershed", {}, VMIN, VMAX)
    with pytest.raises(InputError, match=r"Watershed: vmin \(130\) must be below vmax \(80\)"):
        segment(coins, markers, "watershed", {}, VMAX, VMIN)
    with pytest.raises(InputError, match=r"Threshold \(midpoint\): vmin must be a number"):
        segment(coins, markers, "threshold", {}, None, VMAX)
    with pytest.raises(InputError, match=r"2D image or a 3D volume"):
        segment(coins[0], markers[0], "threshold", {}, VMIN, VMAX)


def test_agreement():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    b[:2] = True
    assert agreement(a, a) == 1.0
    assert agreement(a, b) == 0.5
    with pytest.raises(InputError, match=r"agreement: the masks have different shapes"):
        agreement(a, b[:3])


def test_parameters_must_be_a_mapping(coins):
    markers = make_markers(coins, VMIN, VMAX)
    with pytest.raises(InputError, match=r"Random walker: parameters must be a mapping"):
        segment(coins, markers, "random_walker", "fast", VMIN, VMAX)
    with pytest.raises(InputError, match=r"Watershed: image contains NaN"):
        segment(np.where(markers == 0, np.nan, coins), markers, "watershed", {}, VMIN, VMAX)
