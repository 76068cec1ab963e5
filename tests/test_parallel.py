"""pipeline.parallel: blockwise steps identical to whole ones, items in parallel, scale-out."""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np
import pytest
from skimage import data

from pipeline import parallel as P
from pipeline import recipe as R
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.filters import FILTERS, apply_filter
from pipeline.postprocess import POSTPROCESS

LOCAL_STEPS = {"gaussian", "median", "bilateral", "nl_means", "closing", "opening"}
NOT_LOCAL = {"none", "tv", "fill_holes", "label", "remove_small_objects", "clear_border",
             "relabel_sequential", "split_touching"}

# Parameters with a reach of several pixels (the blocks below are smaller than some of them)
PARAMS = {
    "gaussian": [{"sigma": 2.3}, {"sigma": 0.4}],
    "median": [{"radius": 3}],
    "bilateral": [{"sigma_color": 15.0, "sigma_spatial": 1.5}],
    "nl_means": [{"h": 25.0, "patch_size": 3, "patch_distance": 2},
                 {"h": 25.0, "patch_size": 4, "patch_distance": 1}],
    "closing": [{"radius": 2}],
    "opening": [{"radius": 2}, {"radius": 1}],
}
SHAPES = {2: (61, 47), 3: (13, 22, 19)}
# chunks that do not divide the shapes; the first are smaller than every reach above (>= 2)
CHUNKS = {2: [(2, 3), (7, 9), (16, 100), (40, 5)], 3: [(2, 3, 3), (4, 9, 7), (13, 6, 100)]}

SEQ = P.Backend(jobs=1)
THREADS = P.Backend(jobs=2)


def _registry():
    return {**FILTERS, **POSTPROCESS}


def _input(key, ndim, seed=0):
    """A test array for a step: integer-valued float64 for filters (nl_means is exact on
    those), a blobby mask for morphology; bright and constant regions for the bilateral."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[ndim]
    if key in ("closing", "opening"):
        smooth = FILTERS["gaussian"].apply(rng.random(shape), sigma=1.5)
        return smooth > np.median(smooth)
    image = np.round(FILTERS["gaussian"].apply(rng.random(shape) * 200, sigma=1.0) +
                     rng.normal(0, 12, shape)).clip(0, 255)
    image[(slice(0, 5),) * ndim] = 255.0  # the global maximum in one corner only
    image[(slice(-6, None),) * ndim] = 40.0  # a constant block
    return image


def test_every_step_says_whether_it_is_local():
    steps = _registry()
    assert {k for k, s in steps.items() if s.local} == LOCAL_STEPS
    assert {k for k, s in steps.items() if not s.local} == NOT_LOCAL


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("key", sorted(LOCAL_STEPS))
def test_blocks_are_identical_to_the_whole_step(key, ndim):
    step = _registry()[key]
    array = _input(key, ndim)
    for params in PARAMS[key]:
        checked = step.check(params)
        whole = step.apply(array, **checked)
        reach = step.reach_per_axis(checked, ndim)
        for chunks in CHUNKS[ndim]:
            for backend in (SEQ, THREADS):
                result, report = P.apply_step(step, params, array, backend=backend,
                                              chunks=chunks)
                assert report.backend in ("sequential", "threads"), report
                assert report.done == report.blocks
                assert report.blocks > 1 or chunks != CHUNKS[ndim][0]
                assert result.dtype == whole.dtype
                assert np.array_equal(result, whole), (key, params, chunks, report)
        # the first chunks are smaller than the overlap: a block reads its neighbours' cores
        if params is PARAMS[key][0]:
            assert all(c <= r for c, r in zip(CHUNKS[ndim][0], reach) if r)


def test_bilateral_blocks_see_the_global_maximum():
    """Without the maximum and minimum the colour table differs: most pixels would change."""
    step = FILTERS["bilateral"]
    image = _input("bilateral", 2)
    params = step.check({"sigma_color": 15.0})
    naive, _ = P.apply_blocks(lambda block, edges: step.apply(block, **params), image,
                              step.reach_per_axis(params, 2), (9, 9), backend=SEQ)
    whole = step.apply(image, **params)
    assert not np.array_equal(naive, whole)
    result, _ = P.apply_step(step, params, image, backend=SEQ, chunks=(9, 9))
    assert np.array_equal(result, whole)
    # a constant image comes back unchanged, blockwise as well
    flat = np.full((30, 20), 7.0)
    assert np.array_equal(P.apply_step(step, params, flat, backend=SEQ, chunks=7)[0], flat)


def test_bilateral_3d_cuts_planes_only():
    step = FILTERS["bilateral"]
    assert step.reach_per_axis(step.check({}), 3) == (0, None, None)
    _, report = P.apply_step(step, {}, _input("bilateral", 3), backend=SEQ, chunks=(4, 5, 5))
    assert report.chunks == (4, 22, 19) and report.blocks == 4


def test_non_local_means_on_fractional_values_runs_whole():
    step = FILTERS["nl_means"]
    rng = np.random.default_rng(3)
    volume = rng.random((12, 14, 13)) * 50
    params = {"h": 20.0, "patch_size": 3, "patch_distance": 3}
    result, report = P.apply_step(step, params, volume, backend=SEQ, chunks=5)
    assert report.backend == "whole"
    assert "integer-valued" in report.message and "ran whole" in report.message
    assert np.array_equal(result, step.apply(volume, **step.check(params)))
    # blocks of fractional data differ in the last bits (why it runs whole)
    checked = step.check(params)
    differ = []
    for shape in ((20, 21, 19), (24, 25, 23)):
        other = np.random.default_rng(1).random(shape) * 100
        naive, _ = P.apply_blocks(lambda b, e: step.apply(b, **checked), other,
                                  step.reach_per_axis(checked, 3), 8, backend=THREADS)
        differ.append(not np.array_equal(naive, step.apply(other, **checked)))
    assert any(differ)
    # integer-valued but with sums beyond 2^53: whole too
    huge = np.round(rng.random((40, 40)) * 1e7)
    _, report = P.apply_step(step, params, huge, backend=SEQ, chunks=10)
    assert report.backend == "whole" and "2^53" in report.message


@pytest.mark.parametrize("key", sorted(NOT_LOCAL))
def test_non_local_steps_run_whole(key):
    step = _registry()[key]
    if step.stage == "filter":
        array = _input("gaussian", 2)
        expected = step.apply(array, **step.check({}))
    else:
        mask = _input("closing", 2)
        array = mask if key in ("fill_holes", "label") else \
            POSTPROCESS["label"].apply(mask, connectivity=1)
        expected = step.apply(array, **step.check({}))
    result, report = P.apply_step(key, None, array, backend=THREADS, chunks=8)
    assert report.backend == "whole" and report.blocks == 1
    assert report.message == "not local: runs whole"
    assert np.array_equal(result, expected) and result.dtype == expected.dtype


def test_checks_of_the_whole_array_still_apply():
    negative = _input("bilateral", 2) - 100
    with pytest.raises(InputError, match="Bilateral: the image has negative values"):
        P.apply_step("bilateral", {}, negative, backend=SEQ, chunks=10)
    mask = np.zeros((9, 200), bool)  # a radius-10 footprint fits the mask, not a block
    result, _ = P.apply_step("closing", {"radius": 10}, mask, backend=SEQ, chunks=(9, 5))
    assert np.array_equal(result, POSTPROCESS["closing"].apply(mask, radius=10))
    with pytest.raises(InputError, match="Closing: radius 25 is larger than the image"):
        P.apply_step("closing", {"radius": 25}, np.zeros((9, 40), bool), backend=SEQ,
                     chunks=4)
    with pytest.raises(InputError, match="NaN"):
        P.apply_step("gaussian", {}, np.full((20, 20), np.nan), backend=SEQ, chunks=4)
    with pytest.raises(InputError, match="float64"):
        P.apply_step("gaussian", {}, np.zeros((20, 20), np.uint8), backend=SEQ)
    with pytest.raises(InputError, match="Gaussian: sigma must be at least"):
        P.apply_step("gaussian", {"sigma": -1}, np.zeros((20, 20)), backend=SEQ)


def test_chunking_only_when_it_pays():
    coins = data.coins().astype(np.float64)
    _, report = P.apply_step("gaussian", {"sigma": 2}, coins, backend=THREADS)
    assert report.backend == "whole" and report.message == ""
    big = np.zeros((1024, 1024))
    _, report = P.apply_step("gaussian", {"sigma": 2}, big, backend=THREADS)
    assert report.backend == "threads" and report.blocks == 4 and report.workers == 2
    assert report.chunks == (256, 1024)
    _, report = P.apply_step("gaussian", {"sigma": 2}, big, backend=SEQ)
    assert report.backend == "whole"
    small = P.Backend(jobs=2, min_pixels=0)
    _, report = P.apply_step("median", {}, coins, backend=small)
    assert report.blocks == 4
    assert report.summary().startswith("Median: 4 blocks on 2 workers (threads), ")


def test_plan_blocks_tile_the_array():
    shape, reach = (23, 17, 9), (3, 0, None)
    blocks = P.plan_blocks(shape, reach, (5, 4, 2))
    covered = np.zeros(shape, int)
    for b in blocks:
        covered[b.core] += 1
        for axis, (o, c, i, edges) in enumerate(zip(b.outer, b.core, b.inner, b.edges)):
            r = reach[axis] or 0
            assert o.start == max(0, c.start - r) and o.stop == min(shape[axis], c.stop + r)
            assert (i.start, i.stop) == (c.start - o.start, c.stop - o.start)
            assert edges == (o.start == 0, o.stop == shape[axis])
    assert (covered == 1).all()
    assert len(blocks) == 5 * 5 * 1  # axis 2 (reach None) is not cut
    with pytest.raises(InputError, match="chunks must hold whole numbers"):
        P.plan_blocks(shape, reach, (0, 4, 2))
    with pytest.raises(InputError, match="chunks must have one size per axis"):
        P.plan_blocks(shape, reach, (4, 4))
    with pytest.raises(InputError, match="reach must"):
        P.plan_blocks(shape, (1, -1, 0), 4)


def _padded(shape, reach, chunks):
    return np.prod([n + 2 * (r or 0) * (-(-n // c) - 1) for n, r, c in zip(shape, reach, chunks)])


def test_auto_chunks():
    # 2 blocks per worker (4 slabs), then cut further for the cache while the overlap adds
    # at most MAX_OVERLAP of the volume: 26 slabs of 158 rows (was 4 of 1024: 1.6x, now 2x+)
    assert P.auto_chunks((4096, 4096), 8, 2, 8) == (158, 4096)
    assert _padded((4096, 4096), (8, 8), (158, 4096)) <= (1 + P.MAX_OVERLAP) * 4096**2
    assert _padded((4096, 4096), (8, 8), (157, 4096)) > (1 + P.MAX_OVERLAP) * 4096**2
    # a small reach: slabs of cache size (4 MiB with their overlap)
    chunks = P.auto_chunks((4096, 4096), 3, 2, 8)
    assert chunks[1] == 4096 and (chunks[0] + 6) * 4096 * 8 <= P.CACHE_BLOCK_BYTES
    # without the cache cuts: the blocks the workers need only
    assert P.auto_chunks((4096, 4096), 8, 2, 8, cache_block_bytes=P.MAX_BLOCK_BYTES) == \
        (1024, 4096)
    # a volume with a long reach: the workers' blocks already overlap more than
    # MAX_OVERLAP, no further cut
    assert P.auto_chunks((256, 256, 256), 8, 2, 8) == (64, 256, 256)
    assert P.auto_chunks((1024, 1024), 8, 2, 8) == (256, 1024)  # 2 MiB blocks: cache size
    with pytest.raises(InputError, match="cache_block_bytes must be a whole number"):
        P.auto_chunks((64, 64), 2, 2, 8, cache_block_bytes=0)
    with pytest.raises(InputError, match="max_overlap must be a fraction"):
        P.auto_chunks((64, 64), 2, 2, 8, max_overlap=-0.1)
    with pytest.raises(InputError, match="workers must be a whole number"):
        P.auto_chunks((64, 64), 2, 0, 8)
    # blocks of at most MAX_BLOCK_BYTES: 16 slabs of a 1 GB volume on 2 workers
    chunks = P.auto_chunks((512, 512, 512), 3, 2, 8)
    assert np.prod(chunks) * 8 <= P.MAX_BLOCK_BYTES
    assert P.auto_chunks((40, 40), 30, 2, 8) == (40, 40)  # too thin to cut
    assert P.auto_chunks((100, 30), (None, 2), 4, 8)[0] == 100


def test_cpu_limit_and_jobs(tmp_path, monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert P.cpu_limit(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert P.cpu_limit(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert P.cpu_limit(tmp_path) == min(affinity, 2)
    assert P.cpu_limit(tmp_path / "nowhere") == affinity
    assert P.default_jobs({"PIPEX_JOBS": "3"}) == 3
    assert P.default_jobs({}) == P.cpu_limit()
    for bad in ("0", "two", "1.5"):
        with pytest.raises(InputError, match="PIPEX_JOBS"):
            P.default_jobs({"PIPEX_JOBS": bad})
    monkeypatch.setenv("PIPEX_JOBS", "5")
    assert P.Backend().jobs == 5
    cfg = Config.from_env({"PIPEX_JOBS": "4", "PIPEX_DASK_ADDRESS": " tcp://10.1.2.3:8786 "})
    assert (cfg.jobs, cfg.dask_address) == (4, "tcp://10.1.2.3:8786")
    assert (Config.from_env({}).jobs, Config.from_env({}).dask_address) == (None, None)
    with pytest.raises(InputError, match="PIPEX_JOBS must be at least 1"):
        Config.from_env({"PIPEX_JOBS": "-2"})
    backend = P.Backend.from_config(cfg)
    assert (backend.jobs, backend.dask_address) == (4, "tcp://10.1.2.3:8786")


def test_backend_and_argument_checks():
    with pytest.raises(InputError, match="jobs must be at least 1"):
        P.Backend(jobs=0)
    with pytest.raises(InputError, match="prefer must be one of threads, processes"):
        P.Backend(prefer="gpu")
    with pytest.raises(InputError, match="dask_address"):
        P.Backend(dask_address="  ")
    with pytest.raises(InputError, match="backend must be"):
        P.apply_step("gaussian", {}, np.zeros((9, 9)), backend="threads")
    with pytest.raises(InputError, match="step: unknown step 'blur'"):
        P.apply_step("blur", {}, np.zeros((9, 9)))
    with pytest.raises(InputError, match="Random walker is a segment step"):
        from pipeline.segmentation import SEGMENTERS
        P.apply_step(SEGMENTERS["random_walker"], {}, np.zeros((9, 9)))
    with pytest.raises(InputError, match="progress must be callable"):
        P.apply_step("gaussian", {}, np.zeros((9, 9)), backend=SEQ, progress=3)
    with pytest.raises(InputError, match="array must be a numpy array"):
        P.apply_step("closing", {}, [[True]], backend=SEQ)
    with pytest.raises(InputError, match="items must be a sequence"):
        P.map_items(abs, 3, backend=SEQ)
    with pytest.raises(InputError, match="on_error must be"):
        P.map_items(abs, [1], backend=SEQ, on_error="ignore")


def test_progress_and_cancel_of_a_step():
    seen = []
    image = _input("median", 2)
    P.apply_step("median", {}, image, backend=THREADS, chunks=10,
                 progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 35) and seen[-1] == (35, 35)
    assert [d for d, _ in seen] == list(range(36))
    finished = []
    with pytest.raises(P.Cancelled, match="Median: cancelled after 3 of 35 blocks"):
        P.apply_step("median", {}, image, backend=SEQ, chunks=10,
                     progress=lambda done, total: finished.append(done),
                     should_stop=lambda: finished[-1] >= 3)


def _slow_square(x):
    time.sleep(0.02)
    return x * x


def _fails_on_three(x):
    if x == 3:
        raise InputError("three is not welcome")
    if x == 4:
        raise ZeroDivisionError("division by zero")
    return -x


def test_map_items_order_progress_errors_and_cancel():
    seen = []
    results, report = P.map_items(_slow_square, range(10), backend=THREADS,
                                  progress=lambda d, t: seen.append((d, t)))
    assert results == [x * x for x in range(10)]
    assert seen[0] == (0, 10) and seen[-1] == (10, 10) and len(seen) == 11
    assert (report.backend, report.blocks, report.workers, report.done) == ("threads", 10, 2, 10)
    assert report.pids == (os.getpid(),)
    assert report.summary().startswith("batch: 10 items on 2 workers (threads), ")

    results, report = P.map_items(_fails_on_three, range(6), backend=THREADS,
                                  on_error="return")
    assert results[:3] == [0, -1, -2] and results[5] == -5
    assert results[3] == P.Failed("three is not welcome")
    assert results[4] == P.Failed("ZeroDivisionError: division by zero")
    assert report.failed == 2 and report.done == 6
    with pytest.raises(ZeroDivisionError):
        P.map_items(_fails_on_three, [4], backend=SEQ)

    done = []
    stop = threading.Event()

    def progress(d, t):
        done.append(d)
        if d == 3:
            stop.set()

    results, report = P.map_items(_slow_square, range(40), backend=THREADS, progress=progress,
                                  should_stop=stop.is_set)
    assert report.cancelled and report.done == 3
    assert sum(not isinstance(r, P.Failed) for r in results) == 3
    assert results.count(P.Failed("cancelled", kind="cancelled")) == 37
    assert "cancelled after 3" in report.summary()
    assert P.map_items(abs, [], backend=THREADS)[0] == []


def _blas_threads(_):
    from threadpoolctl import threadpool_info

    return {info["internal_api"]: info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas"}, os.getpid()


@pytest.mark.parametrize("prefer", ["threads", "processes"])
def test_workers_run_blas_on_one_thread(prefer):
    results, report = P.map_items(_blas_threads, range(4), backend=P.Backend(2, prefer=prefer))
    assert report.backend == prefer
    for blas, _ in results:
        assert all(n == 1 for n in blas.values()), blas
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) if prefer == "threads" else (os.getpid() not in pids)


def test_processes_give_the_same_blocks():
    """loky workers read the blocks from a read-only memory map of the input."""
    image = np.round(np.random.default_rng(5).random((1100, 1000)) * 255)
    backend = P.Backend(jobs=2, prefer="processes")
    for key, params in (("gaussian", {"sigma": 2.0}), ("bilateral", {"sigma_color": 30.0})):
        result, report = P.apply_step(key, params, image, backend=backend)
        assert report.backend == "processes" and os.getpid() not in report.pids
        assert np.array_equal(result, FILTERS[key].apply(image, **FILTERS[key].check(params)))


def test_stages_are_the_recipes():
    coins = data.coins()
    recipe = R.default_recipe(83, 131)
    recipe["filter"] = {"name": "median", "params": {"radius": 2}}
    recipe["postprocess"] = [{"name": "closing", "params": {"radius": 2}},
                             {"name": "fill_holes"}, {"name": "label"},
                             {"name": "remove_small_objects", "params": {"min_size": 20}}]
    recipe = R.validate(recipe)
    backend = P.Backend(jobs=2, min_pixels=0)
    filtered, reports = P.filter_stage(coins, recipe, backend=backend)
    assert np.array_equal(filtered, R.filter_stage(coins, recipe))
    assert reports[0].blocks == 4
    mask = filtered > 100
    labels, reports = P.postprocess_stage(mask, recipe, backend=backend)
    expected = R.postprocess_stage(mask, recipe)
    assert labels.dtype == np.int32 and np.array_equal(labels, expected)
    assert [r.backend for r in reports] == ["threads", "whole", "whole", "whole"]


# --------------------------------------------------------------------------------------------
# dask.distributed: a real scheduler and two worker processes on 127.0.0.1


def test_dask_blocks_are_identical_and_ran_on_the_workers(cluster):
    local, client = cluster
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    with P.Backend(jobs=1, dask_address=local.scheduler_address) as backend:
        for key, ndim in (("gaussian", 2), ("nl_means", 3), ("bilateral", 2), ("closing", 3)):
            step = _registry()[key]
            array = _input(key, ndim)
            params = PARAMS[key][0]
            result, report = P.apply_step(key, params, array, backend=backend,
                                          chunks=CHUNKS[ndim][0])
            assert report.backend == "dask" and report.workers == 2, report
            assert set(report.pids) <= worker_pids and report.message == ""
            whole = step.apply(array, **step.check(params))
            assert result.dtype == whole.dtype and np.array_equal(result, whole), key
        # a large array is cut automatically for the cluster's workers
        _, report = P.apply_step("gaussian", {}, np.zeros((1024, 1100)), backend=backend)
        assert report.backend == "dask" and report.blocks == 4
        assert set(report.pids) == worker_pids  # both workers took part

        results, report = P.map_items(_fails_on_three, range(6), backend=backend,
                                      on_error="return")
        assert results[3] == P.Failed("three is not welcome")
        assert results[5] == -5 and report.backend == "dask"
        assert set(report.pids) <= worker_pids


def test_unreachable_scheduler_runs_locally_with_a_message(caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with P.Backend(jobs=2, dask_address=address, connect_timeout=1.5) as backend:
        assert backend.status()["dask"] == {"address": address, "state": "not used yet"}
        image = _input("gaussian", 2)
        result, report = P.apply_step("gaussian", {"sigma": 2}, image, backend=backend,
                                      chunks=20)
        assert report.backend == "threads"
        state = backend.status()["dask"]
        assert state["state"] == "unreachable" and "could not be reached" in state["reason"]
        assert report.message.startswith(f"dask scheduler {address} could not be reached")
        assert report.message.endswith("ran locally")
        assert np.array_equal(result, FILTERS["gaussian"].apply(image, sigma=2.0))
        assert any("could not be reached" in r.getMessage() for r in caplog.records)
        # not tried again at once (RETRY_AFTER): the next call does not connect
        tries = []
        original = backend._fail
        backend._fail = lambda reason: (tries.append(reason), original(reason))
        _, report = P.map_items(abs, [-1, -2], backend=backend)
        assert tries == [] and "could not be reached" in report.message


def test_map_items_consumes_a_generator_lazily_and_streams_results():
    read = []

    def items():
        for i in range(12):
            read.append(i)
            yield i

    streamed = []

    def on_result(index, value):
        streamed.append((index, value, len(read)))

    results, report = P.map_items(_slow_square, items(), total=12, backend=THREADS,
                                  on_result=on_result)
    assert results == [i * i for i in range(12)] and report.done == 12
    assert sorted((i, v) for i, v, _ in streamed) == [(i, i * i) for i in range(12)]
    # items were read a few ahead of the workers, not all at once
    assert streamed[0][2] < 12
    with pytest.raises(InputError, match="total must be a whole number"):
        P.map_items(abs, iter([1]), total=-1)


def test_shared_arrays_do_not_parse_python(monkeypatch):
    """loky workers get memory maps of .npy files; np.load would parse their headers with
    ast.literal_eval, which CPython 3.11 does not allow from several threads at once (the
    store's SystemError): the backend reads them with pipeline.npyfile.map_npy, as the store
    does (tests/test_store.py)."""
    import ast

    image = np.round(np.random.default_rng(3).random((300, 200)) * 255)
    whole = FILTERS["gaussian"].apply(image, sigma=1.5)

    def refuse(*_a, **_k):
        raise AssertionError("ast.literal_eval called")

    monkeypatch.setattr(ast, "literal_eval", refuse)
    result, report = P.apply_step("gaussian", {"sigma": 1.5}, image, chunks=(70, 90),
                                  backend=P.Backend(jobs=2, prefer="processes"))
    assert report.backend == "processes" and report.blocks == 15
    assert np.array_equal(result, whole) and result.dtype == whole.dtype


def test_one_task_per_item(monkeypatch):
    """joblib's automatic batching grouped short items (coins images of a batch) and left a
    worker idle at the end: every item and block is a task of its own."""
    seen = []
    real = P.Parallel

    def recording(*args, **kwargs):
        seen.append(kwargs.get("batch_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "Parallel", recording)
    P.map_items(abs, [-1, -2, -3], backend=THREADS)
    P.apply_step("gaussian", {"sigma": 1}, np.zeros((40, 40)), chunks=20, backend=THREADS)
    assert seen == [1, 1]


def test_stop_local_workers():
    backend = P.Backend(jobs=2, prefer="processes")
    _, first = P.map_items(abs, [-1, -2, -3, -4], backend=backend)
    assert len(first.pids) >= 1 and os.getpid() not in first.pids
    P.stop_local_workers()
    for pid in first.pids:  # killed (reaped by loky): gone within a moment
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"worker {pid} still runs")
    results, second = P.map_items(abs, [-1, -2, -3], backend=backend)  # new workers
    assert results == [1, 2, 3] and not set(second.pids) & set(first.pids)
    P.stop_local_workers()  # nothing to stop: no error


def test_cache_sized_blocks_are_identical_to_the_whole_step():
    """The automatic chunking of a large array (many slabs, cut for the cache)."""
    image = np.round(np.random.default_rng(8).random((2000, 1400)) * 255)
    for key, params in (("gaussian", {"sigma": 2.0}), ("median", {"radius": 2})):
        step = FILTERS[key]
        result, report = P.apply_step(key, params, image, backend=THREADS)
        assert report.backend == "threads" and report.blocks > 4, report
        assert np.array_equal(result, step.apply(image, **step.check(params)))


def test_cache_sized_cuts_leave_a_count_of_blocks_the_workers_share_evenly():
    """5 slabs of a 256³ float32 median on 2 workers ran 3 + 2 (1.55×): the cuts made for
    the cache only are taken back to a multiple of the workers, never below the blocks every
    worker needs nor above the largest block."""
    import math

    for shape, reach, workers, itemsize in (((256, 256, 256), 3, 2, 4), ((4096, 4096), 3, 2, 1),
                                            ((2048, 2048), 6, 2, 8), ((4096, 4096), 8, 2, 8),
                                            ((256, 256, 256), 2, 3, 1)):
        chunks = P.auto_chunks(shape, reach, workers, itemsize=itemsize)
        blocks = math.prod(-(-n // c) for n, c in zip(shape, chunks))
        assert blocks % workers == 0 and blocks >= P.BLOCKS_PER_WORKER * workers, \
            (shape, chunks, blocks)
    assert P.auto_chunks((256, 256, 256), 3, 2, itemsize=4) == (64, 256, 256)  # was 52: 5 slabs
    # a block size limit still wins over an even count
    chunks = P.auto_chunks((1000, 64), 2, 2, itemsize=8, max_block_bytes=64 * 200 * 8)
    assert -(-1000 // chunks[0]) >= 5 and chunks[0] * 64 * 8 <= 64 * 200 * 8 + 64 * 4 * 8


# --------------------------------------------------------------------------------------------
# start="fork": items on workers forked from this process (the command line's batch)

_FORK_SCRIPT = r'''
import json, os, sys, threading, time

from pipeline import parallel as P
import pipeline.batch  # what the items need, imported once, here

P.set_in_the_parent = "yes"  # after the imports: a new interpreter would not have it


def item(x):
    from threadpoolctl import threadpool_info

    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return {"pid": os.getpid(), "ppid": os.getppid(), "x": -x, "blas": blas,
            "seen": getattr(P, "set_in_the_parent", None),
            "batch": "pipeline.batch" in sys.modules}


def slow(x):
    time.sleep(0.3)
    return x


def boom(x):
    raise ValueError(f"item {x} is bad")


def gone(pids):
    for _ in range(100):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


if __name__ == "__main__":
    fork = P.Backend(jobs=2, prefer="processes", start="fork")
    out = {"pid": os.getpid(), "threads": threading.active_count()}
    steps = []
    results, report = P.map_items(item, range(6), backend=fork,
                                  progress=lambda d, n: steps.append([d, n]))
    out.update(results=results, kind=report.backend, workers=report.workers,
               progress=steps[-1], gone=gone(report.pids))
    n = []
    results, report = P.map_items(slow, range(12), backend=fork,
                                  progress=lambda d, t: n.append(d),
                                  should_stop=lambda: n[-1] >= 2)
    out.update(cancelled=report.cancelled, done=report.done,
               left=sum(isinstance(r, P.Failed) and r.kind == "cancelled" for r in results),
               cancel_gone=gone(report.pids))
    results, report = P.map_items(boom, [1, 2], backend=fork, on_error="return")
    out["errors"] = [r.error for r in results]
    try:
        P.map_items(boom, [3], backend=fork)
    except ValueError as exc:
        out["raised"] = str(exc)
    # another thread runs: nothing is forked (it may hold a lock), new interpreters instead
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    results, report = P.map_items(item, range(4), backend=fork)
    stop.set()
    thread.join()
    out["with_a_thread"] = [r["seen"] for r in results]
    out["with_a_thread_kind"] = report.backend
    P.stop_local_workers()
    print(json.dumps(out))
'''


def test_forked_workers_import_nothing_again(tmp_path):
    """``start="fork"``: the items run in copies of this process, made after its imports
    (each new interpreter of loky paid them again, ~0.5 s of CPU); BLAS at one thread in
    them; killed at the end of the call, also a cancelled one; errors as with loky. When
    another thread runs, loky's new interpreters run the items instead. In a new process: the
    test process runs threads (loky's, dask's) that would make it fall back."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "fork_items.py"
    script.write_text(_FORK_SCRIPT, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["threads"] == 1
    results = out["results"]
    assert [r["x"] for r in results] == [0, -1, -2, -3, -4, -5]
    assert out["kind"] == "processes" and out["workers"] == 2 and out["progress"] == [6, 6]
    for r in results:
        assert r["pid"] != out["pid"] and r["ppid"] == out["pid"]  # its children
        assert r["seen"] == "yes" and r["batch"]  # copies of it: nothing imported again
        assert all(n == 1 for n in r["blas"]), r["blas"]
    assert out["gone"], "the forked workers outlived the call"
    assert out["cancelled"] and out["done"] < 12 and out["left"] == 12 - out["done"]
    assert out["cancel_gone"], "the forked workers outlived the cancelled call"
    assert out["errors"] == ["ValueError: item 1 is bad", "ValueError: item 2 is bad"]
    assert out["raised"] == "item 3 is bad"
    assert out["with_a_thread"] == [None] * 4 and out["with_a_thread_kind"] == "processes"


def test_start_is_checked():
    with pytest.raises(InputError, match="start must be one of loky, fork"):
        P.Backend(2, prefer="processes", start="spawn")
    assert P.Backend(2, prefer="processes").start == "loky"
    assert "start='fork'" in repr(P.Backend(2, prefer="processes", start="fork"))
    # blocks never run on forked workers (their memory maps need loky's reducers)
    image = np.round(np.random.default_rng(6).random((300, 280)) * 255)
    result, report = P.apply_step("gaussian", {"sigma": 2.0}, image, chunks=100,
                                  backend=P.Backend(2, prefer="processes", start="fork"))
    assert report.backend == "processes" and report.blocks == 9
    assert np.array_equal(result, FILTERS["gaussian"].apply(image, sigma=2.0))


# --------------------------------------------------------------------------------------------
# The Gaussian as its separable 1-D passes: blocks whole along the axis each pass filters, no
# overlap, bit-identical to the whole call

PROCESSES = P.Backend(jobs=2, prefer="processes")
ODD_SHAPES = {2: (37, 53), 3: (9, 14, 11)}
# chunks that do not divide the shapes, blocks of one plane (or row), blocks thinner than
# the kernel's reach
PASS_CHUNKS = {2: [(1, 1), (5, 7), (36, 2), 8], 3: [(1, 1, 1), (2, 5, 3), (4, 13, 10), 8]}


@pytest.fixture
def passes_in_2d(monkeypatch):
    """The passes in 2D as well (by default images run over overlapping blocks, as fast
    there): the same machinery, tested on images too."""
    monkeypatch.setattr(P, "SEPARABLE_NDIM", (2, 3))


def _raw(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind == "f":
        return (rng.normal(0, 1, shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    image = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    image.flat[:3] = (info.min, info.max, info.max - 1)  # beyond 2^53 for 64-bit integers
    return image


def _check_rounds(report, shape):
    """Each round's blocks are whole along the axes its passes filter: no overlap."""
    assert report.passes, report
    assert [axes for axes, _, _ in report.passes] == ([(0,), (1, 2)] if len(shape) == 3
                                                      else [(0,), (1,)])
    assert report.blocks == sum(n for _, n, _ in report.passes) == report.done
    for axes, _, chunks in report.passes:
        assert all(chunks[a] == shape[a] for a in axes), report.passes


@pytest.mark.parametrize("ndim", [2, 3])
def test_separable_gaussian_is_identical_to_the_whole_call(ndim, passes_in_2d):
    from skimage import filters

    shape = ODD_SHAPES[ndim]
    image = _raw(np.float64, shape) + 0.5
    for sigma in (0.4, 2.3, 7.0):  # 7: a reach (28) longer than the array
        whole = filters.gaussian(image, sigma=sigma, preserve_range=True)
        assert np.array_equal(whole, FILTERS["gaussian"].apply(image, sigma=sigma))
        for chunks in PASS_CHUNKS[ndim]:
            for backend in (SEQ, THREADS):
                result, report = P.apply_step("gaussian", {"sigma": sigma}, image,
                                              backend=backend, chunks=chunks)
                assert result.dtype == whole.dtype == np.float64
                assert np.array_equal(result, whole), (sigma, chunks, report)
                _check_rounds(report, shape)
                assert report.reach == (math.ceil(4 * sigma),) * ndim  # as declared
    result, report = P.apply_step("gaussian", {"sigma": 2.3}, image, backend=PROCESSES,
                                  chunks=PASS_CHUNKS[ndim][1])
    assert report.backend == "processes" and os.getpid() not in report.pids
    assert np.array_equal(result, filters.gaussian(image, sigma=2.3, preserve_range=True))
    _check_rounds(report, shape)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64,
                                   np.int64, np.uint64, np.bool_])
def test_separable_filter_stage_reads_the_image_as_it_is(dtype, ndim, passes_in_2d):
    """The first pass reads uint8, float32, ... directly into the float64 output: the same
    result as converting first (``pipeline.recipe.filter_stage``), with no converted copy."""
    from skimage import filters

    image = _raw(dtype, ODD_SHAPES[ndim], seed=ndim)
    recipe = R.default_recipe(1, 2)
    recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.7}}
    recipe = R.validate(recipe)
    expected = R.filter_stage(image, recipe)
    assert np.array_equal(expected, filters.gaussian(image.astype(np.float64), sigma=1.7,
                                                     preserve_range=True))
    for backend in (P.Backend(jobs=2, min_pixels=0), P.Backend(jobs=1, min_pixels=0)):
        filtered, reports = P.filter_stage(image, recipe, backend=backend)
        assert filtered.dtype == np.float64 and np.array_equal(filtered, expected)
        if backend.jobs == 2:
            _check_rounds(reports[0], image.shape)
            assert reports[0].summary().startswith(
                f"Gaussian: {ndim} separable passes (axis 0 in ")
        else:
            assert reports[0].backend == "whole"


def test_filter_stage_converts_what_the_passes_cannot_read(passes_in_2d):
    """float16 (scipy.ndimage refuses it) and a non-native byte order are converted first
    (then the passes run on the float64 copy); a NaN is refused as before; another filter
    runs over overlapping blocks as before."""
    recipe = R.default_recipe(1, 2)
    recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.0}}
    recipe = R.validate(recipe)
    backend = P.Backend(jobs=2, min_pixels=0)
    for image in (_raw(np.float16, (30, 40)), _raw(np.uint16, (30, 40)).astype(">u2")):
        filtered, reports = P.filter_stage(image, recipe, backend=backend)
        assert np.array_equal(filtered, R.filter_stage(image, recipe))
        _check_rounds(reports[0], image.shape)
    nan = _raw(np.float32, (30, 40))
    nan[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        P.filter_stage(nan, recipe, backend=backend)
    recipe["filter"] = {"name": "median", "params": {"radius": 2}}
    filtered, reports = P.filter_stage(_raw(np.uint8, (30, 40)), recipe, backend=backend)
    assert not reports[0].passes and reports[0].blocks > 1


def test_cutting_along_the_filtered_axis_would_differ(monkeypatch):
    """The identity tests above catch a plan whose blocks are cut along the axis a pass
    filters (each block's edge would be taken for the array's)."""
    image = _raw(np.float64, ODD_SHAPES[3])
    whole = FILTERS["gaussian"].apply(image, sigma=1.5)
    good, _ = P.apply_step("gaussian", {"sigma": 1.5}, image, backend=SEQ, chunks=4)
    assert np.array_equal(good, whole)
    monkeypatch.setattr(P, "_pass_rounds", lambda axes, ndim: [((0,), (0, 1, 2)),
                                                               ((1, 2), (0, 1, 2))])
    wrong, report = P.apply_step("gaussian", {"sigma": 1.5}, image, backend=SEQ, chunks=4)
    assert report.passes and not np.array_equal(wrong, whole)


def test_separable_passes_progress_and_cancel():
    image = _raw(np.float64, ODD_SHAPES[3])
    seen = []
    _, report = P.apply_step("gaussian", {"sigma": 1.0}, image, backend=THREADS,
                             chunks=(3, 3, 3), progress=lambda d, t: seen.append((d, t)))
    total = report.blocks
    assert [n for _, n, _ in report.passes] == [20, 3] and total == 23
    assert seen == [(d, total) for d in range(total + 1)]  # one count over both rounds
    for stop_at, round_ in ((3, 1), (21, 2)):  # in the first round, in the second
        finished = []
        with pytest.raises(P.Cancelled, match=f"Gaussian: cancelled after {stop_at} of 23 "
                                              f"blocks \\(round {round_} of 2\\)"):
            P.apply_step("gaussian", {"sigma": 1.0}, image, backend=SEQ, chunks=(3, 3, 3),
                         progress=lambda done, total, f=finished: f.append(done),
                         should_stop=lambda f=finished, s=stop_at: f[-1] >= s)
    # asked to stop between the rounds: the second one starts nothing
    finished = []
    with pytest.raises(P.Cancelled, match="after 20 of 23 blocks \\(round 2 of 2\\)"):
        P.apply_step("gaussian", {"sigma": 1.0}, image, backend=THREADS, chunks=(3, 3, 3),
                     progress=lambda done, total: finished.append(done),
                     should_stop=lambda: finished[-1] >= 20)


def test_separable_passes_where_they_do_not_apply(monkeypatch):
    """Images (2D) run over overlapping blocks by default; a scipy whose passes would differ
    from the whole call (the probe) falls back to overlapping blocks; the reach and the
    summary of overlapping blocks are unchanged."""
    image = _input("gaussian", 2)
    whole = FILTERS["gaussian"].apply(image, sigma=2.0)
    result, report = P.apply_step("gaussian", {"sigma": 2.0}, image, backend=THREADS, chunks=9)
    assert P.SEPARABLE_NDIM == (3,) and not report.passes and report.blocks == 42
    assert np.array_equal(result, whole)
    assert report.summary().startswith("Gaussian: 42 blocks on 2 workers (threads), ")
    monkeypatch.setattr(P, "SEPARABLE_NDIM", (2, 3))
    step = FILTERS["gaussian"]
    assert step.reach_per_axis(step.check({"sigma": 2.0}), 3) == (8, 8, 8)  # unchanged
    try:
        P._PROBES[("gaussian", 2)] = False
        result, report = P.apply_step("gaussian", {"sigma": 2.0}, image, backend=THREADS,
                                      chunks=9)
        assert not report.passes and report.blocks == 42 and np.array_equal(result, whole)
    finally:
        del P._PROBES[("gaussian", 2)]
    assert P._separable_probe("gaussian", 2) and P._separable_probe("gaussian", 3)
    result, report = P.apply_step("gaussian", {"sigma": 2.0}, image, backend=THREADS, chunks=9)
    assert report.passes and np.array_equal(result, whole)
    assert P.RunReport("Gaussian", "threads", 12, 2, 0.5, passes=(
        ((0,), 8, (9, 9, 3)), ((1, 2), 4, (3, 9, 9)))).summary() == (
        "Gaussian: 3 separable passes (axis 0 in 8 blocks, axes 1-2 in 4) on 2 workers "
        "(threads), 0.50 s")


def test_pass_tiles_cover_a_block_once_and_keep_the_filtered_lines_whole(monkeypatch):
    """A block of a round is staged in tiles cut along the round's cut axes only (one index
    thick but along the last, cut to PASS_TILE_BYTES): disjoint, covering the block, whole
    along the axes its passes filter; none when a one-index tile is over
    PASS_TILE_MAX_BYTES."""
    core = (slice(0, 9), slice(3, 8), slice(2, 13))  # a first-round block: axis 0 whole
    # a one-index tile along axes 1-2 holds 9 values of 8 bytes: 72 bytes per index of axis 2
    for tile_bytes, width in ((1, 1), (4 * 72, 4), (10**9, 11)):
        monkeypatch.setattr(P, "PASS_TILE_BYTES", tile_bytes)
        tiles = P._pass_tiles(core, (1, 2), 8)
        seen = np.zeros((9, 14, 14), int)
        for tile in tiles:
            assert tile[0] == slice(0, 9) and tile[1].stop - tile[1].start == 1
            assert tile[2].stop - tile[2].start == min(width, 13 - tile[2].start)
            seen[tile] += 1
        assert (seen[core] == 1).all() and seen.sum() == 9 * 5 * 11
        assert len(tiles) == 5 * math.ceil(11 / width)
    monkeypatch.undo()
    slab = (slice(4, 7), slice(0, 14), slice(0, 13))  # a second-round block: axes 1-2 whole
    assert P._pass_tiles(slab, (0,), 8) == [slab]  # 3 planes of 1.4 kB: one tile
    monkeypatch.setattr(P, "PASS_TILE_BYTES", 14 * 13 * 8)
    assert P._pass_tiles(slab, (0,), 8) == [(slice(i, i + 1), slice(0, 14), slice(0, 13))
                                            for i in (4, 5, 6)]
    monkeypatch.undo()
    assert P._pass_tiles(core, (), 8) is None
    monkeypatch.setattr(P, "PASS_TILE_MAX_BYTES", 9 * 8 - 1)  # 9 values of 8 bytes: over
    assert P._pass_tiles(core, (1, 2), 8) is None
    assert P._pass_tiles(core, (1, 2), 1) is not None
    staged = P._staging((9, 1, 256), np.float64)
    assert staged.shape == (9, 1, 264) and staged.strides[0] == 33 * 64  # odd lines
    assert P._staging((3, 5), np.uint8).shape == (3, 64)
    assert P._staging((3, 200), np.float32).shape[-1] * 4 % 128 == 64


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("staging", ["one index", "default", "whole block", "in place"])
def test_separable_passes_staged_or_in_place_are_identical(ndim, staging, passes_in_2d,
                                                           monkeypatch):
    """The passes give the whole call's values whether a block is staged in the smallest
    tiles, in tiles of the default size, in one tile, or not staged at all (in place on the
    arrays: blocks too large to stage), from float64 and from the loaded dtypes, on odd
    shapes, with chunks that do not divide them and chunks smaller than the reach."""
    from skimage import filters

    if staging == "one index":
        monkeypatch.setattr(P, "PASS_TILE_BYTES", 1)
    elif staging == "whole block":
        monkeypatch.setattr(P, "PASS_TILE_BYTES", 2**40)
    elif staging == "in place":
        monkeypatch.setattr(P, "PASS_TILE_MAX_BYTES", 0)
    shape = ODD_SHAPES[ndim]
    image = _raw(np.float64, shape, seed=7) + 0.25
    for sigma in (0.6, 2.3, 7.0):
        whole = filters.gaussian(image, sigma=sigma, preserve_range=True)
        for chunks in PASS_CHUNKS[ndim]:
            result, report = P.apply_step("gaussian", {"sigma": sigma}, image, backend=THREADS,
                                          chunks=chunks)
            assert np.array_equal(result, whole), (sigma, chunks, staging)
            _check_rounds(report, shape)
    recipe = R.default_recipe(1, 2)
    recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.7}}
    recipe = R.validate(recipe)
    for dtype in (np.uint8, np.float32, np.int64, np.bool_):
        loaded = _raw(dtype, shape, seed=ndim)
        filtered, reports = P.filter_stage(loaded, recipe,
                                           backend=P.Backend(jobs=2, min_pixels=0))
        assert np.array_equal(filtered, R.filter_stage(loaded, recipe)), (dtype, staging)
        _check_rounds(reports[0], shape)
    result, report = P.apply_step("gaussian", {"sigma": 2.3}, image, backend=PROCESSES,
                                  chunks=PASS_CHUNKS[ndim][1])
    assert report.backend == "processes"
    assert np.array_equal(result, filters.gaussian(image, sigma=2.3, preserve_range=True))


@pytest.mark.parametrize("staging", ["default", "in place"])
def test_separable_passes_refuse_a_nan_or_an_infinity_as_the_whole_call(staging,
                                                                        monkeypatch):
    """The passes check finiteness in their first round's blocks (not in a serial pass over
    the whole array first): a NaN or an infinity anywhere, in any block, gives the whole
    call's InputError, on threads, sequentially and on processes, through apply_step and
    through the filter stage; no result."""
    if staging == "in place":
        monkeypatch.setattr(P, "PASS_TILE_MAX_BYTES", 0)
    shape = ODD_SHAPES[3]
    recipe = R.default_recipe(1, 2)
    recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.0}}
    recipe = R.validate(recipe)
    for where in ((0, 0, 0), (8, 13, 10), (4, 7, 5)):
        for bad in (np.nan, np.inf, -np.inf):
            image = _raw(np.float64, shape)
            image[where] = bad
            with pytest.raises(InputError,
                               match="^filter: image contains NaN or infinite values$"):
                apply_filter(image, "gaussian", {"sigma": 1.0})  # the whole call's
            for backend in (SEQ, THREADS, PROCESSES):
                with pytest.raises(InputError,
                                   match="^filter: image contains NaN or infinite values$"):
                    P.apply_step("gaussian", {"sigma": 1.0}, image, backend=backend,
                                 chunks=(3, 4, 5))
            loaded = image.astype(np.float32)
            with pytest.raises(InputError, match="NaN or infinite"):
                P.filter_stage(loaded, recipe, backend=P.Backend(jobs=2, min_pixels=0))
    # the other steps still check the whole array first
    image = _raw(np.float64, shape)
    image[2, 3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        P.apply_step("median", {"radius": 1}, image, backend=THREADS, chunks=4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int64, np.bool_])
def test_filter_stage_converts_image_blocks_in_their_workers(dtype):
    """An image's Gaussian or median over overlapping blocks: each block of the loaded image
    is converted to float64 in its worker (no converted copy of the whole image), the blocks
    are the float64 image's, the result the recipe's."""
    image = _raw(dtype, (130, 97), seed=5)
    backend = P.Backend(jobs=2, min_pixels=0)
    for name, params in (("gaussian", {"sigma": 1.3}), ("median", {"radius": 2})):
        recipe = R.default_recipe(1, 2)
        recipe["filter"] = {"name": name, "params": params}
        recipe = R.validate(recipe)
        filtered, reports = P.filter_stage(image, recipe, backend=backend)
        expected = R.filter_stage(image, recipe)
        assert filtered.dtype == np.float64 and np.array_equal(filtered, expected)
        _, report = P.apply_step(name, params, image.astype(np.float64),
                                         backend=backend)
        assert not reports[0].passes and reports[0].chunks == report.chunks
        assert reports[0].blocks == report.blocks > 1


def test_filter_stage_makes_no_float64_copy_of_the_image(passes_in_2d):
    """Peak memory (tracemalloc): the output and the blocks, not a converted copy (which
    the blocks' own conversions partly make up for over overlapping blocks)."""
    import tracemalloc

    image = _raw(np.uint8, (1024, 1024), seed=6)
    backend = P.Backend(jobs=2, min_pixels=0)
    for ndim_image in (image, image.reshape(16, 256, 256)):
        for name, params in (("gaussian", {"sigma": 2.0}), ("median", {"radius": 1})):
            recipe = R.default_recipe(1, 2)
            recipe["filter"] = {"name": name, "params": params}
            recipe = R.validate(recipe)
            P.filter_stage(ndim_image, recipe, backend=backend)  # the probe, imports
            tracemalloc.start()
            filtered, reports = P.filter_stage(ndim_image, recipe, backend=backend)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            tracemalloc.start()  # as before: the converted image, then apply_step
            P.apply_step(name, params, ndim_image.astype(np.float64), backend=backend)
            converted_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert np.array_equal(filtered, R.filter_stage(ndim_image, recipe))
            report = reports[0]
            if report.passes:
                block = max(math.prod(c) for _, _, c in report.passes) * 8
            else:
                block = math.prod(min(n, c + 2 * r) for n, c, r in
                                  zip(ndim_image.shape, report.chunks, report.reach)) * 8 * 3
            # the output (8 MiB) and a block (and its result) per worker; a float64 copy
            # of the image would add 8 MiB
            assert peak < filtered.nbytes + 2 * block + 2**20, (name, peak, block, report)
            assert peak + filtered.nbytes // 4 < converted_peak, (name, peak, converted_peak)
