"""The measurements grid's callbacks called directly (issue 9, "Big label sets"): a block of
rows per request, sorted and filtered on the server, the first block bringing the columns,
caption, distributions and warning; the row of a clicked region found on the server."""

import copy

import numpy as np
import pytest
import tifffile
from dash import no_update

from callbacks import loading, measure
from callbacks.params import next_state
from callbacks.services import Services
from components import ids
from pipeline.config import Config
from pipeline.store import new_session_id


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=4,
                 max_pixels=4_000_000)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


def _history(meta):
    return next_state(ids.IMAGE, None, meta, {})[0]


def _coins(services):
    sid = new_session_id()
    meta = loading.load_image(services, sid, None, "coins", None, None, None).meta
    return sid, meta, _history(meta)


def _request(start=0, end=100, sort=None, filters=None):
    return {"startRow": start, "endRow": end, "sortModel": sort or [],
            "filterModel": filters or {}, "context": None}


def _update(services, sid, meta, history, request, column=None, columns=(), options=()):
    return measure.rows_update(services, sid, meta, history, request, column, list(columns),
                               list(options))


def test_the_first_block_brings_the_rows_columns_caption_and_bins(services):
    sid, meta, history = _coins(services)
    (response, columns, options, column, note, caption, title, bins,
     warning) = _update(services, sid, meta, history, _request())
    m = services.measurements(sid, meta["id"], history["states"][0])
    assert response["rowCount"] == m.n_objects == 25
    assert [r["label"] for r in response["rowData"]] == m.columns["label"].tolist()
    assert [c["field"] for c in columns] == list(m.columns)
    assert column == "area" and {"label": "area [px²]", "value": "area"} in options
    assert caption == "25 regions of coins · sorted and filtered on the server"
    assert title == meta["id"] and note is None and warning is None
    assert sum(bins["area"]["counts"]) == 25 and "label" not in bins
    # the same table again: what did not change is not sent (nothing downstream fires)
    again = _update(services, sid, meta, history, _request(), column, columns, options)
    assert again[1] is no_update and again[2] is no_update and again[3] is no_update
    assert again[0] == response


def test_a_sort_and_a_filter_are_done_on_the_server(services):
    sid, meta, history = _coins(services)
    m = services.measurements(sid, meta["id"], history["states"][0])
    area = m.columns["area"]
    out = _update(services, sid, meta, history,
                  _request(sort=[{"colId": "area", "sort": "desc", "type": "default"}],
                           filters={"area": {"filterType": "number", "type": "greaterThan",
                                             "filter": 1000}}))
    rows = out[0]["rowData"]
    assert out[0]["rowCount"] == int((area > 1000).sum()) == len(rows)
    assert [r["area"] for r in rows] == sorted(area[area > 1000].tolist(), reverse=True)
    assert out[5].startswith(f"25 regions of coins · {len(rows)} pass the filter")
    assert sum(out[7]["area"]["counts"]) == len(rows)  # the plot follows the filter


def test_the_next_blocks_carry_rows_only(services, tmp_path):
    sid = new_session_id()
    image = np.random.default_rng(0).integers(0, 30, (240, 240)).astype(np.uint8)
    image[1::4, 1::4] = 240  # 3,600 one-pixel objects
    path = tmp_path / "dots.tif"
    tifffile.imwrite(path, image)
    import base64
    url = "data:image/tiff;base64," + base64.b64encode(path.read_bytes()).decode()
    meta = loading.load_image(services, sid, ids.UPLOAD, "coins", url, "dots.tif", None).meta
    history = _history(meta)
    recipe = copy.deepcopy(history["states"][0])
    recipe["markers"] = {**recipe["markers"], "vmin": 20, "vmax": 200}
    recipe["postprocess"] = [{"name": "label", "params": {"connectivity": 1}}]
    history = {**history, "states": [recipe]}
    first = _update(services, sid, meta, history, _request())
    n = first[0]["rowCount"]
    assert n == 3600 and len(first[0]["rowData"]) == 100
    # thousands of one-pixel regions: the warning beside the table
    text = str(first[8])
    assert "3,600 regions in 57,600 pixels" in text and "noise?" in text
    later = _update(services, sid, meta, history, _request(3500, 3600), "area",
                    first[1], first[2])
    assert [r["label"] for r in later[0]["rowData"]] == list(range(3501, 3601))
    assert all(o is no_update for o in later[1:])
    # the row of a region clicked on the image, under the grid's sort (not loaded yet)
    sort = [{"colId": "label", "sort": "desc"}]
    assert measure.scroll_to(services, sid, meta, recipe, 3600, _request(sort=sort)) == \
        {"rowIndex": 0, "rowPosition": "middle"}
    assert measure.scroll_to(services, sid, meta, recipe, 1, _request()) == \
        {"rowIndex": 0, "rowPosition": "middle"}
    assert measure.scroll_to(services, sid, meta, recipe, 2000, None) == \
        {"rowIndex": 1999, "rowPosition": "middle"}
    assert measure.scroll_to(services, sid, meta, recipe, 0, None) is None


def test_a_bad_request_is_answered_with_no_rows_and_a_message(services):
    sid, meta, history = _coins(services)
    out = _update(services, sid, meta, history,
                  _request(sort=[{"colId": "nope", "sort": "asc"}]))
    assert out[0] == {"rowData": [], "rowCount": 0}  # the grid never waits for ever
    assert "Measurements failed: sort_model: unknown column 'nope'" in str(out[4])
    assert all(o is no_update for o in out[1:4] + out[5:])
    out = _update(services, sid, meta, history, _request(0, 5000))
    assert "at most 1000" in str(out[4])
    # no image yet, or a history of another image: no rows, nothing else
    for m, h in ((None, history), (meta, None), (meta, {**history, "image_id": "x"})):
        out = _update(services, sid, m, h, _request())
        assert out[0] == {"rowData": [], "rowCount": 0}
        assert all(o is no_update for o in out[1:])


def test_another_session_never_gets_the_rows(services):
    sid, meta, history = _coins(services)
    out = _update(services, new_session_id(), meta, history, _request())
    assert out[0] == {"rowData": [], "rowCount": 0}
    assert "no longer on the server" in str(out[4])


def test_the_highlighted_row_rule_tolerates_rows_still_loading():
    assert measure.row_highlight(7) == {"styleConditions": [{
        "condition": "params.data && params.data.label === 7",
        "style": {"backgroundColor": "#fff3b0", "fontWeight": "bold"}}]}
    assert measure.row_highlight(0) == {"styleConditions": []}


def test_columns_are_as_wide_as_their_values(services):
    sid, meta, history = _coins(services)
    columns = measure.columns_of(services.measurements(sid, meta["id"], history["states"][0]))
    widths = {c["field"]: c["width"] for c in columns}
    assert all(60 <= w <= 112 for w in widths.values())
    assert widths["label"] == 60 and columns[0]["pinned"] == "left"  # labels 1 … 25
    # "11,479" (the largest area) against "0.123456" (an eccentricity): wider
    assert widths["eccentricity"] > widths["label"]
    # seven or more columns fit a 500 px panel (they were 200 px wide: 2-3 columns)
    assert sum(sorted(widths.values())[:7]) < 500
