"""The fast path of a move (callbacks/fastpath.py): the routes the page's gate fetches."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from app import create_app
from callbacks import loading
from callbacks.fastpath import MAX_BODY
from callbacks.params import recipe_action
from callbacks.thresholds import STREAM, pair_key, prefetch_update, superseded
from components import ids
from pipeline.config import Config
from pipeline.store import new_session_id

VIEW = {"axis": 0, "index": 0, "style": "contour", "show": ["markers"], "view": "labels"}


@pytest.fixture
def page(tmp_path):
    # quick_exact_s=0: a move shows a live preview first, then the page asks to settle it
    app = create_app(Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data",
                            quick_exact_s=0))
    services = app._pipex_services
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, "coins", None, None, None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    client = app.server.test_client()
    client.services = services  # for the tests that call the callbacks' bodies
    # the first drawing of the segmentation: its exact result is the preview's warm start
    services.run(sid, meta["id"], pointer["recipe"])
    return client, sid, meta, pointer


def _post(client, name, body):
    return client.post(f"/_pipex/{name}", data=json.dumps(body),
                       content_type="application/json")


def test_a_move_answers_the_overlays_and_the_page_state(page):
    client, sid, meta, pointer = page
    m = pointer["recipe"]["markers"]
    body = {"session": sid, "image": meta["id"], "history": pointer, "base": meta["id"],
            "view": VIEW, "request": {"pair": [m["vmin"], m["vmax"] + 2], "seq": 1}}
    res = _post(client, "move", body)
    assert res.status_code == 200
    # the server's own time, for the browser bench and the developer tools
    assert re.fullmatch(r"app;dur=\d+\.\d", res.headers["Server-Timing"])
    data = res.get_json()
    assert set(data["overlays"]) == {"1", "2"} and not data["full"]
    assert all(v.startswith("data:image/png;base64,") for v in data["overlays"].values())
    out = data["outputs"]
    assert "segmentation-graph" not in out  # the overlays are sent once
    new = out["history-store"]["data"]
    assert new["index"] == 1 and new["drawn"] is True
    assert "live preview" in out["segmentation-summary"]["children"]
    pending = out["segmentation-pending-store"]["data"]
    # then the exact result, for the new history
    res = _post(client, "settle", {**body, "history": new, "pending": pending})
    assert res.status_code == 200
    settled = res.get_json()
    assert "labelled region" in settled["outputs"]["segmentation-summary"]["children"]
    assert settled["outputs"]["segmentation-settled-store"]["data"]["key"] == pending["key"]
    # a request that a later one has passed: 204, nothing drawn
    res = _post(client, "move", {**body, "request": {"pair": [80, 140], "seq": 0}})
    assert res.status_code == 204 and res.headers["Server-Timing"].startswith("app;dur=")
    # a drag: overlays, the history untouched
    res = _post(client, "drag", {**body, "history": new,
                                 "request": {"pair": [m["vmin"], m["vmax"] + 9], "seq": 5}})
    assert res.status_code == 200 and res.get_json()["overlays"]
    assert "history-store" not in res.get_json()["outputs"]


@pytest.mark.parametrize("mutate", [
    lambda b: {**b, "session": "f" * 32},  # another session: it does not hold the image
    lambda b: {**b, "image": "0" * 32},
    lambda b: {**b, "history": {**b["history"], "image_id": "1" * 32}},
    lambda b: {**b, "view": None},
    lambda b: [1, 2],
])
def test_bad_requests_get_a_4xx(page, mutate):
    client, sid, meta, pointer = page
    body = {"session": sid, "image": meta["id"], "history": pointer, "base": meta["id"],
            "view": VIEW, "request": {"pair": [80, 140], "seq": 1}}
    res = _post(client, "move", mutate(body))
    assert res.status_code == 400, res.data
    assert "error" in res.get_json()


def test_unknown_route_malformed_body_and_size(page):
    client, sid, meta, pointer = page
    assert client.post("/_pipex/nothing", data="{}").status_code == 404
    assert client.post("/_pipex/move", data="{not json").status_code == 400
    big = "x" * (MAX_BODY + 1)
    assert client.post("/_pipex/move", data=big).status_code == 413


def test_the_values_of_the_shown_slice_come_packed_for_the_page_to_draw_markers(page):
    """POST /_pipex/values: the filtered slice, 16-bit packed in a PNG, exact for coins."""
    import base64
    import io as stdio

    import numpy as np
    from PIL import Image

    from pipeline import io

    client, sid, meta, pointer = page
    body = {"session": sid, "image": meta["id"], "history": pointer, "base": meta["id"],
            "view": VIEW}
    res = _post(client, "values", body)
    assert res.status_code == 200
    data = res.get_json()
    png = base64.b64decode(data["values"].split(",", 1)[1])
    rgb = np.asarray(Image.open(stdio.BytesIO(png)).convert("RGB")).astype(np.int64)
    values = data["lo"] + (rgb[..., 0] * 256 + rgb[..., 1]) * data["scale"]
    assert data["scale"] == 1.0 and data["shape"] == [303, 384] and data["trace"] == 1
    np.testing.assert_array_equal(values, io.load_sample("coins").array)
    assert set(data["colors"]) == {"1", "2"} and all(len(c) == 4 for c in data["colors"].values())
    # a filter not computed yet: nothing is computed for this route, 204
    other = {**pointer, "recipe": {**pointer["recipe"],
                                   "filter": {"name": "gaussian", "params": {"sigma": 3.0}}}}
    assert _post(client, "values", {**body, "history": other}).status_code == 204
    # another session does not hold the image
    assert _post(client, "values", {**body, "session": "f" * 32}).status_code == 400



def _settled_move(client, sid, meta, pointer, pair, seq):
    """A move to `pair` and, after its live preview, its exact result: (body, new history)."""
    body = {"session": sid, "image": meta["id"], "history": pointer, "base": meta["id"],
            "view": VIEW, "request": {"pair": pair, "seq": seq}}
    out = _post(client, "move", body).get_json()["outputs"]
    new = out["history-store"]["data"]
    pending = out.get("segmentation-pending-store", {}).get("data")
    if pending:
        assert _post(client, "settle", {**body, "history": new, "pending": pending}
                     ).status_code == 200
    return body, new


def test_the_next_step_prepared_by_a_prefetch_is_answered_from_the_cache(page):
    client, sid, meta, pointer = page
    m = pointer["recipe"]["markers"]
    vmin, vmax = m["vmin"], m["vmax"]
    body, new = _settled_move(client, sid, meta, pointer, [vmin, vmax + 2], 1)
    pre = {**body, "history": new, "request": {"pair": [vmin, vmax + 4], "seq": 1}}
    res = _post(client, "prefetch", pre)
    assert res.status_code == 204 and not res.data  # nothing answered
    # the history is untouched: the pointer is still the current one, a move from it works
    # and finds the exact result (quick_exact_s=0: otherwise a live preview comes first)
    res = _post(client, "move", {**pre, "request": {"pair": [vmin, vmax + 4], "seq": 2}})
    data = res.get_json()
    summary = data["outputs"]["segmentation-summary"]["children"]
    assert "from cache" in summary and "live preview" not in summary
    assert "segmentation-pending-store" not in data["outputs"]  # nothing left to settle
    assert set(data["overlays"]) == {"1", "2"}
    assert data["outputs"]["history-store"]["data"]["index"] == new["index"] + 1
    # a pair not prepared: a live preview first, as before
    newer = data["outputs"]["history-store"]["data"]
    res = _post(client, "move", {**pre, "history": newer,
                                 "request": {"pair": [vmin, vmax + 9], "seq": 3}})
    assert "live preview" in res.get_json()["outputs"]["segmentation-summary"]["children"]


@pytest.mark.parametrize("case", ["stale", "inverted", "disabled", "prepared"])
def test_a_prefetch_computes_nothing_when_it_should_not(page, case):
    client, sid, meta, pointer = page
    services = client.services
    m = pointer["recipe"]["markers"]
    vmin, vmax = m["vmin"], m["vmax"]
    _, new = _settled_move(client, sid, meta, pointer, [vmin, vmax + 2], 5)
    pair, seq = [vmin, vmax + 4], 5
    if case == "stale":
        seq = 4  # the page has sent a newer request since
    elif case == "inverted":
        pair = [vmax + 4, vmin]  # vmin above vmax: no one steps there
    elif case == "disabled":
        services = dataclasses.replace(
            services, config=dataclasses.replace(services.config, prefetch_s=0))
    elif case == "prepared":
        assert prefetch_update(services, sid, meta, new, {"pair": pair, "seq": seq},
                               *VIEW.values()) is True
    # False: nothing computed (or, prepared, nothing computed again)
    assert prefetch_update(services, sid, meta, new, {"pair": pair, "seq": seq},
                           *VIEW.values()) is False
    proposed = {**new["recipe"], "markers": {**new["recipe"]["markers"], "vmin": float(pair[0]),
                                             "vmax": float(pair[1])}}
    if case in ("stale", "disabled"):
        assert not client.services.exact_cached(sid, meta["id"], proposed)


def test_a_prefetch_is_stopped_by_a_newer_request_of_the_page(page, monkeypatch):
    client, sid, meta, pointer = page
    services = client.services
    m = pointer["recipe"]["markers"]
    _, new = _settled_move(client, sid, meta, pointer, [m["vmin"], m["vmax"] + 2], 7)
    real = services.store.latest
    calls = []

    def latest(session_id, stream):  # a newer request arrives once the solve has started
        calls.append(stream)
        return real(session_id, stream) + (1 if len(calls) > 1 else 0)

    monkeypatch.setattr(services.store, "latest", latest)
    pair = [m["vmin"], m["vmax"] + 4]
    assert prefetch_update(services, sid, meta, new, {"pair": pair, "seq": 7},
                           *VIEW.values()) is False
    assert len(calls) >= 2  # it looked, and stopped
    proposed = {**new["recipe"], "markers": {**new["recipe"]["markers"],
                                             "vmin": float(pair[0]), "vmax": float(pair[1])}}
    assert not services.exact_cached(sid, meta["id"], proposed)


def test_a_request_for_the_same_pair_does_not_stop_the_solve_of_it(page):
    """The release of a drag on the pair being solved, or a key press on the pair being
    prepared, lets that solve go on (and waits for it); another pair stops it."""
    client, sid, meta, pointer = page
    services = client.services
    services.store.bump(sid, STREAM, 3, pair_key([80, 140]))
    solving = superseded(services, sid, 3, [80, 140])
    assert not solving()
    services.store.bump(sid, STREAM, 4, pair_key([80.0, 140.0]))  # the same pair, later
    assert not solving()
    assert superseded(services, sid, 3)()  # a solve that said nothing of its pair: stopped
    services.store.bump(sid, STREAM, 5, pair_key([80, 141]))  # another pair
    assert solving()
