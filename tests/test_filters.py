"""Tests of pipeline.filters: each filter's effect, its checks, and its code for scripts."""

import ast
import re
import types
from pathlib import Path

import numpy as np
import pytest
from skimage import data, restoration

from pipeline.errors import InputError
from pipeline.filters import FILTERS, apply_filter

ROOT = Path(__file__).resolve().parents[1]
OWN_MODULES = ("filters", "thresholds", "segmentation", "postprocess", "measure")


@pytest.fixture(scope="module")
def coins():
    return data.coins()[60:140, 40:140].astype(np.float64)


@pytest.fixture(scope="module")
def volume(coins):
    return np.stack([coins[i * 6:i * 6 + 24, 10:40] for i in range(4)])


def run_code(step, src_array, **params):
    """Exec the step's imports and code in a fresh namespace; return what it binds to 'out'."""
    namespace = {"image": src_array}
    exec("\n".join((*step.imports, *step.code("image", "out", **params))), namespace)
    return namespace["out"]


# Non-default parameters too, so that code writes every value.
CASES = [
    ("none", {}),
    ("gaussian", {"sigma": 1.0}),
    ("gaussian", {"sigma": 0.7}),
    ("median", {"radius": 1}),
    ("median", {"radius": 2}),
    ("tv", {"weight": 10.0}),
    ("tv", {"weight": 3.3}),
    ("bilateral", {"sigma_color": 10.0, "sigma_spatial": 1.0}),
    ("bilateral", {"sigma_color": 25.5, "sigma_spatial": 1.5}),
    ("nl_means", {"h": 10.0, "patch_size": 5, "patch_distance": 6}),
    ("nl_means", {"h": 7.25, "patch_size": 3, "patch_distance": 2}),
]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("key, params", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_code_gives_the_same_array_as_apply(key, params, ndim, coins, volume):
    image = coins if ndim == 2 else volume
    step = FILTERS[key]
    checked = step.check(params)
    expected = apply_filter(image.copy(), key, params)
    got = run_code(step, image.copy(), **checked)
    assert got.dtype == expected.dtype == np.float64
    assert got.shape == image.shape
    np.testing.assert_array_equal(got, expected)


def test_registry_is_read_only_and_ordered():
    assert isinstance(FILTERS, types.MappingProxyType)
    assert list(FILTERS) == ["none", "gaussian", "median", "tv", "bilateral", "nl_means"]
    for key, step in FILTERS.items():
        assert step.key == key and step.stage == "filter" and step.label
        for p in step.params:
            if p.kind in ("int", "float"):
                assert p.min is not None and p.max is not None, (key, p.name)
                assert p.min <= p.default <= p.max
    with pytest.raises(TypeError):
        FILTERS["x"] = FILTERS["none"]


def test_identity_returns_the_image(coins):
    assert apply_filter(coins, "none", {}) is coins
    assert FILTERS["none"].code("image", "image") == []


def test_gaussian_smooths_and_keeps_the_intensity_scale(coins):
    out = apply_filter(coins, "gaussian", {"sigma": 2})
    assert out.std() < coins.std()
    assert abs(out.mean() - coins.mean()) < 1.0
    assert out.max() > 100  # not rescaled to [0, 1]


def test_median_removes_salt_noise():
    image = np.full((30, 30), 50.0)
    image[3::7, 2::5] = 255.0
    out = apply_filter(image, "median", {"radius": 1})
    np.testing.assert_array_equal(out, np.full((30, 30), 50.0))
    vol = np.full((5, 12, 12), 50.0)
    vol[2, 6, 6] = 255.0
    np.testing.assert_array_equal(apply_filter(vol, "median", {"radius": 1}), 50.0)


def _noisy_step(shape=(40, 40), seed=0):
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape)
    clean[..., shape[-1] // 2:] = 200.0
    return clean, clean + rng.normal(0, 10, shape)


@pytest.mark.parametrize("key, params", [
    ("tv", {"weight": 20.0}),
    ("bilateral", {"sigma_color": 40.0, "sigma_spatial": 2.0}),
    ("nl_means", {"h": 10.0}),
])
def test_edge_preserving_filters_denoise_in_intensity_units(key, params):
    clean, noisy = _noisy_step()
    noisy = noisy + 60  # bilateral needs non-negative values
    out = apply_filter(noisy, key, params)
    error_before = np.abs(noisy - 60 - clean).mean()
    error_after = np.abs(out - 60 - clean).mean()
    assert error_after < 0.6 * error_before, (key, error_before, error_after)
    assert out.max() > 150  # same intensity scale: the step is still there


def test_tv_weight_is_in_intensity_units(coins):
    """Scaling the image and the weight together scales the result (ROF model)."""
    a = apply_filter(coins, "tv", {"weight": 10.0})
    b = apply_filter(coins / 255, "tv", {"weight": 10.0 / 255}) * 255
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bilateral_filters_a_volume_plane_by_plane(volume):
    out = apply_filter(volume, "bilateral", {"sigma_color": 20.0, "sigma_spatial": 1.0})
    for plane, got in zip(volume, out):
        expected = restoration.denoise_bilateral(plane, sigma_color=20.0, sigma_spatial=1.0,
                                                 mode="reflect", channel_axis=None)
        np.testing.assert_array_equal(got, expected)
    assert "plane" in FILTERS["bilateral"].label


def test_bilateral_refuses_negative_images(coins):
    with pytest.raises(InputError, match=r"Bilateral.*negative"):
        apply_filter(coins - 100, "bilateral", {})


@pytest.mark.parametrize("key, params, pattern", [
    ("median", {"radius": 100}, r"^Median: radius must be at most 25, got 100$"),
    ("median", {"radius": 0}, r"Median: radius must be at least 1"),
    ("median", {"radius": 1.5}, r"Median: radius must be a whole number"),
    ("gaussian", {"sigma": 0}, r"Gaussian: sigma must be at least"),
    ("gaussian", {"sigma": 500}, r"Gaussian: sigma must be at most 50"),
    ("gaussian", {"sigma": "wide"}, r"Gaussian: sigma must be a number"),
    ("gaussian", {"sigma": float("nan")}, r"Gaussian: sigma must be a finite number"),
    ("gaussian", {"size": 3}, r"Gaussian: unknown parameter size"),
    ("tv", {"weight": -1}, r"Total variation: weight must be at least"),
    ("bilateral", {"sigma_spatial": 50}, r"Bilateral.*: sigma_spatial must be at most 10"),
    ("bilateral", {"sigma_color": 0}, r"Bilateral.*: sigma_color must be at least"),
    ("nl_means", {"h": 0}, r"Non-local means: h must be at least"),
    ("nl_means", {"patch_size": 99}, r"Non-local means: patch_size must be at most 15"),
    ("nl_means", {"patch_distance": 0}, r"Non-local means: patch_distance must be at least 1"),
])
def test_bad_parameters_name_the_step_and_the_parameter(key, params, pattern, coins):
    with pytest.raises(InputError, match=pattern):
        apply_filter(coins, key, params)


def test_unknown_filter_lists_the_choices(coins):
    with pytest.raises(InputError, match=r"unknown filter 'sobel'.*gaussian, median"):
        apply_filter(coins, "sobel", {})


@pytest.mark.parametrize("image, pattern", [
    (np.zeros((5, 5), np.uint8), r"float64"),
    (np.zeros((2, 3, 4, 5)), r"2D image or a 3D volume"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), r"NaN"),
    ([[1.0, 2.0]], r"numpy array"),
])
def test_bad_images_are_refused(image, pattern):
    with pytest.raises(InputError, match=pattern):
        apply_filter(image, "gaussian", {})


def test_imports_of_all_steps_never_clash():
    """Two steps never bind the same name to different things."""
    from pipeline.measure import IMPORTS
    from pipeline.postprocess import POSTPROCESS
    from pipeline.segmentation import SEGMENTERS

    bound = {}
    lines = [line for reg in (FILTERS, SEGMENTERS, POSTPROCESS) for s in reg.values()
             for line in s.imports] + list(IMPORTS)
    for line in lines:
        node = ast.parse(line).body[0]
        module = getattr(node, "module", None)
        for alias in node.names:
            name = alias.asname or alias.name.split(".")[0]
            target = f"{module}.{alias.name}" if module else alias.name
            if alias.asname is None and module is None:
                target = name
            assert bound.setdefault(name, target) == target, (name, bound[name], target)


def test_compute_modules_do_not_import_the_web_stack():
    for name in OWN_MODULES:
        tree = ast.parse((ROOT / "pipeline" / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                for module in modules:
                    assert not re.match(r"(dash|flask|plotly)\b", module), (name, module)


def test_parameters_must_be_a_mapping(coins):
    with pytest.raises(InputError, match=r"Gaussian: parameters must be a mapping"):
        apply_filter(coins, "gaussian", [1.0])
