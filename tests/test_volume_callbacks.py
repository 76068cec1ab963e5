"""The 3D view: voxel spacing (metadata, measurements, recipe, exported script) and the
callback bodies of callbacks.volume, on a real store and cache in a temporary folder."""

from __future__ import annotations

import copy
import io as _io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.measure import regionprops_table

from pipeline import recipe as R
from pipeline.errors import InputError
from pipeline.io import VoxelSize, blobs_3d, read_image_file, voxel_size
from pipeline.measure import DEFAULT_PROPERTIES, measure, to_csv
from pipeline.script import to_script
from pipeline.segment import default_thresholds

REPO = Path(__file__).resolve().parents[1]
SPACING = [2.0, 0.5, 0.25]


def _tiff(array, **kwargs):
    buf = _io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stack():
    volume = blobs_3d(48)[:20]
    return ((volume - volume.min()) / (volume.max() - volume.min()) * 65535).astype(np.uint16)


def _stack_recipe(stack, **measure_options):
    recipe = R.default_recipe(*default_thresholds(stack))
    recipe["segmentation"]["params"]["mode"] = "cg_j"
    recipe["measure"].update(measure_options)
    return R.validate(recipe)


# --- the voxel size in a file's metadata -----------------------------------------------------


def test_imagej_spacing_and_resolution():
    raw = _tiff(np.zeros((4, 6, 8), np.uint8), imagej=True, resolution=(4.0, 2.0),
                metadata={"spacing": 2.5, "unit": "\\u00B5m", "axes": "ZYX"})
    found = voxel_size(raw)
    assert found == VoxelSize(z=2.5, y=0.5, x=0.25, unit="µm", source="ImageJ")
    assert found.spacing() == (2.5, 0.5, 0.25)


def test_ome_physical_sizes(tmp_path):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, np.zeros((4, 6, 8), np.uint8), ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5,
        "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeZUnit": "µm"})
    assert voxel_size(path) == VoxelSize(1.5, 0.3, 0.3, "µm", "OME")
    assert voxel_size(path.read_bytes()) == voxel_size(path)


def test_resolution_in_centimetres_but_not_print_dpi():
    image = np.zeros((6, 8), np.uint8)
    cm = voxel_size(_tiff(image, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER"))
    assert cm.x == pytest.approx(0.5) and cm.z is None and cm.unit == "µm"
    assert cm.spacing() == pytest.approx((0.5, 0.5, 0.5))  # z unknown: the in-plane size
    assert voxel_size(_tiff(image, resolution=(72, 72), resolutionunit="INCH")) is None
    assert voxel_size(_tiff(image)) is None


def test_no_metadata_never_fails():
    assert voxel_size(b"\x89PNG\r\n\x1a\n....") is None
    assert voxel_size(b"II*\x00" + b"\xff" * 20) is None  # a broken TIFF: no metadata
    with pytest.raises(InputError, match="voxel_size: source must be the bytes or the path"):
        voxel_size(12)


# --- measurements with a voxel size ----------------------------------------------------------


def _labels3d():
    labels = np.zeros((10, 12, 14), np.int32)
    labels[2:6, 3:9, 4:12] = 1
    labels[7:9, 1:3, 1:4] = 2
    return labels


def test_spacing_is_regionprops_own_and_bbox_is_scaled_per_axis():
    labels = _labels3d()
    image = np.random.default_rng(0).random(labels.shape)
    props = ["label", "area", "centroid", "bbox", "equivalent_diameter_area",
             "intensity_mean"]
    m = measure(labels, image, props, pixel_size=7.0, unit="µm", spacing=SPACING)
    sk = regionprops_table(labels, image, properties=props, spacing=SPACING)
    assert m.columns["area"][0] == 4 * 6 * 8 * 2.0 * 0.5 * 0.25  # not times pixel_size**3
    np.testing.assert_array_equal(m.columns["area"], sk["area"])
    np.testing.assert_array_equal(m.columns["centroid-0"], sk["centroid-0"])
    np.testing.assert_array_equal(m.columns["equivalent_diameter_area"],
                                  sk["equivalent_diameter_area"])
    assert [m.columns[f"bbox-{i}"][0] for i in range(6)] == [
        2 * 2.0, 3 * 0.5, 4 * 0.25, 6 * 2.0, 9 * 0.5, 12 * 0.25]
    np.testing.assert_array_equal(m.columns["intensity_mean"], sk["intensity_mean"])
    assert m.units["area"] == "µm³" and m.units["bbox-0"] == "µm"
    assert any("voxel size (z, y, x) 2 × 0.5 × 0.25 µm" in n for n in m.notes)
    # without spacing: as before (pixel size)
    plain = measure(labels, image, props, pixel_size=7.0, unit="µm")
    assert plain.columns["area"][0] == 4 * 6 * 8 * 7.0 ** 3


def test_a_2d_image_uses_y_x_of_the_spacing_and_drops_anisotropic_perimeters():
    labels = _labels3d()[4]
    m = measure(labels, None, ["label", "area", "perimeter"], unit="µm", spacing=SPACING)
    assert m.columns["area"][0] == 6 * 8 * 0.5 * 0.25
    assert "perimeter" not in m.columns
    assert any("perimeter: measured by scikit-image for square pixels only" in n
               for n in m.notes)
    square = measure(labels, None, ["label", "perimeter"], unit="µm", spacing=[3.0, 0.5, 0.5])
    assert square.columns["perimeter"][0] == pytest.approx(
        regionprops_table(labels, properties=["perimeter"])["perimeter"][0] * 0.5)


@pytest.mark.parametrize("spacing, message", [
    ([1, 1], r"spacing must be the voxel size \(z, y, x\): 3 numbers, got 2"),
    ([1, 0, 1], "spacing must be the voxel size .*3 positive finite numbers"),
    ([1, float("inf"), 1], "3 positive finite numbers"),
    ("1, 1, 1", r"spacing must be the voxel size \(z, y, x\): 3 positive numbers"),
    ([1, True, 1], "3 positive finite numbers"),
])
def test_bad_spacing_is_named(spacing, message):
    with pytest.raises(InputError, match=message):
        measure(_labels3d(), spacing=spacing)


# --- the recipe and the exported script -------------------------------------------------------


def test_recipes_without_spacing_normalise_as_before(stack):
    recipe = _stack_recipe(stack)
    assert "spacing" not in recipe["measure"]
    assert R.validate({**recipe, "measure": {**recipe["measure"], "spacing": None}}) == recipe
    with_spacing = _stack_recipe(stack, spacing=[2, 0.5, 0.25])
    assert with_spacing["measure"]["spacing"] == SPACING
    assert R.validate(R.loads(R.dumps(with_spacing))) == with_spacing
    assert "voxel 2 × 0.5 × 0.25 px" in R.describe(with_spacing)
    with pytest.raises(InputError, match=r"recipe measure: spacing must be the voxel size"):
        _stack_recipe(stack, spacing=[1, 2])


def test_the_recipe_measures_with_its_spacing(stack):
    recipe = _stack_recipe(stack, spacing=SPACING, unit="µm")
    result = R.run(stack, recipe)
    sk = regionprops_table(result.labels, stack, properties=["area"], spacing=SPACING)
    np.testing.assert_array_equal(result.measurements.columns["area"], sk["area"])


def test_the_exported_script_reproduces_the_spacing(stack, tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    image = read_image_file(path, max_bytes=2**26, max_pixels=2**27).array
    recipe = _stack_recipe(stack, spacing=SPACING, unit="µm",
                           properties=["label", "area", "centroid", "bbox", "intensity_mean"])
    script = tmp_path / "script.py"
    script.write_text(to_script(recipe))
    env = {"PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script), str(path), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = to_csv(R.run(image, recipe).measurements)
    got = (tmp_path / "stack_measurements.csv").read_text(encoding="utf-8")
    data = [line for line in got.splitlines() if not line.startswith("# provenance")]
    assert data == expected.splitlines()
    assert "area [µm³]" in got and "voxel size (z, y, x) 2 × 0.5 × 0.25 µm" in got
