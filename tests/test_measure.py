"""Tests of pipeline.measure (units, 3D, CSV, code) and of a whole exported script."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data, filters
from skimage.measure import regionprops_table

from pipeline.errors import InputError
from pipeline.measure import (AVAILABLE_PROPERTIES, DEFAULT_PROPERTIES, IMPORTS,
                              PROPERTIES_2D_ONLY, Measurements, code_lines, measure, to_csv)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def coins():
    return data.coins()[:150, :200]


@pytest.fixture(scope="module")
def labels2d(coins):
    from skimage import measure as skm
    return skm.label(coins > filters.threshold_otsu(coins)).astype(np.int32)


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(2)
    labels = np.zeros((8, 20, 20), np.int32)
    labels[1:5, 2:8, 2:9] = 1
    labels[3:7, 11:18, 10:16] = 2
    image = rng.integers(0, 255, labels.shape).astype(np.uint8)
    return labels, image


def test_pixel_size_scales_lengths_and_areas(coins, labels2d):
    px = measure(labels2d, coins)
    um = measure(labels2d, coins, pixel_size=0.5, unit="µm")
    assert list(um.columns) == list(px.columns)
    np.testing.assert_array_equal(um.columns["area"], px.columns["area"] * 0.25)
    for name in ("perimeter", "centroid-0", "centroid-1", "bbox-2", "equivalent_diameter_area"):
        np.testing.assert_array_equal(um.columns[name], px.columns[name] * 0.5)
    for name in ("label", "eccentricity", "solidity", "intensity_mean", "intensity_max"):
        np.testing.assert_array_equal(um.columns[name], px.columns[name])
    assert um.units["area"] == "µm²" and um.units["perimeter"] == "µm"
    assert um.units["centroid-1"] == "µm" and um.units["eccentricity"] == ""
    assert px.units["area"] == "px²"
    raw = regionprops_table(labels2d, coins, properties=("area", "perimeter"))
    np.testing.assert_array_equal(px.columns["area"], raw["area"])
    np.testing.assert_array_equal(um.columns["perimeter"], raw["perimeter"] * 0.5)
    assert um.notes == () and um.n_objects == labels2d.max()


def test_3d_drops_2d_only_properties_with_a_note(volume):
    labels, image = volume
    m = measure(labels, image, pixel_size=2.0, unit="µm")
    assert "perimeter" not in m.columns and "eccentricity" not in m.columns
    assert any("perimeter, eccentricity" in n and "2D" in n for n in m.notes)
    assert m.units["area"] == "µm³"
    np.testing.assert_array_equal(m.columns["area"], [4 * 6 * 7 * 8.0, 4 * 7 * 6 * 8.0])
    assert [c for c in m.columns if c.startswith("centroid")] == [
        "centroid-0", "centroid-1", "centroid-2"]


def test_every_available_property_works(coins, labels2d, volume):
    m = measure(labels2d, coins, AVAILABLE_PROPERTIES)
    assert all(len(v) == labels2d.max() for v in m.columns.values())
    labels, image = volume
    m3 = measure(labels, image, AVAILABLE_PROPERTIES)
    assert not {c.split("-")[0] for c in m3.columns} & set(PROPERTIES_2D_ONLY)


def test_without_intensity_image_intensities_are_dropped(labels2d):
    m = measure(labels2d, None)
    assert "intensity_mean" not in m.columns and "area" in m.columns
    assert any("intensity" in n for n in m.notes)


def test_no_object_gives_empty_columns():
    m = measure(np.zeros((10, 10), np.int32), np.zeros((10, 10)))
    assert m.n_objects == 0 and "bbox-3" in m.columns
    assert to_csv(m).splitlines()[-1].startswith("label,")


@pytest.mark.parametrize("kwargs, pattern", [
    ({"properties": ("area", "roundness")}, r"unknown property 'roundness'; valid ones are label"),
    ({"properties": "area"}, r"properties must be a list"),
    ({"properties": ()}, r"at least one property"),
    ({"pixel_size": 0}, r"measure: pixel_size must be a finite number above 0"),
    ({"pixel_size": -1.0}, r"measure: pixel_size must be a finite number above 0"),
    ({"pixel_size": float("inf")}, r"measure: pixel_size must be a finite number above 0"),
    ({"pixel_size": "1 µm"}, r"measure: pixel_size must be a number"),
    ({"unit": ""}, r"measure: unit must be a non-empty"),
    ({"unit": "micrometres-per-pixel"}, r"measure: unit must be at most 16 characters"),
    ({"unit": "µm,"}, r"measure: unit must not contain commas"),
])
def test_bad_arguments(coins, labels2d, kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        measure(labels2d, coins, **kwargs)


def test_bad_label_images(coins, labels2d):
    with pytest.raises(InputError, match=r"measure: labels must be an integer label image"):
        measure(labels2d > 0, coins)
    with pytest.raises(InputError, match=r"measure: the intensity image's shape"):
        measure(labels2d, coins[:10])


def test_csv_header_provenance_and_units(coins, labels2d):
    m = measure(labels2d, coins, pixel_size=0.325, unit="µm")
    provenance = {"generator": "Pipeline Explorer", "input": {"name": "coins µ.tif"},
                  "steps": {"filter": {"name": "none"}}}
    text = to_csv(m, provenance)
    lines = text.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    assert all(line.startswith("# ") for line in comments)
    assert lines[: len(comments)] == comments  # comments first
    prov = [line for line in comments if line.startswith("# provenance: ")]
    assert len(prov) == 1
    assert json.loads(prov[0][len("# provenance: "):]) == provenance
    rows = list(csv.reader(io.StringIO("\n".join(lines[len(comments):]))))
    header = rows[0]
    assert header[:4] == ["label", "area [µm²]", "perimeter [µm]", "centroid-0 [µm]"]
    assert "eccentricity" in header and "intensity_mean" in header
    assert len(rows) == 1 + labels2d.max()
    columns = list(m.columns)
    for j, name in enumerate(columns):
        values = np.array([float(r[j]) for r in rows[1:]])
        np.testing.assert_array_equal(values, m.columns[name].astype(float))  # exact round trip
    assert rows[1][0] == "1"  # integers stay integers


def test_csv_notes_and_no_provenance(volume):
    labels, image = volume
    text = to_csv(measure(labels, image))
    assert "# provenance" not in text
    assert "# note: perimeter, eccentricity: defined for 2D images only" in text


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("pixel_size, unit", [(1.0, "px"), (0.1 + 0.2, "µm")])
def test_code_lines_give_the_same_columns(ndim, pixel_size, unit, coins, labels2d, volume):
    labels, image = (labels2d, coins) if ndim == 2 else volume
    properties = DEFAULT_PROPERTIES + ("area_bbox", "axis_major_length", "orientation")
    expected = measure(labels, image, properties, pixel_size, unit)
    namespace = {"labels": labels, "image": image}
    exec("\n".join((*IMPORTS, *code_lines(properties, pixel_size, unit))), namespace)
    table = namespace["table"]
    assert list(table) == list(expected.columns)
    for name, values in expected.columns.items():
        assert table[name].dtype == values.dtype, name
        np.testing.assert_array_equal(table[name], values)


def test_measurements_is_frozen():
    m = Measurements(columns={}, units={}, notes=())
    with pytest.raises(AttributeError):
        m.notes = ("x",)


def test_a_whole_exported_script_reproduces_the_app(tmp_path):
    """Imports + code lines of one step of each stage, run in a fresh Python process."""
    from pipeline.filters import FILTERS, apply_filter
    from pipeline.postprocess import POSTPROCESS, run_postprocess
    from pipeline.segment import make_markers
    from pipeline.segmentation import SEGMENTERS, segment

    image = data.coins()[150:, :260]
    np.save(tmp_path / "image.npy", image)
    recipe = {
        "filter": ("bilateral", {"sigma_color": 12.5, "sigma_spatial": 1.5}),
        "markers": (80.0, 131.5),
        "segmentation": ("random_walker", {"beta": 130.0, "mode": "cg_mg", "tol": 0.001}),
        "postprocess": [("closing", {"radius": 1}), ("fill_holes", {}),
                        ("label", {"connectivity": 1}), ("remove_small_objects", {"min_size": 30}),
                        ("clear_border", {}), ("relabel_sequential", {})],
        "measure": (DEFAULT_PROPERTIES, 0.65, "µm"),
    }
    # what the app computes
    filtered = apply_filter(image.astype(np.float64), *recipe["filter"])
    vmin, vmax = recipe["markers"]
    markers = make_markers(filtered, vmin, vmax)
    mask = segment(filtered, markers, *recipe["segmentation"], vmin=vmin, vmax=vmax)
    labels = run_postprocess(mask, [{"name": n, "params": p} for n, p in recipe["postprocess"]])
    expected = measure(labels, image, *recipe["measure"])
    assert labels.max() >= 3

    # the script
    f_step, s_step = FILTERS[recipe["filter"][0]], SEGMENTERS[recipe["segmentation"][0]]
    p_steps = [(POSTPROCESS[n], p) for n, p in recipe["postprocess"]]
    imports = ["import numpy as np", *f_step.imports, *s_step.imports,
               *(i for s, _ in p_steps for i in s.imports), *IMPORTS]
    body = [f"image = np.load({str(tmp_path / 'image.npy')!r})",
            "filtered = image.astype(np.float64)",
            *f_step.code("filtered", "filtered", **f_step.check(recipe["filter"][1])),
            "markers = np.zeros(filtered.shape, dtype=np.uint8)",
            f"markers[filtered < {vmin!r}] = 1",
            f"markers[filtered > {vmax!r}] = 2",
            *s_step.code("filtered", "markers", "labels", vmin=vmin, vmax=vmax,
                         **s_step.check(recipe["segmentation"][1]))]
    for step, params in p_steps:
        body += step.code("labels", "labels", **step.check(params))
    body += code_lines(*recipe["measure"])
    body += [f"np.save({str(tmp_path / 'labels.npy')!r}, labels)",
             f"np.savez({str(tmp_path / 'table.npz')!r}, **table)"]
    script = "\n".join(dict.fromkeys(imports)) + "\n\n" + "\n".join(body) + "\n"
    (tmp_path / "script.py").write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning",
                           "-W", "error::FutureWarning", str(tmp_path / "script.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "labels.npy")
    assert got.dtype == labels.dtype
    np.testing.assert_array_equal(got, labels)
    table = np.load(tmp_path / "table.npz")
    assert list(table.keys()) == list(expected.columns)
    for name, values in expected.columns.items():
        np.testing.assert_array_equal(table[name], values)


def test_count_regions_counts_objects_not_the_highest_label():
    from pipeline.measure import count_regions

    labels = np.zeros((10, 10), np.int32)
    labels[1, 1], labels[5, 5], labels[8, 8] = 3, 898, 3
    assert count_regions(labels) == 2
    assert count_regions(np.zeros((4, 4), np.uint16)) == 0
    assert count_regions(np.zeros((0, 3), np.int32)) == 0
    assert count_regions(np.ones((2, 2), bool)) == 1
    with pytest.raises(InputError, match="integer"):
        count_regions(np.zeros((2, 2), float))


# --- the table served by pages (issue 9, "Big label sets") -------------------------------

def _table(n=500, seed=0):
    """A measurement table of `n` regions with known columns (some NaN eccentricities)."""
    rng = np.random.default_rng(seed)
    ecc = rng.random(n)
    ecc[::50] = np.nan
    return Measurements(columns={"label": np.arange(1, n + 1),
                                 "area": rng.integers(1, 400, n).astype(float),
                                 "eccentricity": ecc,
                                 "num_pixels": rng.integers(0, 5, n)},
                        units={"label": "", "area": "px²", "eccentricity": "",
                               "num_pixels": ""})


def test_a_page_is_the_slice_of_the_filtered_and_sorted_table():
    from pipeline.measure import page

    m = _table()
    rows, count = page(m, 0, 100)
    assert count == 500 and [r["label"] for r in rows] == list(range(1, 101))
    assert set(rows[0]) == set(m.columns)
    rows, count = page(m, 450, 550)  # the last page is short
    assert count == 500 and [r["label"] for r in rows] == list(range(451, 501))
    # sorted by area, largest first, ties by label; pages continue one another
    sort = [{"colId": "area", "sort": "desc", "type": "default"}]
    first, _ = page(m, 0, 100, sort)
    second, _ = page(m, 100, 200, sort)
    expected = sorted(zip(-m.columns["area"], m.columns["label"]))
    got = [(-r["area"], r["label"]) for r in first + second]
    assert got == [(float(a), int(lab)) for a, lab in expected[:200]]
    # ascending: the smallest first
    rows, _ = page(m, 0, 3, [{"colId": "area", "sort": "asc"}])
    assert rows[0]["area"] == m.columns["area"].min()
    # two sort keys: num_pixels, then area descending
    rows, _ = page(m, 0, 500, [{"colId": "num_pixels", "sort": "asc"},
                               {"colId": "area", "sort": "desc"}])
    keys = [(r["num_pixels"], -r["area"]) for r in rows]
    assert keys == sorted(keys)


def test_nan_is_sent_as_null_and_sorts_last():
    from pipeline.measure import page

    m = _table()
    for direction in ("asc", "desc"):
        rows, _ = page(m, 0, 500, [{"colId": "eccentricity", "sort": direction}])
        values = [r["eccentricity"] for r in rows]
        assert values[-10:] == [None] * 10 and None not in values[:-10]
        finite = values[:-10]
        assert finite == sorted(finite, reverse=direction == "desc")
    json.dumps(rows, allow_nan=False)  # valid JSON


def test_filters_of_the_grid_are_applied_on_the_server():
    from pipeline.measure import filter_mask, page

    m = _table()
    area = m.columns["area"]
    rows, count = page(m, 0, 1000, None,
                       {"area": {"filterType": "number", "type": "greaterThan", "filter": 300}})
    assert count == int((area > 300).sum()) == len(rows)
    assert all(r["area"] > 300 for r in rows)
    both = {"area": {"filterType": "number", "operator": "OR", "conditions": [
        {"filterType": "number", "type": "lessThan", "filter": 10},
        {"filterType": "number", "type": "inRange", "filter": 100, "filterTo": 50}]},
        "num_pixels": {"filterType": "number", "type": "notEqual", "filter": 0}}
    expected = ((area < 10) | ((area > 50) & (area < 100))) & (m.columns["num_pixels"] != 0)
    np.testing.assert_array_equal(filter_mask(m, both), expected)
    blank = filter_mask(m, {"eccentricity": {"type": "blank"}})
    assert blank.sum() == 10
    # a filter and a sort together: the count is that of the filter
    rows, count = page(m, 0, 5, [{"colId": "area", "sort": "desc"}],
                       {"area": {"type": "lessThanOrEqual", "filter": 200}})
    assert count == int((area <= 200).sum()) and rows[0]["area"] == area[area <= 200].max()


@pytest.mark.parametrize("args, match", [
    ((0, 2000), "at most 1000"),
    ((10, 5), "end .5. must not be below start"),
    ((-1, 5), "start must be a row number"),
    ((0, 1.5), "end must be a row number"),
    ((0, 10, [{"colId": "nope", "sort": "asc"}]), "sort_model: unknown column 'nope'"),
    ((0, 10, [{"colId": "area", "sort": "up"}]), "sort_model: each entry"),
    ((0, 10, "area"), "sort_model must be a list"),
    ((0, 10, None, {"nope": {"type": "equals", "filter": 1}}), "filter_model: unknown column"),
    ((0, 10, None, {"area": {"type": "contains", "filter": 1}}), "unknown filter type"),
    ((0, 10, None, {"area": {"type": "equals", "filter": "x"}}), "finite number"),
    ((0, 10, None, {"area": {"operator": "XOR", "conditions": []}}), "operator AND or OR"),
    ((0, 10, None, []), "filter_model must be a dict"),
])
def test_bad_page_requests_are_refused_naming_the_argument(args, match):
    from pipeline.measure import page

    with pytest.raises(InputError, match=match):
        page(_table(), *args)


def test_position_of_a_region_under_the_sort_and_filter():
    from pipeline.measure import page, position

    m = _table()
    sort = [{"colId": "area", "sort": "desc"}]
    rows, _ = page(m, 0, 500, sort)
    for i in (0, 17, 499):
        assert position(m, rows[i]["label"], sort) == i
    assert position(m, 10_000) is None
    hidden = int(m.columns["label"][m.columns["area"] <= 100][0])
    assert position(m, hidden, None, {"area": {"type": "greaterThan", "filter": 100}}) is None


def test_distributions_are_binned_on_the_server():
    from pipeline.measure import MAX_BINS, distributions

    m = _table()
    bins = distributions(m, bins=60)
    assert set(bins) == {"area", "eccentricity", "num_pixels"}  # not the label
    area = bins["area"]
    assert len(area["counts"]) == 60 and sum(area["counts"]) == 500
    assert area["lo"] == m.columns["area"].min() and area["hi"] == m.columns["area"].max()
    expected, _ = np.histogram(m.columns["area"], bins=60,
                               range=(m.columns["area"].min(), m.columns["area"].max()))
    assert area["counts"] == expected.tolist()
    assert sum(bins["eccentricity"]["counts"]) == 490  # NaN not counted
    # an integer column of few values: one bin per value, centred on it
    pixels = bins["num_pixels"]
    assert pixels["lo"] == -0.5 and pixels["hi"] == 4.5
    assert pixels["counts"] == np.bincount(m.columns["num_pixels"], minlength=5).tolist()
    # areas in pixels (whole numbers held as floats): one bar per value, no gaps between
    squares = Measurements(columns={"label": np.arange(1, 6),
                                    "area": np.array([1.0, 4.0, 4.0, 9.0, 49.0])})
    area = distributions(squares)["area"]
    assert (area["lo"], area["hi"], len(area["counts"])) == (0.5, 49.5, 49)
    assert area["counts"][3] == 2 and sum(area["counts"]) == 5
    # over the rows passing a filter only
    some = distributions(m, np.arange(10))
    assert sum(some["area"]["counts"]) == 10
    empty = distributions(m, np.arange(0))
    assert empty["area"] == {"lo": 0.0, "hi": 0.0, "counts": []}
    json.dumps(bins, allow_nan=False)
    for bad in (0, MAX_BINS + 1, 2.5, True):
        with pytest.raises(InputError, match="bins must be an integer"):
            distributions(m, bins=bad)


def test_an_implausible_region_count_is_named():
    from pipeline.measure import NOISE_MIN_REGIONS, region_count_warning

    text = region_count_warning(95_239, 4096 * 4096, 2)
    assert text == ("95,239 regions in 16,777,216 pixels (median region 2 pixels) — noise? "
                    "try a filter or remove small objects")
    crowded = region_count_warning(5_000, 400_000, 40)  # one region per 80 pixels
    assert crowded.startswith("5,000 regions in 400,000 pixels (one per 80 pixels)")
    assert region_count_warning(NOISE_MIN_REGIONS - 1, 10_000, 1) is None  # few regions
    assert region_count_warning(2_000, 4096 * 4096, 60) is None  # plausible cells
    assert region_count_warning(0, 100) is None
    with pytest.raises(InputError, match="n_pixels"):
        region_count_warning(5, 0)
    with pytest.raises(InputError, match="n_regions"):
        region_count_warning(-1, 10)


def test_the_page_is_small_beside_the_whole_table():
    """Issue 9: what the grid receives for a page against every row of 10,000 regions."""
    from pipeline.measure import page, rows_of

    labels = np.zeros((400, 400), np.int32)
    labels[::4, ::4] = np.arange(1, 10_001).reshape(100, 100)
    m = measure(labels, np.ones_like(labels, dtype=np.uint8))
    rows, count = page(m, 0, 100, [{"colId": "area", "sort": "desc"}])
    assert count == 10_000 and len(rows) == 100
    whole = len(json.dumps(rows_of(m, np.arange(m.n_objects))))
    assert len(json.dumps(rows)) * 50 < whole


@pytest.mark.parametrize("size", [1e-31, 1e31, 1e102])
def test_pixel_and_voxel_sizes_beyond_any_unit_are_refused(size):
    """A pixel size of 1e102 passed validation, then the script export's areas overflowed
    (OverflowError, a 500). Sizes are bounded so that areas and volumes stay finite."""
    from pipeline import measure as measures
    from pipeline import recipe as recipes

    with pytest.raises(InputError, match="pixel_size must be between"):
        measures.code_lines(list(DEFAULT_PROPERTIES), size, "um")
    with pytest.raises(InputError, match="spacing must be the voxel size"):
        measures.check_spacing([1.0, size, 1.0])
    base = recipes.default_recipe(50.0, 150.0)
    base["measure"]["pixel_size"] = size
    with pytest.raises(InputError, match="pixel_size"):
        recipes.validate(base)
