"""The Batch tab's bodies (callbacks.batch) and the app's job runner (callbacks.jobs)."""

from __future__ import annotations

import base64
import contextlib
import csv
import io as _io
import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
import tifffile
from dash import no_update
from dash.exceptions import PreventUpdate
from PIL import Image
from skimage import data as skdata

from callbacks import batch, jobs, loading
from callbacks.params import initial_history, save_history
from callbacks.services import Services
from components import ids
from pipeline import parallel
from pipeline import recipe as recipes
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.store import new_session_id


def _png(array) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


COINS = skdata.coins()
GOOD_A = COINS[:120, :150]
GOOD_B = COINS[150:280, 200:360]


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", max_upload_mb=1,
                 max_pixels=4_000_000, max_batch_files=10)
    (tmp_path / "data").mkdir()
    return Services.create(cfg)


@pytest.fixture
def session(services):
    """A session with coins loaded and its history on the server: (session id, pointer)."""
    sid = new_session_id()
    outcome = loading.load_image(services, sid, None, "coins", None, None, None)
    full = initial_history(outcome.meta)
    return sid, save_history(services.store, sid, full, None)


@pytest.fixture
def data(services):
    """Three images in the data folder: two good ones (one in a subfolder), one broken."""
    root = services.config.data_dir
    (root / "sub").mkdir()
    (root / "a.png").write_bytes(_png(GOOD_A))
    (root / "sub" / "b.png").write_bytes(_png(GOOD_B))
    (root / "broken.png").write_bytes(_png(GOOD_A)[:200])  # truncated
    return root


def _local():
    return parallel.Backend(jobs=1)


def _owner(services, sid):
    """The owner of a session's batches when the client sends no browser id."""
    return batch.batch_owner(services, sid)


def test_a_batch_runs_every_file_lists_the_broken_one_and_packs_a_zip(services, session, data):
    sid, pointer = session
    seen = []
    result = batch.run_batch(services, sid, pointer, batch.ALL_FILES, set_progress=seen.append,
                             backend=_local())
    assert result["state"] == "done", result
    rows = {r["file"]: r for r in result["rows"]}
    assert set(rows) == {"a.png", "broken.png", "sub/b.png"}
    assert rows["broken.png"]["status"] == "failed"
    assert "broken.png" in rows["broken.png"]["message"] and rows["broken.png"]["regions"] is None
    recipe = recipes.validate(pointer["recipe"])
    for name, image in (("a.png", GOOD_A), ("sub/b.png", GOOD_B)):
        assert rows[name]["status"] == "ok"
        assert rows[name]["regions"] == int(recipes.run(image, recipe).labels.max())
    # progress: from 0 to every file, with the time left while files remain
    assert seen[0][:2] == (0, 3) and seen[-1][:2] == (3, 3)
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert any("left" in s[2] for s in seen if 0 < s[0] < 3)
    assert "1 failed" in result["message"]

    with zipfile.ZipFile(result["zip"]) as archive:
        names = set(archive.namelist())
        assert names == {"a_labels.tif", "a_measurements.csv", "b_labels.tif",
                         "b_measurements.csv", "measurements.csv", "recipe.json", "pipeline.py"}
        labels = tifffile.imread(_io.BytesIO(archive.read("a_labels.tif")))
        np.testing.assert_array_equal(labels, recipes.run(GOOD_A, recipe).labels)
        with tifffile.TiffFile(_io.BytesIO(archive.read("a_labels.tif"))) as tif:
            provenance = json.loads(tif.pages[0].description)
        assert provenance["command"] == "Pipeline Explorer Batch tab"  # not the CLI
        assert provenance["recipe"] == recipe and provenance["versions"]["numpy"]
        assert recipes.validate(json.loads(archive.read("recipe.json"))) == recipe
        compile(archive.read("pipeline.py").decode(), "pipeline.py", "exec")
        combined = archive.read("measurements.csv").decode()
        per_file = archive.read("b_measurements.csv").decode()
    assert "# provenance:" in combined and "# provenance:" in per_file
    table = list(csv.reader(line for line in combined.splitlines() if not line.startswith("#")))
    header, body = table[0], table[1:]
    image_col, error_col = header.index("image"), header.index("error")
    assert {row[image_col] for row in body} == {"a.png", "sub/b.png", "broken.png"}
    broken = [row for row in body if row[image_col] == "broken.png"]
    assert len(broken) == 1 and broken[0][error_col]  # its summary row says why
    # packed files are not left beside the zip; the status says done
    folder = batch.job_dir(services.config, _owner(services, sid), result["job"])
    assert sorted(p.name for p in folder.iterdir()) == ["results.zip", "status.json"]
    status = batch.read_status(services.config, _owner(services, sid))
    assert status["state"] == "done" and status["done"] == 3 and status["pid"] == os.getpid()


def test_a_folder_of_the_data_folder(services, session, data):
    sid, pointer = session
    assert batch.data_folders(data) == ["sub"]
    options = batch.source_options(services.config, _owner(services, sid))
    assert [o["value"] for o in options] == ["data:", "data:sub", "uploads"]
    assert options[0]["label"].endswith("(3)") and options[1]["label"] == "sub/ (1)"
    result = batch.run_batch(services, sid, pointer, "data:sub", backend=_local())
    assert [r["file"] for r in result["rows"]] == ["sub/b.png"]
    assert result["state"] == "done"


@pytest.mark.parametrize("folder", ["..", "../data", "sub/../..", "/etc", "a\\b", ".hidden",
                                    "~root", "x\x00y"])
def test_folders_outside_the_data_folder_are_refused(services, data, folder):
    with pytest.raises(InputError, match="not a folder of the data folder"):
        batch.folder_files(data, folder, 10)


def test_a_link_out_of_the_data_folder_is_refused(services, data, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(GOOD_A))
    (data / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="outside"):
        batch.folder_files(data, "link", 10)
    # and the whole folder's listing does not follow it
    assert "link/secret.png" not in [n for n, _ in batch.folder_files(data, "", 10)]


def test_too_many_files_are_refused_before_any_work(services, session, data):
    sid, pointer = session
    small = Services.create(Config(state_dir=services.config.state_dir, data_dir=data,
                                   max_batch_files=2))
    with pytest.raises(InputError, match="PIPEX_MAX_BATCH_FILES"):
        batch.run_batch(small, sid, pointer, batch.ALL_FILES, backend=_local())
    assert not batch.owner_dir(services.config, _owner(services, sid)).exists()


def test_a_file_over_the_size_limit_gets_its_reason(services, session, data):
    sid, pointer = session
    big = np.random.default_rng(0).integers(0, 255, (800, 800), dtype=np.uint8)
    (data / "sub" / "big.png").write_bytes(_png(big))  # > 0.5 MB, incompressible
    tight = Services.create(Config(state_dir=services.config.state_dir, data_dir=data,
                                   max_upload_mb=0.5))
    result = batch.run_batch(tight, sid, pointer, "data:sub", backend=_local())
    rows = {r["file"]: r for r in result["rows"]}
    assert rows["sub/big.png"]["status"] == "failed"
    assert "the limit is" in rows["sub/big.png"]["message"]
    assert rows["sub/b.png"]["status"] == "ok"


def test_cancel_stops_the_batch_between_files_and_packs_nothing(services, session, data):
    sid, pointer = session
    for i in range(4):
        (data / f"c{i}.png").write_bytes(_png(GOOD_B))
    asked = []

    def progress(value):
        if value[0] == 1 and not asked:  # the first file is done: press Cancel
            asked.append(batch.cancel_batch(services.config, _owner(services, sid)))

    result = batch.run_batch(services, sid, pointer, batch.ALL_FILES, set_progress=progress,
                             backend=_local())
    assert asked[0]["state"] == "cancelled" and "Cancelled after" in asked[0]["message"]
    assert result["state"] == "cancelled" and result["zip"] is None
    states = [r["status"] for r in result["rows"]]
    assert states.count("cancelled") == len(states) - 1, states
    folder = batch.job_dir(services.config, _owner(services, sid), result["job"])
    assert not (folder / batch.ZIP_NAME).exists()
    assert batch.read_status(services.config, _owner(services, sid))["state"] == "cancelled"
    # after the batch, Cancel says so and changes nothing
    message, *rest = batch.cancel_outputs(services, sid)
    assert "already finished" in message.children


def test_a_new_run_keeps_only_the_owners_recent_jobs(services, session, data):
    sid, pointer = session
    owner = _owner(services, sid)
    jobs = [batch.run_batch(services, sid, pointer, "data:sub", backend=_local())["job"]
            for _ in range(batch.KEEP_JOBS + 1)]
    assert not batch.job_dir(services.config, owner, jobs[0]).exists()
    for job in jobs[1:]:
        assert (batch.job_dir(services.config, owner, job) / batch.ZIP_NAME).is_file()
    assert [s["job"] for s in batch.list_jobs(services.config, owner)] == jobs[:0:-1]


def test_abandoned_jobs_and_uploads_of_any_session_are_swept(services, session, data):
    sid, pointer = session
    other = f"session:{new_session_id()}"
    batch.stage_uploads(services.config, other, [_data_url(_png(GOOD_A))], ["x.png"])
    stale_job = batch.job_dir(services.config, other, "a" * 32)
    stale_job.mkdir(parents=True)
    week_ago = time.time() - batch.KEEP_SECONDS - 60
    for folder in (stale_job, batch.upload_dir(services.config, other)):
        os.utime(folder, (week_ago, week_ago))
    fresh = batch.job_dir(services.config, other, "b" * 32)
    fresh.mkdir()
    result = batch.run_batch(services, sid, pointer, "data:sub", backend=_local())
    assert not stale_job.exists() and batch.staged_uploads(services.config, other) == []
    assert fresh.is_dir()
    assert (batch.job_dir(services.config, _owner(services, sid), result["job"]) /
            batch.ZIP_NAME).is_file()


def test_the_job_runner_needs_are_declared():
    import tomllib

    from tests.support import REPO_ROOT

    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("dash[diskcache]") for d in deps), deps
    assert not any(d.startswith("celery") for d in deps)  # optional: PIPEX_CELERY_BROKER


def test_uploads_are_staged_and_run(services, session):
    sid, pointer = session
    owner = _owner(services, sid)
    too_big = np.random.default_rng(1).integers(0, 255, (1100, 1100), dtype=np.uint8)
    names, problems = batch.stage_uploads(
        services.config, owner,
        [_data_url(_png(GOOD_A)), _data_url(_png(too_big)), _data_url(b"not an image"),
         "garbage"],
        ["C:\\fakepath\\one.png", "../../big.png", "three.png", "four.png"])
    assert names == ["one.png", "three.png"]
    assert len(problems) == 2
    assert problems[0].startswith("big.png: file is") and "four.png: " in problems[1]
    assert not (services.config.state_dir / "big.png").exists()
    with pytest.raises(PreventUpdate):  # an emptied upload (after staging) does nothing
        batch.upload_outputs(services, sid, None, ids.BATCH_UPLOAD, None, None)
    result = batch.run_batch(services, sid, pointer, batch.UPLOADS_SOURCE, backend=_local())
    rows = {r["file"]: r for r in result["rows"]}
    assert rows["one.png"]["status"] == "ok"
    assert rows["three.png"]["status"] == "failed" and "three.png" in rows["three.png"]["message"]
    names, message, cleared = batch.upload_outputs(services, sid, None,
                                                   ids.BATCH_CLEAR_UPLOADS, None, None)
    assert names == [] and batch.staged_uploads(services.config, owner) == []
    table, summary, link, message = batch.run_outputs(services, sid, pointer,
                                                      batch.UPLOADS_SOURCE, backend=_local())
    assert table is no_update and "No uploaded files" in message.children


def test_the_upload_count_is_capped(services, session):
    sid, _ = session
    urls = [_data_url(_png(GOOD_A))] * 12
    names, problems = batch.stage_uploads(services.config, _owner(services, sid), urls,
                                          [f"f{i:02d}.png" for i in range(12)])
    assert len(names) == 10 and len(problems) == 2
    assert "at most 10 files" in problems[0]


def test_bad_requests_start_nothing(services, session, data):
    sid, pointer = session
    for source, history, expected in ((None, pointer, "Choose the images"),
                                      ("data:..", pointer, "'..'"),
                                      (batch.ALL_FILES, None, "No recipe yet"),
                                      (batch.ALL_FILES, {"rev": "0" * 32, "image_id": "f" * 32},
                                       "no longer on the server")):
        seen = []
        table, summary, link, message = batch.run_outputs(services, sid, history, source,
                                                          set_progress=seen.append,
                                                          backend=_local())
        assert (table, summary, link) == (no_update,) * 3  # the last batch's results stay
        assert "Batch not started" in message.children and expected in message.children
        assert seen == [(0, 1, "")]
    with pytest.raises(InputError, match="session_id"):
        batch.run_batch(services, "../x", pointer, batch.ALL_FILES, backend=_local())
    with pytest.raises(InputError, match="job_id"):
        batch.job_dir(services.config, _owner(services, sid), "../../etc")
    for bad in ("../x", "A" * 32, "0" * 31, 7, ""):
        with pytest.raises(InputError, match="browser_id"):
            batch.batch_owner(services, sid, bad)
    with pytest.raises(InputError, match="owner"):
        batch.owner_dir(services.config, "../../etc")


# --------------------------------------------------------------------------------------------
# Whose batches: a browser (local mode) or a signed-in user; re-attached after a reload

BROWSER_A, BROWSER_B = "a1" * 16, "b2" * 16


def _new_page(services):
    """A new page (a reload, or a tab opened again): a new session, coins loaded."""
    sid = new_session_id()
    outcome = loading.load_image(services, sid, None, "coins", None, None, None)
    return sid, save_history(services.store, sid, initial_history(outcome.meta), None)


def test_a_reloaded_page_finds_its_browsers_running_batch_and_another_browser_does_not(
        services, session, data):
    sid, pointer = session
    for i in range(3):
        (data / f"c{i}.png").write_bytes(_png(GOOD_B))
    owner = batch.batch_owner(services, sid, BROWSER_A)
    assert owner == f"browser:{BROWSER_A}"
    seen = {}

    def progress(value):
        if value[0] == 2 and not seen:  # mid-batch: the page is reloaded, another browser looks
            reloaded, _ = _new_page(services)
            seen["same"] = batch.attach_outputs(services, reloaded, BROWSER_A, prefix="/app/")
            seen["other"] = batch.attach_outputs(services, reloaded, BROWSER_B)
            seen["cancel_other"] = batch.cancel_outputs(services, reloaded, BROWSER_B)
            seen["slots"] = services.admission.running(owner)

    result = batch.run_batch(services, sid, pointer, batch.ALL_FILES, owner=owner,
                             set_progress=progress, backend=_local())
    assert result["state"] == "done"
    out = dict(zip([f"{i}.{p}" for i, p in batch.ATTACH_OUTPUTS], seen["same"]))
    assert out["batch-job.data"] == result["job"]
    assert out["batch-poll.disabled"] is False  # the poll follows it
    assert (out["batch-progress.value"], out["batch-progress.max"]) == (2, 6)
    assert "2 of 6 files done" in out["batch-progress-text.children"]
    assert out["batch-cancel.disabled"] is False and out["batch-download.children"] is None
    assert "running" in out["batch-summary.children"]
    listed = str(out["batch-jobs.children"])
    assert result["job"] in listed and "batch-job-running" in listed
    # another browser: no job of its own, nothing of this one
    other = dict(zip([f"{i}.{p}" for i, p in batch.ATTACH_OUTPUTS], seen["other"]))
    assert other["batch-jobs.children"] is None and other["batch-job.data"] is None
    assert other["batch-poll.disabled"] is True
    assert "No batch is running" in seen["cancel_other"][0].children
    assert seen["slots"] == 1  # the batch held a job slot of its owner while it ran
    assert services.admission.running(owner) == 0

    # the poll of the reloaded page: the job ended, its table and zip are shown, poll stops
    reloaded, _ = _new_page(services)
    out = dict(zip([f"{i}.{p}" for i, p in batch.ATTACH_OUTPUTS],
                   batch.attach_outputs(services, reloaded, BROWSER_A, result["job"],
                                        prefix="/app/")))
    assert out["batch-poll.disabled"] is True and out["batch-cancel.disabled"] is True
    assert out["batch-download.children"].href == batch.zip_url(owner, result["job"], "/app/")
    assert "batch-row" in str(out["batch-table.children"])
    assert (out["batch-progress.value"], out["batch-progress.max"]) == (6, 6)
    assert "href" in str(out["batch-jobs.children"])  # the list links its zip
    # nothing is found without the browser's id, and a forged one is refused
    with pytest.raises(PreventUpdate):
        batch.attach_outputs(services, reloaded, None)
    refused = batch.attach_outputs(services, reloaded, "../" + BROWSER_A)
    assert "browser_id" in refused[9].children and refused[0] is no_update


def test_cancel_on_a_reloaded_page_stops_the_job_it_shows(services, session, data):
    sid, pointer = session
    for i in range(4):
        (data / f"c{i}.png").write_bytes(_png(GOOD_B))
    owner = batch.batch_owner(services, sid, BROWSER_A)
    asked = []

    def progress(value):
        if value[0] == 1 and not asked:
            reloaded, _ = _new_page(services)
            shown = batch.attach_outputs(services, reloaded, BROWSER_A)[1]
            asked.append(batch.cancel_outputs(services, reloaded, BROWSER_A, shown))

    result = batch.run_batch(services, sid, pointer, batch.ALL_FILES, owner=owner,
                             set_progress=progress, backend=_local())
    assert "Cancelled after 1 of 7" in asked[0][0].children
    assert result["state"] == "cancelled" and result["zip"] is None
    assert batch.read_status(services.config, owner, result["job"])["state"] == "cancelled"


def test_a_job_whose_process_died_reads_interrupted(services, session, data):
    owner = f"browser:{BROWSER_A}"
    folder = batch.job_dir(services.config, owner, "c" * 32)
    folder.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = {"job": "c" * 32, "state": "running", "pid": dead.pid, "host": socket.gethostname(),
              "total": 9, "done": 3, "source": "data:", "started_at": time.time(), "rows": []}
    (folder / batch.STATUS_NAME).write_text(json.dumps(status))
    read = batch.read_status(services.config, owner, "c" * 32)
    assert read["state"] == "interrupted" and "3 of 9" in read["message"]
    (folder / batch.CANCEL_FLAG).touch()  # Cancel on the page that started it killed it
    assert batch.read_status(services.config, owner, "c" * 32)["state"] == "cancelled"
    # a live process of this machine keeps it running
    status["pid"] = os.getpid()
    (folder / batch.STATUS_NAME).write_text(json.dumps(status))
    assert batch.read_status(services.config, owner, "c" * 32)["state"] == "running"


def test_with_sign_in_a_batch_belongs_to_its_user_only(services, session, data, tmp_path):
    from app import create_app
    from callbacks import auth

    users = tmp_path / "users"
    auth.add_user(users, "alice", "alice-password")
    auth.add_user(users, "bob", "bob-password")
    config = Config(state_dir=services.config.state_dir, data_dir=data, users_file=users)
    app = create_app(config)
    signed = app._pipex_services
    sid, pointer = session
    signed.store.set_owner(sid, "user:alice")  # as the sign-in records it for each request
    # the browser's id plays no part: the user owns the batch, from any browser
    assert batch.batch_owner(signed, sid, BROWSER_A) == "user:alice"
    assert batch.batch_owner(signed, sid, None) == "user:alice"
    slots = []  # the batch holds a slot of the user, the one the page's computations take
    result = batch.run_batch(signed, sid, pointer, "data:sub", backend=_local(),
                             set_progress=lambda _: slots.append(
                                 signed.admission.running(signed.owner(sid))))
    assert result["state"] == "done" and slots and set(slots) == {1}
    assert signed.admission.running("user:alice") == 0
    alice_page, bob_page = new_session_id(), new_session_id()
    signed.store.set_owner(alice_page, "user:alice")
    signed.store.set_owner(bob_page, "user:bob")
    assert batch.attach_outputs(signed, alice_page, BROWSER_B)[1] == result["job"]
    assert batch.attach_outputs(signed, bob_page, BROWSER_A)[1] is None  # same browser, bob
    with pytest.raises(InputError, match="no signed-in user"):
        batch.batch_owner(signed, new_session_id(), BROWSER_A)

    # the zip is served to alice only
    url = batch.zip_url("user:alice", result["job"])
    signin = app.server.extensions["pipex_auth"]
    for name, expected in (("alice", 200), ("bob", 404)):
        client = app.server.test_client()
        with client.session_transaction() as cookie:
            cookie["user"] = name
            cookie["pw"] = signin._fingerprint(signin.users()[name])
        assert client.get(url).status_code == expected, name
    assert app.server.test_client().get(url).status_code == 401  # not signed in


def test_a_batch_that_finds_no_job_slot_says_why_and_when_it_can_start(services, session, data):
    from pipeline.admission import Admission

    sid, pointer = session
    one = Services.create(Config(state_dir=services.config.state_dir, data_dir=data,
                                 user_jobs=1, max_jobs=3))
    owner = batch.batch_owner(one, sid, BROWSER_A)
    elsewhere = Admission(services.config.state_dir / "admission", per_owner=1, total=3)
    with elsewhere.slot(owner):  # e.g. a computation of the page, in another worker
        table, summary, link, message = batch.run_outputs(one, sid, pointer, "data:sub",
                                                          browser_id=BROWSER_A,
                                                          backend=_local())
    assert (table, summary, link) == (no_update,) * 3
    text = message.children
    assert text.startswith("Batch not started: you already have 1 heavy job running")
    assert "PIPEX_USER_JOBS = 1" in text and "try again in a moment" in text
    assert batch.list_jobs(services.config, owner) == []  # nothing was started

    # a running batch of the owner: its progress says when the next one can start
    running = batch.job_dir(services.config, owner, "d" * 32)
    running.mkdir(parents=True)
    (running / batch.STATUS_NAME).write_text(json.dumps({
        "job": "d" * 32, "state": "running", "pid": os.getpid(), "host": socket.gethostname(),
        "source": "data:sub", "total": 40, "done": 10, "started_at": time.time() - 60,
        "rows": []}))
    with elsewhere.slot(owner):
        text = batch.run_outputs(one, sid, pointer, "data:sub", browser_id=BROWSER_A,
                                 backend=_local())[3].children
    assert "the batch of folder sub/ started at" in text and "10 of 40 files done" in text
    # 60 s for 10 files: 30 more take about 3 min (a few seconds more as this test runs)
    assert re.search(r"It can start in about 3 min 0\d s, when the first of them ends", text), text
    # the whole server full: the other reason
    full = Admission(services.config.state_dir / "admission", per_owner=3, total=3)
    with full.slot("user:x"), full.slot("user:y"), full.slot("user:z"):
        text = batch.run_outputs(one, sid, pointer, "data:sub", browser_id=BROWSER_A,
                                 backend=_local())[3].children
    assert "the server is running 3 heavy jobs for all users" in text and "PIPEX_MAX_JOBS" in text
    # with a slot free, it runs
    assert batch.run_batch(one, sid, pointer, "data:sub", owner=owner,
                           backend=_local())["state"] == "done"


def test_busy_message_and_time_left():
    status = {"done": 5, "total": 20, "started_at": 1000.0}
    assert batch.time_left(status, now=1010.0) == 30.0
    assert batch.time_left({**status, "done": 0}, now=1010.0) is None
    assert batch.source_label("data:") == "the data folder"
    assert batch.source_label("data:a/b") == "folder a/b/"
    assert batch.source_label("uploads") == "uploaded files"


def test_progress_text():
    assert batch.progress_text(0, 40, 0.0, ["a.tif", "b.tif"]) == \
        "0 of 40 files done · working on a.tif, b.tif"
    text = batch.progress_text(10, 40, 20.0, ["a", "b", "c", "d", "e"])
    assert text == "10 of 40 files done · working on a, b, c and 2 more · about 1 min 00 s left"
    assert batch.progress_text(1, 1, 3.0, []) == "1 of 1 file done"


def test_the_zip_route_serves_only_a_finished_job_of_the_session(services, session, data,
                                                                tmp_path):
    from app import create_app

    sid, pointer = session
    app = create_app(services.config)
    owner = f"browser:{'ab' * 16}"
    result = batch.run_batch(app._pipex_services, sid, pointer, batch.ALL_FILES, owner=owner,
                             backend=_local())
    client = app.server.test_client()
    answer = client.get(batch.zip_url(owner, result["job"]))
    assert answer.status_code == 200 and answer.mimetype == "application/zip"
    assert "recipe.json" in zipfile.ZipFile(_io.BytesIO(answer.data)).namelist()
    key = batch.owner_key(owner)
    for url in (batch.zip_url(f"browser:{'cd' * 16}", result["job"]),
                batch.zip_url(owner, "0" * 32),
                f"/_pipex/batch/../{result['job']}/results.zip",
                f"/_pipex/batch/{key}/{result['job'][:-1]}/results.zip"):
        assert client.get(url).status_code == 404, url
    # an encoded path is not the route (Dash's catch-all answers its page): no file is served
    answer = client.get(f"/_pipex/batch/{key}/..%2F..%2Fstatus.json/results.zip")
    assert answer.mimetype != "application/zip" and b'"state"' not in answer.data


def test_the_run_is_a_background_callback_with_progress_and_cancel(services):
    from app import create_app

    app = create_app(services.config)
    entry = next(v for k, v in app.callback_map.items() if k.startswith("..batch-table.children"))
    background = entry["background"]
    assert background["cancel"] == [{"id": ids.BATCH_CANCEL, "property": "n_clicks"}]
    assert [str(o) for o in background["progress"]] == [
        "batch-progress.value", "batch-progress.max", "batch-progress-text.children"]
    assert isinstance(app._background_manager, __import__("dash").DiskcacheManager)
    assert (services.config.state_dir / jobs.JOBS_FOLDER).is_dir()


def test_the_job_runner_is_celery_only_when_configured(tmp_path):
    cfg = Config(state_dir=tmp_path / "s", celery_broker="redis://127.0.0.1:1/0")
    try:
        import celery  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="PIPEX_CELERY_BROKER is set but Celery"):
            jobs.background_manager(cfg)
    else:  # pragma: no cover - not installed here
        import dash
        assert isinstance(jobs.background_manager(cfg), dash.CeleryManager)
    with pytest.raises(InputError, match="Redis URL"):
        jobs.celery_app("amqp://x")


def test_config_reads_the_batch_settings():
    cfg = Config.from_env({"PIPEX_MAX_BATCH_FILES": "20",
                           "PIPEX_CELERY_BROKER": " redis://r:6379/0 "})
    assert cfg.max_batch_files == 20 and cfg.celery_broker == "redis://r:6379/0"
    default = Config.from_env({})
    assert default.max_batch_files == 500 and default.celery_broker is None
    for bad in ("0", "many", "2.5"):
        with pytest.raises(InputError, match="PIPEX_MAX_BATCH_FILES"):
            Config.from_env({"PIPEX_MAX_BATCH_FILES": bad})


def test_the_dask_compose_example_is_valid_and_points_the_app_at_its_scheduler():
    yaml = pytest.importorskip("yaml")
    from tests.support import REPO_ROOT, dockerfile_cmd

    compose = yaml.safe_load((REPO_ROOT / "docs" / "compose-dask.yml").read_text())
    services = compose["services"]
    app = services["app"]
    assert app["command"] == dockerfile_cmd()
    assert app["build"]["context"] == ".." and app["build"]["dockerfile"] == "Dockerfile"
    address = app["environment"]["PIPEX_DASK_ADDRESS"]
    scheduler = services["scheduler"]["command"]
    assert scheduler[:2] == ["dask", "scheduler"]
    assert address == f"tcp://scheduler:{scheduler[scheduler.index('--port') + 1]}"
    workers = [s for s in services.values() if s["command"][:2] == ["dask", "worker"]]
    assert len(workers) == 2 and all(w["command"][2] == address for w in workers)
    assert all(s["image"] == app["image"] for s in services.values())  # the package inside
    assert "pipex-state" in compose["volumes"]


# --------------------------------------------------------------------------------------------
# A background job under gunicorn with two workers

RUN_OUTPUT = ("..batch-table.children...batch-summary.children...batch-download.children"
              "...batch-message.children..")


@contextlib.contextmanager
def _gunicorn(tmp_path, **env):
    """The Dockerfile's CMD with 2 workers on the first free port of 127.0.0.1:8071-8079."""
    from tests.support import REPO_ROOT, GunicornProcess, dockerfile_cmd, wait_for_http

    for port in range(8071, 8080):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        break
    else:
        pytest.fail("no free port in 8071-8079")
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIPEX_")}
    full.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), full.get("PATH", "")]),
                PIPEX_BIND=f"127.0.0.1:{port}", PIPEX_WORKERS="2",
                PIPEX_STATE_DIR=str(tmp_path / "state"), PIPEX_DATA_DIR=str(tmp_path / "data"),
                PYTHONUNBUFFERED="1", **env)
    argv = dockerfile_cmd()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=full, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    server = GunicornProcess(proc, f"http://127.0.0.1:{port}", log_path, argv, full)
    try:
        wait_for_http(server.base_url + "/health", timeout=120, proc=server)
        yield server
    finally:
        server.stop()


def _fresh_session():
    session = requests.Session()
    session.headers["Connection"] = "close"  # gunicorn hands each request to any worker
    return session


@pytest.mark.server
def test_a_batch_job_is_shared_by_two_gunicorn_workers(tmp_path):
    from tests.support.dashclient import DashClient

    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        (data / f"coins{i}.png").write_bytes(_png(COINS[:200, :250]))
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with _gunicorn(tmp_path, PIPEX_JOBS="1") as server:
        url = server.base_url
        page = _fresh_session().get(url + "/", timeout=60).text
        config = json.loads(re.search(r'<script id="_dash-config"[^>]*>(.*?)</script>', page,
                                      re.S).group(1))
        end = {"endId": config["end_id"]}  # the page's handle, signed by the shared secret
        client = DashClient(url, session=_fresh_session())
        sid = client.find_component("session-store")["data"]
        state = {"session-store.data": sid}
        meta = DashClient(url, session=_fresh_session()).call(
            "image-store.data", inputs={"sample-dropdown.value": "coins"}, state=state,
            triggered=[])["image-store"]["data"]
        history = DashClient(url, session=_fresh_session()).call(
            "history-store.data", inputs={"image-store.data": meta},
            state={"history-store.data": None, **state},
            triggered=["image-store.data"])["history-store"]["data"]

        _, body = client.build_request(
            RUN_OUTPUT, inputs={"batch-run.n_clicks": 1},
            state={**state, "history-store.data": history, "batch-source.value": "data:"})

        def poll_pids():
            return set(re.findall(r'"POST /_dash-update-component\?[^"]*cacheKey=[^"]*" 200 '
                                  r'.* pid=<?(\d+)', server.log(tail=100_000)))

        # Batches until both workers have answered a job's polls (gunicorn gives each new
        # connection to either worker; a short batch may see one only): each worker finds
        # the job, its progress and its result in the shared manager.
        for attempt in range(12):
            started = _fresh_session().post(url + "/_dash-update-component", params=end,
                                            json=body, timeout=60)
            assert started.status_code == 200, server.describe()
            handles = started.json()
            assert handles.get("cacheKey") and handles.get("job"), handles
            polls = {**end, "cacheKey": handles["cacheKey"], "job": handles["job"]}
            progress, result = [], None
            for _ in range(2000):
                answer = _fresh_session().post(url + "/_dash-update-component", params=polls,
                                               json=body, timeout=60)
                assert answer.status_code in (200, 204), (answer.status_code,
                                                          answer.text[:500])
                reply = answer.json() if answer.status_code == 200 else {}
                if reply.get("progress"):
                    progress.append(json.dumps(reply["progress"]))
                if "response" in reply:
                    result = reply["response"]
                    break
                time.sleep(0.1)
            assert result is not None, server.describe()
            table = json.dumps(result["batch-table"]["children"])
            assert table.count("batch-row") == 7 and table.count("batch-failed") == 1
            assert "6 done, 1 failed" in result["batch-summary"]["children"]
            assert any("of 7 files done" in text for text in progress), progress
            href = result["batch-download"]["children"]["props"]["href"]
            archive = _fresh_session().get(url + href, timeout=60)
            assert archive.status_code == 200
            assert len(zipfile.ZipFile(_io.BytesIO(archive.content)).namelist()) == 6 * 2 + 3
            if len(poll_pids()) == 2:
                break
        assert len(poll_pids()) == 2, server.describe()
