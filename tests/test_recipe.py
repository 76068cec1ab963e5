"""Recipes (pipeline.recipe): normalisation, JSON round trips, every rejection, running."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from skimage import data

from pipeline import recipe as R
from pipeline.errors import InputError
from pipeline.io import blobs_3d
from pipeline.measure import DEFAULT_PROPERTIES, Measurements
from pipeline.segment import default_thresholds

COINS_VMIN, COINS_VMAX = 83, 131


@pytest.fixture(scope="module")
def coins():
    return data.coins()


def coins_recipe(**sections):
    """Default coins recipe (+ remove_small_objects(64)) with some sections replaced."""
    recipe = R.default_recipe(COINS_VMIN, COINS_VMAX)
    recipe["postprocess"].append({"name": "remove_small_objects", "params": {"min_size": 64}})
    recipe.update(sections)
    return R.validate(recipe)


FULL_POSTPROCESS = [
    {"name": "closing", "params": {"radius": 1}},
    {"name": "fill_holes"},
    {"name": "label", "params": {"connectivity": 1}},
    {"name": "remove_small_objects", "params": {"min_size": 64}},
    {"name": "clear_border", "params": {}},
    {"name": "relabel_sequential", "params": {}},
]

RECIPES = {
    "default": lambda: coins_recipe(),
    "gaussian_rw_full_post": lambda: coins_recipe(
        filter={"name": "gaussian", "params": {"sigma": 1}},
        segmentation={"name": "random_walker", "params": {"mode": "cg_j", "beta": 200}},
        postprocess=FULL_POSTPROCESS),
    "median_watershed": lambda: coins_recipe(
        filter={"name": "median", "params": {"radius": 2}},
        segmentation={"name": "watershed"},
        postprocess=[{"name": "opening", "params": {"radius": 2}},
                     {"name": "label", "params": {"connectivity": 2}},
                     {"name": "relabel_sequential"}]),
    "tv_threshold": lambda: coins_recipe(
        filter={"name": "tv", "params": {"weight": 20}},
        segmentation={"name": "threshold"},
        postprocess=[{"name": "fill_holes"}, {"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 100}}],
        measure={"properties": ["label", "area", "intensity_mean"], "pixel_size": 0.5,
                 "unit": "µm"}),
    "hysteresis": lambda: coins_recipe(segmentation={"name": "hysteresis"}),
}


# --------------------------------------------------------------------------------------------
# Building and normalising


def test_default_recipe_is_normalised_and_complete():
    recipe = R.default_recipe(83, 131)
    assert recipe["format"] == R.FORMAT == "pipeline-explorer-recipe"
    assert recipe["version"] == R.VERSION == 1
    assert recipe["filter"] == {"name": "none", "params": {}}
    assert recipe["markers"] == {"vmin": 83.0, "vmax": 131.0}
    assert isinstance(recipe["markers"]["vmin"], float)
    assert recipe["segmentation"] == {"name": "random_walker",
                                      "params": {"beta": 130.0, "mode": "cg_mg", "tol": 1e-3,
                                                 "intensity_scale": 1.0}}
    assert recipe["postprocess"] == [{"name": "label", "params": {"connectivity": 1}}]
    assert recipe["measure"] == {"properties": list(DEFAULT_PROPERTIES), "pixel_size": 1.0,
                                 "unit": "px"}
    assert list(recipe) == ["format", "version", *R.SECTIONS]
    assert R.validate(recipe) == recipe


def test_default_recipe_refuses_crossed_thresholds():
    with pytest.raises(InputError, match=r"vmin \(131\) must be below vmax \(83\)"):
        R.default_recipe(131, 83)


def test_validate_completes_and_converts_parameters():
    recipe = R.validate({
        "format": R.FORMAT, "version": 1,
        "filter": {"name": "gaussian"},                      # params missing: defaults
        "markers": {"vmin": 10, "vmax": 20},                 # ints -> floats
        "segmentation": {"name": "random_walker", "params": {"beta": 90}},
        "postprocess": [{"name": "label", "params": None}, {"name": "remove_small_objects",
                                                            "params": {"min_size": 12.0}}],
        "measure": {"unit": " µm "},
    })
    assert recipe["filter"] == {"name": "gaussian", "params": {"sigma": 1.0}}
    assert recipe["markers"] == {"vmin": 10.0, "vmax": 20.0}
    assert recipe["segmentation"]["params"] == {"beta": 90.0, "mode": "cg_mg", "tol": 1e-3,
                                                "intensity_scale": 1.0}
    assert isinstance(recipe["segmentation"]["params"]["beta"], float)
    assert recipe["postprocess"][1]["params"] == {"min_size": 12}
    assert isinstance(recipe["postprocess"][1]["params"]["min_size"], int)
    assert recipe["measure"] == {"properties": list(DEFAULT_PROPERTIES), "pixel_size": 1.0,
                                 "unit": "µm"}


def test_missing_optional_sections_take_defaults():
    recipe = R.validate({"format": R.FORMAT, "version": 1,
                         "markers": {"vmin": 1, "vmax": 2}})
    assert recipe == R.default_recipe(1, 2)


def test_validate_does_not_share_or_change_its_input():
    given = coins_recipe(postprocess=FULL_POSTPROCESS)
    before = copy.deepcopy(given)
    out = R.validate(given)
    assert given == before and out == given
    out["postprocess"][0]["params"]["radius"] = 5
    out["measure"]["properties"].append("extent")
    assert given == before


def test_version_as_integral_float_is_accepted():
    recipe = R.default_recipe(1, 2)
    assert R.validate(dict(recipe, version=1.0))["version"] == 1


# --------------------------------------------------------------------------------------------
# JSON round trips


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_round_trip(name):
    recipe = RECIPES[name]()
    text = R.dumps(recipe)
    assert R.validate(R.loads(text)) == recipe
    assert R.loads(text) == recipe
    assert R.dumps(R.loads(text)) == text  # stable text
    assert text.endswith("\n")


def test_dumps_is_sorted_and_indented():
    text = R.dumps(R.default_recipe(83, 131))
    data_ = json.loads(text)
    assert list(data_) == sorted(data_)
    assert text.startswith('{\n  "filter": {')
    assert '"unit": "px"' in text


def test_dumps_validates():
    with pytest.raises(InputError, match="unknown filter"):
        R.dumps(dict(R.default_recipe(1, 2), filter={"name": "blur"}))


def test_dumps_keeps_unicode_and_loads_reads_bytes_with_bom():
    recipe = coins_recipe(measure={"unit": "µm", "pixel_size": 0.25})
    text = R.dumps(recipe)
    assert "µm" in text
    assert R.loads(b"\xef\xbb\xbf" + text.encode("utf-8")) == recipe


def test_float_values_round_trip_exactly():
    recipe = R.default_recipe(0.1 + 0.2, 1 / 3)
    assert R.loads(R.dumps(recipe))["markers"] == {"vmin": 0.1 + 0.2, "vmax": 1 / 3}


# --------------------------------------------------------------------------------------------
# Rejections


def _with(**changes):
    recipe = R.default_recipe(COINS_VMIN, COINS_VMAX)
    recipe.update(changes)
    return recipe


def _without(key):
    recipe = R.default_recipe(COINS_VMIN, COINS_VMAX)
    del recipe[key]
    return recipe


REJECTED = [
    # not a recipe at all
    ([1, 2], r"a recipe must be a mapping .* got a list"),
    ("recipe", r"a recipe must be a mapping"),
    (None, r"a recipe must be a mapping .* got null"),
    (_without("format"), r"not a Pipeline Explorer recipe: the 'format' key is missing"),
    (_with(format="other-app"),
     r"not a Pipeline Explorer recipe: format is the text 'other-app', "
     r"expected 'pipeline-explorer-recipe'"),
    # version
    (_without("version"), r"recipe version is missing"),
    (_with(version=2), r"recipe version 2 is not supported \(this app reads version 1\)"),
    (_with(version=0), r"recipe version 0 is not supported \(this app reads version 1\)"),
    (_with(version="1"), r"recipe version must be a whole number, got the text '1'"),
    (_with(version=True), r"recipe version must be a whole number"),
    (_with(version=1.5), r"recipe version must be a whole number"),
    # top level
    (_with(filters={"name": "none"}), r"recipe: unknown key 'filters'; a version 1 recipe has "
                                      r"format, version, input, image, filter, markers"),
    (_without("markers"), r"recipe has no markers"),
    # unknown step names, listing the valid ones
    (_with(filter={"name": "gausian"}),
     r"recipe filter: unknown filter 'gausian' \(did you mean 'gaussian'\?\); choose one of "
     r"none, gaussian, median"),
    (_with(filter={"name": 3}), r"unknown filter 3; choose one of none, gaussian"),
    (_with(segmentation={"name": "graph_cut"}),
     r"recipe segmentation: unknown segmentation method 'graph_cut'; choose one of "
     r"random_walker, watershed, threshold, hysteresis"),
    (_with(postprocess=[{"name": "dilate"}, {"name": "label"}]),
     r"recipe postprocess operation 1: unknown operation 'dilate'; choose one of closing, "
     r"opening, fill_holes, label"),
    # bad parameters, naming the step and the parameter
    (_with(filter={"name": "gaussian", "params": {"sigma": -1}}),
     r"recipe filter \(gaussian\): Gaussian: sigma must be at least 0\.01, got -1"),
    (_with(filter={"name": "gaussian", "params": {"sigma": "big"}}),
     r"filter \(gaussian\): Gaussian: sigma must be a number, got 'big'"),
    (_with(filter={"name": "median", "params": {"radius": 1.5}}),
     r"filter \(median\): Median: radius must be a whole number, got 1\.5"),
    (_with(filter={"name": "gaussian", "params": {"sgma": 2}}),
     r"filter \(gaussian\): Gaussian: unknown parameter sgma; expected sigma"),
    (_with(segmentation={"name": "random_walker", "params": {"mode": "fast"}}),
     r"segmentation \(random_walker\): Random walker: mode must be one of cg_mg, cg_j, bf; "
     r"got 'fast'"),
    (_with(segmentation={"name": "random_walker", "params": {"beta": float("nan")}}),
     r"Random walker: beta must be a finite number"),
    (_with(postprocess=[{"name": "label"},
                        {"name": "remove_small_objects", "params": {"min_size": -5}}]),
     r"recipe postprocess operation 2 \(remove_small_objects\): Remove small objects: "
     r"min_size must be at least 0, got -5"),
    (_with(postprocess=[{"name": "label", "params": {"connectivity": 4}}]),
     r"postprocess operation 1 \(label\): Label: connectivity must be at most 3"),
    (_with(filter={"name": "gaussian", "params": [1]}),
     r"recipe filter \(gaussian\): params must be a mapping"),
    # step entries
    (_with(filter="gaussian"), r"recipe filter must be a mapping \{\"name\": \.\.\."),
    (_with(filter={"params": {}}), r"recipe filter has no 'name'"),
    (_with(filter={"name": "none", "parameters": {}}),
     r"recipe filter: unknown key 'parameters'; expected name, params"),
    # post-processing order, via the registry's MASK_OPS / LABEL_OPS
    (_with(postprocess=[{"name": "label"}, {"name": "closing"}]),
     r"recipe postprocess operation 2: 'closing' works on the mask: put it before 'label'"),
    (_with(postprocess=[{"name": "clear_border"}, {"name": "label"}]),
     r"recipe postprocess operation 1: 'clear_border' works on labels: put it after 'label'"),
    (_with(postprocess=[{"name": "fill_holes"}]),
     r"'label' \(which numbers the objects\) must appear exactly once, found it 0 times"),
    (_with(postprocess=[{"name": "label"}, {"name": "label"}]),
     r"must appear exactly once, found it 2 times"),
    (_with(postprocess={"name": "label"}), r"recipe postprocess must be a list"),
    # markers
    (_with(markers={"vmin": 131, "vmax": 83}),
     r"recipe markers: vmin \(131\) must be below vmax \(83\)"),
    (_with(markers={"vmin": 83, "vmax": 83}), r"vmin \(83\) must be below vmax \(83\)"),
    (_with(markers={"vmin": 83}), r"recipe markers: vmax is missing"),
    (_with(markers={"vmin": "low", "vmax": 131}),
     r"recipe markers: vmin must be a number, got the text 'low'"),
    (_with(markers={"vmin": True, "vmax": 131}), r"markers: vmin must be a number, got True"),
    (_with(markers={"vmin": float("-inf"), "vmax": 131}),
     r"markers: vmin must be a finite number"),
    (_with(markers={"vmin": 1, "vmax": 2, "beta": 3}), r"recipe markers: unknown key 'beta'"),
    (_with(markers=[83, 131]), r"recipe markers must be a mapping"),
    # measurement options
    (_with(measure={"properties": ["area", "volume"]}),
     r"recipe measure: unknown property 'volume'; valid ones are label, area"),
    (_with(measure={"properties": []}), r"recipe measure: choose at least one property"),
    (_with(measure={"properties": "area"}), r"properties must be a list"),
    (_with(measure={"properties": [1]}), r"properties must be names"),
    (_with(measure={"pixel_size": 0}), r"recipe measure: pixel_size must be a finite number "
                                       r"above 0"),
    (_with(measure={"pixel_size": "1"}), r"measure: pixel_size must be a number, got the text"),
    (_with(measure={"unit": ""}), r"recipe measure: unit must be a non-empty text"),
    (_with(measure={"unit": "a,b"}), r"unit must not contain commas"),
    (_with(measure={"units": "µm"}), r"recipe measure: unknown key 'units'"),
]


@pytest.mark.parametrize("recipe, message", REJECTED,
                         ids=[f"reject{i}" for i in range(len(REJECTED))])
def test_validate_rejects_with_a_precise_message(recipe, message):
    with pytest.raises(InputError, match=message):
        R.validate(recipe)


def test_loads_rejects_invalid_json_with_its_position():
    with pytest.raises(InputError, match=r"recipe is not valid JSON: line 3 column 5: "
                                         r"Expecting property name"):
        R.loads('{\n  "format": "pipeline-explorer-recipe",\n    x')


@pytest.mark.parametrize("text, message", [
    ("", r"recipe is empty"),
    ("   \n", r"recipe is empty"),
    ('{"markers": NaN}', r"NaN is not a number JSON allows"),
    ('{"format": 1, "format": 2}', r"the key 'format' appears twice"),
    (b"\xff\xfe{}", r"recipe is not UTF-8 text"),
    ("[" * 100_000, r"nested too deeply|not valid JSON"),
])
def test_loads_rejects(text, message):
    with pytest.raises(InputError, match=message):
        R.loads(text)


def test_loads_rejects_more_than_one_megabyte_before_parsing():
    text = json.dumps(dict(R.default_recipe(1, 2), padding="x" * R.MAX_BYTES))
    with pytest.raises(InputError, match=r"recipe is 1\.0 MB, the limit is 1 MB"):
        R.loads(text)
    with pytest.raises(InputError, match=r"the limit is 1 MB"):
        R.loads(text.encode())
    with pytest.raises(InputError, match=r"the limit is 1 MB"):
        R.loads("x" * 1_000_001)  # what the app sends for an oversized upload


def test_loads_validates():
    text = json.dumps(_with(version=2))
    with pytest.raises(InputError, match=r"recipe version 2 is not supported"):
        R.loads(text)


def test_read_file(tmp_path):
    path = tmp_path / "r.json"
    recipe = RECIPES["gaussian_rw_full_post"]()
    path.write_text(R.dumps(recipe), encoding="utf-8")
    assert R.read_file(path) == recipe
    with pytest.raises(InputError, match=r"recipe file '.*missing\.json' was not found"):
        R.read_file(tmp_path / "missing.json")
    with pytest.raises(InputError, match=r"is a folder"):
        R.read_file(tmp_path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match=r"^r\.json: recipe is not valid JSON: line 1"):
        R.read_file(path)


def test_describe_and_step_names():
    recipe = RECIPES["gaussian_rw_full_post"]()
    text = R.describe(recipe)
    assert text.startswith("gaussian(sigma=1.0) → markers(vmin=83.0, vmax=131.0) → "
                           "random_walker(beta=200.0, mode='cg_j', tol=0.001, "
                           "intensity_scale=1.0) → closing(")
    assert text.endswith("relabel_sequential() → measure(11 properties, pixel 1.0 px)")
    assert "none" not in R.describe(R.default_recipe(1, 2))
    assert R.step_names(recipe) == {
        "filter": "gaussian", "segmentation": "random_walker",
        "postprocess": ["closing", "fill_holes", "label", "remove_small_objects",
                        "clear_border", "relabel_sequential"]}


# --------------------------------------------------------------------------------------------
# Running


def test_default_recipe_on_coins_finds_the_coins(coins):
    result = R.run(coins, coins_recipe())
    assert isinstance(result, R.RecipeResult)
    assert result.filtered.dtype == np.float64 and result.filtered.shape == coins.shape
    assert result.markers.dtype == np.uint8 and set(np.unique(result.markers)) == {0, 1, 2}
    assert result.mask.dtype == np.bool_
    assert result.labels.dtype == np.int32 and result.labels.shape == coins.shape
    n = len(np.unique(result.labels)) - 1
    assert 20 <= n <= 30
    assert isinstance(result.measurements, Measurements)
    assert result.measurements.n_objects == n
    assert list(result.measurements.columns)[:2] == ["label", "area"]
    # the unfiltered image as float64 is the filtered image of filter "none"
    np.testing.assert_array_equal(result.filtered, coins.astype(np.float64))
    with pytest.raises(AttributeError):
        result.labels = None  # frozen


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_gives_sensible_labels(coins, name):
    recipe = RECIPES[name]()
    labels = R.run(coins, recipe).labels
    n = len(np.unique(labels)) - 1
    assert 5 <= n <= 60, n
    assert labels.min() == 0
    objects = np.count_nonzero(labels) / labels.size
    assert 0.15 < objects < 0.6, objects  # coins cover about a third of the image


def test_full_postprocess_relabels_sequentially_and_clears_the_border(coins):
    labels = R.run(coins, RECIPES["gaussian_rw_full_post"]()).labels
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    assert not border.any()
    areas = np.bincount(labels.ravel())[1:]
    assert areas.min() >= 64


def test_measurements_read_intensities_from_the_loaded_image(coins):
    recipe = coins_recipe(filter={"name": "gaussian", "params": {"sigma": 3}})
    result = R.run(coins, recipe)
    table = result.measurements.columns
    labels = result.labels
    for label, low, high in zip(table["label"], table["intensity_min"],
                                table["intensity_max"]):
        assert low == coins[labels == label].min()
        assert high == coins[labels == label].max()


def test_pixel_size_scales_the_measurements(coins):
    px = R.run(coins, coins_recipe()).measurements
    um = R.run(coins, coins_recipe(measure={"pixel_size": 0.5, "unit": "µm"})).measurements
    np.testing.assert_allclose(um.columns["area"], px.columns["area"] * 0.25)
    np.testing.assert_allclose(um.columns["perimeter"], px.columns["perimeter"] * 0.5)
    assert um.units["area"] == "µm²"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_stage_functions_chain_equals_run(coins, name):
    recipe = RECIPES[name]()
    result = R.run(coins, recipe)
    filtered = R.filter_stage(coins, recipe)
    markers = R.marker_stage(filtered, recipe)
    mask = R.segment_stage(filtered, markers, recipe)
    labels = R.postprocess_stage(mask, recipe)
    table = R.measure_stage(labels, coins, recipe)
    for got, expected in ((filtered, result.filtered), (markers, result.markers),
                          (mask, result.mask), (labels, result.labels)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert list(table.columns) == list(result.measurements.columns)
    for column in table.columns:
        np.testing.assert_array_equal(table.columns[column],
                                      result.measurements.columns[column])
    assert table.units == result.measurements.units


def test_stages_accept_read_only_arrays(coins):
    """The app hands memory-mapped (read-only) arrays from its cache to the stages."""
    recipe = RECIPES["gaussian_rw_full_post"]()
    image = coins.copy()
    image.flags.writeable = False
    filtered = R.filter_stage(image, recipe)
    filtered.flags.writeable = False
    markers = R.marker_stage(filtered, recipe)
    markers.flags.writeable = False
    mask = R.segment_stage(filtered, markers, recipe)
    mask.flags.writeable = False
    labels = R.postprocess_stage(mask, recipe)
    np.testing.assert_array_equal(labels, R.run(coins, recipe).labels)


def test_run_does_not_modify_the_image(coins):
    image = coins.copy()
    R.run(image, RECIPES["median_watershed"]())
    np.testing.assert_array_equal(image, coins)


def test_run_on_a_volume():
    volume = blobs_3d(32)
    vmin, vmax = default_thresholds(volume)
    recipe = R.validate(dict(R.default_recipe(vmin, vmax),
                             filter={"name": "gaussian", "params": {"sigma": 1}},
                             segmentation={"name": "random_walker",
                                           "params": {"mode": "cg_j"}},
                             postprocess=[{"name": "label"},
                                          {"name": "remove_small_objects",
                                           "params": {"min_size": 20}}]))
    result = R.run(volume, recipe)
    assert result.labels.shape == volume.shape and result.labels.dtype == np.int32
    assert result.labels.max() >= 1
    assert "centroid-2" in result.measurements.columns
    assert "perimeter" not in result.measurements.columns  # 2D only: dropped, with a note
    assert any("2D images only" in note for note in result.measurements.notes)


@pytest.mark.parametrize("markers, message", [
    ({"vmin": -1, "vmax": 131}, r"No background marker: no pixel is below vmin = -1"),
    ({"vmin": 83, "vmax": 300}, r"No object marker: no pixel is above vmax = 300"),
])
def test_run_refuses_empty_marker_labels(coins, markers, message):
    with pytest.raises(InputError, match=message):
        R.run(coins, _with(markers=markers))


def test_run_validates_the_recipe(coins):
    with pytest.raises(InputError, match=r"recipe version 2 is not supported"):
        R.run(coins, _with(version=2))
    with pytest.raises(InputError, match=r"unknown filter"):
        R.filter_stage(coins, _with(filter={"name": "sharpen"}))


def test_run_refuses_a_text_image():
    with pytest.raises(InputError, match=r"filter: the image must hold real numbers"):
        R.run(np.array([["a", "b"], ["c", "d"]]), R.default_recipe(1, 2))


@pytest.mark.parametrize("unit", ["px\x00", "µm\ud800", "a\tb", "\x7f"])
def test_a_unit_that_is_not_printable_text_is_refused(unit):
    # a NUL or a lone surrogate passed validation, then the script export answered 500
    recipe = R.default_recipe(10.0, 100.0)
    recipe["measure"]["unit"] = unit
    with pytest.raises(InputError, match=r"recipe measure → unit: text (must be printable|"
                                         r"holds '\\ud800')"):
        R.validate(recipe)


# --- split touching objects ----------------------------------------------------------------


def test_split_touching_in_a_recipe_takes_the_label_connectivity():
    recipe = coins_recipe(postprocess=[
        {"name": "label", "params": {"connectivity": 2}},
        {"name": "remove_small_objects", "params": {"min_size": 64}},
        {"name": "split_touching", "params": {"min_distance": 7}},
        {"name": "clear_border"}])
    ops = R.validate(recipe)["postprocess"]
    assert ops[2] == {"name": "split_touching",
                      "params": {"min_distance": 7, "sigma": 0.0, "connectivity": 2}}
    assert R.validate(R.loads(R.dumps(recipe))) == R.validate(recipe)
    # an older recipe (no split) normalises as before
    old = coins_recipe()
    assert [op["name"] for op in R.validate(old)["postprocess"]] == [
        "label", "remove_small_objects"]


@pytest.mark.parametrize("post, message", [
    ([{"name": "split_touching"}, {"name": "label"}],
     "'split_touching' works on labels: put it after 'label'"),
    ([{"name": "label"}, {"name": "split_touching", "params": {"min_distance": 0}}],
     "min_distance must be at least 1"),
    ([{"name": "label"}, {"name": "split_touching", "params": {"sigma": 25}}],
     "sigma must be at most 20"),
    ([{"name": "label"}, {"name": "split_touching", "params": {"connectivity": 2}}],
     r"split_touching's connectivity \(2\) must be the label step's \(1\)"),
    ([{"name": "label"}, {"name": "split_touchng"}], "did you mean 'split_touching'"),
])
def test_split_touching_rejections(post, message):
    with pytest.raises(InputError, match=message):
        R.validate(coins_recipe(postprocess=post))


def test_split_touching_changes_the_coins_count(coins):
    plain = R.run(coins, coins_recipe())
    split = R.run(coins, coins_recipe(postprocess=[
        {"name": "fill_holes"}, {"name": "label"},
        {"name": "remove_small_objects", "params": {"min_size": 64}},
        {"name": "split_touching", "params": {"min_distance": 3}}]))
    assert split.measurements.n_objects > plain.measurements.n_objects


def test_the_input_section_names_the_image_series_and_is_absent_for_the_first():
    """``{"input": {"series": k}}``: the image series of a multi-series TIFF the recipe was
    tuned on. Absent for series 0, so older recipes (and their cache keys) normalise as
    before; checked like every other section."""
    base = R.default_recipe(10, 20)
    assert "input" not in base and R.series_of(base) == 0
    two = R.with_series(base, 2)
    assert two["input"] == {"series": 2} and R.series_of(two) == 2
    assert R.validate(two) == two and R.loads(R.dumps(two)) == two
    assert R.with_series(two, 0) == base and R.with_series(two, None) == base
    assert R.validate({**base, "input": {"series": 0}}) == base
    assert R.describe(two).startswith("series 2 → markers(")
    for bad, message in (({"series": -1}, "series must be a whole number >= 0"),
                         ({"series": 1.5}, "series must be a whole number >= 0"),
                         ({"series": True}, "series must be a whole number >= 0"),
                         ({"series": 1, "page": 2}, "recipe input: unknown key 'page'"),
                         ([1], "recipe input must be a mapping")):
        with pytest.raises(InputError, match=message):
            R.validate({**base, "input": bad})
    with pytest.raises(InputError, match="series must be a whole number"):
        R.with_series(base, -2)
