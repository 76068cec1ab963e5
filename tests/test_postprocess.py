"""Tests of pipeline.postprocess: each operation, the order checks, code for scripts, overlays."""

import types
import warnings

import numpy as np
import pytest
from skimage import data, filters, measure

from pipeline.errors import InputError
from pipeline.postprocess import (LABEL_OPS, MASK_OPS, MAX_SPLIT_CANDIDATES, POSTPROCESS,
                                  boundaries_overlay, bounding_boxes, label_overlay,
                                  run_postprocess, split_cost, split_touching)

RECIPE_OPS = [
    {"name": "closing", "params": {"radius": 1}},
    {"name": "fill_holes", "params": {}},
    {"name": "label", "params": {"connectivity": 1}},
    {"name": "remove_small_objects", "params": {"min_size": 64}},
    {"name": "clear_border", "params": {}},
    {"name": "relabel_sequential", "params": {}},
]


@pytest.fixture(scope="module")
def coins_mask():
    coins = data.coins()
    return coins > filters.threshold_otsu(coins)


@pytest.fixture(scope="module")
def volume_mask():
    return data.binary_blobs(length=24, n_dim=3, volume_fraction=0.3, rng=5)


def run_code(step, array, **params):
    namespace = {"x": array.copy()}
    exec("\n".join((*step.imports, *step.code("x", "y", **params))), namespace)
    return namespace["y"]


CASES = [
    ("closing", {"radius": 1}), ("closing", {"radius": 3}),
    ("opening", {"radius": 2}), ("fill_holes", {}),
    ("label", {"connectivity": 1}), ("label", {"connectivity": 2}),
    ("remove_small_objects", {"min_size": 64}), ("remove_small_objects", {"min_size": 0}),
    ("clear_border", {}), ("relabel_sequential", {}),
    ("split_touching", {"min_distance": 3}),
    ("split_touching", {"min_distance": 5, "sigma": 1.5}),
]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("key, params", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_code_gives_the_same_array_as_apply(key, params, ndim, coins_mask, volume_mask):
    mask = coins_mask if ndim == 2 else volume_mask
    array = mask if key in MASK_OPS + ("label",) else measure.label(mask).astype(np.int32)
    if key == "relabel_sequential":
        array = array * 3  # labels 3, 6, 9, ...
    step = POSTPROCESS[key]
    checked = step.check(params)
    expected = step.apply(array.copy(), **checked)
    got = run_code(step, array, **checked)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_registry():
    assert isinstance(POSTPROCESS, types.MappingProxyType)
    assert list(POSTPROCESS) == list(MASK_OPS) + ["label"] + list(LABEL_OPS)
    for key, step in POSTPROCESS.items():
        assert step.key == key and step.stage == "postprocess" and step.function


def test_closing_bridges_a_gap_and_opening_removes_a_thin_line():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 3:9] = mask[5:15, 10:16] = True  # a one-pixel gap at column 9
    closed = POSTPROCESS["closing"].apply(mask, radius=1)
    assert closed[6:14, 9].all()
    mask[10, 16:19] = True  # a thin spur
    opened = POSTPROCESS["opening"].apply(mask, radius=1)
    assert not opened[10, 17:19].any() and opened[7:12, 4:8].all()


def test_fill_holes_fills_a_ring_in_2d_and_3d():
    ring = np.zeros((11, 11), bool)
    ring[2:9, 2:9] = True
    ring[4:7, 4:7] = False
    filled = POSTPROCESS["fill_holes"].apply(ring)
    assert filled[2:9, 2:9].all() and filled.sum() == 49
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[3, 3, 3] = False
    assert POSTPROCESS["fill_holes"].apply(shell).sum() == 125


def test_label_connectivity():
    diagonal = np.eye(4, dtype=bool)
    assert POSTPROCESS["label"].apply(diagonal, connectivity=1).max() == 4
    labels = POSTPROCESS["label"].apply(diagonal, connectivity=2)
    assert labels.max() == 1 and labels.dtype == np.int32
    with pytest.raises(InputError, match=r"Label: connectivity must be at most 2 for a 2D image"):
        POSTPROCESS["label"].apply(diagonal, connectivity=3)


def test_remove_small_objects_keeps_objects_of_at_least_min_size():
    labels = np.zeros((12, 12), np.int32)
    labels[0, :3] = 1  # 3 pixels
    labels[4:8, 4:8] = 2  # 16 pixels
    labels[10, 0:4] = 3  # 4 pixels
    step = POSTPROCESS["remove_small_objects"]
    out = step.apply(labels, min_size=4)
    assert set(np.unique(out)) == {0, 2, 3}
    assert set(np.unique(step.apply(labels, min_size=5))) == {0, 2}
    np.testing.assert_array_equal(step.apply(labels, min_size=0), labels)
    assert "max_size=3" in "\n".join(step.code("x", "y", min_size=4))
    one = np.zeros((5, 5), np.int32)
    one[1:3, 1:3] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Only one label" hint, no deprecation
        assert step.apply(one, min_size=2).max() == 1
        assert run_code(step, one, min_size=2).max() == 1


def test_clear_border_drops_a_border_object_and_relabel_gives_1_to_n():
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3] = 4
    labels[4:6, 4:6] = 7
    labels[7:9, 6:8] = 9
    cleared = POSTPROCESS["clear_border"].apply(labels)
    assert set(np.unique(cleared)) == {0, 7, 9}
    relabelled = POSTPROCESS["relabel_sequential"].apply(cleared)
    assert set(np.unique(relabelled)) == {0, 1, 2}


def test_run_postprocess_on_coins(coins_mask):
    labels = run_postprocess(coins_mask, RECIPE_OPS)
    assert labels.dtype == np.int32 and labels.shape == coins_mask.shape
    n = labels.max()
    assert 10 <= n <= 30
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() >= 64
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    assert not border.any()


def test_run_postprocess_on_a_volume(volume_mask):
    ops = [{"name": "opening", "params": {"radius": 1}}, {"name": "label"},
           {"name": "remove_small_objects", "params": {"min_size": 10}}]
    labels = run_postprocess(volume_mask, ops)
    assert labels.dtype == np.int32 and labels.max() >= 1


def test_run_postprocess_accepts_0_1_integers(coins_mask):
    np.testing.assert_array_equal(run_postprocess(coins_mask.astype(np.uint8), [{"name": "label"}]),
                                  run_postprocess(coins_mask, [{"name": "label"}]))


@pytest.mark.parametrize("ops, pattern", [
    ([{"name": "closing"}], r"^postprocess: 'label' must appear exactly once, found it 0 times$"),
    ([{"name": "label"}, {"name": "label"}], r"'label' must appear exactly once, found it 2"),
    ([{"name": "label"}, {"name": "fill_holes"}], r"'fill_holes' works on the mask: put it before"),
    ([{"name": "clear_border"}, {"name": "label"}],
     r"'clear_border' works on labels: put it after"),
    ([{"name": "dilate"}, {"name": "label"}], r"unknown operation 'dilate'.*closing, opening"),
    ([{"params": {}}], r"operation 1 must be a mapping with a 'name'"),
    ("label", r"operations must be a list"),
    ([{"name": "closing", "params": {"radius": 100}}, {"name": "label"}],
     r"^Closing: radius must be at most 25, got 100$"),
    ([{"name": "opening", "params": {"radius": 0}}, {"name": "label"}],
     r"Opening: radius must be at least 1"),
    ([{"name": "label", "params": {"connectivity": 1.5}}], r"Label: connectivity must be a whole"),
    ([{"name": "label"}, {"name": "remove_small_objects", "params": {"min_size": -1}}],
     r"Remove small objects: min_size must be at least 0"),
    ([{"name": "label"}, {"name": "clear_border", "params": {"buffer_size": 2}}],
     r"Clear border: unknown parameter buffer_size"),
])
def test_run_postprocess_refuses_bad_lists(coins_mask, ops, pattern):
    with pytest.raises(InputError, match=pattern):
        run_postprocess(coins_mask, ops)


def test_footprint_larger_than_the_image_is_refused():
    with pytest.raises(InputError, match=r"^Closing: radius 20 is larger than the image \(30 x 30"):
        run_postprocess(np.ones((30, 30), bool), [{"name": "closing", "params": {"radius": 20}},
                                                  {"name": "label"}])


@pytest.mark.parametrize("mask, pattern", [
    (np.full((4, 4), 0.5), r"mask must be boolean"),
    (np.zeros(5, bool), r"2D image or a 3D volume"),
    ([[True]], r"numpy array"),
])
def test_run_postprocess_refuses_bad_masks(mask, pattern):
    with pytest.raises(InputError, match=pattern):
        run_postprocess(mask, [{"name": "label"}])


def test_label_overlay():
    labels = np.zeros((10, 12), np.int32)
    labels[1:4, 1:4] = 1
    labels[6:9, 6:10] = 2
    image = np.full((10, 12), 100, np.uint8)
    rgba = label_overlay(labels, image)
    assert rgba.shape == (10, 12, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., 3], np.where(labels > 0, 255, 0))
    assert not np.array_equal(rgba[2, 2, :3], rgba[7, 7, :3])  # distinct colours
    with pytest.raises(InputError, match=r"label overlay: alpha"):
        label_overlay(labels, image, alpha=2)
    with pytest.raises(InputError, match=r"label overlay: image shape"):
        label_overlay(labels, image[:5])
    with pytest.raises(InputError, match=r"label overlay: labels must be a 2D"):
        label_overlay(labels[None], image)


def test_boundaries_overlay_and_bounding_boxes():
    labels = np.zeros((10, 12), np.int32)
    labels[1:5, 1:5] = 3
    labels[6:9, 6:10] = 1
    rgba = boundaries_overlay(labels, color=(0, 255, 0))
    edges = rgba[..., 3] == 255
    assert edges.any() and not edges[labels == 0].any()
    assert not edges[2:4, 2:4].any()  # interior
    np.testing.assert_array_equal(rgba[edges][:, :3], np.tile([0, 255, 0], (edges.sum(), 1)))
    with pytest.raises(InputError, match=r"boundaries overlay: color"):
        boundaries_overlay(labels, color=(0, 300, 0))
    boxes = bounding_boxes(labels)
    assert boxes == [(1, 6, 6, 9, 10), (3, 1, 1, 5, 5)]
    expected = [(r.label, *r.bbox) for r in measure.regionprops(labels)]
    assert boxes == expected


def test_parameters_must_be_a_mapping(coins_mask):
    with pytest.raises(InputError, match=r"Closing: parameters must be a mapping"):
        run_postprocess(coins_mask, [{"name": "closing", "params": [1]}, {"name": "label"}])


# --------------------------------------------------------------------------- split touching


def _two_disks(shape=(80, 120), centres=((40, 40), (40, 72)), radius=20):
    """Two overlapping disks: one object for ``label``, two once split."""
    yy, xx = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for cy, cx in centres:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    return mask


def _two_balls(shape=(40, 40, 64), radius=12):
    zz, yy, xx = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for cx in (20, 42):
        mask |= (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - cx) ** 2 < radius ** 2
    return mask


def _count(labels):
    return len(np.unique(labels[labels > 0]))


def test_split_touching_separates_two_overlapping_disks():
    mask = _two_disks()
    label_only = run_postprocess(mask, [{"name": "label"}])
    assert _count(label_only) == 1
    split = run_postprocess(mask, [{"name": "label"},
                                   {"name": "split_touching", "params": {"min_distance": 5}}])
    assert split.dtype == np.int32
    assert sorted(np.unique(split)) == [0, 1, 2]
    # every object pixel keeps a label, nothing outside the objects gets one
    np.testing.assert_array_equal(split > 0, mask)
    # the cut is along the neck, between the two centres: each disk's centre has its own label
    assert split[40, 40] != split[40, 72]
    left, right = (np.count_nonzero(split == k) for k in (1, 2))
    assert abs(left - right) <= 0.02 * mask.sum()


def test_split_touching_separates_two_overlapping_balls_in_3d():
    mask = _two_balls()
    assert _count(run_postprocess(mask, [{"name": "label"}])) == 1
    split = run_postprocess(mask, [{"name": "label"},
                                   {"name": "split_touching", "params": {"min_distance": 5}}])
    assert _count(split) == 2
    np.testing.assert_array_equal(split > 0, mask)
    assert split[20, 20, 20] != split[20, 20, 42]


def test_split_touching_min_distance_decides():
    mask = _two_disks()
    labels = measure.label(mask).astype(np.int32)
    # centres 32 pixels apart: a min distance above that keeps one object
    assert _count(split_touching(labels, min_distance=5)) == 2
    assert _count(split_touching(labels, min_distance=40)) == 1


def test_split_touching_keeps_separate_objects_and_round_ones_whole():
    mask = _two_disks()
    yy, xx = np.indices(mask.shape)
    mask |= (yy - 10) ** 2 + (xx - 110) ** 2 < 5 ** 2  # a small disk of its own, at the border
    labels = measure.label(mask).astype(np.int32)
    assert _count(labels) == 2
    split = split_touching(labels, min_distance=5)
    assert _count(split) == 3
    np.testing.assert_array_equal(split > 0, mask)
    # no label spans two objects of the input
    for k in np.unique(split[split > 0]):
        assert len(np.unique(labels[split == k])) == 1


def test_split_touching_with_diagonal_connectivity_keeps_every_pixel():
    # an object whose two halves touch only diagonally: connectivity 2 makes it one object
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:8, 2:8] = True
    mask[8:14, 8:14] = True
    ops = [{"name": "label", "params": {"connectivity": 2}},
           {"name": "split_touching", "params": {"min_distance": 2}}]
    split = run_postprocess(mask, ops)
    np.testing.assert_array_equal(split > 0, mask)  # the split took the label's connectivity
    with pytest.raises(InputError, match="must be the label step's"):
        run_postprocess(mask, [ops[0], {"name": "split_touching",
                                        "params": {"connectivity": 1}}])


def test_split_touching_without_objects_and_sigma():
    empty = np.zeros((10, 12), dtype=np.int32)
    out = split_touching(empty)
    assert out.dtype == np.int32 and not out.any()
    labels = measure.label(_two_disks()).astype(np.int32)
    assert _count(split_touching(labels, min_distance=5, sigma=2.0)) == 2


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(labels=[[0, 1]]), "labels must be a numpy array"),
    (dict(labels=np.zeros(5, np.int32)), "labels must be a 2D image or a 3D volume"),
    (dict(labels=np.zeros((4, 4))), "labels must be integers"),
    (dict(labels=-np.ones((4, 4), np.int32)), "labels must not be negative"),
    (dict(min_distance=0), "min_distance must be between 1 and 100"),
    (dict(min_distance=2.5), "min_distance must be a whole number"),
    (dict(sigma=-1), "sigma must be a number between 0 and 20"),
    (dict(sigma=float("nan")), "sigma must be a number"),
    (dict(connectivity=3), "connectivity must be at most 2"),
])
def test_split_touching_checks_its_arguments(kwargs, pattern):
    args = {"labels": np.ones((4, 4), np.int32), **kwargs}
    with pytest.raises(InputError, match=pattern):
        split_touching(**args)


def test_split_touching_is_bounded(monkeypatch):
    labels = measure.label(_two_disks()).astype(np.int32)
    objects, candidates = split_cost(labels, min_distance=5)
    assert objects == 1 and 1 <= candidates < 50
    # noise-like labels: many candidate centres
    rng = np.random.default_rng(0)
    speckle = measure.label(rng.random((64, 64)) > 0.5).astype(np.int32)
    many = split_cost(speckle, min_distance=1)[1]
    assert many > 100
    monkeypatch.setattr("pipeline.postprocess.MAX_SPLIT_CANDIDATES", 100)
    with pytest.raises(InputError, match=r"candidate centres, more than 100: raise min "):
        split_touching(speckle, min_distance=1)
    monkeypatch.setattr("pipeline.postprocess.MAX_SPLIT_OBJECTS", 10)
    with pytest.raises(InputError, match=r"objects, more than 10 this step takes"):
        run_postprocess(speckle > 0, [{"name": "label"}, {"name": "split_touching"}])
    assert MAX_SPLIT_CANDIDATES >= 100_000
