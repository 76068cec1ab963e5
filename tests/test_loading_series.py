"""The Series menu of a data-folder TIFF with several image series (issue 9): the loader's
callback body (callbacks.loading.loader_outputs) called directly, on a real store."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from dash import no_update

from callbacks import loading
from callbacks.services import Services
from components import ids
from pipeline.config import Config
from pipeline.store import new_session_id

HIDDEN = {"display": "none"}


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=8,
                 max_pixels=1_000_000, quick_exact_s=0, job_after_s=1e9)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _ramp(shape, dtype=np.uint16):
    grid = np.indices(shape).sum(axis=0)
    return (grid * 7 % 251).astype(dtype)


def _write_series(path, *arrays, ome=False):
    with tifffile.TiffWriter(path, ome=ome) as tif:
        for number, array in enumerate(arrays):
            axes = "ZYX"[-array.ndim:]
            metadata = {"axes": axes}
            if ome:
                metadata["Name"] = f"image {number}"
            tif.write(array, photometric="minisblack", metadata=metadata)


def _load(services, sid, source, data_file=None, series=None, current=None, sample="coins"):
    return loading.loader_outputs(services, sid, source, sample, None, None, data_file, series,
                                  current)


def test_a_file_of_two_series_shows_the_menu_and_loads_the_one_chosen(services, tmp_path):
    _write_series(tmp_path / "data" / "two.ome.tif", _ramp((4, 40, 48)), _ramp((60, 70)),
                  ome=True)
    sid = new_session_id()
    out = _load(services, sid, ids.DATA_FILE, "two.ome.tif")
    meta, _, message, _, _, shown_file, options, value, style = out
    assert meta["shape"] == [4, 40, 48] and meta["series"] == 0
    assert meta["data_file"] == "two.ome.tif"
    assert shown_file is no_update  # the data-file menu keeps the file
    assert options == [{"label": "0: “image 0” — 4 × 40 × 48 uint16", "value": 0},
                       {"label": "1: “image 1” — 60 × 70 uint16", "value": 1}]
    assert value == 0 and style == {}
    assert "TIFF with 2 image series: series 0" in message.children

    out = _load(services, sid, ids.DATA_SERIES, "two.ome.tif", 1, current=meta)
    second, info, message, _, _, shown_file, options, value, style = out
    assert second["shape"] == [60, 70] and second["series"] == 1
    assert second["id"] != meta["id"]
    assert "60 × 70" in str(info)
    assert shown_file is no_update and options is no_update and value is no_update
    assert style is no_update
    assert message.className == "message-info"
    np.testing.assert_array_equal(services.store.get_image(sid, second["id"]), _ramp((60, 70)))
    assert services.store.is_current(sid, second["id"])


def test_a_bad_series_says_why_and_the_image_and_menu_stay(services, tmp_path):
    # series 1 is over the pixel limit (1,000,000)
    _write_series(tmp_path / "data" / "big.tif", _ramp((3, 30, 30)), _ramp((1100, 1000),
                                                                           np.uint8))
    sid = new_session_id()
    meta = _load(services, sid, ids.DATA_FILE, "big.tif")[0]
    out = _load(services, sid, ids.DATA_SERIES, "big.tif", 1, current=meta)
    kept, info, message, _, _, shown_file, options, value, style = out
    assert kept is no_update and info is no_update
    assert message.className == "message-error"
    assert message.children.startswith("Could not load series 1 of big.tif: image is "
                                       "1100 × 1000 = 1,100,000 pixels, the limit is "
                                       "1,000,000 pixels")
    assert value == 0  # the menu goes back to the series shown
    assert options is no_update and style is no_update and shown_file is no_update


def test_a_corrupt_first_series_still_offers_the_others(services, tmp_path):
    path = tmp_path / "data" / "broken.tif"
    _write_series(path, _ramp((3, 30, 30)), _ramp((50, 40)))
    with tifffile.TiffFile(path) as tif:
        value_offset = tif.series[0].pages[0].tags["StripOffsets"].valueoffset
    data = bytearray(path.read_bytes())
    data[value_offset:value_offset + 4] = (len(data) + 100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    sid = new_session_id()
    coins = _load(services, sid, ids.SAMPLE)[0]
    out = _load(services, sid, ids.DATA_FILE, "broken.tif", current=coins)
    meta, _, message, _, _, _, options, value, style = out
    assert meta is no_update
    assert message.children.startswith("Could not load broken.tif: could not decode "
                                       "broken.tif as TIFF")
    assert [o["value"] for o in options] == [0, 1] and value is None and style == {}
    out = _load(services, sid, ids.DATA_SERIES, "broken.tif", 1, current=coins)
    assert out[0]["shape"] == [50, 40]


def test_a_sample_or_a_single_series_file_hides_the_menu(services, tmp_path):
    _write_series(tmp_path / "data" / "two.tif", _ramp((3, 30, 30)), _ramp((50, 40)))
    tifffile.imwrite(tmp_path / "data" / "one.tif", _ramp((30, 40)))
    sid = new_session_id()
    assert _load(services, sid, ids.DATA_FILE, "two.tif")[6:] == (
        [{"label": "0: 3 × 30 × 30 uint16", "value": 0},
         {"label": "1: 50 × 40 uint16", "value": 1}], 0, {})
    assert _load(services, sid, ids.DATA_FILE, "one.tif")[6:] == ([], None, HIDDEN)
    _load(services, sid, ids.DATA_FILE, "two.tif")
    assert _load(services, sid, ids.SAMPLE, sample="camera")[6:] == ([], None, HIDDEN)
    # a failed sample load changes nothing
    assert _load(services, sid, ids.SAMPLE, sample="nope")[6:] == (no_update,) * 3
    # the menu cleared: nothing to load
    assert _load(services, sid, ids.DATA_SERIES, "two.tif", None) == (no_update,) * 9


def test_the_loader_shows_the_series_menu_hidden_and_registers_it(tmp_path):
    from app import create_app

    (tmp_path / "data").mkdir()
    app = create_app(Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data"))
    layout = app.layout() if callable(app.layout) else app.layout
    found = {}

    def walk(node):
        if getattr(node, "id", None) in (ids.DATA_SERIES, ids.DATA_SERIES_ITEM):
            found[node.id] = node
        children = getattr(node, "children", None)
        for child in children if isinstance(children, (list, tuple)) else [children]:
            if child is not None and hasattr(child, "to_plotly_json"):
                walk(child)

    walk(layout)
    assert found[ids.DATA_SERIES_ITEM].style == HIDDEN
    assert found[ids.DATA_SERIES].options == []
    inputs = [i["id"] for cb in app.callback_map.values() for i in cb["inputs"]]
    assert ids.DATA_SERIES in inputs


def test_the_saved_recipe_and_the_script_read_the_series_shown(services, tmp_path):
    """Tuned on series 1 of a file, the recipe saved and the script exported say
    ``"input": {"series": 1}`` (a batch, the command line and the script then read that
    series of each file); on series 0, or an image not from the data folder, no input
    section."""
    import json

    from callbacks import recipe_io
    from pipeline import recipe as recipes

    _write_series(tmp_path / "data" / "two.ome.tif", _ramp((4, 40, 48)), _ramp((60, 70)),
                  ome=True)
    sid = new_session_id()
    first = _load(services, sid, ids.DATA_FILE, "two.ome.tif")[0]
    second = _load(services, sid, ids.DATA_SERIES, "two.ome.tif", 1, current=first)[0]
    history = {"image_id": second["id"], "recipe": recipes.default_recipe(100, 150)}

    text, _name = recipe_io.recipe_file(second, history)
    assert json.loads(text)["input"] == {"series": 1}
    source, _name = recipe_io.script_file(second, history)
    assert "series=1)" in source and '"series": 1' in source
    for meta in (first, {**second, "series": None}, {k: v for k, v in second.items()
                                                      if k != "series"}):
        text, _name = recipe_io.recipe_file(meta, history)
        assert "input" not in json.loads(text)
    # a recipe loaded with a series keeps to the image shown when saved again
    loaded = {**history, "recipe": recipes.with_series(history["recipe"], 3)}
    assert json.loads(recipe_io.recipe_file(second, loaded)[0])["input"] == {"series": 1}
    assert "input" not in json.loads(recipe_io.recipe_file(first, loaded)[0])


def test_a_batch_reads_the_series_of_its_recipe(tmp_path):
    """The batch (the command line's and the Batch tab's worker) reads the series the
    recipe names of each file; a file without that series fails with the reader's message."""
    from skimage import data as skdata

    from pipeline import batch
    from pipeline import io as pio
    from pipeline import recipe as recipes

    coins = skdata.coins()
    path = tmp_path / "two.ome.tif"
    _write_series(path, np.full((64, 80), 200, np.uint8), coins, ome=True)
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, coins)
    recipe = recipes.with_series(recipes.default_recipe(80, 150), 1)
    work = batch.ProcessImage(recipe, max_bytes=10**8, max_pixels=10**7)
    out = work((path.name, path.read_bytes()))
    expected = recipes.run(pio.read_image_file(path, max_bytes=10**8, max_pixels=10**7,
                                               series=1).array, recipe)
    labels = tifffile.imread(__import__("io").BytesIO(out["tiff"]))
    assert labels.shape == coins.shape
    np.testing.assert_array_equal(labels, expected.labels)
    with pytest.raises(pio.InputError, match="series 1 is out of range"):
        work((one.name, one.read_bytes()))


def test_the_batch_tab_reads_the_series_shown_of_each_file(services, tmp_path):
    """The Batch tab runs the page's recipe on the series the page shows (the Series menu):
    the zip's labels are those of series 1 of each file, its recipe.json says so; a file
    without a series 1 fails with the reader's reason while the others finish."""
    import io as _io
    import json
    import zipfile

    from skimage import data as skdata

    from callbacks import batch as batch_tab
    from callbacks.params import initial_history, save_history
    from pipeline import parallel
    from pipeline import recipe as recipes

    coins = skdata.coins()
    data = tmp_path / "data"
    folder = data / "plates"
    folder.mkdir()
    _write_series(folder / "a.ome.tif", np.full((64, 80), 200, np.uint8), coins[:150, :180],
                  ome=True)
    _write_series(folder / "b.ome.tif", np.full((64, 80), 30, np.uint8), coins[100:, 150:],
                  ome=True)
    tifffile.imwrite(folder / "single.tif", coins)
    sid = new_session_id()
    first = _load(services, sid, ids.DATA_FILE, "plates/a.ome.tif")[0]
    shown = _load(services, sid, ids.DATA_SERIES, "plates/a.ome.tif", 1, current=first)[0]
    pointer = save_history(services.store, sid, initial_history(shown), None)

    result = batch_tab.run_batch(services, sid, pointer, batch_tab.DATA_PREFIX + "plates",
                                 backend=parallel.Backend(1),
                                 series=shown["series"])
    rows = {r["file"]: r for r in result["rows"]}
    assert rows["plates/single.tif"]["status"] == "failed"
    assert "series 1 is out of range" in rows["plates/single.tif"]["message"]
    recipe = recipes.with_series(recipes.validate(pointer["recipe"]), 1)
    with zipfile.ZipFile(result["zip"]) as archive:
        assert json.loads(archive.read("recipe.json"))["input"] == {"series": 1}
        for name, image in (("a.ome", coins[:150, :180]), ("b.ome", coins[100:, 150:])):
            assert rows[f"plates/{name}.tif"]["status"] == "ok"
            labels = tifffile.imread(_io.BytesIO(archive.read(f"{name}_labels.tif")))
            np.testing.assert_array_equal(labels, recipes.run(image, recipe).labels)
