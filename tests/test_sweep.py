"""The parameter sweep's result (issue 10): a grid of small multiples with labelled axes, the
current recipe's cell marked, a click on a cell adopting its recipe; bad input refused with a
message, the previous grid kept. Callback bodies called directly on a real store and cache."""

from __future__ import annotations

import base64
import io as _io

import numpy as np
import pytest
import tifffile
from dash import html, no_update

from callbacks import discovery, loading
from callbacks.params import initial_history, next_state, save_history
from callbacks.services import Services
from components import ids
from components import sweep as sweep_components
from pipeline.config import Config
from pipeline.measure import count_regions
from pipeline.store import new_session_id


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=4,
                 max_pixels=4_000_000)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _walk(component):
    """Every component under `component` (itself included), depth first."""
    yield component
    children = getattr(component, "children", None)
    if children is None or isinstance(children, (str, int, float)):
        return
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if hasattr(child, "to_plotly_json"):
            yield from _walk(child)


def _text(component):
    children = component.children
    if isinstance(children, html.Span):
        return children.children
    return children


def _with(grid, cls):
    return [c for c in _walk(grid) if cls in (getattr(c, "className", None) or "").split()]


def _coins(services):
    sid = new_session_id()
    meta = loading.load_image(services, sid, None, "coins", None, None, None).meta
    pointer = save_history(services.store, sid, initial_history(meta), None)
    return sid, meta, pointer


def _sixteen_bit(services):
    """A uint16 image of bright disks on a dim background (values in the tens of thousands)."""
    yy, xx = np.mgrid[:160, :200]
    image = np.full((160, 200), 3000.0)
    for cy, cx in ((40, 50), (100, 60), (60, 140), (120, 150)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 18 ** 2] = 30000
    image += np.random.default_rng(1).normal(0, 500, image.shape)
    buf = _io.BytesIO()
    tifffile.imwrite(buf, np.clip(image, 0, 65535).astype(np.uint16))
    url = "data:image/tiff;base64," + base64.b64encode(buf.getvalue()).decode()
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.UPLOAD, "coins", url, "disks16.tif", None).meta
    assert meta["dtype"] == "uint16"
    pointer = save_history(services.store, sid, initial_history(meta), None)
    return sid, meta, pointer


def test_a_two_parameter_sweep_is_a_grid_with_labelled_axes(services):
    sid, meta, pointer = _coins(services)
    vmin = pointer["recipe"]["markers"]["vmin"]
    store, grid, message = discovery.sweep_update(
        services, sid, meta, pointer, "markers.vmin", f"60, {vmin}",
        "segmentation.params.beta", "50, 130", 0, 0)
    assert message is None
    assert grid.className == "sweep-grid"
    assert "repeat(2," in grid.style["gridTemplateColumns"]  # two columns of B
    # the axes name the parameters; each row and column says its value
    assert [_text(a) for a in _with(grid, "sweep-axis-columns")] == [
        "segmentation (random_walker): beta"]
    assert [_text(a) for a in _with(grid, "sweep-axis-rows")] == ["markers: vmin"]
    assert [c.children for c in _with(grid, "sweep-value-column")] == ["50", "130"]
    assert [c.children for c in _with(grid, "sweep-value-row")] == ["60", f"{vmin:g}"]
    # row-major: A along the rows, B along the columns, placed on the grid
    cells = _with(grid, "sweep-cell")
    assert [c.id for c in cells] == [{"type": ids.SWEEP_ADOPT, "index": i} for i in range(4)]
    assert [(c.style["gridRow"], c.style["gridColumn"]) for c in cells] == [
        ("3 / span 1", "3 / span 1"), ("3 / span 1", "4 / span 1"),
        ("4 / span 1", "3 / span 1"), ("4 / span 1", "4 / span 1")]
    assert [s["recipe"]["markers"]["vmin"] for s in store] == [60, 60, vmin, vmin]
    assert [s["recipe"]["segmentation"]["params"]["beta"] for s in store] == [50, 130, 50, 130]
    # the current recipe (vmin as it is, beta 130) is the last cell: marked, the others not
    assert [c.className for c in cells] == [sweep_components.CELL] * 3 + [
        sweep_components.CURRENT]
    # each cell shows its thumbnail and its number of regions (not the highest label)
    labels = services.run(sid, meta["id"], services.validate(store[3]["recipe"])).labels
    n = count_regions(labels)
    assert cells[3].children[1].children == f"{n:,} regions"
    assert cells[3].children[0].src.startswith("data:image/png;base64,")
    assert "vmin = 60, beta = 50" in cells[0].title and "Click to adopt" in cells[0].title


def test_a_click_on_a_cell_adopts_it_and_it_becomes_the_current_one(services):
    sid, meta, pointer = _coins(services)
    store, _grid, _ = discovery.sweep_update(services, sid, meta, pointer,
                                            "segmentation.params.beta", "20, 130, 400",
                                            None, None, 0, 0)
    full = services.store.get_history(sid, meta["id"], pointer["rev"])
    new, message = next_state({"type": ids.SWEEP_ADOPT, "index": 2}, full, meta,
                              {"sweep": store})
    assert message == ""
    adopted = new["states"][new["index"]]
    assert adopted["segmentation"]["params"]["beta"] == 400
    assert adopted == store[2]["recipe"]
    # the browser marks the adopted cell (CURRENT_CELL_JS); the server's rule is the same
    cells = [{"recipe": s["recipe"]} for s in store]
    assert discovery.current_cell(cells, adopted) == 2
    assert discovery.current_cell(cells, full["states"][0]) == 1  # beta 130: the start


def test_one_parameter_is_one_row_with_its_values_along_the_columns(services):
    sid, meta, pointer = _coins(services)
    store, grid, message = discovery.sweep_update(
        services, sid, meta, pointer, "segmentation.params.beta", "10 100 1000", None, "", 0, 0)
    assert message is None and len(store) == 3
    assert [_text(a) for a in _with(grid, "sweep-axis-columns")] == [
        "segmentation (random_walker): beta"]
    assert not _with(grid, "sweep-axis-rows") and not _with(grid, "sweep-value-row")
    assert [c.children for c in _with(grid, "sweep-value-column")] == ["10", "100", "1,000"]
    assert {c.style["gridRow"] for c in _with(grid, "sweep-cell")} == {"3 / span 1"}


def test_values_on_a_16_bit_image_are_written_for_a_person(services):
    sid, meta, pointer = _sixteen_bit(services)
    _store, grid, message = discovery.sweep_update(
        services, sid, meta, pointer, "markers.vmax", "12000, 20000", None, None, 0, 0)
    assert message is None
    assert [c.children for c in _with(grid, "sweep-value-column")] == ["12,000", "20,000"]
    cells = _with(grid, "sweep-cell")
    assert "vmax = 12,000" in cells[0].title
    assert cells[0].children[1].children == "4 regions"


def test_a_cell_that_cannot_run_says_why_in_its_place(services):
    sid, meta, pointer = _coins(services)
    vmax = pointer["recipe"]["markers"]["vmax"]
    _store, grid, message = discovery.sweep_update(
        services, sid, meta, pointer, "markers.vmin", f"60, {vmax + 20}", None, None, 0, 0)
    assert message is None
    errors = _with(grid, "sweep-error")
    assert len(errors) == 1 and "vmin" in errors[0].children.children
    assert not getattr(errors[0], "id", None)  # nothing to adopt
    buttons = [c for c in _with(grid, "sweep-cell") if getattr(c, "id", None)]
    assert [b.id["index"] for b in buttons] == [0]


@pytest.mark.parametrize("args, expected", [
    (("markers.vmin", "a, b", None, None), "values A: 'a, b' is not a list of numbers"),
    (("markers.vmin", "", None, None), "values A: give a few numbers"),
    (("markers.vmin", "60 70", "markers.vmin", "60"), "parameter B must differ"),
    (("markers.vmin", "60 70", "segmentation.params.beta", "x"), "values B"),
    (("segmentation.params.sigma", "1 2", None, None), "parameter A: choose a parameter"),
    (("markers.vmin", " ".join(["1"] * 7), "segmentation.params.beta", "1 2 3 4 5 6"),
     "at most 36 combinations; this one has 42"),
])
def test_bad_input_is_refused_before_anything_runs_and_the_grid_stays(services, args, expected):
    sid, meta, pointer = _coins(services)
    store, grid, message = discovery.sweep_update(services, sid, meta, pointer, *args, 0, 0)
    assert store is no_update and grid is no_update
    assert expected in message.children and message.className == "message-error"


def test_the_grid_refuses_cells_that_do_not_fill_it():
    with pytest.raises(ValueError, match="3 cells for a 2 x 2 grid"):
        sweep_components.sweep_grid([{"title": "t", "error": "e"}] * 3, "a", ["1", "2"],
                                    "b", ["1", "2"])


def test_gallery_values_are_written_for_a_person(services):
    sid, meta, pointer = _sixteen_bit(services)
    tiles = discovery.gallery(services, sid, meta, pointer["recipe"], 0, 0, 15)
    values = [c.children for t in tiles for c in _walk(t)
              if getattr(c, "className", None) == "tile-value" and isinstance(c.children, str)
              and not c.children.startswith("local")]
    assert values and all("e+" not in v for v in values)
    assert any("," in v for v in values)  # thresholds in the tens of thousands: 16,5xx
