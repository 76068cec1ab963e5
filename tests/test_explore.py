"""`app.explore`: the app opened on an array from Python hands the recipe and labels back."""

import base64
import io as _io
import threading

import numpy as np
import pytest
import requests
import tifffile
from werkzeug.serving import make_server

from app import explore
from tests.support.dashclient import DashClient


@pytest.fixture
def served(tmp_path):
    rng = np.random.default_rng(0)
    image = np.zeros((64, 80), np.uint8)
    image[16:48, 20:60] = 200
    image = np.clip(image + rng.normal(20, 10, image.shape), 0, 255).astype(np.uint8)
    explorer = explore(image, name="my_array", state_dir=tmp_path, serve=False)
    server = make_server("127.0.0.1", 0, explorer.app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield explorer, f"http://127.0.0.1:{server.server_port}/", image
    finally:
        server.shutdown()
        thread.join(10)


def test_explore_hands_back_the_recipe_and_labels(served):
    explorer, url, image = served
    client = DashClient(url, session=requests.Session())
    sid = client.find_component("session-store")["data"]
    assert client.find_component("sample-dropdown")["value"] == "array"
    out = client.call("image-store.data", inputs={"sample-dropdown.value": "array"},
                      state={"session-store.data": sid}, triggered=[])
    meta = out["image-store"]["data"]
    assert meta["name"] == "my_array" and meta["shape"] == [64, 80]
    out = client.call("history-store.data", inputs={"image-store.data": meta},
                      state={"session-store.data": sid}, triggered=["image-store.data"])
    history = out["history-store"]["data"]
    out = client.call("history-store.data",
                      inputs={"move-request-store.data": {"pair": [30, 210], "seq": 1}},
                      state={"history-store.data": history, "session-store.data": sid,
                             "image-store.data": meta},
                      triggered=["move-request-store.data"])
    history = out["history-store"]["data"]
    recipe = explorer.recipe()
    assert recipe["markers"] == {"vmin": 30.0, "vmax": 210.0}
    labels = explorer.labels()
    assert labels.shape == image.shape and labels.max() == 1
    assert (labels[20:44, 24:56] == 1).all()
    # The same labels as the app's download.
    out = client.call("download-labels.data", inputs={"download-labels-button.n_clicks": 1},
                      state={"image-store.data": meta, "history-store.data": history,
                             "session-store.data": sid})
    data = base64.b64decode(out["download-labels"]["data"]["content"])
    np.testing.assert_array_equal(tifffile.imread(_io.BytesIO(data)), labels)
    table = explorer.measurements()
    assert list(table.columns["label"]) == [1]


def test_explore_can_be_framed_by_the_notebook(served):
    # explore() shows the app inline in Jupyter: an iframe of another port's page
    _, url, _ = served
    res = requests.get(url, timeout=30)
    assert "X-Frame-Options" not in res.headers
    assert "frame-ancestors *" in res.headers["Content-Security-Policy"]
