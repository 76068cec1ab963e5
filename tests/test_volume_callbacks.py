"""The 3D view: voxel spacing (metadata, measurements, recipe, exported script) and the
callback bodies of callbacks.volume, on a real store and cache in a temporary folder."""

from __future__ import annotations

import base64
import io as _io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from dash import no_update
from skimage.measure import regionprops_table

from callbacks import loading, volume
from callbacks.params import recipe_action
from callbacks.services import Services
from components import ids
from pipeline import mesh
from pipeline import recipe as R
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.io import VoxelSize, blobs_3d, read_image_file, voxel_size
from pipeline.measure import measure, to_csv
from pipeline.script import to_script
from pipeline.segment import default_thresholds
from pipeline.store import new_session_id

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


# --- the 3D tab's callbacks -------------------------------------------------------------------

@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _load(services, array, name="stack.tif"):
    sid = new_session_id()
    url = "data:image/tiff;base64," + base64.b64encode(_tiff(array)).decode()
    out = loading.load_image(services, sid, ids.UPLOAD, None, url, name, None)
    assert out.meta is not None, out.message
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, out.meta, {})
    return sid, out.meta, pointer


def _sources(fig):
    return [t["source"] for t in fig.to_plotly_json()["data"]]


def _title(fig):
    return fig.layout.title.text


def test_three_planes_through_the_centre_as_pngs(services, stack):
    sid, meta, pointer = _load(services, stack)
    zy, zx, yx, cursor, info, message, note, surface = volume.views_update(
        services, sid, meta, pointer, None, "outline")
    assert note is no_update and surface is no_update
    assert message is None
    assert cursor == {"image": meta["id"], "point": [10, 24, 24]}
    assert "at x = 24" in _title(zy) and "at y = 24" in _title(zx) and "at z = 10" in _title(yx)
    for fig in (zy, zx, yx):
        sources = _sources(fig)
        assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
        assert "shown at" not in _title(fig)  # small planes: full resolution
    assert "voxel size (z, y, x) 1 × 1 × 1 voxels (none given: 1 voxel)" in info
    # the overlay shows the settled labels: the outlines of the YX plane's regions
    labels = services.run(sid, meta["id"], pointer["recipe"]).labels
    overlay = mesh.contour_overlay(labels[10])
    from PIL import Image
    png = Image.open(_io.BytesIO(base64.b64decode(_sources(yx)[1].split(",")[1])))
    drawn = np.asarray(png.convert("RGBA"))  # a palette PNG (few colours)
    np.testing.assert_array_equal(drawn, overlay)


def test_a_click_in_one_plane_moves_the_other_two(services, stack):
    sid, meta, pointer = _load(services, stack)
    before = volume.views_update(services, sid, meta, pointer, None, "outline")
    # click the YX plane (at z = 10) at x = 5, y = 30: the ZY plane moves to x = 5, ZX to y = 30
    after = volume.views_update(services, sid, meta, pointer, before[3], "outline",
                                click=("yx", {"x": 5.2, "y": 29.6}))
    assert after[3]["point"] == [10, 30, 5]
    assert "at x = 5" in _title(after[0]) and "at y = 30" in _title(after[1])
    assert "at z = 10" in _title(after[2])
    assert _sources(after[0])[0] != _sources(before[0])[0]  # another plane of the image
    assert _sources(after[2])[0] == _sources(before[2])[0]  # the clicked plane stays
    # the cursor lines of the YX plane are at the click
    shapes = after[2].layout.shapes
    assert (shapes[0].x0, shapes[1].y0) == (5, 30)
    # a click in the ZX plane moves z and x; clicks outside the volume are clipped
    again = volume.views_update(services, sid, meta, pointer, after[3], "fill",
                                click=("zx", {"x": 500, "y": -3}))
    assert again[3]["point"] == [0, 30, 47]


def test_a_cursor_of_another_image_starts_at_the_centre(services, stack):
    sid, meta, pointer = _load(services, stack)
    out = volume.views_update(services, sid, meta, pointer,
                              {"image": "another", "point": [1, 2, 3]}, "outline")
    assert out[3]["point"] == [10, 24, 24]


def test_large_planes_are_downsampled_and_say_so(services, stack, monkeypatch):
    sid, meta, pointer = _load(services, stack)
    monkeypatch.setattr(mesh, "MAX_PLANE_PIXELS", 600)  # 48 × 48 = 2304 pixels: stride 2
    zy, zx, yx, *_ = volume.views_update(services, sid, meta, pointer, None, "outline")
    assert "shown at 1/2 (48×48 → 24×24 pixels)" in _title(yx)
    assert "shown at 1/2 (20×48 → 10×24 pixels)" in _title(zx)
    image = yx.to_plotly_json()["data"][0]
    assert image["dx"] == 2 and image["dy"] == 2


def test_the_voxel_size_is_applied_to_the_recipe_and_used_everywhere(services, stack):
    sid, meta, pointer = _load(services, stack)
    new, message = volume.apply_spacing(services, sid, meta, pointer, (2, 0.5, 0.25))
    assert message == "" and new["changed"] == ["measure"]
    assert new["recipe"]["measure"]["spacing"] == SPACING
    assert new["length"] == pointer["length"] + 1  # one undoable step
    undo_disabled, redo_disabled, text, shown = volume.history_controls(new)
    assert (undo_disabled, redo_disabled, text) == (False, True, "step 2 of 2")
    assert '"spacing": [\n      2.0,' in shown
    assert volume.history_controls(no_update) == (no_update,) * 4
    # the views: true aspect (pixel size = voxel size), clicks read back in voxels
    zy, zx, yx, cursor, info, *_ = volume.views_update(services, sid, meta, new, None,
                                                        "outline")
    image = zx.to_plotly_json()["data"][0]
    assert (image["dx"], image["dy"]) == (0.25, 2.0)  # columns x, rows z
    assert "voxel size (z, y, x) 2 × 0.5 × 0.25 px (the recipe's)" in info
    moved = volume.views_update(services, sid, meta, new, cursor, "outline",
                                click=("zx", {"x": 2.5, "y": 8.0}))
    assert moved[3]["point"] == [4, 24, 10]
    # the measurements use it
    m = services.measurements(sid, meta["id"], new["recipe"])
    labels = services.run(sid, meta["id"], new["recipe"]).labels
    np.testing.assert_array_equal(
        m.columns["area"], regionprops_table(labels, properties=["area"],
                                             spacing=SPACING)["area"])
    # the same values again: nothing to push; bad values are named
    assert volume.apply_spacing(services, sid, meta, new, (2, 0.5, 0.25)) == (no_update, "")
    assert volume.apply_spacing(services, sid, meta, new, (2, 0, 1))[1].startswith(
        "voxel size (z, y, x) must be 3 positive finite numbers")
    # all empty: the voxel size is removed again
    back, _ = volume.apply_spacing(services, sid, meta, new, (None, None, ""))
    assert "spacing" not in back["recipe"]["measure"]


def test_the_files_voxel_size_sets_the_views_until_one_is_applied(services, stack):
    sid, meta, pointer = _load(services, stack)
    meta = {**meta, "voxel_size": {"z": 3.0, "y": 0.5, "x": 0.5, "unit": "µm",
                                   "source": "ImageJ"}}
    assert volume.effective_spacing(pointer["recipe"], meta) == ((3.0, 0.5, 0.5), "metadata")
    zy, *_, info, _message, _note, _surface = volume.views_update(services, sid, meta, pointer, None,
                                                        "outline")
    assert "3 × 0.5 × 0.5 µm (the file's metadata)" in info
    assert zy.layout.xaxis.title.text == "y (µm)"


def test_a_2d_image_has_no_3d_view(services):
    sid, meta, pointer = _load(services, (np.arange(40 * 50).reshape(40, 50) % 251)
                               .astype(np.uint8), "flat.tif")
    out = volume.views_update(services, sid, meta, pointer, None, "outline")
    assert "load a 3D stack" in str(out[0].layout.annotations[0].text)
    assert volume.apply_spacing(services, sid, meta, pointer, (1, 1, 1))[1].startswith(
        "The voxel size is for 3D stacks")


def test_the_surface_is_drawn_on_request_bounded_and_cached(services, stack):
    sid, meta, pointer = _load(services, stack)
    fig, cost, token = volume.surface_update(services, sid, meta, pointer, 5)
    data = fig.to_plotly_json()["data"]
    assert 1 <= len(data) <= 5 and all(t["type"] == "mesh3d" for t in data)
    assert all(isinstance(t["x"], dict) and "bdata" in t["x"] for t in data)  # binary arrays
    labels = services.run(sid, meta["id"], pointer["recipe"]).labels
    n = len(np.unique(labels)) - 1
    assert f"of {n:,} regions shown" in cost or f"all {n:,} regions" in cost
    assert "triangles" in cost and "marching cubes" in cost
    assert token == volume.surface_token(meta["id"], pointer["recipe"], (1.0, 1.0, 1.0))
    again = volume.surface_update(services, sid, meta, pointer, 5)
    assert again[1].endswith("(from cache)") or "(from cache)" in again[1]
    # the colours of the 2D label overlay's cycle
    expected = mesh.label_hex(int(data[0]["name"].split()[-1]))
    assert data[0]["color"] == expected
    # the views say when the drawn surface no longer matches the labels
    new, _ = volume.apply_spacing(services, sid, meta, pointer, (2, 1, 1))
    note, surface = volume.views_update(services, sid, meta, new, None, "outline",
                                        surface_shown=token)[-2:]
    assert surface is no_update  # the surface stays, with the note
    assert note.startswith("The labels or the voxel size changed")
    current = volume.surface_token(meta["id"], new["recipe"], (2, 1, 1))
    assert volume.views_update(services, sid, meta, new, None, "outline",
                               surface_shown=current)[-2:] == (no_update, no_update)
    # the surface of another image is removed
    note, surface = volume.views_update(services, sid, meta, new, None, "outline",
                                        surface_shown="another:0123")[-2:]
    assert note == "" and surface.data == ()
    # regions selected in the table stay opaque, the others fade
    labels_shown = [t["meta"] for t in data]
    chosen = volume.surface_update(services, sid, meta, new, 5, [labels_shown[0]])[0]
    opacity = [t["opacity"] for t in chosen.to_plotly_json()["data"]]
    assert opacity[0] == 1 and all(o < 1 for o in opacity[1:])
    assert "chosen.has(Number(t.meta))" in volume.HIGHLIGHT_JS
    # a bad count is a message on the tab, not a crash
    assert "largest regions must be from 1 to 500" in str(
        volume.surface_update(services, sid, meta, new, 0)[1])


def test_the_tab_is_registered_and_gated_in_the_browser(tmp_path):
    from app import create_app

    app = create_app(Config(state_dir=tmp_path / "s", data_dir=tmp_path / "d"))
    layout = str(app.layout() if callable(app.layout) else app.layout)
    assert ids.DISCOVERY_TABS in layout and ids.VOLUME_GRAPHS["yx"] in layout
    # the planes' server callback is fed only by the gate's store and the plane clicks
    views = [k for k in app.callback_map if ids.VOLUME_GRAPHS["zy"] + ".figure" in k]
    inputs = {i["id"] for i in app.callback_map[views[0]]["inputs"]}
    assert ids.SEG_SETTLED not in inputs and ids.HISTORY not in inputs
    assert ids.VOLUME_SIGNAL in inputs
    # the gate (one clientside callback with the panels' gates, callbacks/visibility.py)
    gate = [k for k in app.callback_map if ids.VOLUME_SIGNAL + ".data" in k]
    assert len(gate) == 1
    assert {i["id"] for i in app.callback_map[gate[0]]["inputs"]} == {
        ids.SEG_SETTLED, ids.MEASURE_SIGNAL, ids.DISCOVERY_TABS}
    from callbacks.visibility import gate_js

    assert "tab === 'volume' ? {t: Date.now()} : nu" in gate_js()


def test_the_loaded_files_voxel_size_reaches_the_page(tmp_path):
    """An upload and a data-folder file with ImageJ spacing: meta["voxel_size"] carries it
    (the 3D view's aspect and the voxel-size inputs read it); a PNG has none."""
    import base64

    from callbacks import loading
    from callbacks.services import Services
    from components import ids
    from pipeline.config import Config
    from pipeline.store import new_session_id

    data = tmp_path / "data"
    data.mkdir()
    svc = Services.create(Config(state_dir=tmp_path / "state", data_dir=data))
    sid = new_session_id()
    raw = _tiff(np.random.default_rng(0).integers(0, 200, (6, 20, 30), dtype=np.uint8),
                imagej=True, resolution=(4.0, 2.0), metadata={"spacing": 1.5, "unit": "um"})
    url = "data:image/tiff;base64," + base64.b64encode(raw).decode()
    meta = loading.load_image(svc, sid, ids.UPLOAD, "coins", url, "stack.tif", None).meta
    assert meta["voxel_size"]["z"] == 1.5 and meta["voxel_size"]["x"] == 0.25
    (data / "stack.tif").write_bytes(raw)
    meta = loading.load_image(svc, sid, ids.DATA_FILE, "coins", None, None, "stack.tif").meta
    assert meta["voxel_size"]["y"] == 0.5
    meta = loading.load_image(svc, sid, ids.SAMPLE, "coins", None, None, None).meta
    assert "voxel_size" not in meta
