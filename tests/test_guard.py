"""Malformed requests get a 4xx, never a 500 (callbacks/guard.py)."""

from __future__ import annotations

import json

import pytest

from app import create_app
from pipeline.config import Config


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("requests")
    app = create_app(Config(state_dir=tmp / "state", data_dir=tmp / "data"))
    return app.server.test_client()


def _post(client, raw):
    return client.post("/_dash-update-component", data=raw, content_type="application/json")


IMAGE = {"output": "image-graph.figure", "outputs": {"id": "image-graph", "property": "figure"}}

BAD_BODIES = {
    "array": "[1, 2]",
    "null": "null",
    "number": "3",
    "not json": "{not json",
    "NaN literal": '{"output": NaN}',
    "deep nesting": "[" * 200_000 + "]" * 200_000,
    "deep object": '{"a":' * 100 + "1" + "}" * 100,
    "unknown output": json.dumps({"output": "nope.children",
                                  "outputs": {"id": "nope", "property": "children"},
                                  "inputs": [], "changedPropIds": []}),
    "missing inputs": json.dumps({**IMAGE, "changedPropIds": []}),
    "inputs not a list": json.dumps({**IMAGE, "inputs": {"a": 1}}),
    "input without property": json.dumps({**IMAGE, "inputs": [{"id": "image-store"}]}),
    "bad changedPropIds": json.dumps({**IMAGE, "inputs": [], "changedPropIds": [1]}),
    "mistyped inputs": json.dumps({**IMAGE, "inputs": [
        {"id": "image-store", "property": "data", "value": [1, 2, 3]},
        {"id": "slice-axis", "property": "value", "value": {"x": 1}},
        {"id": "slice-index", "property": "value", "value": "many"}],
        "state": [{"id": "session-store", "property": "data", "value": 7}],
        "changedPropIds": ["image-store.data"]}),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_malformed_callback_request_gets_a_4xx(client, name):
    res = _post(client, BAD_BODIES[name])
    assert 400 <= res.status_code < 500 or res.status_code == 204, (name, res.status_code)
    assert b"Traceback" not in res.data


def test_a_path_trick_on_the_component_suites_is_not_found(client):
    assert client.get("/_dash-component-suites/..%2f..%2fapp.py").status_code == 404
    assert client.get("/_dash-component-suites/dash/../../app.py").status_code == 404


def test_well_formed_requests_still_work(client):
    page = client.get("/")
    assert page.status_code == 200
    assert client.get("/health").get_json() == {"status": "ok"}
    res = _post(client, json.dumps({
        "output": "image-graph.figure", "outputs": {"id": "image-graph", "property": "figure"},
        "inputs": [{"id": "image-store", "property": "data", "value": None},
                   {"id": "slice-axis", "property": "value", "value": 0},
                   {"id": "slice-index", "property": "value", "value": 0}],
        "state": [{"id": "session-store", "property": "data", "value": "a" * 32}],
        "changedPropIds": []}))
    assert res.status_code == 204  # no image yet: nothing to draw


def test_security_headers(client):
    res = client.get("/")
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert res.headers["X-Frame-Options"] == "DENY"
    assert res.headers["Referrer-Policy"] == "same-origin"
    csp = res.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp.split(
        "script-src")[1].split(";")[0]
    assert "'sha256-" in csp and "''" not in csp
    # every response carries them, the callbacks' too
    assert client.get("/health").headers["X-Frame-Options"] == "DENY"
