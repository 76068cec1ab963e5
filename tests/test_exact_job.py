"""The exact segmentation as a background job (issue 9, issue 11's time limit): the solver's
progress hook, the time estimate, the time limit, and the job's callback bodies called
directly on a real store and cache."""

from __future__ import annotations

import copy
import io as _io
import math

import numpy as np
import pytest
import tifffile
from dash import Patch, no_update
from dash.exceptions import PreventUpdate

from callbacks import display, exact_job, loading
from callbacks.params import recipe_action
from callbacks.services import Services
from components import ids
from pipeline import randomwalker as rw
from pipeline.compute import TimeLimit
from pipeline.config import Config
from pipeline.errors import Cancelled, InputError
from pipeline.segment import make_markers
from pipeline.store import new_session_id

VIEW = dict(axis=0, index=0, style="contour", show=["markers"], view="labels")


def _noisy(n, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(90, 18, (n, n))
    image[n // 4:3 * n // 4, n // 5:3 * n // 5] += 80
    return image.clip(0, 255).astype(np.uint8)


class Clock:
    """A clock that moves only when told to (or by `step` on every reading)."""

    def __init__(self, step=0.0):
        self.t, self.step = 100.0, step

    def __call__(self):
        self.t += self.step
        return self.t


# --------------------------------------------------------------------------- the solver


@pytest.mark.parametrize("mode", ["cg_mg", "cg_j", "bf"])
def test_the_progress_hook_is_called_with_increasing_fractions(mode, monkeypatch):
    monkeypatch.setattr(rw, "PROGRESS_EVERY_S", 0.0)  # report every iteration
    image = _noisy(160).astype(float)
    graph = rw.build_graph(image / 255, beta=130)
    markers = make_markers(image, 80, 160, check=False)
    calls = []
    labels = rw.solve(graph, markers, mode=mode, tol=1e-3,
                      progress=lambda stage, f: calls.append((stage, f)))
    # the same labels as without the hook
    assert np.array_equal(labels, rw.solve(graph, markers, mode=mode, tol=1e-3))
    stages = [s for s, _ in calls]
    assert stages[0] == "setup" and calls[-1] == ("solve", 1.0)
    assert stages.index("solve") > stages.index("setup")
    assert sorted(stages, key=["setup", "solve"].index) == stages  # setup, then solve
    for stage in ("setup", "solve"):
        fractions = [f for s, f in calls if s == stage]
        assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    if mode != "bf":  # the iterations report the residual's way to tol
        inner = [f for s, f in calls if s == "solve" and 0 < f < 1]
        assert inner, calls


def test_the_residual_fraction_is_log_scaled_from_the_start_to_tol():
    assert rw._residual_fraction(1.0, 1.0, 1e-4) == 0.0
    assert rw._residual_fraction(1e-2, 1.0, 1e-4) == pytest.approx(0.5)
    assert rw._residual_fraction(1e-5, 1.0, 1e-4) == 1.0
    assert rw._residual_fraction(10.0, 1.0, 1e-4) == 0.0  # a rise never goes below 0
    assert rw._residual_fraction(1e-3, 1e-1, 1e-3) == pytest.approx(1.0)
    assert rw._residual_fraction(1e-5, 1e-5, 1e-4) == 1.0  # started below tol


def test_a_time_limit_stops_the_solve_and_says_it_expired():
    image = _noisy(120).astype(float)
    graph = rw.build_graph(image / 255, beta=130)
    markers = make_markers(image, 80, 160, check=False)
    clock = Clock(step=1.0)  # one second per reading
    limit = TimeLimit(5, clock=clock)
    with pytest.raises(Cancelled):
        rw.solve(graph, markers, mode="cg_j", tol=1e-6, should_stop=limit)
    assert limit.expired
    # another reason to stop is not a time limit
    other = TimeLimit(1000, also=lambda: True, clock=Clock())
    with pytest.raises(Cancelled):
        rw.solve(graph, markers, mode="cg_j", tol=1e-6, should_stop=other)
    assert not other.expired
    for bad in (0, -1, float("nan"), "5", True):
        with pytest.raises(InputError, match="seconds"):
            TimeLimit(bad)


def test_the_time_estimate_grows_with_the_size_and_drops_the_cached_graph():
    small = rw.estimate_seconds((512, 512), "cg_mg")
    large = rw.estimate_seconds((2048, 2048), "cg_mg")
    assert large == pytest.approx(16 * small)
    assert rw.estimate_seconds((2048, 2048), "cg_mg", graph=False) < large
    fewer = rw.estimate_seconds((2048, 2048), "cg_mg", unknown=1000, graph=False)
    assert fewer == pytest.approx(1000 * rw.SOLVE_SECONDS_PER_UNKNOWN[2]["cg_mg"])
    assert rw.estimate_seconds((64, 64, 64), "bf") > rw.estimate_seconds((64, 64, 64), "cg_j")
    with pytest.raises(InputError, match="unknown"):
        rw.estimate_seconds((10, 10), "cg_mg", unknown=101)
    with pytest.raises(InputError, match="shape"):
        rw.estimate_seconds((10,), "cg_mg")
    with pytest.raises(InputError, match="mode"):
        rw.estimate_seconds((10, 10), "fast")


def test_the_settings_are_read_from_the_environment():
    cfg = Config.from_env({"PIPEX_MAX_WORK_S": "42", "PIPEX_JOB_AFTER_S": "0"})
    assert cfg.max_work_s == 42 and cfg.job_after_s == 0
    default = Config.from_env({})
    assert default.max_work_s == 300 and default.job_after_s == 1
    with pytest.raises(InputError, match="PIPEX_MAX_WORK_S"):
        Config.from_env({"PIPEX_MAX_WORK_S": "0"})
    with pytest.raises(InputError, match="PIPEX_JOB_AFTER_S"):
        Config.from_env({"PIPEX_JOB_AFTER_S": "soon"})


# --------------------------------------------------------------------------- job progress


def test_job_progress_moves_with_time_then_with_the_residual_and_says_the_time_left():
    clock = Clock()
    reports = []
    stages = exact_job.plan((1000, 1000), "cg_mg", estimate=10.0, graph_seconds=4.0)
    assert stages["graph"] == 4.0 and math.isclose(stages["setup"] + stages["solve"], 6.0)
    progress = exact_job.JobProgress(stages, reports.append, clock=clock)
    progress("graph", 0.0)
    seen = [progress.overall()]
    for _ in range(3):
        clock.t += 1.0  # the graph build: no step reports, the time spent does
        seen.append(progress.overall())
    clock.t += 100  # far over its estimate: at most 95 % of the stage
    seen.append(progress.overall())
    assert seen == sorted(seen) and seen[1] > seen[0]
    assert seen[-1] == pytest.approx(0.95 * 4 / 10)
    progress("graph", 1.0)
    progress("setup", 0.0)
    progress("setup", 1.0)
    progress("solve", 0.0)
    before = progress.overall()
    progress("solve", 0.5)
    assert progress.overall() > before
    assert "conjugate gradient" in progress.text() and "left" in progress.text()
    progress("solve", 0.25)  # a residual that rose: the bar never goes back
    assert progress.overall() >= before
    progress("solve", 1.0)
    assert progress.overall() == 1.0 and progress.text().startswith("post-processing")
    values = [int(v) for v, _ in reports]
    assert values == sorted(values) and values[-1] == 1000
    assert any("building the graph" in t for _, t in reports)


def test_the_time_left_comes_from_the_estimate_then_from_the_progress():
    clock = Clock()
    progress = exact_job.JobProgress({"start": 0, "graph": 0, "setup": 0, "solve": 20,
                                      "finish": 0}, lambda _: None, clock=clock)
    progress("solve", 0.0)
    assert progress.seconds_left() == pytest.approx(20)
    clock.t += 5
    progress("solve", 0.5)  # half done in 5 s: 5 s more
    assert progress.seconds_left() == pytest.approx(5)
    assert "about 5 s left" in progress.text()


# --------------------------------------------------------------------------- callbacks


@pytest.fixture
def services(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data", quick_exact_s=0)
    return Services.create(cfg)


def _large(services, n=700, **config):
    """A session with an n×n noisy image loaded (above the reduced-grid preview's size)."""
    if config:
        from dataclasses import replace

        services = Services.create(replace(services.config, **config))
    sid = new_session_id()
    buf = _io.BytesIO()
    tifffile.imwrite(buf, _noisy(n))
    meta = loading.load_image(services, sid, ids.UPLOAD, "coins",
                              "data:image/tiff;base64," + __import__("base64").b64encode(
                                  buf.getvalue()).decode(), "large.tif", None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    return services, sid, meta, pointer


def _preview(services, sid, meta, pointer):
    out = display.segmentation_update(services, sid, meta, pointer, **VIEW, base=None,
                                      allow_preview=True)
    fig, summary, _, _, pending, settled, base = out
    assert "live preview" in summary and pending["key"], summary
    return pending, base


def test_a_quick_exact_result_is_settled_in_the_request(services):
    services, sid, meta, pointer = _large(services, job_after_s=60)
    pending, base = _preview(services, sid, meta, pointer)
    out = display.settle_update(services, sid, meta, pointer, pending, **VIEW, base=base)
    assert len(out) == len(display.SETTLE_PROPS)
    assert isinstance(out[0], Patch) and "labelled region" in out[1]
    assert out[-1] is no_update  # no job


def test_a_slow_exact_result_is_handed_to_a_job_that_draws_it(services):
    services, sid, meta, pointer = _large(services, job_after_s=0.001)
    assert display.exact_estimate(services, sid, meta, display.current_recipe(pointer)) > 0
    pending, base = _preview(services, sid, meta, pointer)
    out = display.settle_update(services, sid, meta, pointer, pending, **VIEW, base=base)
    *drawn, job = out
    assert all(v is no_update for v in drawn)  # the preview stays
    assert job["key"] == pending["key"] and job["rev"] == pointer["rev"]

    reports = []
    result = exact_job.run_exact_job(services, sid, meta, pointer, job,
                                     set_progress=reports.append)
    assert len(result) == len(exact_job.JOB_PROPS)
    settle, seg_msg, post_msg, message, run_style = result
    assert seg_msg is None and post_msg is None and message is None
    assert run_style == {"display": "none"}
    assert settle["key"] == pending["key"] and settle["token"] != pending["token"]
    assert 0 < settle["seconds"] < 300
    values = [int(v) for v, _ in reports]
    assert values == sorted(values) and values[-1] == 1000 and len(values) >= 3
    assert any("left" in text for _, text in reports)
    # the job's result is the cached exact result: the settle it signals draws it at once,
    # in the page's view of then (here another overlay style), saying how it was computed
    assert display.exact_estimate(services, sid, meta, display.current_recipe(pointer)) == 0
    fig, summary, seg_msg, post_msg, settled, new_base = exact_job.done_update(
        services, sid, meta, pointer, settle, **{**VIEW, "style": "fill"}, base=base)
    assert isinstance(fig, Patch) and new_base is no_update
    assert "labelled region" in summary and "preview" not in summary
    assert f"computed in {settle['seconds']:.2f} s (background job)" in summary
    assert seg_msg is None and post_msg is None
    assert settled["key"] == pending["key"]  # the comparison and the table follow
    later = display.settle_update(services, sid, meta, pointer, pending, **VIEW, base=base)
    assert isinstance(later[0], Patch) and "from cache" in later[1]


def test_the_job_draws_nothing_for_a_state_the_page_has_left(services):
    services, sid, meta, pointer = _large(services, job_after_s=0.001)
    pending, base = _preview(services, sid, meta, pointer)
    job = display.settle_update(services, sid, meta, pointer, pending, **VIEW, base=base)[-1]
    with pytest.raises(PreventUpdate):  # the signal names another state than the page's
        exact_job.run_exact_job(services, sid, meta, pointer, {**job, "key": "0" * 16})
    vmin, vmax = (display.current_recipe(pointer)["markers"][k] for k in ("vmin", "vmax"))
    recipe_action(services, sid, ids.THRESHOLDS, pointer, meta,
                  {"thresholds": [vmin, vmax + 5]}, drawn=True)  # a newer move
    with pytest.raises(PreventUpdate):  # the session moved on (another worker saw it)
        exact_job.run_exact_job(services, sid, meta, pointer, job)
    assert display.exact_estimate(services, sid, meta, display.current_recipe(pointer)) > 0


def test_a_job_whose_session_moves_on_stops_while_solving(services):
    services, sid, meta, pointer = _large(services, job_after_s=0.001)
    stop = exact_job.moved_on(services, sid, meta["id"], pointer["rev"], every_s=0)
    assert not stop()
    services.store.set_current(sid, meta["id"], "another-revision")
    assert stop()
    recipe = services.validate(display.current_recipe(pointer))
    with pytest.raises(Cancelled):
        services.run(sid, meta["id"], recipe, should_stop=stop)
    assert display.exact_estimate(services, sid, meta, recipe) > 0  # nothing cached


def test_a_job_estimated_over_the_time_limit_is_refused_before_it_runs(services):
    services, sid, meta, pointer = _large(services, job_after_s=0.001, max_work_s=0.01)
    pending, base = _preview(services, sid, meta, pointer)
    job = display.settle_update(services, sid, meta, pointer, pending, **VIEW, base=base)[-1]
    out = exact_job.run_exact_job(services, sid, meta, pointer, job)
    assert all(v is no_update for v in out[:3])  # the preview stays
    text = str(out[3])
    assert "message-error" in text and "PIPEX_MAX_WORK_S" in text and "0.01 s" in text
    assert out[4] == {"display": "inline-block"}  # Compute offered
    assert display.exact_estimate(services, sid, meta, display.current_recipe(pointer)) > 0


def test_a_solve_running_over_the_time_limit_is_stopped_with_a_message(services, monkeypatch):
    services, sid, meta, pointer = _large(services, max_work_s=0.5)
    # the estimate says it fits; the solve then takes longer (the clock jumps)
    monkeypatch.setattr(display, "time_limited",
                        lambda svc, should_stop=None: TimeLimit(0.5, also=should_stop,
                                                                clock=Clock(step=1.0)))
    out = display.segmentation_update(services, sid, meta, pointer, **VIEW,
                                      base=display.base_key(meta, 0, 0), allow_preview=False,
                                      defer_slow=False)
    fig, summary, message = out[:3]
    assert fig is no_update and summary == ""  # the previous overlays stay
    text = str(message)
    assert "Segmentation stopped" in text and "PIPEX_MAX_WORK_S" in text
    assert display.exact_estimate(services, sid, meta, display.current_recipe(pointer)) > 0


def test_a_released_drag_defers_a_slow_exact_result_to_the_settle(services):
    """A committed move that asks for the exact result at once (the release of a drag) does
    not solve a slow one in the request: it answers pending over the drag's preview."""
    services, sid, meta, pointer = _large(services, job_after_s=0.001)
    base = display.base_key(meta, 0, 0)
    out = display.segmentation_update(services, sid, meta, pointer, **VIEW, base=base,
                                      allow_preview=False)
    fig, summary, seg_msg, post_msg, pending, settled, new_base = out
    assert fig is no_update and summary is no_update and pending["key"]
    assert settled is no_update and new_base is no_update
    # on a new figure: the image without overlays, and what runs
    out = display.segmentation_update(services, sid, meta, pointer, **VIEW, base=None,
                                      allow_preview=False)
    assert out[0] is not no_update and "background job" in out[1] and out[4]["key"]


def test_the_solve_rate_measured_replaces_the_constant(services, monkeypatch):
    monkeypatch.setattr(display, "SOLVE_RATE_MIN_S", 0.0)  # however fast the machine is
    services, sid, meta, pointer = _large(services, n=600, job_after_s=60)
    recipe = display.current_recipe(pointer)
    first = display.exact_estimate(services, sid, meta, recipe)
    display.segmentation_panel(services, sid, meta, services.validate(recipe), 0, 0,
                               "contour", True, "labels", None, True)
    rates = services.store.get(sid, meta["id"], display.SOLVE_RATE)
    assert rates and all(0 < r < 1e-3 for r in rates.values())
    moved = copy.deepcopy(recipe)
    moved["markers"]["vmax"] += 3
    later = display.exact_estimate(services, sid, meta, moved)
    assert 0 < later < first  # the graph is cached now


def test_the_fast_path_settle_hands_the_job_to_the_page(services):
    """/_pipex/settle answers the job's store (the page sets it: the background callback
    starts) and nothing else, so the preview stays."""
    from callbacks import fastpath

    services, sid, meta, pointer = _large(services, job_after_s=0.001)
    pending, base = _preview(services, sid, meta, pointer)
    body = {"session": sid, "image": meta["id"], "history": pointer, "pending": pending,
            "base": base, "view": {"axis": 0, "index": 0, "style": "contour",
                                   "show": ["markers"], "view": "labels"}}
    out = fastpath.fast_settle(services, body)
    assert list(out["outputs"]) == [ids.EXACT_JOB] and out["overlays"] == {}
    assert out["outputs"][ids.EXACT_JOB]["data"]["key"] == pending["key"]
    assert not out["full"]


def test_a_hard_limit_stops_a_step_that_never_asks(services):
    """In a job's process (its main thread) the alarm stops work that asks no should_stop;
    the solve's TimeLimit then says it expired."""
    import time as _time

    limit = TimeLimit(0.2)
    t0 = _time.monotonic()
    with pytest.raises(Cancelled), exact_job.hard_limit(0.3):
        while _time.monotonic() - t0 < 10:  # a step that never asks
            sum(range(1000))
    assert _time.monotonic() - t0 < 5 and limit.expired
    # the alarm is off afterwards, and nothing happens in another thread
    _time.sleep(0.4)
    import threading

    seen = []

    def other():
        with exact_job.hard_limit(0.05):
            _time.sleep(0.2)
            seen.append("done")

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == ["done"]


def test_a_job_past_the_time_limit_stops_and_offers_to_run_again(services, monkeypatch):
    services, sid, meta, pointer = _large(services, job_after_s=0.001, max_work_s=0.05)
    pending, base = _preview(services, sid, meta, pointer)
    monkeypatch.setattr(exact_job, "exact_estimate", lambda *a: 0.01)  # "it fits"
    job = {**pending}
    out = exact_job.run_exact_job(services, sid, meta, pointer, job,
                                  set_progress=lambda _: None)
    settle, seg_msg, post_msg, message, run_style = out
    assert settle is no_update and post_msg is None and message is None  # the preview stays
    text = str(seg_msg)
    assert "Segmentation stopped" in text and "0.05 s" in text and "PIPEX_MAX_WORK_S" in text
    assert run_style == {"display": "inline-block"}  # Compute offered
    assert display.exact_estimate(services, sid, meta, display.current_recipe(pointer)) > 0


def test_a_small_image_is_never_a_job_and_costs_no_cache_reads(services, monkeypatch):
    sid = new_session_id()
    meta = loading.load_image(services, sid, None, "coins", None, None, None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    monkeypatch.setattr(display, "exact_estimate", lambda *a: pytest.fail("read the caches"))
    assert not display.runs_as_job(services, sid, meta, display.current_recipe(pointer))


def test_compute_on_a_cached_result_draws_it_as_from_cache(services):
    """The Compute button on a state whose exact result is cached: nothing runs long, and
    the summary does not claim a job computed it."""
    services, sid, meta, pointer = _large(services, job_after_s=0.001)
    first = exact_job.run_exact_job(services, sid, meta, pointer, None, by_button=True)[0]
    assert first["seconds"] > 0
    again = exact_job.run_exact_job(services, sid, meta, pointer, None, by_button=True)[0]
    assert "seconds" not in again and again["key"] == first["key"]
    out = exact_job.done_update(services, sid, meta, pointer, again, **VIEW,
                                base=display.base_key(meta, 0, 0))
    assert "from cache" in out[1]


# --------------------------------------------------------------------------- above the budget
# (issue 9: a random walker above PIPEX_MAX_JOB_GB is solved by blocks in the job)


def _over_budget(services, gb=0.05, **config):
    """A 700² image whose whole random walker ('cg_mg', ≈ 140 MB) is above `gb`."""
    services, sid, meta, pointer = _large(services, job_after_s=0.001, max_job_gb=gb,
                                          **config)
    recipe = services.validate(display.current_recipe(pointer))
    assert rw.estimate_bytes(meta["shape"], "cg_mg") > gb * 1024**3
    return services, sid, meta, pointer, recipe


def _job_signal(services, sid, meta, pointer):
    pending, base = _preview(services, sid, meta, pointer)
    job = display.settle_update(services, sid, meta, pointer, pending, **VIEW, base=base)[-1]
    assert job["key"] == pending["key"]
    return pending, base, job


def test_a_job_above_the_memory_budget_solves_by_blocks_instead_of_refusing(services):
    from dataclasses import replace

    from callbacks import downloads
    from pipeline import blocks

    services, sid, meta, pointer, recipe = _over_budget(services)
    # a request does not solve it: refused as before, saying what fits
    with pytest.raises(InputError, match="PIPEX_MAX_JOB_GB"):
        services.run(sid, meta["id"], recipe)
    plan = exact_job.block_plan(services, sid, meta, recipe)
    assert plan is not None and plan.n_blocks > 1
    assert plan.peak_bytes <= services.config.max_job_gb * 1024**3
    pending, base, job = _job_signal(services, sid, meta, pointer)
    reports = []
    settle, seg_msg, post_msg, message, run_style = exact_job.run_exact_job(
        services, sid, meta, pointer, job, set_progress=reports.append)
    assert seg_msg is None and post_msg is None and run_style == {"display": "none"}
    assert settle["key"] == pending["key"] and settle["seconds"] > 0
    # the job's message says how it was solved, and how well that agrees with a whole solve
    text = str(message)
    assert "message-info" in text
    size = f"{plan.chunks[0]}²" if len(set(plan.chunks)) == 1 else \
        " × ".join(map(str, plan.chunks))
    assert (f"Exact result solved in {plan.n_blocks} blocks of {size} with "
            f"{plan.margin} px overlap (image above the 51 MB per-job limit); agreement with "
            f"a whole solve on a ") in text
    agreement = float(text.split("window: ")[1].split(" %")[0].lstrip("> "))
    assert agreement >= 97.0
    # the bar moved block by block, then through the window's whole solve
    texts = [t for _, t in reports]
    assert any("solving by blocks (" in t and f" of {plan.n_blocks} done)" in t for t in texts)
    assert any("comparing with a whole solve on a window" in t for t in texts)
    values = [int(v) for v, _ in reports]
    assert values == sorted(values) and values[-1] == 1000
    # drawn by the settle as the cached exact result; a request now finds it
    fig, summary, *_ = exact_job.done_update(services, sid, meta, pointer, settle, **VIEW,
                                             base=base)
    assert isinstance(fig, Patch) and "(background job)" in summary
    assert display.exact_estimate(services, sid, meta, recipe) == 0
    result = services.run(sid, meta["id"], recipe)
    assert result.cached
    report = services.compute.block_report(meta["id"], services.loader(sid, meta["id"]),
                                           recipe)
    assert report.blocks == plan.n_blocks and report.agreement["pixels"] >= 0.97
    # the very labels of a blockwise solve of the filtered image with that plan
    filtered = np.asarray(result.filtered)
    from pipeline.recipe import marker_stage

    p = recipe["segmentation"]["params"]
    expected, _ = blocks.random_walker_blocks(
        filtered, marker_stage(filtered, recipe), beta=p["beta"], mode=p["mode"],
        tol=p["tol"], scale=p["intensity_scale"], plan=plan, measure=False)
    assert np.array_equal(np.asarray(result.mask), expected == 2)
    # the label download is that result
    data, _ = downloads.labels_file(services, sid, meta, pointer)
    labels = tifffile.imread(_io.BytesIO(data))
    assert np.array_equal(labels, np.asarray(result.labels))
    # a server with room for the whole solve (same cache) does not take the blockwise
    # result for its own: keyed apart, it solves whole
    roomy = Services.create(replace(services.config, max_job_gb=4.0))
    assert not roomy.exact_cached(sid, meta["id"], recipe)
    assert roomy.compute.block_report(meta["id"], roomy.loader(sid, meta["id"]), recipe) is None
    whole = roomy.run(sid, meta["id"], recipe)
    assert not whole.stages_cached["segmentation"]
    assert (np.asarray(whole.mask) == np.asarray(result.mask)).mean() >= 0.97
    assert services.run(sid, meta["id"], recipe).cached  # and the other way round


def test_a_job_whose_blocks_do_not_fit_the_budget_is_still_refused(services):
    """Not even one block beside the image's own arrays: refused, with a crop, a
    downsampling factor; the preview stays and Compute is offered."""
    services, sid, meta, pointer, recipe = _over_budget(services, gb=0.0005)  # 0.5 MB
    assert exact_job.block_plan(services, sid, meta, recipe) is None
    _, _, job = _job_signal(services, sid, meta, pointer)
    out = exact_job.run_exact_job(services, sid, meta, pointer, job)
    assert out[0] is no_update and out[3] is None
    text = str(out[1])
    assert "message-error" in text and "Segmentation failed: Random walker (cg_mg) on 700 × 700" \
        in text
    assert "PIPEX_MAX_JOB_GB" in text and "downsample it by" in text
    assert out[4] == {"display": "inline-block"}
    assert not services.exact_cached(sid, meta["id"], recipe)


def test_a_job_by_blocks_stops_between_blocks_when_the_page_moves_on(services, monkeypatch):
    services, sid, meta, pointer, recipe = _over_budget(services)
    _, _, job = _job_signal(services, sid, meta, pointer)
    seen = []

    def moved_on(*args, **kwargs):  # the session moves on once two blocks are done
        return lambda: len([s for s in seen if s == "blocks"]) >= 3

    monkeypatch.setattr(exact_job, "moved_on", moved_on)
    original = exact_job.JobProgress.__call__

    def hear(self, stage, fraction):
        seen.append(stage)
        return original(self, stage, fraction)

    monkeypatch.setattr(exact_job.JobProgress, "__call__", hear)
    with pytest.raises(PreventUpdate):
        exact_job.run_exact_job(services, sid, meta, pointer, job, set_progress=lambda _: None)
    plan = exact_job.block_plan(services, sid, meta, recipe)
    assert 3 <= seen.count("blocks") < plan.n_blocks + 1  # stopped before the last block
    assert "agreement" not in seen
    assert not services.exact_cached(sid, meta["id"], recipe)  # nothing cached
    monkeypatch.setattr(exact_job, "moved_on", lambda *a, **k: (lambda: False))
    out = exact_job.run_exact_job(services, sid, meta, pointer, job)
    assert "solved in" in str(out[3]) and services.exact_cached(sid, meta["id"], recipe)


def test_the_estimate_of_a_solve_by_blocks_counts_its_margins_and_window():
    from pipeline import blocks

    plan = blocks.plan_blocks((4096, 4096), "cg_mg", 2 * 1024**3)
    solve, window = exact_job.blocks_estimate(plan, 100.0)
    assert plan.in_flight == 2
    assert 50.0 < solve < 100.0  # the margins are solved twice, two blocks at a time
    assert 0 < window <= 25.0  # a quarter of the image at most
    stages = exact_job.blocks_plan(solve, window)
    progress = exact_job.JobProgress(stages, lambda _: None, clock=Clock(), blocks=plan.n_blocks)
    progress("blocks", 0.0)
    progress("blocks", 4 / plan.n_blocks)
    assert progress.text().startswith(f"solving by blocks (4 of {plan.n_blocks} done) · ")
    progress("agreement", 0.0)
    assert progress.text().startswith("comparing with a whole solve on a window")
    progress("solve", 1.0)
    assert progress.overall() == 1.0
