"""Callback bodies called directly, on a real store and cache in a temporary folder."""

import base64
import copy
import io as _io
import json
import re
import time

import numpy as np
import pytest
import tifffile
from dash import Patch, no_update
from PIL import Image

from callbacks import discovery, display, downloads, loading, measure, recipe_io
from callbacks.params import next_state
from callbacks.services import Services
from components import figures, ids
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.store import new_session_id


@pytest.fixture
def services(tmp_path):
    # quick_exact_s=0: a move always shows the live preview first (the path tested here;
    # test_a_quick_exact_result_is_drawn_at_once covers the other). job_after_s: the exact
    # result computed in the callback whatever this machine's load makes of the estimate
    # (a slow solve as a background job: tests/test_exact_job.py)
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=1,
                 max_pixels=4_000_000, quick_exact_s=0, job_after_s=1e9)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _data_url(raw, mime="application/octet-stream"):
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def _png(array):
    buf = _io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(array, **kwargs):
    buf = _io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


def _load_upload(services, sid, raw, name):
    return loading.load_image(services, sid, ids.UPLOAD, "coins", _data_url(raw), name, None)


def _history(meta):
    return next_state(ids.IMAGE, None, meta, {})[0]


def _recipe(meta, **changes):
    r = copy.deepcopy(_history(meta)["states"][0])
    r.update(changes)
    return r


def test_first_load_is_the_coins_sample(services):
    sid = new_session_id()
    out = loading.load_image(services, sid, None, "coins", None, None, None)
    assert out.level == "info" and out.meta["name"] == "coins"
    assert out.meta["shape"] == [303, 384] and out.meta["dtype"] == "uint8"
    assert services.store.has_image(sid, out.meta["id"])


def test_two_sessions_never_see_each_others_images(services):
    alice, bob = new_session_id(), new_session_id()
    pixels = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    meta = _load_upload(services, alice, _png(pixels), "a.png").meta
    recipe = _recipe(meta)
    for call in (lambda: display.image_panel(services, bob, meta, 0, 0),
                 lambda: display.segmentation_panel(services, bob, meta, recipe, 0, 0, "contour",
                                                    True, "labels", [], True),
                 lambda: measure.table(services, bob, meta, recipe),
                 lambda: downloads.labels_file(services, bob, meta, _history(meta))):
        with pytest.raises(InputError, match="no longer on the server"):
            call()


def _good_meta(services, sid):
    return loading.load_image(services, sid, None, "coins", None, None, None).meta


BAD_INPUTS = {
    "corrupt": (lambda: np.random.default_rng(1).bytes(5000), "x.png", "not a PNG, JPEG or TIFF|could not decode"),
    "truncated": (lambda: _png(np.random.default_rng(2).integers(0, 255, (200, 200), dtype=np.uint8))[:3000], "t.png", "truncated or corrupt"),
    "empty": (lambda: b"", "e.tif", "empty"),
    "wrong format": (lambda: b"x,y\n1,2\n" * 50, "table.tif", "not a PNG, JPEG or TIFF"),
    "too large": (lambda: b"\0" * (2 * 2**20), "big.tif", "limit"),
    "decompression bomb": (lambda: _tiff(np.zeros((5000, 5000), np.uint8), compression="zlib"), "bomb.tif", "pixels"),
    "constant": (lambda: _png(np.full((30, 30), 7, np.uint8)), "c.png", "nothing to segment"),
    "nan": (lambda: _tiff(np.where(np.eye(20) > 0, np.nan, 1.0).astype(np.float32)), "nan.tif", "NaN or infinite"),
    "4d": (lambda: _tiff(np.zeros((2, 3, 4, 5, 6), np.uint8) + np.arange(6, dtype=np.uint8)), "4d.tif", "not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_uploads_give_a_message_and_keep_the_current_image(services, case):
    make, name, pattern = BAD_INPUTS[case]
    sid = new_session_id()
    before = _good_meta(services, sid)
    out = _load_upload(services, sid, make(), name)
    assert out.meta is None
    assert out.level == "error"
    assert out.message.startswith(f"Could not load {name}")
    assert re.search(pattern, out.message, re.I), out.message
    # The image loaded before is still there and still segments.
    assert services.store.has_image(sid, before["id"])


def test_malformed_data_url(services):
    sid = new_session_id()
    out = loading.load_image(services, sid, ids.UPLOAD, "coins", "not a data url", "x.png", None)
    assert out.meta is None and out.level == "error"


def test_rgb_upload_is_converted_and_says_so(services):
    rgb = np.random.default_rng(3).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    out = _load_upload(services, new_session_id(), _png(rgb), "rgb.png")
    assert out.meta["shape"] == [30, 40]
    assert any("gray" in n.lower() for n in out.meta["notes"])


def test_3d_tiff_upload(services):
    vol = (np.random.default_rng(4).random((8, 20, 24)) * 1000).astype(np.uint16)
    out = _load_upload(services, new_session_id(), _tiff(vol), "stack.tif")
    assert out.meta["ndim"] == 3 and out.meta["shape"] == [8, 20, 24]
    assert out.meta["dtype"] == "uint16"


def test_data_folder_file_and_traversal(services, tmp_path):
    (tmp_path / "data" / "cells.tif").write_bytes(_tiff(np.arange(400, dtype=np.uint16).reshape(20, 20)))
    sid = new_session_id()
    ok = loading.load_image(services, sid, ids.DATA_FILE, None, None, None, "cells.tif")
    assert ok.meta["name"].endswith("cells.tif")
    bad = loading.load_image(services, sid, ids.DATA_FILE, None, None, None, "../state/x.tif")
    assert bad.meta is None and bad.level == "error"


def test_unknown_sample(services):
    out = loading.load_image(services, new_session_id(), ids.SAMPLE, "nope", None, None, None)
    assert out.meta is None and "Unknown sample" in out.message


def test_segmentation_panel_full_then_patch_and_cache_hit(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    recipe = _recipe(meta)
    fig, summary = display.segmentation_panel(services, sid, meta, recipe, 0, 0, "contour", True,
                                              "labels", [], True)
    assert [t.type for t in fig.data] == ["image"] * 4
    assert all(t.source.startswith("data:image/png;base64,") for t in fig.data)
    assert "computed in" in summary and "labelled regions" in summary
    for style in ("fill", "labels", "boxes"):
        patch, summary2 = display.segmentation_panel(services, sid, meta, recipe, 0, 0, style,
                                                     True, "labels", [3], False)
        assert isinstance(patch, Patch)
        assert "from cache" in summary2
    ops = patch.to_plotly_json()["operations"]
    # the overlays' sources, and the result's geometry: one pixel per pixel (a preview may
    # have drawn it on blocks)
    assert {tuple(op["location"]) for op in ops} == {
        ("data", 1, "source"), ("data", 2, "source"), ("data", 3, "source"),
        ("data", 2, "x0"), ("data", 2, "y0"), ("data", 2, "dx"), ("data", 2, "dy")}
    geometry = {op["location"][2]: op["params"]["value"] for op in ops
                if op["location"][1] == 2 and op["location"][2] != "source"}
    assert geometry == {"x0": 0, "y0": 0, "dx": 1, "dy": 1}


def test_every_filter_and_method_runs_on_coins(services):
    from pipeline.filters import FILTERS
    from pipeline.segmentation import SEGMENTERS

    sid = new_session_id()
    meta = _good_meta(services, sid)
    for name in FILTERS:
        fig = display.filtered_panel(services, sid, meta,
                                     _recipe(meta, filter={"name": name, "params": {}}), 0, 0)
        assert fig.data[0].source.startswith("data:image/png")
    for name in SEGMENTERS:
        fig, text = display.compare_panel(services, sid, meta, _recipe(meta), name, 0, 0)
        assert "agree on" in text
    fig, text = display.compare_panel(services, sid, meta, _recipe(meta), "random_walker", 0, 0)
    assert "100.00 %" in text
    patch, _ = display.compare_panel(services, sid, meta, _recipe(meta), "watershed", 0, 0,
                                     full=False)
    assert isinstance(patch, Patch)
    assert [op["location"] for op in patch.to_plotly_json()["operations"]] == [
        ["data", 2, "source"]]
    hl = display.highlight_patch(services, sid, meta, _recipe(meta), 0, 0, [1, 2])
    assert [op["location"] for op in hl.to_plotly_json()["operations"]] == [["data", 3, "source"]]


def _filter_page(services, sid, meta, method="gaussian"):
    """The page's pointer after loading `meta` and choosing a filter."""
    from callbacks.params import recipe_action

    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    if method != "none":
        pointer, _, _ = recipe_action(services, sid, ids.FILTER_METHOD, pointer, meta,
                                      {"filter_method": method})
    return pointer


def test_the_filtering_panel_says_how_the_filter_ran(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    out = display.filter_update(services, sid, meta, _filter_page(services, sid, meta, "none"),
                                0, 0, [], histogram=True)
    assert out.run == "no filter" and out.message is None
    pointer = _filter_page(services, sid, meta)
    out = display.filter_update(services, sid, meta, pointer, 0, 0, [], histogram=True)
    assert out.figure.data[0].source.startswith("data:image/png")
    assert out.histogram is not no_update and out.message is None
    # coins are too small to be worth cutting into blocks
    assert re.fullmatch(r"Gaussian: whole array, \d+\.\d\d s", out.run), out.run
    again = display.filter_update(services, sid, meta, pointer, 0, 0, [], histogram=True)
    assert again.run == f"from cache · computed as {out.run}"
    # a new slice redraws the filtered image only
    sliced = display.filter_update(services, sid, meta, pointer, 0, 0, [], histogram=False)
    assert sliced.histogram is no_update and sliced.run is no_update
    assert sliced.figure.data[0].source == out.figure.data[0].source


def test_the_filtering_panel_names_blocks_and_an_unreachable_scheduler(tmp_path):
    import socket

    from pipeline import parallel

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data",
                 dask_address=f"tcp://127.0.0.1:{port}")
    # min_pixels=0: cut even coins into blocks (the app's default leaves them whole)
    backend = parallel.Backend.from_config(cfg, jobs=2, connect_timeout=1.0, min_pixels=0)
    services = Services.create(cfg, backend=backend)
    assert services.compute.backend is backend
    sid = new_session_id()
    meta = _good_meta(services, sid)
    out = display.filter_update(services, sid, meta, _filter_page(services, sid, meta), 0, 0,
                                [], histogram=True)
    assert re.fullmatch(r"Gaussian: \d+ blocks on 2 workers \(threads\), \d+\.\d\d s "
                        rf"\(dask scheduler tcp://127\.0\.0\.1:{port} could not be reached "
                        r"\(.*\); ran locally\)", out.run), out.run
    assert out.run.count("could not be reached") == 1


@pytest.mark.parametrize("vmin, vmax, message", [
    (100, 252, "No object marker"),  # coins' brightest pixel is 252
    (1, 100, "No background marker"),  # and its darkest 1
    (50, 60, "nothing is left"),  # two-valued image: every pixel is a marker
])
def test_segmentation_panel_refuses_markers_that_leave_a_label_empty(services, vmin, vmax, message):
    sid = new_session_id()
    if message == "nothing is left":
        two = np.where(np.arange(400).reshape(20, 20) % 2, 100, 0).astype(np.uint8)
        meta = _load_upload(services, sid, _png(two), "two.png").meta
    else:
        meta = _good_meta(services, sid)
    recipe = _recipe(meta, markers={"vmin": vmin, "vmax": vmax})
    with pytest.raises(InputError, match=message):
        display.segmentation_panel(services, sid, meta, recipe, 0, 0, "contour", True, "labels",
                                   [], True)


def test_figures_carry_images_as_png_never_as_arrays(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    fig = display.image_panel(services, sid, meta, 0, 0)
    payload = json.dumps(fig.to_plotly_json(), default=str)
    assert "data:image/png;base64," in payload
    assert '"z"' not in payload
    assert len(payload) < 200_000


def test_histogram(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    recipe = _recipe(meta)
    fig = display.histogram_panel(services, sid, meta, recipe, False)
    assert sum(fig.data[0].y) == 303 * 384
    assert fig.layout.shapes[0].x0 == recipe["markers"]["vmin"]
    # automatic thresholds drawn as labelled lines
    names = {t.name for t in fig.data[1:]}
    assert {"otsu", "li", "yen"} <= names
    assert display.histogram_panel(services, sid, meta, recipe, True).layout.yaxis.type == "log"


def test_threshold_gallery_has_a_tile_per_method_and_survives_a_failing_one(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    tiles = discovery.gallery(services, sid, meta, _recipe(meta), 0, 0, 15)
    assert len(tiles) == 9
    text = json.dumps([t.to_plotly_json() for t in tiles], default=lambda o: o.to_plotly_json())
    assert '"as": "vmin"' in text and '"method": "otsu"' in text
    # a flat histogram: "minimum" fails in its tile, the others still work
    ramp = np.linspace(0, 1, 4096, dtype=np.float32).reshape(64, 64)  # flat histogram
    meta2 = _load_upload(services, sid, _tiff(ramp), "ramp.tif").meta
    tiles = discovery.gallery(services, sid, meta2, _recipe(meta2), 0, 0, 15)
    errors = [t for t in tiles if "tile-error" in t.className]
    assert len(errors) >= 1
    assert len(tiles) == 9


def test_sweep_grid_and_adopt(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    recipe = _recipe(meta)
    options = [o["value"] for o in discovery.sweepable(recipe)]
    assert "markers.vmin" in options and "segmentation.params.beta" in options
    # the split's connectivity is the label step's: not offered
    split = {**recipe, "postprocess": recipe["postprocess"] + [
        {"name": "split_touching", "params": {"min_distance": 5, "sigma": 0.0,
                                              "connectivity": 1}}]}
    offered = [o["value"] for o in discovery.sweepable(split)]
    n = len(recipe["postprocess"])
    assert f"postprocess.{n}.params.min_distance" in offered
    assert f"postprocess.{n}.params.connectivity" not in offered
    grid = discovery.sweep_recipes(recipe, "markers.vmin", [70, 80], "segmentation.params.beta",
                                   [50, 130])
    cells = discovery.run_sweep(services, sid, meta, grid, 0, 0)
    assert len(cells) == 4 and all("uri" in c for c in cells)
    assert cells[0]["recipe"]["markers"]["vmin"] == 70
    assert cells[3]["recipe"]["segmentation"]["params"]["beta"] == 130
    # a bad cell says so, the others are computed
    bad = discovery.sweep_recipes(recipe, "markers.vmin", [0, 80])
    cells = discovery.run_sweep(services, sid, meta, bad, 0, 0)
    assert "error" in cells[0] or "uri" in cells[0]
    with pytest.raises(InputError, match="numbers"):
        discovery.parse_values("a, b")
    with pytest.raises(InputError, match="at most"):
        discovery.sweep_recipes(recipe, "markers.vmin", list(range(40)))
    # a 1000 x 1000 grid is refused before one cell is built (or the values even split)
    with pytest.raises(InputError, match="at most 36 combinations; this one has 1,000,000"):
        discovery.sweep_recipes(recipe, "markers.vmin", list(range(1000)),
                                "segmentation.params.beta", list(range(1000)))
    with pytest.raises(InputError, match="at most 36"):
        discovery.parse_values(", ".join(map(str, range(1000))), "values A")
    with pytest.raises(InputError, match="at most 36"):
        discovery.parse_values("1 " * 50, "values A")


def test_measurements_table_csv_and_region_lookup(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    recipe = _recipe(meta, postprocess=[{"name": "fill_holes", "params": {}},
                                        {"name": "label", "params": {"connectivity": 1}},
                                        {"name": "remove_small_objects",
                                         "params": {"min_size": 64}}],
                     measure={**_recipe(meta)["measure"], "pixel_size": 2.0, "unit": "um"})
    rows, columns, notes = measure.table(services, sid, meta, recipe)
    assert 15 <= len(rows) <= 40
    headers = {c["field"]: c["headerName"] for c in columns}
    assert headers["area"] == "area [um²]"
    # pixel size 2: areas are 4x the pixel counts
    labels = services.run(sid, meta["id"], recipe).labels
    first = rows[0]
    assert first["area"] == 4 * np.count_nonzero(np.asarray(labels) == first["label"])
    r, c = np.argwhere(np.asarray(labels) == first["label"])[0]
    assert measure.label_at(services, sid, meta, recipe, 0, 0, {"x": c, "y": r}) == first["label"]
    # hovering the segmentation names the pixel, its intensity and its region
    from skimage import data as skdata
    text = measure.hover_text(services, sid, meta, recipe, 0, 0, {"x": c, "y": r})
    assert text == (f"x {c}, y {r} · intensity {skdata.coins()[r, c]} · "
                    f"region {first['label']}")
    assert measure.hover_text(services, sid, meta, recipe, 0, 0, {"x": 0, "y": 0}).endswith(
        "background") or "region" in measure.hover_text(services, sid, meta, recipe, 0, 0,
                                                        {"x": 0, "y": 0})
    assert measure.hover_text(services, sid, meta, recipe, 0, 0, {"x": 9999, "y": 0}) == ""
    history = {"image_id": meta["id"], "states": [recipe], "index": 0}
    text, name = measure.csv_file(services, sid, meta, history)
    assert name == "coins_measurements.csv"
    assert text.startswith("# ") and meta["id"] in text.splitlines()[0] + text
    assert "area [um²]" in text


def test_recipe_and_script_files(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    history = _history(meta)
    text, name = recipe_io.recipe_file(meta, history)
    assert name == "coins_recipe.json" and json.loads(text)["version"] == 1
    source, name = recipe_io.script_file(meta, history)
    assert name == "coins_pipeline.py"
    compile(source, name, "exec")


def test_3d_slices(services):
    sid = new_session_id()
    out = loading.load_image(services, sid, ids.SAMPLE, "blobs3d", None, None, None)
    meta = out.meta
    assert meta["ndim"] == 3
    style, vmax_index, start = display.slice_settings(meta, 1)
    assert style == {"display": "block"} and vmax_index == meta["shape"][1] - 1
    assert display.slice_settings(dict(meta, ndim=2), 0)[0] == {"display": "none"}


def test_download_labels_tiff_with_provenance(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    history = _history(meta)
    data, name = downloads.labels_file(services, sid, meta, history)
    assert name == "coins_labels.tif"
    with tifffile.TiffFile(_io.BytesIO(data)) as tif:
        labels = tif.asarray()
        description = tif.pages[0].description
    assert labels.shape == (303, 384) and labels.max() > 10
    assert meta["id"] in description and "random_walker" in description
    # The same labels as the panel shows.
    result = services.run(sid, meta["id"], history["states"][0])
    np.testing.assert_array_equal(labels, result.labels)


def test_download_overlay_png(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    data, name = downloads.overlay_file(services, sid, meta, _history(meta), 0, 0, "contour", True)
    png = Image.open(_io.BytesIO(data))
    img = np.asarray(png)
    assert name == "coins_overlay.png" and img.shape == (303, 384, 3)
    info = json.loads(png.text["provenance"])
    assert info["input_hash"] == meta["id"] and "recipe" in info["steps"]


def test_a_failing_post_processing_step_is_reported_on_that_step(services):
    sid = new_session_id()
    pixels = np.random.default_rng(5).integers(0, 255, (20, 30), dtype=np.uint8)
    meta = _load_upload(services, sid, _png(pixels), "small.png").meta
    recipe = _recipe(meta, postprocess=[{"name": "closing", "params": {"radius": 25}},
                                        {"name": "label", "params": {"connectivity": 1}}])
    with pytest.raises(InputError, match="Closing: radius"):
        services.run(sid, meta["id"], recipe)
    assert display.failed_stage(services, sid, meta, recipe) == "post-processing"
    broken = _recipe(meta, markers={"vmin": 0.5, "vmax": 254.5})
    assert display.failed_stage(services, sid, meta, broken) in ("segmentation",
                                                                 "post-processing")


# --------------------------------------------------------------------------- live preview


def _moved(history, meta, dv, dw):
    from callbacks.params import push
    from pipeline import recipe as recipes

    recipe = copy.deepcopy(history["states"][history["index"]])
    step = meta["step"]
    recipe["markers"] = {"vmin": recipe["markers"]["vmin"] + dv * step,
                         "vmax": recipe["markers"]["vmax"] + dw * step}
    return push(history, recipes.validate(recipe))


def _sources(patch):
    """The overlay PNGs a Patch sets (not the result's geometry)."""
    return {tuple(op["location"]): op["params"]["value"]
            for op in patch.to_plotly_json()["operations"] if op["location"][-1] == "source"}


def _geometry(patch, trace=2):
    """x0, y0, dx, dy a Patch sets on an overlay trace (figures.seg_geometry)."""
    return {op["location"][2]: op["params"]["value"]
            for op in patch.to_plotly_json()["operations"]
            if op["location"][:2] == ["data", trace] and op["location"][2] != "source"}


SEG_VIEW = dict(axis=0, index=0, style="contour", show=["markers"], view="labels")


def pending_key(history):
    return display.recipe_token(history["states"][history["index"]])


def _update(services, sid, meta, history, full=False):
    """segmentation_update on a page whose figure shows coins (full=False) or not yet."""
    base = None if full else display.base_key(meta, 0, 0)
    out = display.segmentation_update(services, sid, meta, history, **SEG_VIEW, base=base,
                                      allow_preview=True)
    assert (out[6] == display.base_key(meta, 0, 0)) if full else (out[6] is no_update)
    return out[:6]


def _settle(services, sid, meta, history, pending):
    out = display.settle_update(services, sid, meta, history, pending, **SEG_VIEW,
                                base=display.base_key(meta, 0, 0))
    return out[:5]


def test_a_new_vmin_vmax_shows_a_live_preview_then_the_exact_result(services):
    from dash import no_update
    from dash.exceptions import PreventUpdate

    sid = new_session_id()
    meta = _good_meta(services, sid)
    h0 = _history(meta)
    fig, summary, *_, pending, settled = _update(services, sid, meta, h0, full=True)
    assert "computed in" in summary and pending is no_update  # nothing to warm-start from
    assert settled["key"] == display.recipe_token(h0["states"][0])

    h1 = _moved(h0, meta, 4, -4)
    patch, summary, seg_msg, post_msg, pending, settled = _update(services, sid, meta, h1)
    assert seg_msg is None and post_msg is None
    assert settled is no_update  # comparison and measurements wait for the exact result
    assert "live preview" in summary and "exact random walker running" in summary
    assert pending["key"] == display.recipe_token(h1["states"][1])
    preview = _sources(patch)
    assert set(preview) == {("data", 1, "source"), ("data", 2, "source")}

    settled, summary2, seg_msg, post_msg, signal = _settle(
        services, sid, meta, h1, pending)
    assert "computed in" in summary2 and "labelled regions" in summary2
    assert seg_msg is None and post_msg is None
    assert signal["key"] == pending["key"] and signal["token"] != pending["token"]
    # the settled overlay is the canonical one (what the cache gives for these parameters)
    exact, summary3 = display.segmentation_panel(services, sid, meta, h1["states"][1], 0, 0,
                                                 "contour", True, "labels", None, False)
    assert "from cache" in summary3
    assert _sources(settled)[("data", 2, "source")] == _sources(exact)[("data", 2, "source")]
    assert _sources(settled)[("data", 1, "source")] == preview[("data", 1, "source")]  # markers

    # A settle request of a state the user has left is dropped (the newer move settles itself).
    h2 = _moved(h1, meta, 2, 2)
    with pytest.raises(PreventUpdate):
        _settle(services, sid, meta, h2, pending)
    # Undo to a computed state: the exact result at once, no preview.
    back = {**h2, "index": 1}
    _, summary, *_, pending, settled = _update(services, sid, meta, back)
    assert "from cache" in summary and pending is no_update and settled["key"] == pending_key(back)
    # A post-processing change reuses the cached segmentation: no preview either.
    from callbacks.params import push
    from pipeline import recipe as recipes
    recipe = copy.deepcopy(h1["states"][1])
    recipe["postprocess"] = [{"name": "fill_holes", "params": {}}] + recipe["postprocess"]
    h3 = push(h1, recipes.validate(recipe))
    _, summary, *_, pending, _ = _update(services, sid, meta, h3)
    assert "computed in" in summary and pending is no_update


def _settled_after(services, sid, meta, moves):
    history = _history(meta)
    _update(services, sid, meta, history, full=True)
    for dv, dw in moves:
        history = _moved(history, meta, dv, dw)
        *_, pending, _ = _update(services, sid, meta, history)
        assert pending, "a new vmin/vmax shows a live preview"
        settled = _settle(services, sid, meta, history, pending)
    return history, _sources(settled[0])


def test_settled_result_does_not_depend_on_the_path(tmp_path):
    # Two servers with empty caches reach the same thresholds by different slider paths:
    # the previews start from different probability maps, the settled overlays, labels and
    # downloads are identical.
    results = []
    for name, moves in (("a", [(5, -5), (3, -3)]), ("b", [(-6, 6), (4, 10), (10, -24)])):
        # quick_exact_s=0: every move shows a (path-dependent) preview, then settles
        cfg = Config(state_dir=tmp_path / name, data_dir=tmp_path / "data", quick_exact_s=0)
        svc = Services.create(cfg)
        sid = new_session_id()
        meta = _good_meta(svc, sid)
        history, sources = _settled_after(svc, sid, meta, moves)
        labels, _ = downloads.labels_file(svc, sid, meta, history)
        results.append((history["states"][-1]["markers"], sources, tifffile.imread(
            _io.BytesIO(labels))))
    (ma, sa, la), (mb, sb, lb) = results
    assert ma == mb
    assert sa == sb
    np.testing.assert_array_equal(la, lb)


def test_a_3d_jacobi_solve_has_no_warm_started_preview_only_a_slab_one(services):
    """A 3D 'cg_j' solve converges faster than a warm-started preview: none is drawn. A
    volume above twice COARSE_PREVIEW_PIXELS is previewed by its shown slice, solved on the
    slab of slices around it (issue 9: 99.95 % of that slice as the exact result), and a
    small one is solved at once."""
    from dash import no_update

    from pipeline import randomwalker

    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "blobs3d", None, None, None).meta
    h0 = _history(meta)
    assert h0["states"][0]["segmentation"]["params"]["mode"] == "cg_j"
    _update(services, sid, meta, h0, full=True)
    _, summary, *_, pending, _ = _update(services, sid, meta, _moved(h0, meta, 3, -3))
    assert np.prod(meta["shape"]) > 2 * randomwalker.COARSE_PREVIEW_PIXELS
    assert "of this slice's pixels · live preview (slices 0–4 around this one" in summary
    assert pending is not no_update
    small = np.zeros((40, 50, 60), dtype=np.uint8)
    small[10:30, 15:35, 20:40] = 200
    small += np.random.default_rng(0).integers(0, 40, small.shape, dtype=np.uint8)
    buf = _io.BytesIO()
    tifffile.imwrite(buf, small)
    meta = _load_upload(services, sid, buf.getvalue(), "small.tif").meta
    h0 = _history(meta)
    _update(services, sid, meta, h0, full=True)
    _, summary, *_, pending, _ = _update(services, sid, meta, _moved(h0, meta, 3, -3))
    assert "computed in" in summary and pending is no_update


def test_thresholds_that_leave_a_label_empty_are_refused_without_a_preview(services):
    from dash import no_update

    sid = new_session_id()
    meta = _good_meta(services, sid)
    h0 = _history(meta)
    _update(services, sid, meta, h0, full=True)  # a solved state to warm-start from
    recipe = copy.deepcopy(h0["states"][0])
    recipe["markers"] = {"vmin": 100, "vmax": 252}  # nothing above coins' brightest pixel
    from callbacks.params import push
    bad = push(h0, recipe)
    fig, summary, seg_msg, post_msg, pending, settled = _update(services, sid, meta, bad)
    assert fig is no_update and pending is no_update  # the previous overlays stay
    assert "No object marker" in json.dumps(seg_msg.to_plotly_json(), default=str)
    assert summary == "" and post_msg is None


def test_3d_default_measurements_leave_out_solidity(services):
    # a convex hull per region: most of the table's time on a volume; offered, not default
    sid = new_session_id()
    vol = loading.load_image(services, sid, ids.SAMPLE, "blobs3d", None, None, None).meta
    coins = _good_meta(services, sid)
    assert "solidity" not in _history(vol)["states"][0]["measure"]["properties"]
    assert "solidity" in _history(coins)["states"][0]["measure"]["properties"]
    assert "intensity_mean" in _history(vol)["states"][0]["measure"]["properties"]


# --------------------------------------------------------------------------- a move (thresholds)


def _page(services, sid, meta):
    """The page after loading: the history pointer and the segmentation figure's base."""
    from callbacks.params import recipe_action

    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    out = display.segmentation_update(services, sid, meta, pointer, **SEG_VIEW, base=None,
                                      allow_preview=True)
    return pointer, out[6]


def _move(services, sid, meta, pointer, base, pair, seq, **extra):
    from callbacks import thresholds

    return thresholds.move_update(services, sid, meta, pointer,
                                  {"pair": list(pair), "seq": seq, **extra}, **SEG_VIEW,
                                  base=base)


def test_a_quick_exact_result_is_drawn_at_once(tmp_path):
    """When the last exact result with this filter and method was quick, a move draws the
    exact result in its own response: no preview, nothing pending, the panels announced."""
    from dash import no_update

    from callbacks import display

    quick = Services.create(Config(state_dir=tmp_path / "q", data_dir=tmp_path,
                                   quick_exact_s=60))
    sid = new_session_id()
    meta = _good_meta(quick, sid)
    pointer, base = _page(quick, sid, meta)  # the first exact result: its time is recorded
    assert display.exact_is_quick(quick, sid, meta, pointer["recipe"])
    m = pointer["recipe"]["markers"]
    out = _move(quick, sid, meta, pointer, base, (m["vmin"], m["vmax"] + 3), 1)
    summary, pending, settled = out[8], out[-3], out[-2]
    assert "labelled region" in summary and "live preview" not in summary
    assert pending is no_update and settled["rev"] == out[0]["rev"]
    assert set(_sources(out[7])) == {("data", 1, "source"), ("data", 2, "source")}
    # another method has no recorded time yet: a preview is allowed for it
    other = {**pointer["recipe"], "filter": {"name": "gaussian", "params": {"sigma": 2.0}}}
    assert not display.exact_is_quick(quick, sid, meta, other)
    # and with the setting at 0 nothing is ever quick
    slow = Services.create(Config(state_dir=tmp_path / "q", data_dir=tmp_path,
                                  quick_exact_s=0))
    assert not display.exact_is_quick(slow, sid, meta, pointer["recipe"])

    # A drag too draws the exact result of the pair under the handle, and caches it: the
    # release on that pair finds it (no second solve, no queue after a drag).
    from callbacks import thresholds

    pointer = out[0]
    pair = [m["vmin"], m["vmax"] + 9]
    fig, summary, *_ = thresholds.drag_update(quick, sid, meta, pointer,
                                              {"pair": pair, "seq": 2}, **SEG_VIEW, base=base)
    assert "labelled region" in summary and "live preview" not in summary
    out = _move(quick, sid, meta, pointer, base, tuple(pair), 3)
    assert "from cache" in out[8] or "cached" in out[8], out[8]


def test_a_move_pushes_the_history_on_the_server_and_draws_in_one_response(services):
    from dash import no_update
    from dash.exceptions import PreventUpdate

    sid = new_session_id()
    meta = _good_meta(services, sid)
    pointer, base = _page(services, sid, meta)
    assert "states" not in pointer and pointer["drawn"] is False
    assert "image" in pointer["changed"]
    m = pointer["recipe"]["markers"]
    out = _move(services, sid, meta, pointer, base, (m["vmin"], m["vmax"] + 3), 1)
    new, slider, message, undo_off, redo_off, text, recipe_text, fig, summary, *_ = out
    pending, settled, new_base = out[-3:]
    assert message is None and slider is no_update and text == "step 2 of 2"
    assert undo_off is False and redo_off is True and '"vmax": 134.0' in recipe_text
    assert new["changed"] == ["markers"] and new["drawn"] is True and new["index"] == 1
    assert "live preview" in summary and pending["rev"] == new["rev"]
    assert set(_sources(fig)) == {("data", 1, "source"), ("data", 2, "source")}
    assert new_base is no_update  # the figure shows coins already: a Patch
    full = services.store.get_history(sid, meta["id"], new["rev"])
    assert [s["markers"]["vmax"] for s in full["states"]] == [m["vmax"], m["vmax"] + 3]
    # the exact result follows; a settle for this revision is live on the server
    settled = _settle(services, sid, meta, new, pending)
    assert "labelled regions" in settled[1]

    # The release of a drag asks for the exact result at once.
    out = _move(services, sid, meta, new, base, (m["vmin"], m["vmax"] + 5), 2, exact=True)
    assert "computed in" in out[8] and out[-3] is no_update and out[-2]["rev"] == out[0]["rev"]

    # A refused pair: the history stays, the slider goes back, the message says why.
    out = _move(services, sid, meta, out[0], base, (m["vmin"], 252), 3)
    assert out[0] is no_update and out[1] == [m["vmin"], m["vmax"] + 5.0]
    assert "No object marker" in str(out[2]) and "message-error" in str(out[2])
    assert all(o is no_update for o in out[7:])

    # A request that a later one of the page has passed is not computed.
    with pytest.raises(PreventUpdate):
        _move(services, sid, meta, pointer, base, (m["vmin"] + 1, m["vmax"]), 2)
    # Nor is a malformed one.
    for bad in ({"pair": [1, "x"], "seq": 9}, {"pair": [1, 2]}, None, {"pair": [1, 2], "seq": -1}):
        from callbacks import thresholds
        with pytest.raises(PreventUpdate):
            thresholds.move_update(services, sid, meta, pointer, bad, **SEG_VIEW, base=base)


def test_a_drag_previews_without_touching_the_history_and_drops_superseded_requests(services):
    from dash import no_update

    from callbacks import thresholds

    sid = new_session_id()
    meta = _good_meta(services, sid)
    pointer, base = _page(services, sid, meta)
    m = pointer["recipe"]["markers"]
    out = thresholds.drag_update(services, sid, meta, pointer,
                                 {"pair": [m["vmin"], m["vmax"] + 6], "seq": 5}, **SEG_VIEW,
                                 base=base)
    fig, summary, seg_msg, post_msg, new_base, ack = out
    assert ack == {"seq": 5} and new_base is no_update and seg_msg is None
    assert "live preview" in summary and "on release" in summary
    assert ("data", 2, "source") in _sources(fig)
    assert services.store.get_history(sid, meta["id"], pointer["rev"])["states"] == [
        pointer["recipe"]]
    # superseded (a later request of the page was seen): only the acknowledgement
    out = thresholds.drag_update(services, sid, meta, pointer,
                                 {"pair": [m["vmin"], m["vmax"] + 7], "seq": 4}, **SEG_VIEW,
                                 base=base)
    assert out == (no_update,) * 5 + ({"seq": 4},)
    # a pair that leaves a label empty: nothing drawn (the release says why)
    out = thresholds.drag_update(services, sid, meta, pointer,
                                 {"pair": [m["vmin"], 252], "seq": 6}, **SEG_VIEW, base=base)
    assert out[:5] == (no_update,) * 5


def test_the_page_state_stays_small_however_long_the_session(services):
    sid = new_session_id()
    meta = _good_meta(services, sid)
    from callbacks.params import recipe_action

    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    sizes = []
    for i in range(300):
        pair = [80 + i % 7, 130 + i % 11 + (i // 77)]
        pointer, _, message = recipe_action(services, sid, ids.THRESHOLDS, pointer, meta,
                                            {"thresholds": pair})
        if pointer is no_update:
            continue
        sizes.append(len(json.dumps(pointer)))
    assert max(sizes) <= 1.1 * min(sizes)
    full = services.store.get_history(sid, meta["id"], pointer["rev"])
    assert len(full["states"]) == pointer["length"] > 250
    # a push, an undo and a redo read one recipe each from the store, whatever the length
    reads = []
    original = services.store.get_recipe
    services.store.get_recipe = lambda *a: reads.append(a) or original(*a)
    try:
        pointer, _, _ = recipe_action(services, sid, ids.THRESHOLDS, pointer, meta,
                                      {"thresholds": [70, 150]})
        pointer, _, _ = recipe_action(services, sid, ids.UNDO, pointer, meta, {})
        pointer, _, _ = recipe_action(services, sid, ids.REDO, pointer, meta, {})
    finally:
        services.store.get_recipe = original
    assert len(reads) <= 5, len(reads)
    assert pointer["recipe"]["markers"] == {"vmin": 70.0, "vmax": 150.0}


def test_a_response_for_a_state_the_session_has_left_is_dropped(services):
    from dash.exceptions import PreventUpdate

    sid = new_session_id()
    meta = _good_meta(services, sid)
    pointer, base = _page(services, sid, meta)
    m = pointer["recipe"]["markers"]
    out = _move(services, sid, meta, pointer, base, (m["vmin"], m["vmax"] + 3), 1)
    pending = out[-3]
    _move(services, sid, meta, out[0], base, (m["vmin"], m["vmax"] + 4), 2)  # moved on
    with pytest.raises(PreventUpdate):
        _settle(services, sid, meta, out[0], pending)
    # another image loaded meanwhile: the comparison of the old one is not drawn
    other = loading.load_image(services, sid, ids.SAMPLE, "camera", None, None, None).meta
    assert other["id"] != meta["id"]
    with pytest.raises(PreventUpdate):
        display.compare_update(services, sid, meta, out[0], "watershed", 0, 0, None)



def test_the_comparison_never_computes_the_exact_segmentation_itself(services, monkeypatch):
    """Run by a view change or the method menu while the exact random walker is not drawn
    yet (a preview on the page, the exact result a background job on a large image), the
    comparison says it waits instead of solving it in the request; run by the exact result's
    signal (it is cached then), it compares."""
    from dash import no_update

    sid = new_session_id()
    meta = _good_meta(services, sid)
    pointer, base = _page(services, sid, meta)
    m = pointer["recipe"]["markers"]
    out = _move(services, sid, meta, pointer, base, (m["vmin"], m["vmax"] + 3), 1)
    assert "live preview" in out[8]  # quick_exact_s=0: the exact result is not computed yet
    real = services.mask
    solved = []
    monkeypatch.setattr(services.__class__, "mask",
                        lambda self, *a: solved.append(a) or real(*a))
    fig, text, new_base = display.compare_update(services, sid, meta, out[0], "watershed", 0,
                                                 0, None, settled=False)
    assert solved == [] and new_base is no_update
    assert display.COMPARE_WAITS in str(text)
    _settle(services, sid, meta, out[0], out[-3])  # the exact result, drawn and cached
    fig, text, new_base = display.compare_update(services, sid, meta, out[0], "watershed", 0,
                                                 0, None, settled=False)
    assert "agree on" in str(text) and new_base is not no_update


def test_the_loader_dropdowns_show_what_is_loaded(services, tmp_path):
    from dash import no_update

    sid = new_session_id()
    out = loading.load_outputs(services, sid, ids.SAMPLE, "coins", None, None, None)
    assert out[0]["name"] == "coins" and out[4] is no_update and out[5] is no_update
    buf = _io.BytesIO()
    tifffile.imwrite(buf, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    contents = "data:image/tiff;base64," + base64.b64encode(buf.getvalue()).decode()
    out = loading.load_outputs(services, sid, ids.UPLOAD, "coins", contents, "ramp.tif", None)
    assert out[0]["name"] == "ramp.tif"
    assert out[3] is None and out[4] is None  # upload cleared, sample emptied: coins loads again
    # choosing no sample (the emptied dropdown) loads nothing
    assert loading.load_outputs(services, sid, ids.SAMPLE, None, None, None, None) == (
        no_update,) * 6
    # a failed load keeps the dropdowns as they are
    out = loading.load_outputs(services, sid, ids.UPLOAD, None, "data:x;base64,AAAA", "x.tif",
                               None)
    assert out[0] is no_update and out[4] is no_update and "Could not load" in str(out[2])


def test_a_segmentation_over_the_memory_budget_says_what_fits_and_keeps_the_page(tmp_path):
    """PIPEX_MAX_JOB_GB: the random walker is refused before it runs; the message names the
    estimate, the limit and a downsampling factor; a threshold method still runs."""
    from dash import no_update

    small = Services.create(Config(state_dir=tmp_path / "s", data_dir=tmp_path,
                                   max_job_gb=0.01))  # 10 MB: coins needs ≈ 33 MB
    sid = new_session_id()
    from callbacks.params import recipe_action

    meta = _good_meta(small, sid)
    pointer, _, _ = recipe_action(small, sid, ids.IMAGE, None, meta, {})
    out = display.segmentation_update(small, sid, meta, pointer, **SEG_VIEW, base=meta["id"],
                                      allow_preview=True)
    fig, summary, message = out[:3]
    assert fig is no_update and summary == ""  # the previous overlays stay
    text = str(message)
    assert "message-error" in text
    assert "Segmentation failed: Random walker (cg_mg) on 303 × 384 pixels" in text
    assert "needs ≈ 33 MB" in text and "limit of 10 MB" in text and "downsample it by 2" in text


def test_a_large_new_image_shows_a_reduced_grid_preview_first_then_the_exact_result(tmp_path):
    """Issue 9: the first view of a large image comes from a solve on a reduced grid,
    labelled with its resolution, on the whole figure; the exact result follows as a Patch."""
    from dash import Patch

    svc = Services.create(Config(state_dir=tmp_path / "s", data_dir=tmp_path,
                                 job_after_s=1e9))  # the exact result in the callback
    sid = new_session_id()
    rng = np.random.default_rng(2)
    big = rng.normal(90, 15, (800, 700)).clip(0, 255).astype(np.uint8)
    big[200:600, 150:500] += 90
    buf = _io.BytesIO()
    tifffile.imwrite(buf, big)
    meta = _load_upload(svc, sid, buf.getvalue(), "big.tif").meta
    from callbacks.params import recipe_action

    pointer, _, _ = recipe_action(svc, sid, ids.IMAGE, None, meta, {})
    out = display.segmentation_update(svc, sid, meta, pointer, **SEG_VIEW, base=None,
                                      allow_preview=True)
    fig, summary, _, _, pending, settled, new_base = out
    assert isinstance(fig, dict) or hasattr(fig, "to_plotly_json")  # the whole figure
    from pipeline import randomwalker

    factor = randomwalker.reduction_factor(big.shape, randomwalker.COARSE_PREVIEW_PIXELS_2D)
    assert factor == 5
    assert "live preview (at 1/5 resolution" in summary and pending["key"]
    assert new_base == meta["id"]
    # drawn at the resolution it was computed at: one overlay pixel per 5 x 5 block
    seg = fig.to_plotly_json()["data"][2]
    assert (seg["x0"], seg["y0"], seg["dx"], seg["dy"]) == (2, 2, 5, 5)
    png = Image.open(_io.BytesIO(base64.b64decode(seg["source"].split(",", 1)[1])))
    assert png.size == (140, 160)  # width, height of the 160 x 140 blocks
    exact = display.settle_update(svc, sid, meta, pointer, pending, **SEG_VIEW, base=new_base)
    assert isinstance(exact[0], Patch) and "labelled region" in exact[1]
    # the exact result: one pixel per pixel again
    assert _geometry(exact[0]) == {"x0": 0, "y0": 0, "dx": 1, "dy": 1}
    png = Image.open(_io.BytesIO(base64.b64decode(
        _sources(exact[0])[("data", 2, "source")].split(",", 1)[1])))
    assert png.size == (700, 800)


def test_each_message_appears_beside_the_control_that_caused_it():
    """Issue 10 item 7: a recipe loaded in the Recipe tab is reported there, styled by
    severity; other actions report in the Markers panel; nothing is plain text."""
    from dash import no_update

    from callbacks.params import placed_messages

    markers, recipe = placed_messages(ids.LOAD_RECIPE, "not JSON")
    assert markers is None
    assert recipe.className == "message-error" and "Could not load the recipe: not JSON" in \
        recipe.children and "kept" in recipe.children
    markers, recipe = placed_messages(ids.LOAD_RECIPE, None)
    assert markers is None and recipe.className == "message-info"
    markers, recipe = placed_messages(ids.FILTER_METHOD, "sigma must be positive")
    assert markers.className == "message-error" and recipe is no_update
    assert placed_messages(ids.UNDO, None) == (None, no_update)


def test_a_move_superseded_while_solving_stops_and_caches_nothing(tmp_path):
    """Issue 9: a newer move of the page stops the solve it supersedes (checked between CG
    iterations, through the shared store); nothing is drawn or cached, and the same pair
    computes normally later."""
    from dash.exceptions import PreventUpdate

    from callbacks import thresholds

    svc = Services.create(Config(state_dir=tmp_path / "s", data_dir=tmp_path, quick_exact_s=60))
    sid = new_session_id()
    meta = _good_meta(svc, sid)
    pointer, base = _page(svc, sid, meta)
    m = pointer["recipe"]["markers"]
    pair = (m["vmin"], m["vmax"] + 7)
    stop = thresholds.superseded(svc, sid, 1)
    assert not stop()
    svc.store.bump(sid, thresholds.STREAM, 2)  # a later request of the page arrived
    assert stop()
    recipe = {**pointer["recipe"], "markers": {**m, "vmax": pair[1]}}
    with pytest.raises(PreventUpdate):
        display.segmentation_update(svc, sid, meta, pointer, **SEG_VIEW, base=base,
                                    allow_preview=False, recipe=recipe, should_stop=stop)
    assert not svc.run(sid, meta["id"], recipe).cached  # computed now, not before


def test_the_compute_cache_is_trimmed_while_people_work(tmp_path):
    """Issue 11: the joblib cache keeps to its limit between image loads too: a new result
    trims it, at most once per TRIM_EVERY_S across workers."""
    def size(folder):
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    svc = Services.create(Config(state_dir=tmp_path / "s", data_dir=tmp_path,
                                 store_size_gb=0.002))  # cache limit: 4 MB
    sid = new_session_id()
    meta = _good_meta(svc, sid)
    recipe = _recipe(meta)
    for beta in (90.0, 130.0, 170.0):  # new results: graphs, masks, labels (> 4 MB)
        recipe["segmentation"]["params"]["beta"] = beta
        svc.compute.run(meta["id"], svc.loader(sid, meta["id"]), recipe)
    limit = svc.compute.bytes_limit
    assert size(svc.config.cache_dir) > limit
    assert svc.trim_cache() is True
    assert size(svc.config.cache_dir) <= limit
    assert svc.trim_cache() is False  # not again within the window
    # and a new result through Services.run trims once the window has passed
    object.__setattr__(svc, "TRIM_EVERY_S", 0.05)
    time.sleep(0.1)
    recipe["segmentation"]["params"]["beta"] = 210.0
    assert not svc.run(sid, meta["id"], recipe).cached
    # the run just trimmed: within the usual window, no second trim (the window is set back
    # first, so that a slow machine's pause here does not pass 0.05 s of it)
    object.__setattr__(svc, "TRIM_EVERY_S", 30.0)
    assert svc.trim_cache() is False


def test_typed_round_thresholds_are_what_the_recipe_holds(tmp_path):
    """Issue 10 item 2: vmin 0 and vmax 1 typed on a float image are kept exactly."""
    svc = Services.create(Config(state_dir=tmp_path / "s", data_dir=tmp_path))
    sid = new_session_id()
    rng = np.random.default_rng(5)
    image = rng.uniform(-0.2003, 1.2987, (40, 50)).astype(np.float64)
    image[0, 0], image[-1, -1] = -0.2003, 1.2987
    buf = _io.BytesIO()
    tifffile.imwrite(buf, image)
    meta = _load_upload(svc, sid, buf.getvalue(), "float.tif").meta
    # a grid of 0.002 from -0.22 (the image's minimum, -0.2003, is not on it)
    assert meta["slider"] == [-0.22, 1.3] and meta["step"] == 0.002
    pointer, base = _page(svc, sid, meta)
    out = _move(svc, sid, meta, pointer, base, (0.0, 1.0), 1)
    assert out[0]["recipe"]["markers"]["vmin"] == 0.0
    assert out[0]["recipe"]["markers"]["vmax"] == 1.0


def test_numbers_are_formatted_for_a_person():
    """Issue 10 item 3: the image info and the measurements table."""
    from callbacks.loading import format_value

    assert format_value(40000.0, "uint16") == "40,000"
    assert format_value(100.0, "uint16") == "100"
    assert format_value(0.29101560765411705, "float32") == "0.291"
    assert format_value(7347.4609375, "float64") == "7,347"  # as the tooltips write it
    assert format_value(999.94, "float64") == "999.9"
    assert format_value(12345.678, "float64") == "12,346"
    assert format_value(2.5e-5, "float32") == "2.500e-05"
    assert format_value(0.0, "float64") == "0"
    text = " ".join(str(p) for p in loading.describe(
        {"name": "x", "shape": [4, 5], "ndim": 2, "dtype": "uint16", "min": 100.0,
         "max": 40000.0, "notes": []}))
    assert "values 100 … 40,000" in text


def test_the_measurements_table_formats_floats_without_exponents(services):
    from callbacks import measure

    sid = new_session_id()
    meta = _good_meta(services, sid)
    _, columns, _ = measure.table(services, sid, meta, _recipe(meta))
    formatters = {c["field"]: c.get("valueFormatter") for c in columns}
    assert formatters["label"] is None  # a region's name, as the hover line writes it
    # each numeric column its own decimals (issue 10 item 3): none for areas in pixels
    assert formatters["area"] == {"function": measure.number_format(0)}
    assert all(f and f["function"].startswith("params.value == null ? '' : d3.format(',.")
               for name, f in formatters.items() if name != "label")
    # a NaN (null) is an empty cell; separators, fixed decimals, never an exponent
    assert measure.number_format(2) == (
        "params.value == null ? '' : d3.format(',.2f')(params.value)")


def test_a_measurements_column_has_one_number_of_decimals_chosen_from_its_values():
    """Issue 10 item 3: 3.76923 above 489.154 (6 significant digits, uneven decimals)."""
    from callbacks import measure

    assert measure.column_decimals([3.76923, 489.154, 52.2, 61.9]) == 2  # 3.77, 489.15
    assert measure.column_decimals([8792.0, 37.0, 1.0]) == 0  # areas in pixels
    assert measure.column_decimals(np.array([3, 120], dtype=np.int64)) == 0
    assert measure.column_decimals([0.9757, 0.2, 0.5]) == 4  # eccentricities: 0.5000
    assert measure.column_decimals([152.3, 90.51, 301.2]) == 1  # centroids in pixels
    assert measure.column_decimals([1014260.0, 2e6 + 0.25]) == 0  # millions: whole
    assert measure.column_decimals([np.nan, 0.0, 0.25]) == 4  # NaN and 0 left out
    assert measure.column_decimals([np.nan, np.nan]) == 0
    assert measure.column_decimals([3e-12, 5e-12]) == measure.MOST_DECIMALS
    # the width fits the formatted values: 1,297.44 is wider than 1,297
    m = type("M", (), {"columns": {"label": np.array([1, 2]),
                                   "perimeter": np.array([3.76923, 1297.44]),
                                   "area": np.array([1.0, 1297.0])},
                       "units": {"perimeter": "px", "area": "px²"}})()
    widths = {c["field"]: c["width"] for c in measure.columns_of(m)}
    assert widths["perimeter"] > widths["area"]


def test_a_download_that_fails_says_so_on_the_page():
    from dash import no_update

    from callbacks.downloads import download_outputs

    def broken():
        raise RuntimeError("disk gone")

    def refused():
        raise InputError("This image is no longer on the server")

    data, message = download_outputs("labels", broken)
    assert data is no_update and "unexpected error (RuntimeError)" in str(message)
    data, message = download_outputs("labels", refused)
    assert data is no_update and "no longer on the server" in str(message)
    data, message = download_outputs("labels", lambda: (b"abc", "x.tif"))
    assert data["filename"] == "x.tif" and message is no_update


def test_a_failed_upload_names_the_file_without_its_control_characters(services):
    """The message of a refused upload names the file as the decoder does: printable
    characters only, no directory (issue 11's hostile corpus sent a name with control
    characters: it reached the page as sent)."""
    sid = new_session_id()
    bad = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    outcome = loading.load_image(services, sid, ids.UPLOAD, None, bad,
                                 "C:\\fakepath\\evil\x1b[31m\x07name.png", None)
    assert outcome.meta is None
    assert "evil[31mname.png" in outcome.message
    assert "\x1b" not in outcome.message and "\x07" not in outcome.message
    assert "fakepath" not in outcome.message


def test_a_large_image_is_drawn_at_its_display_level_in_pixels_of_the_image(services):
    """Above render.DISPLAY_MAX_PIXELS every view of the image goes to the browser on blocks
    (a PNG of half the size here, stretched by the traces' geometry); the axes, hover and
    strokes stay in pixels of the image; the values the page draws markers from too."""
    import base64

    from callbacks import fastpath

    rows, cols = np.mgrid[0:1500, 0:1600]
    image = (60 + (rows + cols) // 100).astype(np.uint8)  # compresses: a small upload
    image[300:700, 400:900] = 200
    sid = new_session_id()
    loaded = _load_upload(services, sid, _png(image), "big.png")
    meta = loaded.meta
    assert meta is not None, loaded
    assert display.display_of(meta, 0) == 2

    def png_shape(uri):
        return Image.open(_io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size[::-1]

    fig = display.image_panel(services, sid, meta, 0, 0).to_plotly_json()
    trace = fig["data"][0]
    assert png_shape(trace["source"]) == (750, 800)
    assert (trace["dx"], trace["dy"], trace["x0"], trace["y0"]) == (2, 2, 0.5, 0.5)

    from callbacks.params import recipe_action

    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    fig, _, _, _, pending, _, new_base = display.segmentation_update(
        services, sid, meta, pointer, **SEG_VIEW, base=None, allow_preview=True)
    fig = fig.to_plotly_json()  # the first view: a preview on its reduced grid
    for i in (figures.BASE_TRACE, figures.MARKER_TRACE, figures.HIGHLIGHT_TRACE):
        assert fig["data"][i]["dx"] == 2, i
    assert png_shape(fig["data"][figures.BASE_TRACE]["source"]) == (750, 800)
    assert png_shape(fig["data"][figures.MARKER_TRACE]["source"]) == (750, 800)
    exact = display.settle_update(services, sid, meta, pointer, pending, **SEG_VIEW,
                                  base=new_base)
    assert "labelled region" in exact[1]
    assert _geometry(exact[0]) == {"x0": 0.5, "y0": 0.5, "dx": 2, "dy": 2}
    assert png_shape(_sources(exact[0])[("data", 2, "source")]) == (750, 800)
    # the page's values for its own markers: at the display level, and it is told so
    history = {**pointer}
    values = fastpath.fast_values(services, {"session": sid, "image": meta["id"],
                                             "history": history,
                                             "view": {"axis": 0, "index": 0}})
    assert values["factor"] == 2 and values["shape"] == [750, 800]
