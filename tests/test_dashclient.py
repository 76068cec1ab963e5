"""DashClient against a tiny Dash app served by werkzeug in a thread on 127.0.0.1."""

from __future__ import annotations

import json
import threading

import dash
import pytest
import requests
from dash import ALL, ALLSMALLER, MATCH, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from werkzeug.serving import make_server

from tests.support.dashclient import DashCallbackError, DashClient, prop_key

CELL_VALUES = ["1", "10", "100"]


def cell(i):
    return {"type": "cell", "index": i}


def make_app() -> dash.Dash:
    # app.callback (not dash.callback): nothing leaks into the global callback list.
    app = dash.Dash(__name__, title="DashClient test")
    app.layout = html.Div(
        [
            dcc.Input(id="name", value="world"),
            html.Button(id="btn", n_clicks=0),
            html.Button(id="btn2"),
            dcc.Store(id="store", data={"k": 7}),
            html.Div(id="greeting"),
            html.Div(id="count"),
            html.Div(id="echo-state"),
            html.Div(id="trig"),
            html.Div(id="total"),
            html.Div(id="boom"),
            html.Div(id="side-main"),
            html.Div(id="side", children="before"),
            html.Div(
                [dcc.Input(id=cell(i), value=v) for i, v in enumerate(CELL_VALUES)]
                + [html.Div(id={"type": "cell-out", "index": i}) for i in range(3)]
                + [html.Div(id={"type": "cell-cum", "index": i}) for i in range(3)]
            ),
        ]
    )

    @app.callback(Output("greeting", "children"), Input("name", "value"))
    def greet(name):
        if name == "stop":
            raise PreventUpdate
        return f"Hello {name}"

    @app.callback(
        Output("greeting", "children", allow_duplicate=True),
        Input("btn2", "n_clicks"),
        prevent_initial_call=True,
    )
    def greet_again(n):
        return f"again {n}"

    @app.callback(
        Output("count", "children", allow_duplicate=True),
        Input("btn2", "n_clicks"),
        prevent_initial_call=True,
    )
    def count_again(n):
        return f"count again {n}"

    @app.callback(
        Output("count", "children"),
        Output("echo-state", "children"),
        Input("btn", "n_clicks"),
        State("name", "value"),
        State("store", "data"),
    )
    def count(n, name, data):
        if n == 99:
            return no_update, "only second"
        return f"clicks={n}", f"{name}/{data['k']}"

    @app.callback(Output("trig", "children"), Input("name", "value"), Input("btn", "n_clicks"))
    def trig(_name, _n):
        return json.dumps([ctx.triggered_id, [t["prop_id"] for t in ctx.triggered]])

    @app.callback(
        Output({"type": "cell-out", "index": MATCH}, "children"),
        Input({"type": "cell", "index": MATCH}, "value"),
    )
    def cell_out(value):
        return f"cell {ctx.outputs_list['id']['index']}: {value}"

    @app.callback(Output("total", "children"), Input({"type": "cell", "index": ALL}, "value"))
    def total(values):
        return sum(int(v or 0) for v in values)

    @app.callback(
        Output({"type": "cell-cum", "index": MATCH}, "children"),
        Input({"type": "cell", "index": MATCH}, "value"),
        Input({"type": "cell", "index": ALLSMALLER}, "value"),
    )
    def cumulative(value, smaller):
        return [*smaller, value]

    @app.callback(Output("boom", "children"), Input("boom-btn", "n_clicks"), prevent_initial_call=True)
    def boom(n):
        raise ValueError("boom")

    @app.callback(Output("side-main", "children"), Input("side-btn", "n_clicks"), prevent_initial_call=True)
    def side(n):
        dash.set_props("side", {"children": f"after {n}"})
        return "main"

    return app


@pytest.fixture(scope="module")
def base_url():
    app = make_app()
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def client(base_url):
    return DashClient(base_url, session=requests.Session())


def test_layout_and_dependencies(client):
    assert client.layout()["type"] == "Div"
    outputs = {d["output"] for d in client.dependencies()}
    assert "..count.children...echo-state.children.." in outputs
    assert "greeting.children" in outputs


def test_find_component(client):
    assert client.find_component("name")["value"] == "world"
    assert client.find_component("store")["data"] == {"k": 7}
    assert client.find_component(cell(2))["value"] == "100"
    assert client.find_component('{"type": "cell", "index": 1}')["value"] == "10"
    with pytest.raises(KeyError):
        client.find_component("nope")


def test_single_output(client):
    assert client.call("greeting.children", {"name.value": "Ann"}) == {
        "greeting": {"children": "Hello Ann"}
    }


def test_inputs_default_to_layout(client):
    # The page-load call: no input given, nothing triggered.
    assert client.call("greeting.children") == {"greeting": {"children": "Hello world"}}


def test_request_body_matches_renderer(client):
    _, body = client.build_request("greeting.children", {"name.value": "Ann"})
    assert body == {
        "output": "greeting.children",
        "outputs": {"id": "greeting", "property": "children"},
        "inputs": [{"id": "name", "property": "value", "value": "Ann"}],
        "changedPropIds": ["name.value"],
        "parsedChangedPropsIds": ["name.value"],
    }
    _, body = client.build_request("echo-state.children", {"btn.n_clicks": 1})
    assert body["outputs"] == [
        {"id": "count", "property": "children"},
        {"id": "echo-state", "property": "children"},
    ]
    assert body["state"] == [
        {"id": "name", "property": "value", "value": "world"},
        {"id": "store", "property": "data", "value": {"k": 7}},
    ]


def test_multi_output_exact_string(client):
    response = client.call(
        "..count.children...echo-state.children..", {"btn.n_clicks": 3}, state={"name.value": "Bo"}
    )
    assert response == {"count": {"children": "clicks=3"}, "echo-state": {"children": "Bo/7"}}


def test_multi_output_by_one_of_its_outputs(client):
    response = client.call("echo-state.children", {"btn.n_clicks": 4})
    assert response == {"count": {"children": "clicks=4"}, "echo-state": {"children": "world/7"}}


def test_no_update_leaves_output_out(client):
    assert client.call("echo-state.children", {"btn.n_clicks": 99}) == {
        "echo-state": {"children": "only second"}
    }


def test_prevent_update_is_empty(client):
    assert client.call("greeting.children", {"name.value": "stop"}) == {}


def test_triggered(client):
    response = client.call("trig.children", {"btn.n_clicks": 2})
    assert json.loads(response["trig"]["children"]) == ["btn", ["btn.n_clicks"]]
    response = client.call("trig.children", {"btn.n_clicks": 2, "name.value": "x"}, triggered="name.value")
    assert json.loads(response["trig"]["children"]) == ["name", ["name.value"]]
    response = client.call("trig.children", triggered=[])
    assert json.loads(response["trig"]["children"]) == [None, ["."]]


def test_pattern_match(client):
    out_id = {"type": "cell-out", "index": 1}
    response = client.call(prop_key(out_id, "children"), {prop_key(cell(1), "value"): "7"})
    assert response == {'{"index":1,"type":"cell-out"}': {"children": "cell 1: 7"}}
    # MATCH bound from the input alone, the output given as the dependency's pattern.
    response = client.call(
        '{"index":["MATCH"],"type":"cell-out"}.children', {'{"type": "cell", "index": 2}.value': "x"}
    )
    assert response == {'{"index":2,"type":"cell-out"}': {"children": "cell 2: x"}}
    _, body = client.build_request(prop_key(out_id, "children"), triggered=[])
    assert body["outputs"] == {"id": out_id, "property": "children"}
    assert body["inputs"] == [{"id": cell(1), "property": "value", "value": "10"}]


def test_pattern_all_and_allsmaller(client):
    assert client.call("total.children") == {"total": {"children": 111}}
    assert client.call("total.children", {prop_key(cell(0), "value"): "5"}) == {
        "total": {"children": 115}
    }
    _, body = client.build_request("total.children", {prop_key(cell(0), "value"): "5"})
    assert body["inputs"] == [
        [
            {"id": cell(0), "property": "value", "value": "5"},
            {"id": cell(1), "property": "value", "value": "10"},
            {"id": cell(2), "property": "value", "value": "100"},
        ]
    ]
    assert body["changedPropIds"] == ['{"index":0,"type":"cell"}.value']
    assert body["parsedChangedPropsIds"] == [cell(0)]
    response = client.call(
        prop_key({"type": "cell-cum", "index": 2}, "children"), {prop_key(cell(2), "value"): "z"}
    )
    assert response == {'{"index":2,"type":"cell-cum"}': {"children": ["1", "10", "z"]}}


def test_allow_duplicate_outputs(client):
    # The exact output string wins; the inputs pick among the duplicates.
    assert client.call("greeting.children") == {"greeting": {"children": "Hello world"}}
    assert client.call("greeting.children", {"btn2.n_clicks": 5}) == {
        "greeting": {"children": "again 5"}
    }
    _, body = client.build_request("greeting.children", {"btn2.n_clicks": 5})
    assert body["output"].startswith("greeting.children@")
    assert body["outputs"] == {"id": "greeting", "property": body["output"].split(".", 1)[1]}
    # count.children is written by a multi-output callback and by a duplicate.
    with pytest.raises(ValueError, match="ambiguous"):
        client.call("count.children")
    assert client.call("count.children", {"btn2.n_clicks": 2}) == {
        "count": {"children": "count again 2"}
    }
    assert client.call("count.children", {"btn.n_clicks": 2})["count"] == {"children": "clicks=2"}


def test_side_updates_are_merged(client):
    assert client.call("side-main.children", {"side-btn.n_clicks": 1}) == {
        "side-main": {"children": "main"},
        "side": {"children": "after 1"},
    }


def test_server_error_raises(client):
    with pytest.raises(DashCallbackError) as info:
        client.call("boom.children", {"boom-btn.n_clicks": 1})
    assert info.value.status_code == 500


def test_unknown_names_are_rejected(client):
    with pytest.raises(KeyError):
        client.call("nothing.children")
    with pytest.raises(ValueError, match="not Inputs"):
        client.call("greeting.children", {"nme.value": "x"})
    with pytest.raises(ValueError, match="not States"):
        client.call("count.children", {"btn.n_clicks": 1}, state={"name.valeu": "x"})


def test_timed_call(client):
    response, seconds, nbytes = client.timed_call("greeting.children", {"name.value": "T"})
    assert response == {"greeting": {"children": "Hello T"}}
    assert seconds > 0  # measured (no limit asserted: wall-clock times vary)
    assert nbytes >= len(json.dumps(response))
    response, seconds, nbytes = client.timed_call("greeting.children", {"name.value": "stop"})
    assert response == {} and nbytes == 0
