"""pipeline.compute: the filter stage through the parallel backend, its report, its cache key."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from skimage import data

from pipeline import parallel as P
from pipeline import recipe as R
from pipeline.compute import Compute

GAUSSIAN = {"name": "gaussian", "params": {"sigma": 2.0}}


def _recipe(filter_section):
    recipe = R.default_recipe(50, 200)
    recipe["filter"] = filter_section
    return R.validate(recipe)


@pytest.fixture(scope="module")
def large():
    """1500 x 1500 uint8 (2.25 Mpx, above MIN_PIXELS): the default backend cuts it."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (1500, 1500), dtype=np.uint8)


def _never():
    raise AssertionError("the image was read although the result is cached")


def test_a_chunked_filter_stage_is_identical_to_the_recipe_s(tmp_path, large):
    recipe = _recipe(GAUSSIAN)
    compute = Compute(tmp_path, backend=P.Backend(jobs=2))
    out = compute.filter_run("big", lambda: large, recipe)
    assert not out.cached
    report = out.report
    assert report.backend == "threads" and report.blocks > 1 and report.workers == 2
    assert report.label == "Gaussian" and report.chunks is not None
    expected = R.filter_stage(large, recipe)
    assert out.filtered.dtype == expected.dtype == np.float64
    assert np.array_equal(out.filtered, expected)
    assert np.array_equal(compute.filtered("big", _never, recipe), expected)


def test_the_cache_key_does_not_depend_on_the_backend(tmp_path, large):
    recipe = _recipe(GAUSSIAN)
    first = Compute(tmp_path, backend=P.Backend(jobs=2)).filter_run("big", lambda: large,
                                                                     recipe)
    # another worker process with another backend: same key, a cache hit, the saved report
    other = Compute(tmp_path, backend=P.Backend(jobs=1, min_pixels=0))
    again = other.filter_run("big", _never, recipe)
    assert again.cached
    assert again.report == first.report and again.report.blocks > 1
    assert np.array_equal(again.filtered, first.filtered)
    # the later stages read the same cached filtered image
    counts, _ = other.histogram("big", _never, recipe)
    assert counts.sum() == large.size


def test_coins_are_not_chunked(tmp_path):
    coins = data.coins()
    recipe = _recipe(GAUSSIAN)
    compute = Compute(tmp_path, backend=P.Backend(jobs=2))
    out = compute.filter_run("coins", lambda: coins, recipe)
    assert out.report.backend == "whole" and out.report.blocks == 1
    assert out.report.summary().startswith("Gaussian: whole array, ")
    assert np.array_equal(out.filtered, R.filter_stage(coins, recipe))
    assert compute.filter_run("coins", _never, recipe).cached


def test_an_unreachable_scheduler_is_reported_and_the_stage_runs_locally(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    image = data.camera()
    recipe = _recipe(GAUSSIAN)
    backend = P.Backend(jobs=2, dask_address=address, connect_timeout=1.0, min_pixels=0)
    with backend:
        out = Compute(tmp_path, backend=backend).filter_run("camera", lambda: image, recipe)
    assert out.report.backend == "threads" and out.report.blocks > 1
    assert "could not be reached" in out.report.message
    assert out.report.summary().endswith("ran locally)")
    assert backend.message == out.report.message
    assert np.array_equal(out.filtered, R.filter_stage(image, recipe))


def test_exclusive_makes_a_second_holder_wait_and_leaves_no_file(tmp_path):
    import threading
    import time

    from pipeline.compute import exclusive
    from pipeline.errors import Cancelled

    path = tmp_path / "work"
    order = []
    started = threading.Event()

    def second():
        started.set()
        with exclusive(path):
            order.append("second")

    with exclusive(path):
        thread = threading.Thread(target=second)
        thread.start()
        assert started.wait(10)
        time.sleep(0.2)  # the second is waiting
        order.append("first")
        # a waiter asked to stop while waiting gives up
        with pytest.raises(Cancelled):
            with exclusive(path, should_stop=lambda: True):
                pass
    thread.join(10)
    assert order == ["first", "second"]
    assert not path.exists()  # removed by its last holder


def _slowed(monkeypatch, owner, name, seconds=0.5):
    """Make ``owner.name`` wait `seconds` before it runs; the list of its calls."""
    import time

    calls = []
    real = getattr(owner, name)

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    return calls


def _at_once(*fns):
    """The results of `fns`, each called in its own thread, all started together."""
    import threading

    results = {}

    def run(i):
        results[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return [results[i] for i in sorted(results)]


def test_one_solve_of_a_segmentation_at_a_time(tmp_path, monkeypatch):
    """Two requests for the same segmentation at once (a drag's release on the pair being
    solved, a key press on the pair being prepared): one solve, the other reads its result."""
    from pipeline import compute as C

    image = data.coins()
    recipe = R.validate(R.default_recipe(80, 150))
    compute = Compute(tmp_path / "cache")
    calls = _slowed(monkeypatch, C.randomwalker, "solve")
    results = _at_once(*[lambda: compute.run("img", lambda: image, recipe)] * 2)
    assert len(results) == 2 and len(calls) == 1
    assert np.array_equal(results[0].labels, results[1].labels)
    assert not list((tmp_path / "cache" / "inflight").iterdir())


def test_one_computation_of_a_filter_stage_at_a_time(tmp_path, monkeypatch):
    """A new image's filter stage is wanted at once by several callbacks (filter panel,
    histogram, thresholds, the exact job): computed once, the others read it."""
    from pipeline import compute as C

    image = data.coins()
    recipe = R.validate(R.default_recipe(80, 150))
    recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.0}}
    recipe = R.validate(recipe)
    compute = Compute(tmp_path / "cache")
    calls = _slowed(monkeypatch, C.parallel, "filter_stage")
    results = _at_once(lambda: compute.filtered("img", lambda: image, recipe),
                       lambda: compute.filter_run("img", lambda: image, recipe).filtered,
                       lambda: compute.histogram("img", lambda: image, recipe)[0])
    assert len(results) == 3 and len(calls) == 1
    assert np.array_equal(results[0], results[1])
    assert not list((tmp_path / "cache" / "inflight").iterdir())
