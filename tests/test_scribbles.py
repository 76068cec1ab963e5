"""Markers drawn by hand (pipeline.scribbles): rasterisation, combination with the vmin / vmax
markers, bounds and messages, the recipe's ``markers.scribbles`` and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage import data, draw

from pipeline import recipe as R
from pipeline import scribbles as S
from pipeline.cli import main
from pipeline.compute import stage_keys
from pipeline.errors import InputError
from pipeline.segment import default_thresholds, make_markers


def _stroke(label=2, path=((10, 10), (30, 10)), width=5, **extra):
    return {"label": label, "path": [list(p) for p in path], "width": width, **extra}


# --- rasterisation ------------------------------------------------------------------------


def test_a_horizontal_stroke_covers_its_width_with_round_caps():
    out = S.paint_scribbles(np.zeros((40, 50), np.uint8), [_stroke(path=((10, 20), (30, 20)))])
    rows, cols = np.nonzero(out)
    assert set(np.unique(out)) == {0, 2}
    # the band: rows 20 ± 2 (width 5) along columns 10 … 30, caps beyond the ends
    assert (out[18:23, 10:31] == 2).all()
    assert not out[:17].any() and not out[24:].any()
    assert rows.min() == 18 and rows.max() == 22
    assert cols.min() == 8 and cols.max() == 32  # the disks of radius 2.5 at the ends
    assert out[18, 8] == 0  # a round cap, not a square one


def test_a_thin_diagonal_stroke_is_the_line_of_skimage_draw():
    out = S.paint_scribbles(np.zeros((30, 30), np.uint8),
                            [_stroke(label=1, path=((2, 3), (25, 17)), width=1)])
    expected = np.zeros((30, 30), np.uint8)
    rr, cc = draw.line(3, 2, 17, 25)
    expected[rr, cc] = 1
    np.testing.assert_array_equal(out, expected)


def test_a_single_point_is_a_disk():
    out = S.paint_scribbles(np.zeros((30, 30), np.uint8), [_stroke(path=((15, 12),), width=9)])
    expected = np.zeros((30, 30), np.uint8)
    rr, cc = draw.disk((12, 15), 4.5, shape=(30, 30))
    expected[rr, cc] = 2
    np.testing.assert_array_equal(out, expected)


def test_scribbles_override_thresholds_and_the_later_stroke_wins():
    image = np.tile(np.arange(40, dtype=float), (40, 1))  # columns 0 … 39
    across = _stroke(label=2, path=((2, 20), (37, 20)), width=3)  # object over dark and bright
    down = _stroke(label=1, path=((35, 2), (35, 37)), width=3)  # background over bright
    markers = make_markers(image, 10, 30, scribbles=[across, down])
    thresholds = make_markers(image, 10, 30)
    assert markers[20, 5] == 2 and thresholds[20, 5] == 1  # drawn over background
    assert markers[5, 35] == 1 and thresholds[5, 35] == 2  # drawn over object
    assert markers[20, 35] == 1  # where they cross the later stroke wins
    swapped = make_markers(image, 10, 30, scribbles=[down, across])
    assert swapped[20, 35] == 2
    assert markers[5, 20] == 0  # untouched between the thresholds
    # outside the strokes the threshold markers are unchanged
    drawn = S.paint_scribbles(np.zeros((40, 40), np.uint8), [across, down]) > 0
    np.testing.assert_array_equal(markers[~drawn], thresholds[~drawn])


def test_strokes_outside_the_image_edge_are_clipped():
    out = S.paint_scribbles(np.zeros((20, 20), np.uint8),
                            [_stroke(path=((-3, 5), (10, 5), (22, 5)), width=6)])
    assert out[5, 0] == 2 and out[5, 19] == 2 and out.shape == (20, 20)


def test_3d_strokes_paint_their_slice_only():
    markers = np.zeros((6, 20, 30), np.uint8)
    out = S.paint_scribbles(markers, [
        _stroke(label=2, path=((3, 4), (20, 4)), width=3, axis=0, index=2),
        # on the slice across axis 2, x runs along axis 1 and y along axis 0
        _stroke(label=1, path=((1, 1), (15, 1)), width=1, axis=2, index=25),
    ])
    assert not markers.any()  # not modified in place
    plane = np.zeros((20, 30), np.uint8)
    S.paint_stroke(plane, 2, [[3, 4], [20, 4]], 3)
    np.testing.assert_array_equal(out[2], plane)  # the two strokes do not meet
    assert not out[[0, 1, 3, 4, 5]][..., :25].any() and not out[..., 26:].any()
    expected = np.zeros((6, 20), np.uint8)
    expected[1, 1:16] = 1
    np.testing.assert_array_equal(out[:, :, 25], expected)


def test_3d_segmentation_uses_the_strokes():
    volume = np.zeros((8, 24, 24))
    volume[:, 6:18, 6:18] = 1.0
    volume = ndimage.gaussian_filter(volume, 2)  # soft edges: unknowns between the markers
    recipe = R.default_recipe(0.3, 0.7)
    # a background stroke across the cube on one slice: the cube keeps its object markers
    # elsewhere, so the labels change only near it
    recipe["markers"]["scribbles"] = [_stroke(label=1, path=((0, 12), (23, 12)), width=3,
                                              axis=0, index=4)]
    with_strokes = R.run(volume, R.validate(recipe))
    plain = R.run(volume, R.default_recipe(0.3, 0.7))
    assert with_strokes.markers[4, 12, 12] == 1 and plain.markers[4, 12, 12] == 2
    assert (with_strokes.mask != plain.mask).any()


# --- the checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("scribbles, message", [
    ("x", "must be a list of strokes"),
    ([_stroke()] * (S.MAX_STROKES + 1), "201 strokes, the limit is 200"),
    ([_stroke(path=[[1, 1]] * 5_001), _stroke(path=[[1, 1]] * 5_000)],
     "more than 10,000 points in all (at stroke 2)"),
    ([_stroke(width=51)], "stroke 1: width must be between 1 and 50 pixels, got 51"),
    ([_stroke(width=0.5)], "width must be between 1 and 50"),
    ([_stroke(width="5")], "stroke 1: width must be a number, got the text '5'"),
    ([_stroke(label=3)], "label must be 1 (background) or 2 (object), got 3"),
    ([_stroke(label=True)], "label must be 1 (background) or 2 (object), got True"),
    ([{"label": 1, "width": 3}], "stroke 1: path is missing"),
    ([_stroke(), _stroke(path=[])], "stroke 2: path must be a non-empty list"),
    ([_stroke(path=[[1, 2], [3]])], "stroke 1: point 2 must be [x, y], got a list"),
    ([_stroke(path=[[1, float("nan")]])], "stroke 1: point 1 y must be a finite number"),
    ([_stroke(path=[[1e9, 2]])], "point 1 x must be a finite number of at most"),
    ([_stroke(colour="red")], "stroke 1: unknown key 'colour'"),
    ([_stroke(axis=0)], "give both axis and index"),
    ([_stroke(axis=3, index=0)], "axis must be 0, 1 or 2, got 3"),
    ([_stroke(axis=0, index=-1)], "index must be 0 or more, got -1"),
    ([_stroke(axis=0, index=1.5)], "index must be an integer, got 1.5"),
    (["stroke"], "stroke 1 must be a mapping"),
])
def test_bad_scribbles_are_refused_naming_the_problem(scribbles, message):
    with pytest.raises(InputError) as exc:
        S.check_scribbles(scribbles)
    assert message in str(exc.value)
    # and in a recipe, naming where
    recipe = R.default_recipe(1, 2)
    recipe["markers"]["scribbles"] = scribbles
    with pytest.raises(InputError, match="recipe markers: scribbles"):
        R.validate(recipe)


@pytest.mark.parametrize("shape, stroke, message", [
    ((20, 20), _stroke(path=((5, 5), (60, 5)), width=3),
     "stroke 1 point 2 (x=60, y=5) is outside the 20 × 20 image"),
    ((20, 20), _stroke(axis=0, index=1), "names a slice (axis 0, index 1) but the image is 2D"),
    ((4, 20, 20), _stroke(), "names no slice (axis, index) but the image is 3D"),
    ((4, 20, 20), _stroke(axis=0, index=4), "is on slice 4 of axis 0, which has 4 slices"),
])
def test_strokes_that_do_not_fit_the_image_are_refused(shape, stroke, message):
    with pytest.raises(InputError) as exc:
        S.paint_scribbles(np.zeros(shape, np.uint8), [stroke])
    assert message in str(exc.value)


def test_empty_labels_with_strokes_say_what_to_draw():
    image = np.tile(np.arange(40, dtype=float), (40, 1))
    # vmin at the darkest pixel: no background from the thresholds
    with pytest.raises(InputError, match="no background stroke is drawn. Raise vmin or draw"):
        make_markers(image, 0, 30, scribbles=[_stroke(label=2)])
    markers = make_markers(image, 0, 30, scribbles=[_stroke(label=1)])  # the stroke is enough
    assert (markers == 1).any() and (markers == 2).any()
    with pytest.raises(InputError, match="No object marker: no pixel is above vmax = 39 and "
                                         "no object stroke is drawn"):
        make_markers(image, 10, 39, scribbles=[_stroke(label=1)])
    # without strokes, today's message
    with pytest.raises(InputError, match=r"no pixel is below vmin = 0\. Raise vmin\.$"):
        make_markers(image, 0, 30)


# --- the recipe -----------------------------------------------------------------------------


def test_recipes_without_scribbles_and_their_cache_keys_are_unchanged():
    recipe = R.default_recipe(83, 131)
    assert recipe["markers"] == {"vmin": 83.0, "vmax": 131.0}
    empty = R.validate({**recipe, "markers": {"vmin": 83, "vmax": 131, "scribbles": []}})
    assert empty == recipe and stage_keys(empty) == stage_keys(recipe)
    drawn = R.validate({**recipe, "markers": {"vmin": 83, "vmax": 131,
                                              "scribbles": [_stroke(width=4)]}})
    assert drawn["markers"]["scribbles"] == [
        {"label": 2, "path": [[10.0, 10.0], [30.0, 10.0]], "width": 4.0}]
    keys, plain = stage_keys(drawn), stage_keys(recipe)
    assert keys["filter"] == plain["filter"] and keys["markers"] != plain["markers"]
    assert R.validate(drawn) == drawn  # normalised once and for all
    assert R.loads(R.dumps(drawn)) == drawn
    assert "1 stroke drawn" in R.describe(drawn)


def test_a_recipe_with_as_many_points_as_allowed_is_valid():
    per = S.MAX_POINTS // S.MAX_STROKES
    strokes = [_stroke(path=[[4095.5 - i - k, 4000.25 - k] for i in range(per)], width=3)
               for k in range(S.MAX_STROKES)]
    recipe = R.validate({**R.default_recipe(1, 2),
                         "markers": {"vmin": 1, "vmax": 2, "scribbles": strokes}})
    assert len(recipe["markers"]["scribbles"]) == S.MAX_STROKES
    text = R.dumps(recipe)  # "Save recipe": a file that loads again
    assert len(text) < R.MAX_BYTES and R.loads(text) == recipe
    too_many = strokes + [_stroke()]
    with pytest.raises(InputError, match="201 strokes"):
        R.validate({**recipe, "markers": {"vmin": 1, "vmax": 2, "scribbles": too_many}})


def test_scribbles_change_the_coins_segmentation():
    coins = data.coins()
    vmin, vmax = default_thresholds(coins)
    recipe = R.default_recipe(vmin, vmax)
    plain = R.run(coins, recipe)
    # a background stroke through a coin's middle, an object stroke on the dark ground
    drawn = R.validate({**recipe, "markers": {"vmin": vmin, "vmax": vmax, "scribbles": [
        _stroke(label=1, path=((60, 20), (60, 110)), width=9)]}})
    result = R.run(coins, drawn)
    assert (result.markers[20:110, 58:63] == 1).all()
    assert (result.mask != plain.mask).sum() > 100
    np.testing.assert_array_equal(result.markers, R.marker_stage(result.filtered, drawn))


def test_the_cli_runs_a_recipe_with_scribbles(tmp_path, capsys):
    coins = data.coins()
    vmin, vmax = default_thresholds(coins)
    recipe = R.default_recipe(vmin, vmax)
    recipe["markers"]["scribbles"] = [_stroke(label=1, path=((60, 20), (60, 110)), width=9)]
    recipe = R.validate(recipe)
    (tmp_path / "recipe.json").write_text(R.dumps(recipe))
    tifffile.imwrite(tmp_path / "coins.tif", coins)
    code = main(["run", str(tmp_path / "recipe.json"), str(tmp_path / "coins.tif"),
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    labels = tifffile.imread(tmp_path / "out" / "coins_labels.tif")
    np.testing.assert_array_equal(labels, R.run(coins, recipe).labels)
    assert not np.array_equal(labels > 0, R.run(coins, R.default_recipe(vmin, vmax)).labels > 0)
    with tifffile.TiffFile(tmp_path / "out" / "coins_labels.tif") as t:
        assert json.loads(t.pages[0].description)["recipe"]["markers"] == recipe["markers"]


def test_the_values_of_strokes_are_bounded_apart_from_the_rest_of_a_recipe():
    recipe = R.default_recipe(1, 2)
    # the rest of a recipe keeps its own bound, strokes or not
    recipe["measure"]["properties"] = ["area"] * 6000
    recipe["markers"]["scribbles"] = [_stroke()]
    with pytest.raises(InputError, match="recipe holds more than 5,000 values"):
        R.validate(recipe)
    # strokes padded with values beyond their own bound are refused before being read
    recipe = R.default_recipe(1, 2)
    recipe["markers"]["scribbles"] = [_stroke(path=[[1, 2, *[0] * 40_000]])]
    with pytest.raises(InputError, match="recipe markers → scribbles hold more than"):
        R.validate(recipe)
