"""The app factory, the health endpoint, the HTTP upload limit and the package layering."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app(tmp_path, monkeypatch):
    from app import create_app
    from pipeline.config import Config

    return create_app(Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data",
                             max_upload_mb=1))


def test_import_does_no_work(tmp_path):
    code = ("import os, sys; os.environ['PIPEX_STATE_DIR'] = sys.argv[1]; import app; "
            "assert not os.path.exists(sys.argv[1]), 'import created the state dir'; "
            "assert callable(app.create_app)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "st")], check=True, cwd=ROOT)


def test_server_attribute_builds_the_app_lazily(tmp_path):
    code = ("import os, sys; os.environ['PIPEX_STATE_DIR'] = sys.argv[1]; import app; "
            "s = app.server; assert os.path.exists(sys.argv[1]); print(type(s).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "st")], check=True,
                         cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "Flask"


def test_pipeline_never_imports_dash_flask_or_plotly():
    code = ("import sys, pipeline, pipeline.io, pipeline.render, pipeline.segment, "
            "pipeline.randomwalker, pipeline.compute, pipeline.store, pipeline.config, "
            "pipeline.provenance; "
            "bad = [m for m in ('dash', 'flask', 'plotly') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_health(app):
    client = app.server.test_client()
    resp = client.get("/health")
    data = resp.get_json()
    assert resp.status_code == 200 and data["status"] == "ok"
    assert data["compute"]["jobs"] >= 1 and "dask" not in data["compute"]  # local


def test_each_page_load_gets_its_own_session(app):
    client = app.server.test_client()
    ids = set()
    for _ in range(3):
        layout = client.get("/_dash-layout").get_json()
        text = json.dumps(layout)
        store = _find(layout, "session-store")
        ids.add(store["props"]["data"])
        assert "Pipeline Explorer" in text
    assert len(ids) == 3


def test_oversized_request_is_refused_at_http_level(app):
    client = app.server.test_client()
    body = b"x" * (3 * 2**20)
    resp = client.post("/_dash-update-component", data=body,
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert "upload limit is 1 MB" in resp.get_json()["error"]


def test_every_panel_names_and_links_its_scikit_image_function(app):
    client = app.server.test_client()
    text = json.dumps(client.get("/_dash-layout").get_json())
    for name in ("skimage.io.imread", "skimage.exposure.histogram",
                 "skimage.segmentation.find_boundaries", "skimage.measure.label",
                 "skimage.measure.regionprops_table", "skimage.filters.try_all_threshold",
                 "skimage.morphology.remove_small_objects", "skimage.segmentation.clear_border"):
        assert name in text
        assert f"api/{name.rsplit('.', 1)[0]}.html#{name}" in text


def test_every_step_names_its_function_with_docstring_summary_and_link():
    from components.forms import step_doc
    from pipeline.filters import FILTERS
    from pipeline.segmentation import SEGMENTERS

    for step in list(FILTERS.values()) + list(SEGMENTERS.values()):
        text = json.dumps(step_doc(step).to_plotly_json(), default=lambda o: o.to_plotly_json(),
                          ensure_ascii=False)
        if not step.function:
            continue
        assert step.function in text
        assert "href" in text and " — " in text, step.key
    rw = json.dumps(step_doc(SEGMENTERS["random_walker"]).to_plotly_json(),
                    default=lambda o: o.to_plotly_json())
    assert "Random walker algorithm for segmentation from markers" in rw


def _find(node, component_id):
    if isinstance(node, dict):
        if node.get("props", {}).get("id") == component_id:
            return node
        for value in node.values():
            found = _find(value, component_id)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find(value, component_id)
            if found:
                return found
    return None


def test_health_says_where_compute_runs_without_connecting(tmp_path):
    """/health answers at once and names the compute backend; with a dask scheduler
    configured, its state (not used yet: /health never connects)."""
    from app import create_app
    from pipeline.config import Config

    app = create_app(Config(state_dir=tmp_path / "s", data_dir=tmp_path, jobs=2,
                            dask_address="tcp://127.0.0.1:9"))
    data = app.server.test_client().get("/health").get_json()
    assert data["status"] == "ok" and data["compute"]["jobs"] == 2
    assert data["compute"]["dask"] == {"address": "tcp://127.0.0.1:9", "state": "not used yet"}
