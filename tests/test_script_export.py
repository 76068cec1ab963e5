"""The exported script (pipeline.script.to_script) reproduces the app bit for bit.

For several recipes (every filter, every segmentation method, post-processing combinations)
and images (coins as PNG and TIFF, a 16-bit TIFF, an RGB PNG, a 3D uint16 stack), the script is
written with ``to_script`` and run in a fresh Python process; its label TIFF must equal
``run(read_image_file(...).array, recipe).labels`` exactly and its CSV the app's
``measure.to_csv`` (apart from the provenance line).
"""

from __future__ import annotations

import ast
import io as _io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from pipeline import recipe as R
from pipeline.errors import InputError
from pipeline.io import blobs_3d, content_hash, labels_to_tiff_bytes, read_image_file
from pipeline.measure import to_csv
from pipeline.script import to_script
from pipeline.segment import default_thresholds

REPO = Path(__file__).resolve().parents[1]
LIMITS = dict(max_bytes=64 * 2**20, max_pixels=2**27)
SCALE16 = 211  # coins * 211 + noise: a genuine 16-bit image


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Image files, by key."""
    folder = tmp_path_factory.mktemp("images")
    coins = data.coins()
    paths = {}
    paths["coins_png"] = folder / "coins.png"
    Image.fromarray(coins).save(paths["coins_png"])
    paths["coins_tif"] = folder / "coins.tif"
    tifffile.imwrite(paths["coins_tif"], coins)
    rng = np.random.default_rng(0)
    coins16 = (coins.astype(np.uint16) * SCALE16
               + rng.integers(0, SCALE16, size=coins.shape)).astype(np.uint16)
    paths["coins16_tif"] = folder / "coins16.tif"
    tifffile.imwrite(paths["coins16_tif"], coins16)
    rgb = data.astronaut()[80:240, 150:330]  # colour: converted to grayscale float on loading
    paths["rgb_png"] = folder / "astronaut.png"
    Image.fromarray(rgb).save(paths["rgb_png"])
    # touching disks (pairs that overlap): one object each pair until split
    yy, xx = np.indices((120, 160))
    disks = np.zeros((120, 160), dtype=bool)
    for cy, cx in ((30, 30), (30, 58), (85, 40), (85, 66), (60, 125)):
        disks |= (yy - cy) ** 2 + (xx - cx) ** 2 < 16 ** 2
    touching = np.clip(disks * 150.0 + 50 + rng.normal(0, 12, disks.shape), 0, 255)
    paths["touching_png"] = folder / "touching.png"
    Image.fromarray(touching.astype(np.uint8)).save(paths["touching_png"])
    volume = blobs_3d(48)[:24]
    volume = ((volume - volume.min()) / (volume.max() - volume.min()) * 65535).astype(np.uint16)
    paths["stack_tif"] = folder / "stack.tif"
    tifffile.imwrite(paths["stack_tif"], volume)
    return paths


def _thresholds(path):
    return default_thresholds(read_image_file(path, **LIMITS).array)


def _recipe(path, **sections):
    if "image" in sections:  # thresholds of the channel the recipe picks
        loaded = read_image_file(path, **LIMITS)
        vmin, vmax = default_thresholds(R.image_stage(
            loaded.array, {**R.default_recipe(0, 1), "image": sections["image"]},
            loaded.channels))
    else:
        vmin, vmax = _thresholds(path)
    recipe = R.default_recipe(vmin, vmax)
    scribbles = sections.pop("scribbles", None)  # hand-drawn markers, beside the thresholds
    recipe.update(sections)
    if scribbles:
        recipe["markers"] = {**recipe["markers"], "scribbles": scribbles}
    return R.validate(recipe)


# Strokes drawn by hand (pipeline.scribbles): on coins, an object stroke across the dark gap
# between two coins and a background stroke over a coin, crossing (the later wins there);
# on the stack, strokes on slices of two axes.
COINS_STROKES = [
    {"label": 2, "path": [[40.5, 60.2], [75.3, 62.8], [110.0, 58.1]], "width": 7},
    {"label": 1, "path": [[90.0, 30.0], [92.4, 75.6], [95.0, 110.0]], "width": 3.5},
    {"label": 2, "path": [[250.0, 250.0]], "width": 12},
    {"label": 1, "path": [[300.2, 20.7], [330.9, 21.1]], "width": 1},
]
STACK_STROKES = [
    {"label": 2, "path": [[5.0, 5.0], [20.0, 18.0]], "width": 4, "axis": 0, "index": 12},
    {"label": 1, "path": [[2.0, 3.0], [40.0, 3.0]], "width": 2, "axis": 2, "index": 30},
]


FULL_POST = [{"name": "closing", "params": {"radius": 1}}, {"name": "fill_holes"},
             {"name": "label", "params": {"connectivity": 1}},
             {"name": "remove_small_objects", "params": {"min_size": 64}},
             {"name": "clear_border"}, {"name": "relabel_sequential"}]

# (image key, recipe sections); thresholds come from default_thresholds of the loaded image.
CASES = {
    "png-none-rw_cg_mg-label_small": ("coins_png", dict(
        postprocess=[{"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 64}}])),
    "tif-gaussian-rw_cg_j-full": ("coins_tif", dict(
        filter={"name": "gaussian", "params": {"sigma": 1.5}},
        segmentation={"name": "random_walker", "params": {"mode": "cg_j", "beta": 250}},
        postprocess=FULL_POST,
        measure={"pixel_size": 0.65, "unit": "µm"})),
    "png-bilateral-rw_bf-fill": ("coins_png", dict(
        filter={"name": "bilateral", "params": {"sigma_color": 20, "sigma_spatial": 2}},
        segmentation={"name": "random_walker", "params": {"mode": "bf"}},
        postprocess=[{"name": "fill_holes"}, {"name": "label", "params": {"connectivity": 2}},
                     {"name": "clear_border"}])),
    "tif16-median-watershed-opening": ("coins16_tif", dict(
        filter={"name": "median", "params": {"radius": 2}},
        segmentation={"name": "watershed"},
        postprocess=[{"name": "opening", "params": {"radius": 2}}, {"name": "label"},
                     {"name": "relabel_sequential"}],
        measure={"properties": ["label", "area", "centroid", "orientation", "intensity_mean",
                                "intensity_std", "feret_diameter_max"]})),
    "tif16-tv-threshold": ("coins16_tif", dict(
        filter={"name": "tv", "params": {"weight": 2000}},
        segmentation={"name": "threshold"},
        postprocess=[{"name": "fill_holes"}, {"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 30}}])),
    "rgb-nl_means-hysteresis": ("rgb_png", dict(
        filter={"name": "nl_means", "params": {"h": 0.05, "patch_distance": 3}},
        segmentation={"name": "hysteresis"},
        postprocess=[{"name": "closing", "params": {"radius": 2}}, {"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 20}}])),
    "stack-gaussian-rw_cg_j": ("stack_tif", dict(
        filter={"name": "gaussian", "params": {"sigma": 1}},
        segmentation={"name": "random_walker", "params": {"mode": "cg_j"}},
        postprocess=[{"name": "closing"}, {"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 20}}],
        measure={"pixel_size": 0.5, "unit": "µm",
                 "properties": ["label", "area", "perimeter", "centroid", "bbox",
                                "intensity_mean"]})),
    "stack-median-rw_cg_mg-border": ("stack_tif", dict(
        filter={"name": "median", "params": {"radius": 1}},
        postprocess=[{"name": "label", "params": {"connectivity": 3}},
                     {"name": "remove_small_objects", "params": {"min_size": 27}},
                     {"name": "clear_border"}, {"name": "relabel_sequential"}])),
    "touching-gaussian-threshold-split": ("touching_png", dict(
        filter={"name": "gaussian", "params": {"sigma": 1.0}},
        segmentation={"name": "threshold"},
        postprocess=[{"name": "fill_holes"}, {"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 20}},
                     {"name": "split_touching", "params": {"min_distance": 7}},
                     {"name": "relabel_sequential"}])),
    "touching-none-rw-split_sigma": ("touching_png", dict(
        postprocess=[{"name": "label", "params": {"connectivity": 2}},
                     {"name": "split_touching", "params": {"min_distance": 5, "sigma": 1.5}},
                     {"name": "clear_border"}])),
    "stack-gaussian-watershed-split": ("stack_tif", dict(
        filter={"name": "gaussian", "params": {"sigma": 1}},
        segmentation={"name": "watershed"},
        postprocess=[{"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 27}},
                     {"name": "split_touching", "params": {"min_distance": 3}}])),
    "rgb-green_channel-gaussian-rw": ("rgb_png", dict(
        image={"name": "channel", "params": {"index": 1}},
        filter={"name": "gaussian", "params": {"sigma": 1.0}},
        segmentation={"name": "random_walker", "params": {"intensity_scale": 255.0}},
        postprocess=[{"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 20}}])),
    "rgb-weighted-threshold-split": ("rgb_png", dict(
        image={"name": "weighted", "params": {"red": 0.6, "green": -0.25, "blue": 0.15}},
        segmentation={"name": "threshold"},
        postprocess=[{"name": "fill_holes"}, {"name": "label"},
                     {"name": "split_touching", "params": {"min_distance": 4}}])),
    "png-scribbles-rw": ("coins_png", dict(
        scribbles=COINS_STROKES,
        postprocess=[{"name": "label"},
                     {"name": "remove_small_objects", "params": {"min_size": 20}}])),
    "tif16-scribbles-watershed": ("coins16_tif", dict(
        scribbles=COINS_STROKES, segmentation={"name": "watershed"})),
    "stack-scribbles-rw_cg_j": ("stack_tif", dict(
        scribbles=STACK_STROKES,
        segmentation={"name": "random_walker", "params": {"mode": "cg_j"}},
        measure={"properties": ["label", "area", "centroid"]})),
    "stack-none-watershed": ("stack_tif", dict(
        segmentation={"name": "watershed"},
        postprocess=[{"name": "fill_holes"}, {"name": "label", "params": {"connectivity": 2}},
                     {"name": "remove_small_objects", "params": {"min_size": 27}}])),
}


def _run_script(script: Path, image: Path, out: Path, cwd: Path):
    return subprocess.run([sys.executable, str(script), str(image), "--out", str(out)],
                          check=True, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=120)


def _data_lines(csv_text: str) -> list:
    return [line for line in csv_text.splitlines() if not line.startswith("# provenance: ")]


@pytest.mark.parametrize("case", list(CASES))
def test_script_reproduces_the_app_bit_for_bit(case, images, tmp_path):
    key, sections = CASES[case]
    image_path = images[key]
    recipe = _recipe(image_path, **sections)
    script = tmp_path / "pipeline_script.py"
    script.write_text(to_script(recipe, {"source": case}), encoding="utf-8")

    done = _run_script(script, image_path, tmp_path / "out", cwd=tmp_path)

    loaded = read_image_file(image_path, **LIMITS)
    expected = R.run(loaded.array, recipe, channels=loaded.channels)
    n_objects = expected.measurements.n_objects
    assert n_objects >= 1, "a case without objects would test nothing"
    assert f"{image_path.name}: {n_objects} objects" in done.stdout

    tif = tmp_path / "out" / f"{image_path.stem}_labels.tif"
    labels = tifffile.imread(tif)
    np.testing.assert_array_equal(labels, expected.labels)
    # the file is the app's download of those labels: same values, same (smallest) dtype
    download = tifffile.imread(_io.BytesIO(labels_to_tiff_bytes(expected.labels)))
    assert labels.dtype == download.dtype and labels.shape == expected.labels.shape
    np.testing.assert_array_equal(labels, download)

    with tifffile.TiffFile(tif) as t:
        meta = json.loads(t.pages[0].description)
    assert meta["recipe"] == recipe
    assert meta["input_hash"] == content_hash(expected.image)  # the image segmented
    assert meta["exported"] == {"source": case}

    csv_text = (tmp_path / "out" / f"{image_path.stem}_measurements.csv").read_text(
        encoding="utf-8")
    assert _data_lines(csv_text) == _data_lines(to_csv(expected.measurements))
    provenance = json.loads(next(line for line in csv_text.splitlines()
                                 if line.startswith("# provenance: "))[len("# provenance: "):])
    assert provenance["recipe"] == recipe
    assert provenance["input_hash"] == content_hash(expected.image)


def test_script_labels_are_int32_in_memory(images, tmp_path):
    """``run_pipeline`` of the script, imported in a fresh process, returns int32 labels."""
    cases = ["tif-gaussian-rw_cg_j-full", "stack-gaussian-rw_cg_j"]
    scripts = []
    for i, case in enumerate(cases):
        key, sections = CASES[case]
        recipe = _recipe(images[key], **sections)
        script = tmp_path / f"script{i}.py"
        script.write_text(to_script(recipe), encoding="utf-8")
        scripts.append((script, images[key], tmp_path / f"labels{i}.npy", recipe))
    code = "\n".join([
        "import runpy, sys, numpy as np",
        "for script, image, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):",
        "    ns = runpy.run_path(script)  # not __main__: main() is not called",
        "    labels, table = ns['run_pipeline'](ns['load_image'](image))",
        "    np.save(out, labels)",
    ])
    args = [str(a) for script, image, out, _ in scripts for a in (script, image, out)]
    subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=tmp_path, env=_env(),
                   timeout=120)
    for _, image, out, recipe in scripts:
        labels = np.load(out)
        expected = R.run(read_image_file(image, **LIMITS).array, recipe).labels
        assert labels.dtype == expected.dtype == np.int32
        np.testing.assert_array_equal(labels, expected)


# --------------------------------------------------------------------------------------------
# The script's text


@pytest.fixture(scope="module")
def full_recipe():
    return R.validate(dict(R.default_recipe(83, 131),
                           filter={"name": "bilateral"}, postprocess=FULL_POST))


def test_script_layout(full_recipe):
    source = to_script(full_recipe, {"tuned_on": "coins.png"})
    assert source.startswith("#!/usr/bin/env python3\n")
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree)
    assert "python script.py IMAGE [--out DIR]" in docstring
    # the docstring holds the recipe as JSON, and the provenance
    block = docstring[docstring.index("Recipe::"):docstring.index("Provenance")]
    assert json.loads(block[len("Recipe::"):]) == full_recipe
    assert '"tuned_on": "coins.png"' in docstring
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert {"load_image", "run_pipeline", "main"} <= set(functions)
    # the constants are the recipe and provenance
    namespace = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id in ("RECIPE", "PROVENANCE",
                                                                    "VMIN", "VMAX"):
            namespace[node.targets[0].id] = ast.literal_eval(node.value)
    assert namespace == {"RECIPE": full_recipe, "PROVENANCE": {"tuned_on": "coins.png"},
                         "VMIN": 83.0, "VMAX": 131.0}


def test_script_imports_are_the_deduplicated_union_of_the_steps(full_recipe):
    from pipeline.filters import FILTERS
    from pipeline.postprocess import POSTPROCESS
    from pipeline.segmentation import SEGMENTERS

    source = to_script(full_recipe)
    tree = ast.parse(source)
    import_lines = [ast.get_source_segment(source, node) for node in tree.body
                    if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(import_lines) == len(set(import_lines))
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    modules = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert len(modules) == len([n for n in tree.body if isinstance(n, ast.ImportFrom)])
    steps = [FILTERS["bilateral"], SEGMENTERS["random_walker"],
             *(POSTPROCESS[op["name"]] for op in full_recipe["postprocess"])]
    for step in steps:
        for line in step.imports:
            node = ast.parse(line).body[0]
            assert {alias.asname or alias.name.split(".")[0] for alias in node.names} <= bound
    assert {"fast_random_walker", "restoration", "morphology", "ndi", "measure",
            "segmentation", "regionprops_table", "np", "warnings"} <= bound


def test_script_writes_each_steps_code_in_order(full_recipe):
    from pipeline.filters import FILTERS
    from pipeline.segmentation import SEGMENTERS

    source = to_script(full_recipe)
    positions = []
    for line in FILTERS["bilateral"].code("filtered", "filtered",
                                          **full_recipe["filter"]["params"]):
        positions.append(source.index(line.strip()))
    positions.append(source.index("markers[filtered < VMIN] = 1"))
    for line in SEGMENTERS["random_walker"].code(
            "filtered", "markers", "mask", vmin=83.0, vmax=131.0,
            **full_recipe["segmentation"]["params"]):
        positions.append(source.index(line.strip()))
    for snippet in ("morphology.closing(mask", "ndi.binary_fill_holes(mask)",
                    "labels = measure.label(mask, connectivity=1)",
                    "morphology.remove_small_objects(labels, max_size=63)",
                    "segmentation.clear_border(labels)",
                    "segmentation.relabel_sequential(labels)[0]",
                    "regionprops_table(labels, intensity_image=image"):
        positions.append(source.index(snippet))
    assert positions == sorted(positions)
    assert "# equivalent: skimage.segmentation.random_walker(" in source


def test_script_without_random_walker_needs_no_randomwalker():
    recipe = R.validate(dict(R.default_recipe(83, 131), segmentation={"name": "watershed"}))
    source = to_script(recipe)
    assert "randomwalker" not in source.split('"""', 2)[2]


def test_provenance_with_awkward_text_still_compiles(full_recipe):
    source = to_script(full_recipe, {"note": 'quotes """ and \\ backslash', "n": 1.5})
    tree = ast.parse(source)
    assert '"note"' in ast.get_docstring(tree)


def test_to_script_validates(full_recipe):
    with pytest.raises(InputError, match=r"recipe version 2 is not supported"):
        to_script(dict(full_recipe, version=2))
    with pytest.raises(InputError, match=r"provenance must be JSON-serialisable"):
        to_script(full_recipe, {"x": float("nan")})


# --------------------------------------------------------------------------------------------
# The script's errors


def test_script_reports_a_bad_image_and_failed_markers(images, tmp_path):
    recipe = _recipe(images["coins_png"])
    script = tmp_path / "s.py"
    script.write_text(to_script(recipe), encoding="utf-8")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    dark = tmp_path / "dark.png"
    Image.fromarray(np.full((20, 20), 10, np.uint8) + np.eye(20, dtype=np.uint8)).save(dark)
    code = "\n".join([
        "import runpy, sys",
        "ns = runpy.run_path(sys.argv[1])",
        "print(ns['main']([sys.argv[2], '--out', 'o']), ns['main']([sys.argv[3], '--out', 'o']))",
    ])
    done = subprocess.run([sys.executable, "-c", code, str(script), str(bad), str(dark)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 1"
    assert "error: notes.png: notes.png is not a PNG, JPEG or TIFF image" in done.stderr
    assert "error: dark.png: No object marker: no pixel is above vmax" in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_recipe_tuned_on_series_1_reads_series_1(tmp_path):
    """A recipe made on the second image series of an OME-TIFF (the app's Series menu,
    ``recipe["input"]["series"]``): the script reads that series of each file, as the app
    showed it, not the first one."""
    from skimage import data as skdata

    coins = skdata.coins()
    first = np.full((64, 80), 200, np.uint8)  # series 0: nothing like the coins
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(first, photometric="minisblack", metadata={"axes": "YX"})
        tif.write(coins, photometric="minisblack", metadata={"axes": "YX"})
    recipe = R.with_series(R.default_recipe(80, 150), 1)
    script = tmp_path / "pipeline_script.py"
    script.write_text(to_script(recipe), encoding="utf-8")
    assert "series=1" in script.read_text(encoding="utf-8")

    done = _run_script(script, path, tmp_path / "out", cwd=tmp_path)

    expected = R.run(read_image_file(path, **LIMITS, series=1).array, recipe)
    assert f"{path.name}: {expected.measurements.n_objects} objects" in done.stdout
    labels = tifffile.imread(tmp_path / "out" / "two.ome_labels.tif")
    assert labels.shape == coins.shape
    np.testing.assert_array_equal(labels, expected.labels)
