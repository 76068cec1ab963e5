"""The exact segmentation as a background job: progress, time left, Cancel, a time limit.

A random walker expected to take longer than ``PIPEX_JOB_AFTER_S`` (1 s; estimated before it
runs from the image size, the undecided pixels, the solver, whether the graph is cached and
this session's measured solve rate: :func:`callbacks.display.runs_as_job`) is not solved
inside a request. The page shows the live preview (a reduced grid on a large image); the
settle (:func:`callbacks.display.settle_update`, the fast path's ``/_pipex/settle`` or the
Dash callback) answers ``EXACT_JOB`` instead of the exact result, and that store starts
:func:`run_exact_job` as a Dash background callback on the app's one job runner
(:mod:`callbacks.jobs`: a process per job, tracked in a diskcache folder every gunicorn
worker shares, or Celery). Meanwhile the rest of the page stays usable.

* **Progress.** The job reports what it does (``components.progress``): the graph build and
  the solver's set-up by the time they are expected to take (no step inside them reports),
  then the conjugate-gradient iterations by their residual (``log(r / r0) / log(tol / r0)``,
  :func:`pipeline.randomwalker.solve`'s ``progress``), with the time left.
* **Cancel.** The Cancel button kills the job's process (the manager's ``cancel=``); the
  preview stays with "exact result cancelled — move a threshold or press Compute to run it
  again" (:data:`CANCEL_JS`, in the browser). A newer state supersedes the job: its own
  settle re-triggers this callback, which makes Dash kill the running job, and a job whose
  session has moved on (another history revision or image) stops between iterations.
* **Above the memory budget.** A random walker whose whole solve is estimated above
  ``PIPEX_MAX_JOB_GB`` is solved here by overlapping blocks that fit it
  (:mod:`pipeline.blocks`, :meth:`pipeline.compute.Compute.blocks_allowed`) instead of being
  refused; the bar then moves block by block, then while the agreement with a whole solve on
  a window is measured, and once done the job's message says how it was solved ("solved in
  12 blocks of 1366² with 64 px overlap (image above the 2.0 GB per-job limit); agreement
  with a whole solve on a 2048² window: 99.9 % of pixels …"). A request (a settle, a
  download) finds that result in the cache; where it is not cached it still refuses, saying
  what fits (as does the job when not even one block fits the budget).
* **Time limit.** A job estimated above ``PIPEX_MAX_WORK_S`` is refused before it starts;
  one that runs longer is stopped between its steps (:class:`pipeline.compute.TimeLimit`),
  or, inside a step that does not ask (the graph build, the multigrid set-up), by an alarm
  in the job's process a second later (:func:`hard_limit`), and says so.

The result is the same cached, path-independent exact result a request would compute
(``Compute.run``'s joblib cache: the one downloaded and exported). The job draws nothing
itself: done, it sets ``EXACT_DONE`` (the state, the seconds it took) and
:func:`done_update` draws the cached result as the settle does, in the view the page has
*then* (the slice, overlay style or view may have changed while the job ran): a Patch of
the overlays, the summary ("computed in 5.31 s (background job)"), ``SEG_SETTLED`` so the
comparison and the measurements follow. Request count per job: the settle, the job's start,
a poll every :data:`POLL_MS` ms, the draw.
"""

from __future__ import annotations

import logging
import math
import signal as signals
import threading
import time
from contextlib import contextmanager

from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import ids
from components.progress import PROGRESS_MAX
from pipeline import blocks as blockwise
from pipeline import randomwalker
from pipeline.errors import Cancelled, InputError

from .display import (
    SETTLE_PROPS,
    VIEW_PROPS,
    _errors,
    _signal,
    _SolveTimer,
    current_recipe,
    exact_estimate,
    failed_stage,
    outputs,
    remember_exact_seconds,
    remember_solve_rate,
    require_live,
    require_signal,
    settle_update,
    states,
    time_limit_message,
    time_limited,
)
from .loading import message_children
from .params import require_current

log = logging.getLogger(__name__)

#: What the page says after Cancel (the preview stays).
CANCELLED = "exact result cancelled — move a threshold or press Compute to run it again"
#: How often the job's progress is written for the page (seconds) and the page polls it (ms).
REPORT_EVERY_S = 0.25
POLL_MS = 300
#: The part of a solve spent in its set-up (reduced system; multigrid set-up or coarse-grid
#: guess; 'bf': everything is the factorisation, reported as its "solve"), by mode and ndim,
#: measured on 1024² and 2048² images: 'cg_mg' 2D 75 % set-up, 'cg_j' 2D ≈ 30 %.
SETUP_SHARE = {("cg_mg", 2): 0.75, ("cg_mg", 3): 0.5, ("cg_j", 2): 0.3, ("cg_j", 3): 0.05,
               ("bf", 2): 0.05, ("bf", 3): 0.05}
#: Stages in the order they run, with the words the page shows.
STAGES = (("start", "starting"), ("graph", "building the graph"),
          ("setup", "setting up the solver"), ("blocks", "solving by blocks"),
          ("agreement", "comparing with a whole solve on a window"),
          ("solve", "conjugate gradient"), ("finish", "post-processing and drawing"))
_LABELS = dict(STAGES)
_ORDER = [name for name, _ in STAGES]
#: The outputs of the job: its state done (the result is cached: draw it), the
#: segmentation's and post-processing's messages, the job's message, the Compute button.
#: (Not SEG_PENDING: the settle that starts a job would then follow a job it started, a
#: loop dash-renderer does not run.)
JOB_PROPS = ((ids.EXACT_DONE, "data"), (ids.SEG_MESSAGE, "children"),
             ({"type": ids.STEP_MESSAGE, "stage": "postprocess"}, "children"),
             (ids.EXACT_MESSAGE, "children"), (ids.EXACT_RUN, "style"))
_SHOWN, _HIDDEN = {"display": "inline-block"}, {"display": "none"}


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.0f} s" if seconds >= 1 else "under 1 s"
    if seconds < 90:
        return f"{5 * round(seconds / 5):.0f} s"
    return f"{seconds / 60:.0f} min"


def block_plan(services, session_id, meta, recipe):
    """The :class:`pipeline.blocks.BlockPlan` of the exact random walker of `recipe` when its
    whole solve is above ``PIPEX_MAX_JOB_GB`` and blocks fit, else None
    (:meth:`pipeline.compute.Compute.block_plan`; the shape of the filtered image when it is
    cached, else the image's)."""
    shape = None
    try:
        shape = services.compute.filtered_shape(
            meta["id"], services.loader(session_id, meta["id"]), recipe)
    except (InputError, KeyError):
        pass
    if shape is None:
        shape = tuple(int(s) for s in meta["shape"])
    return services.compute.block_plan(recipe, shape)


def blocks_estimate(block_plan, estimate):
    """Expected seconds of a solve by blocks, from the whole solve's `estimate`:
    ``(blocks, window)``, the blocks' part scaled by the pixels they solve (cores and
    margins) over the image's and divided by the blocks solved at once (measured: 4096²,
    9 blocks, 2 at once: 4.4 s where the whole solve took 14.3 s), the agreement window's
    by its pixels over the image's."""
    n = math.prod(block_plan.shape)
    solved = sum(math.prod(s.stop - s.start for s in b.outer) for b in block_plan.blocks)
    window = blockwise._window_shape(block_plan)
    part = 0.0 if window is None else math.prod(window) / n
    return estimate * solved / n / block_plan.in_flight, estimate * part


def blocks_plan(estimate_blocks, estimate_window):
    """Expected seconds of each stage of a solve by blocks (see :func:`plan`)."""
    return {"start": 0.0, "graph": 0.0, "setup": 0.0, "blocks": max(estimate_blocks, 0.0),
            "agreement": max(estimate_window, 0.0), "solve": 0.0, "finish": 0.0}


def blocks_message(report, ndim):
    """The job's message after a solve by blocks (an info line), e.g. ``Exact result solved
    in 12 blocks of 1366² with 64 px overlap (...); agreement with a whole solve on a 2048²
    window: 99.9 % of pixels (99.2 % of the undecided).``"""
    text = report.summary(ndim)
    return message_children(f"Exact result {text}.", "info")


def plan(shape, mode, estimate, graph_seconds):
    """Expected seconds of each stage of an exact solve: ``{stage: seconds}``.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    mode : str
        The random walker's solver.
    estimate : float
        The whole solve's estimate (:func:`callbacks.display.exact_estimate`).
    graph_seconds : float
        The graph build's part of it (0 when the graph is cached).
    """
    solve = max(estimate - graph_seconds, 0.0)
    share = SETUP_SHARE.get((mode, len(shape)), 0.5)
    return {"start": 0.0, "graph": max(graph_seconds, 0.0), "setup": solve * share,
            "solve": solve * (1 - share), "finish": 0.0}


class JobProgress:
    """The ``progress(stage, fraction)`` hook of a job, turned into a bar and a text.

    The overall fraction weighs each stage by its expected seconds (:func:`plan`); within
    the graph build and the set-up (nothing inside them reports) the fraction is the time
    spent over the time expected, at most 95 %; in the conjugate gradient it is the
    solver's own (the residual); for ``'bf'`` (no iterations) the factorisation is timed as
    well. The time left is the time spent scaled by the fraction left once a tenth is done,
    the estimate minus the time spent before. ``report((value, text))`` is called at most
    every :data:`REPORT_EVERY_S` seconds (from the job's thread and its ticker thread:
    :meth:`tick`), with ``value`` in thousandths.
    """

    def __init__(self, stages: dict, report, *, timed_solve=False, clock=time.monotonic,
                 blocks=None):
        self.blocks = blocks  # a solve by blocks: how many (the text counts them)
        self.stages = dict(stages)
        self.total = sum(self.stages.values()) or 1e-9
        self.report, self.clock, self.timed_solve = report, clock, timed_solve
        self.t0 = self.clock()
        self.stage, self.fraction, self.stage_t0 = "start", 0.0, self.t0
        self.last_report = None
        self.best = 0.0
        self.lock = threading.Lock()

    def __call__(self, stage, fraction):
        with self.lock:
            if stage not in self.stages:
                return
            if _ORDER.index(stage) > _ORDER.index(self.stage):
                self.stage, self.stage_t0 = stage, self.clock()
                self.fraction = 0.0
            if stage == self.stage:
                self.fraction = max(self.fraction, float(fraction))
                if stage == "solve" and fraction >= 1.0:
                    self.stage, self.stage_t0, self.fraction = "finish", self.clock(), 0.0
        self.tick(force=fraction in (0.0, 1.0))

    def overall(self) -> float:
        """The fraction of the whole job done (0 to 1, never decreasing)."""
        with self.lock:
            stage, fraction = self.stage, self.fraction
            timed = stage in ("graph", "setup", "agreement") \
                or (stage == "solve" and self.timed_solve)
            if timed and self.stages[stage] > 0:
                spent = self.clock() - self.stage_t0
                fraction = max(fraction, min(0.95, spent / self.stages[stage]))
            done = sum(self.stages.get(s, 0.0) for s in _ORDER[:_ORDER.index(stage)])
            value = (done + self.stages[stage] * min(fraction, 1.0)) / self.total
            if stage == "finish":
                value = 1.0
            self.best = max(self.best, min(1.0, value))
            return self.best

    def seconds_left(self) -> float:
        """Estimated seconds until the exact result is computed."""
        spent = self.clock() - self.t0
        f = self.overall()
        if f >= 0.1:
            return spent * (1 - f) / f
        return max(self.total - spent, 0.0)

    def text(self) -> str:
        """E.g. ``"conjugate gradient · 72 % · about 2 s left"``."""
        f = self.overall()
        words = _LABELS[self.stage]
        if self.stage == "blocks" and self.blocks:
            with self.lock:
                done = min(self.blocks, round(self.fraction * self.blocks))
            words = f"{words} ({done} of {self.blocks} done)"
        if self.stage == "finish":
            return f"{words}…"
        left = _duration(self.seconds_left())
        left = left if left.startswith("under") else f"about {left}"
        return f"{words} · {100 * f:.0f} % · {left} left"

    def tick(self, force=False) -> None:
        """Report the progress now if :data:`REPORT_EVERY_S` passed since the last report
        (or `force`)."""
        now = self.clock()
        if not force and self.last_report is not None \
                and now - self.last_report < REPORT_EVERY_S:
            return
        self.last_report = now
        value = round(PROGRESS_MAX * self.overall())
        try:
            self.report((str(value), self.text()))
        except Exception:  # a lost progress report never stops the job
            log.warning("progress report failed", exc_info=True)


def moved_on(services, session_id, image_id, rev, every_s=0.5, clock=time.monotonic):
    """``should_stop`` of a job: the session shows another image or history revision now
    (read from the shared store at most every `every_s` seconds)."""
    state = {"at": None, "answer": False}

    def should_stop():
        now = clock()
        if state["at"] is not None and now - state["at"] < every_s:
            return state["answer"]
        state["at"] = now
        try:
            state["answer"] = not services.store.is_current(session_id, image_id, rev)
        except InputError:
            state["answer"] = True
        return state["answer"]

    return should_stop


@contextmanager
def hard_limit(seconds):
    """Stop the block after `seconds` wherever it is, in a job's own process.

    The solve asks ``should_stop`` between its steps (:class:`pipeline.compute.TimeLimit`),
    but the graph build and the multigrid set-up do not: in the main thread of a process
    (a job's, forked by the manager) an alarm raises :class:`~pipeline.errors.Cancelled`
    there, at the first Python instruction after `seconds`. Elsewhere (a request thread)
    it does nothing.
    """
    if threading.current_thread() is not threading.main_thread() \
            or not hasattr(signals, "setitimer"):
        yield
        return

    def _expired(_signum, _frame):
        raise Cancelled(f"time limit of {seconds:g} s")

    previous = signals.signal(signals.SIGALRM, _expired)
    signals.setitimer(signals.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signals.setitimer(signals.ITIMER_REAL, 0)
        signals.signal(signals.SIGALRM, previous)


def _ticker(progress: JobProgress, stop: threading.Event):
    while not stop.wait(REPORT_EVERY_S):
        progress.tick()


def run_exact_job(services, session_id, meta, history, signal, *, set_progress=None,
                  by_button=False, clock=time.monotonic):
    """Outputs of the job: the exact segmentation of the current state, computed (and
    cached) here; the settle then draws it in the page's view.

    Parameters
    ----------
    signal : dict
        The ``EXACT_JOB`` data naming the state to compute (ignored when `by_button`).
    set_progress : callable, optional
        Dash's progress setter: ``set_progress((value, text))``, value in thousandths.
    by_button : bool, optional
        The Compute button: the current state, whatever `signal` says.

    Returns
    -------
    tuple
        (pending, segmentation message, post-processing message, job message, Compute
        button style), as :data:`JOB_PROPS`: `pending` names the state (and the
        ``seconds`` the job took) for the settle to draw; on a failure (the time limit, no
        free job slot, a step that fails) the message says why, the preview stays and
        Compute is offered.

    Raises
    ------
    PreventUpdate
        If `signal` names another state than the current one, or the session has moved on
        (before, during or after the solve: a stale result is never drawn).
    """
    if not meta or not history:
        raise PreventUpdate
    if not by_button:
        require_signal(signal, history)
    require_live(services, session_id, meta, history)
    recipe = services.validate(current_recipe(history))
    limit = services.config.max_work_s
    estimate = exact_estimate(services, session_id, meta, recipe)
    blocks = block_plan(services, session_id, meta, recipe)
    parts = blocks_estimate(blocks, estimate) \
        if blocks is not None and estimate is not None else None
    if parts is not None:
        estimate = sum(parts)
    if estimate is not None and estimate > limit:
        how = f" by {blocks.n_blocks} blocks" if blocks is not None else ""
        text = (f"Not computed: the exact segmentation of this image{how} is estimated at ≈ "
                f"{_duration(estimate)}, above this server's limit of {limit:g} s for one "
                f"computation (PIPEX_MAX_WORK_S). Crop or downsample the image, narrow the "
                f"undecided range between vmin and vmax, or use a faster method.")
        return no_update, no_update, no_update, message_children(text, "error"), _SHOWN
    progress = None
    stop = threading.Event()
    if set_progress is not None and parts is not None:
        progress = JobProgress(blocks_plan(*parts), set_progress, clock=clock,
                               blocks=blocks.n_blocks)
        progress.tick(force=True)
        threading.Thread(target=_ticker, args=(progress, stop), daemon=True).start()
    elif set_progress is not None:
        seg = recipe["segmentation"]
        mode = seg["params"].get("mode", "cg_mg") if seg["name"] == "random_walker" else None
        graph_seconds = 0.0
        if mode is not None and estimate and not services.compute.graph_cached(meta["id"],
                                                                               recipe):
            n = math.prod(int(s) for s in meta["shape"])
            graph_seconds = min(estimate, randomwalker.GRAPH_SECONDS_PER_PIXEL[
                len(meta["shape"])] * n)
        stages = plan(meta["shape"], mode or "cg_mg", estimate or 0.0, graph_seconds)
        progress = JobProgress(stages, set_progress, timed_solve=mode == "bf", clock=clock)
        progress.tick(force=True)
        threading.Thread(target=_ticker, args=(progress, stop), daemon=True).start()
    limited = time_limited(services, moved_on(services, session_id, meta["id"],
                                              history.get("rev")))
    seg_message = post_message = result = None
    t0 = time.perf_counter()
    try:
        # a second over the limit: `limited` (started before this) has expired by then
        with hard_limit(limit + 1.0), services.compute.blocks_allowed():
            result = segmentation_panel_run(services, session_id, meta, recipe, limited,
                                            progress)
    except Cancelled:
        if not limited.expired:
            raise PreventUpdate from None  # superseded: nothing to draw
        seg_message = message_children(
            f"Segmentation stopped: {time_limit_message(services)}", "error")
    except Exception as exc:  # noqa: BLE001 - the page keeps the preview and says why
        stage = failed_stage(services, session_id, meta, recipe)
        text = message_children(f"{stage.capitalize()} failed: {_errors(exc)}", "error")
        seg_message, post_message = (text, None) if stage == "segmentation" else (None, text)
    finally:
        stop.set()
    require_live(services, session_id, meta, history)
    if seg_message is not None or post_message is not None:
        return no_update, seg_message, post_message, None, _SHOWN
    pending = _signal(recipe, history)
    if not result.cached:  # the summary says how long the job took
        pending["seconds"] = round(time.perf_counter() - t0, 3)
    message = None
    if blocks is not None:
        try:
            report = services.compute.block_report(
                meta["id"], services.loader(session_id, meta["id"]), recipe)
        except (InputError, KeyError):
            report = None
        if report is not None:
            message = blocks_message(report, len(blocks.shape))
    return pending, None, None, message, _HIDDEN


def done_update(services, session_id, meta, history, done, axis, index, style, show, view,
                base):
    """The job's result drawn (it is cached) in the page's view of now, as the settle draws
    it: (figure or Patch, summary, messages, settled, base); never starts another job."""
    require_current(meta, history)
    return settle_update(services, session_id, meta, history, done, axis, index, style, show,
                         view, base, job_ok=False)[:6]


def segmentation_panel_run(services, session_id, meta, recipe, should_stop, progress):
    """Compute (and cache) the whole pipeline of `recipe`, as :func:`segmentation_panel`
    does before it draws: the exact time and the solve's rate are remembered."""
    timer = _SolveTimer(progress)
    result = services.run(session_id, meta["id"], recipe, should_stop=should_stop,
                          progress=timer)
    if not result.cached:
        remember_exact_seconds(services, session_id, meta, recipe, result.seconds)
        if timer.seconds is not None:
            remember_solve_rate(services, session_id, meta, recipe, timer.seconds,
                                result.filtered)
    return result


# After Cancel: the message beside the preview, the Compute button shown, the summary no
# longer says the exact result is running. (Dash's cancel= kills the job's process.)
CANCEL_JS = """
function(n, summary) {
    const dc = window.dash_clientside;
    if (!n) { return [dc.no_update, dc.no_update, dc.no_update]; }
    const text = typeof summary === 'string' ?
        summary.replace('exact random walker running as a background job…', '')
               .replace('exact random walker running…', 'exact result cancelled') :
        dc.no_update;
    return [{namespace: 'dash_html_components', type: 'Div',
             props: {className: 'message-info', children: %(text)s}},
            {display: 'inline-block'}, text];
}
""" % {"text": repr(CANCELLED).replace("'", '"')}


def register(app, services):
    """Wire the job (a background callback), its Cancel and the Compute button."""

    @app.callback(
        Output(ids.EXACT_DONE, "data"),
        Output(ids.SEG_MESSAGE, "children", allow_duplicate=True),
        Output({"type": ids.STEP_MESSAGE, "stage": "postprocess"}, "children",
               allow_duplicate=True),
        Output(ids.EXACT_MESSAGE, "children"),
        Output(ids.EXACT_RUN, "style"),
        Input(ids.EXACT_JOB, "data"),
        Input(ids.EXACT_RUN, "n_clicks"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        background=True,
        progress=[Output(ids.EXACT_PROGRESS, "value"),
                  Output(ids.EXACT_PROGRESS_TEXT, "children")],
        progress_default=["0", ""],
        running=[(Output(ids.EXACT_BOX, "style"), {"display": "flex"}, {"display": "none"}),
                 (Output(ids.EXACT_CANCEL, "disabled"), False, True),
                 (Output(ids.EXACT_RUN, "disabled"), True, False),
                 (Output(ids.EXACT_MESSAGE, "style"), {"display": "none"}, {"display": "block"})],
        cancel=[Input(ids.EXACT_CANCEL, "n_clicks")],
        interval=POLL_MS,
        prevent_initial_call=True,
    )
    def _exact_job(set_progress, signal, n_clicks, history, meta, session_id):
        by_button = ctx.triggered_id == ids.EXACT_RUN
        if by_button and not n_clicks:
            raise PreventUpdate
        return run_exact_job(services, session_id, meta, history, signal,
                             set_progress=set_progress, by_button=by_button)

    @app.callback(
        *outputs(SETTLE_PROPS[:6], duplicate=True),
        Input(ids.EXACT_DONE, "data"),
        State(ids.HISTORY, "data"),
        *states(VIEW_PROPS),
        prevent_initial_call=True,
        running=[(Output("binarization-panel", "className"), "panel busy", "panel")],
    )
    def _done(done, history, axis, index, style, show, view, base, meta, session_id):
        return done_update(services, session_id, meta, history, done, axis, index, style,
                           show, view, base)

    app.clientside_callback(
        CANCEL_JS,
        Output(ids.EXACT_MESSAGE, "children", allow_duplicate=True),
        Output(ids.EXACT_RUN, "style", allow_duplicate=True),
        Output(ids.SEG_SUMMARY, "children", allow_duplicate=True),
        Input(ids.EXACT_CANCEL, "n_clicks"),
        State(ids.SEG_SUMMARY, "children"),
        prevent_initial_call=True,
    )


__all__ = ["CANCELLED", "JOB_PROPS", "JobProgress", "block_plan", "blocks_estimate",
           "blocks_message", "blocks_plan", "done_update", "hard_limit", "moved_on", "plan",
           "register", "run_exact_job"]
