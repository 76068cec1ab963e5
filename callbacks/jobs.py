"""The app's one runner of background jobs: Dash background callbacks and their manager.

A callback registered with ``background=True`` (the Batch tab's run; later any step expected
to take long) runs outside the request that started it; the page polls for its progress
(``progress=`` outputs, ``set_progress``) and can cancel it (``cancel=``: the job's process
is killed). Every gunicorn worker must see the same jobs: the poll, the cancel and the
result may reach another worker than the one that started the job. So the manager keeps its
state in a place all workers share:

* locally (default), :class:`dash.DiskcacheManager` on a diskcache folder of the state
  folder (``PIPEX_STATE_DIR/jobs``): a job runs in a process forked from the worker that
  received the request, at the lower CPU priority ``PIPEX_JOB_NICE`` (10; the workers
  answering everyone's requests get the cores first); a cancel kills that process and its
  children (any worker can: the process id is in the request, the machine is the same);
* with ``PIPEX_CELERY_BROKER`` (a Redis URL), :class:`dash.CeleryManager` on a Celery app
  whose broker and result backend are that Redis: jobs run in Celery workers started with
  ``celery -A app:celery_app worker`` (which build the same app, so the same callbacks are
  registered as tasks). Celery (with its Redis client) is imported only then; it is not a
  dependency of the app: ``pip install 'celery[redis]'``. The workers must see the same
  ``PIPEX_STATE_DIR`` (the Batch tab writes its results there).

Nothing is kept at module level: :func:`background_manager` builds one manager per app.
"""

from __future__ import annotations

import logging
import os
import select
from pathlib import Path

import dash

from pipeline import admission
from pipeline.errors import InputError

__all__ = ["JOBS_FOLDER", "NicedDiskcacheManager", "background_manager", "celery_app",
           "jobs_dir"]

#: Folder of the diskcache of the local job runner, inside the state folder.
JOBS_FOLDER = "jobs"

#: Seconds a new job process has to prove it started (:class:`NicedDiskcacheManager`), and
#: how many times a job whose process did not is started again.
START_TIMEOUT = 8.0
START_ATTEMPTS = 3

#: The job cache's key a new job process reads first (nothing is stored under it).
_PROBE_KEY = "pipex:job-start-probe"

_log = logging.getLogger(__name__)


def jobs_dir(config) -> Path:
    """The diskcache folder of the local job runner (``<state_dir>/jobs``)."""
    return Path(config.state_dir) / JOBS_FOLDER


def celery_app(broker: str, name: str = "pipex"):
    """A Celery app using the Redis URL `broker` as broker and result backend.

    Parameters
    ----------
    broker : str
        ``redis://host:6379/0`` (or ``rediss://``).
    name : str, optional
        The Celery app's name.

    Raises
    ------
    InputError
        If `broker` is not a Redis URL, or Celery is not installed.
    """
    if not isinstance(broker, str) or not broker.strip().startswith(("redis://", "rediss://")):
        raise InputError(f"PIPEX_CELERY_BROKER must be a Redis URL such as "
                         f"'redis://redis:6379/0', got {broker!r}")
    try:
        from celery import Celery
    except ImportError:
        raise InputError("PIPEX_CELERY_BROKER is set but Celery is not installed: "
                         "pip install 'celery[redis]' (or unset PIPEX_CELERY_BROKER to run "
                         "jobs locally)") from None
    broker = broker.strip()
    app = Celery(name, broker=broker, backend=broker)
    # a job's result is read once by the page; keep it a day at most
    app.conf.result_expires = 24 * 3600
    return app


def background_manager(config):
    """The background-callback manager of an app built on `config`.

    Parameters
    ----------
    config : pipeline.config.Config
        ``celery_broker`` set: a :class:`dash.CeleryManager`; otherwise a
        :class:`dash.DiskcacheManager` on :func:`jobs_dir` (created if needed).

    Returns
    -------
    dash.DiskcacheManager or dash.CeleryManager
        Pass it as ``dash.Dash(background_callback_manager=...)``; the Celery app is its
        ``handle``.

    Raises
    ------
    InputError
        If a Celery broker is configured but cannot be used (see :func:`celery_app`).
    """
    if getattr(config, "celery_broker", None):
        return dash.CeleryManager(celery_app(config.celery_broker))
    import diskcache

    folder = jobs_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    # results and progress are small and read once; a job killed mid-write leaves nothing
    # another job reads (keys are per job)
    return NicedDiskcacheManager(diskcache.Cache(str(folder)), nice=getattr(config, "job_nice", 0))


class Niced:
    """A job function run at CPU priority `nice` (:func:`pipeline.admission.lower_priority`)
    in the job's own process, before any of its work.

    With `ready` (the write end of a pipe, and `cache`, the job runner's diskcache), the job
    process first reads `cache` once and writes one byte to `ready`: proof to the server that
    the forked process can use SQLite (see :class:`NicedDiskcacheManager`)."""

    def __init__(self, job_fn, nice: int, ready: int | None = None, cache=None,
                 probe=None):
        self.job_fn, self.nice, self.ready, self.cache = job_fn, nice, ready, cache
        self.probe = probe

    def __call__(self, *args, **kwargs):
        if self.ready is not None:
            if self.probe is not None:
                self.probe()
            if self.cache is not None:
                self.cache.get(_PROBE_KEY)
            os.write(self.ready, b"1")
            os.close(self.ready)
        if self.nice:
            admission.lower_priority(self.nice)
        return self.job_fn(*args, **kwargs)


class NicedDiskcacheManager(dash.DiskcacheManager):
    """dash's local job runner (a process per background callback), whose job processes run
    at the configured lower priority (``PIPEX_JOB_NICE``): the workers serving everyone's
    requests get the cores first (issue 11: a 4096² neighbour's exact job at the workers'
    priority raised five others' move p95 1.8-6.9×).

    A job's process is forked from a server process whose other threads use SQLite (the
    array store and this runner's diskcache are SQLite databases). A fork taken while another
    thread holds one of SQLite's global mutexes gives a child whose first SQLite call waits
    forever (seen in CI: a job process asleep in ``futex_wait`` before any work, its page
    polling a job that never starts). So every job process proves it can read the job cache
    before it works (:class:`Niced`, one byte on a pipe); one that has not within
    `start_timeout` seconds is killed and the job started again in a new process, at most
    `start_attempts` times. Nothing of the job ran in a killed process (it had not passed the
    probe), so starting it again is safe.
    """

    def __init__(self, cache=None, *args, nice: int = 0, start_timeout: float = START_TIMEOUT,
                 start_attempts: int = START_ATTEMPTS, probe=None, **kwargs):
        super().__init__(cache, *args, **kwargs)
        self.nice = nice
        self.start_timeout, self.start_attempts = float(start_timeout), int(start_attempts)
        # a callable the job process runs before its probe (tests: a process that hangs)
        self.probe = probe

    def call_job_fn(self, key, job_fn, args, context):
        for attempt in range(1, self.start_attempts + 1):
            read, write = os.pipe()
            try:
                pid = super().call_job_fn(
                    key, Niced(job_fn, self.nice, write, self.handle, self.probe), args, context)
            finally:
                os.close(write)
            try:
                poll = select.poll()  # not select.select: a busy server's fds pass 1024
                poll.register(read, select.POLLIN)
                ready = poll.poll(self.start_timeout * 1000)
                started = bool(ready) and os.read(read, 1) == b"1"
            finally:
                os.close(read)
            if started:
                return pid
            _log.warning("background job %s: process %s did not start within %.0f s "
                         "(attempt %d of %d); killed", key, pid, self.start_timeout, attempt,
                         self.start_attempts)
            self.terminate_job(pid)
        raise RuntimeError(f"the background job could not start ({self.start_attempts} "
                           f"processes in a row did not answer within "
                           f"{self.start_timeout:.0f} s)")
