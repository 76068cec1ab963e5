"""Malformed requests get a 4xx, never a 500 (callbacks/guard.py); admission control keeps
one user from taking every request thread (pipeline/admission.py)."""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

from app import create_app
from callbacks import discovery, loading
from callbacks.params import next_state
from callbacks.services import Services
from components import ids
from pipeline.admission import Admission, Busy
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.store import new_session_id


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
    assert client.get("/health").get_json()["status"] == "ok"
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


# --- admission control: one user never takes every request thread (pipeline/admission.py) --


def _hold_slots(directory, owner, ready, release):
    """In another process (another gunicorn worker): hold a slot of `owner` until told."""
    admission = Admission(directory, per_owner=1, total=2)
    with admission.slot(owner):
        ready.set()
        release.wait(120)


def test_a_slot_held_by_another_process_refuses_the_same_owner(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_slots, args=(str(tmp_path), "user:alice", ready, release))
    other.start()
    try:
        assert ready.wait(60)
        here = Admission(tmp_path, per_owner=1, total=2)
        assert here.running("user:alice") == 1 and here.running() == 1
        with pytest.raises(Busy, match="you already have 1 computation running"):
            with here.slot("user:alice"):
                pass
        with here.slot("user:bob"):  # another user is not held back
            # ... but the server's cap (2) is reached now: a third user waits or is refused
            with pytest.raises(Busy, match="the server is busy"):
                with here.slot("user:carol"):
                    pass
    finally:
        release.set()
        other.join(60)
    with Admission(tmp_path, per_owner=1, total=2).slot("user:alice"):
        pass  # free again once the other process let go


def test_a_killed_worker_leaves_no_slot_taken(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_slots, args=(str(tmp_path), "user:alice", ready, release))
    other.start()
    assert ready.wait(60)
    os.kill(other.pid, signal.SIGKILL)
    other.join(60)
    admission = Admission(tmp_path, per_owner=1, total=2)
    assert admission.running("user:alice") == 0
    with admission.slot("user:alice"):
        pass


def test_a_waiting_request_gets_the_slot_when_it_frees(tmp_path):
    holder = Admission(tmp_path, per_owner=1, total=4)
    waiter = Admission(tmp_path, per_owner=1, total=4, wait_s=60, poll_s=0.01)
    started, done = threading.Event(), []

    def wait_for_slot():
        started.set()
        with waiter.slot("s1"):
            done.append(True)

    with holder.slot("s1"):
        thread = threading.Thread(target=wait_for_slot)
        thread.start()
        assert started.wait(30)
        assert not done
    thread.join(60)
    assert done == [True]
    # the same thread asking again (nested) does not need a second slot
    with holder.slot("s1"), holder.slot("s1"):
        pass


def _taken(path):
    from pipeline.admission import try_lock

    fd = try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def test_no_more_waiters_than_max_waiting(tmp_path):
    def admission(wait_s):
        return Admission(tmp_path, per_owner=1, total=4, wait_s=wait_s, poll_s=0.01,
                         max_waiting=1)

    with admission(0).slot("s1"):
        waiting = threading.Event()

        def cached():  # asked when no slot is free: the waiter is about to wait
            waiting.set()
            return False

        def first_waiter():
            try:
                with admission(60).slot("s1", cached=cached):
                    pass
            except Busy:
                pass

        thread = threading.Thread(target=first_waiter)
        thread.start()
        assert waiting.wait(30)
        place = admission(0)._owner_paths("s1", "wait")[0]
        for _ in range(3000):  # until the waiter holds its place in the queue
            if place.exists() and admission(0).running("s1") == 1 and _taken(place):
                break
            time.sleep(0.01)
        # the first waiter holds the one waiting place: a second is refused at once
        with pytest.raises(Busy, match="you already have 1 computation running"):
            with admission(60).slot("s1"):
                pass
    thread.join(60)


def test_work_nobody_waits_for_leaves_a_spare_slot(tmp_path):
    """``spare``: a prefetch takes a slot only if another stays free for a person's request;
    the slot it would have taken is given back when it is refused."""
    admission = Admission(tmp_path, per_owner=2, total=3, wait_s=0)
    with admission.slot("a"):
        with admission.slot("b", spare=1):  # 2 of 3 taken: one stays free
            assert admission.running() == 2
        with admission.slot("b"):
            with pytest.raises(Busy, match="server is busy") as err:
                with admission.slot("c", spare=1):  # it would take the last one
                    pass
            assert err.value.reason == "server"
            assert admission.running() == 2 and admission.running("c") == 0
            with admission.slot("c"):  # a person's request still gets it
                assert admission.running() == 3
    for bad in (-1, 3, True, 1.0):
        with pytest.raises(InputError, match="spare"):
            with admission.slot("a", spare=bad):
                pass


@pytest.mark.parametrize("bad", [{"per_owner": 0}, {"total": "2"}, {"wait_s": -1}])
def test_admission_settings_are_checked(tmp_path, bad):
    with pytest.raises(Exception, match=next(iter(bad))):
        Admission(tmp_path, **bad)


def _services(state, **more):
    cfg = Config(state_dir=state, data_dir=state.parent / "data", user_jobs=1, max_jobs=4,
                 job_wait_s=0, **more)
    return Services.create(cfg)


def _recipe(meta, **filter_):
    recipe = copy.deepcopy(next_state(ids.IMAGE, None, meta, {})[0]["states"][0])
    recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.0}, **filter_}
    return recipe


def test_two_app_instances_share_the_per_user_limit(tmp_path):
    # two workers: two Services on one state folder; a heavy job of the session in one
    # refuses a second in the other, with a message; a cached result needs no slot
    worker1, worker2 = _services(tmp_path / "state"), _services(tmp_path / "state")
    sid = new_session_id()
    meta = loading.load_image(worker1, sid, None, "coins", None, None, None).meta
    cached = _recipe(meta)
    worker1.run(sid, meta["id"], cached)
    heavy = _recipe(meta, params={"sigma": 2.5})
    with worker1.admission.slot(worker1.owner(sid)):  # a job of this session runs in worker 1
        with pytest.raises(Busy, match="you already have 1 computation running"):
            worker2.run(sid, meta["id"], heavy)
        assert worker2.run(sid, meta["id"], cached).cached  # a cache hit is served
        # another session (another user) is not held back
        other = new_session_id()
        meta2 = loading.load_image(worker2, other, None, "coins", None, None, None).meta
        worker2.filtered(other, meta2["id"], heavy)
        # a panel's computation is refused the same way: an InputError, which every
        # callback shows as the step's message
        with pytest.raises(InputError, match="computation running"):
            discovery.gallery(worker2, sid, meta, _recipe(meta, params={"sigma": 3.0}), 0, 0, 25)
    worker2.run(sid, meta["id"], heavy)  # free again


def test_the_owner_of_a_signed_in_session_is_its_user(tmp_path):
    services = _services(tmp_path / "state")
    sid = new_session_id()
    assert services.owner(sid) == sid  # local mode: the session
    services.store.set_owner(sid, "user:alice")
    assert services.owner(sid) == "user:alice"


def _sleep_until(started, release):
    started.set()  # after the fork's handlers ran
    release.wait(120)


def test_a_process_forked_while_a_slot_is_held_does_not_keep_it(tmp_path):
    # Dash's background jobs are forked from the worker: the child's copy of a locked
    # descriptor kept the slot taken for as long as the job ran
    admission = Admission(tmp_path, per_owner=1, total=2)
    ctx = mp.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    with admission.slot("user:alice"):
        child = ctx.Process(target=_sleep_until, args=(started, release))
        child.start()
        assert started.wait(60)
    try:
        assert child.is_alive()
        assert admission.running("user:alice") == 0 and admission.running() == 0
        with Admission(tmp_path, per_owner=1, total=2).slot("user:alice"):
            pass
    finally:
        release.set()
        child.join(60)


def test_idle_owners_slot_files_are_pruned_but_never_a_held_one(tmp_path):
    admission = Admission(tmp_path, per_owner=1, total=2)
    with admission.slot("idle"):
        pass
    with admission.slot("busy"):
        assert admission.prune(older_than_s=0) == 1  # the idle owner's file, not the held one
        assert admission.running("busy") == 1
    assert admission.prune(older_than_s=3600) == 0


def test_every_stage_is_known_cached_once_computed(tmp_path):
    # a cache hit must never be refused: _cached has to recognise each stage's cache entry
    services = _services(tmp_path / "state")
    sid = new_session_id()
    meta = loading.load_image(services, sid, None, "coins", None, None, None).meta
    from pipeline import recipe as recipes

    recipe = recipes.validate(_recipe(meta))
    stages = ("filtered", "histogram", "thresholds", "mask", "run", "measurements")
    assert not any(services._cached(stage, meta["id"], recipe) for stage in stages)
    for call in (services.filtered, services.histogram, services.thresholds, services.mask,
                 services.run, services.measurements):
        call(sid, meta["id"], recipe)
    assert all(services._cached(stage, meta["id"], recipe) for stage in stages)
    # so with every slot of this session taken elsewhere, each of them is still answered
    with Admission(tmp_path / "state" / "admission", per_owner=1, total=4).slot(sid):
        for call in (services.filtered, services.histogram, services.thresholds,
                     services.mask, services.run, services.measurements):
            call(sid, meta["id"], recipe)
