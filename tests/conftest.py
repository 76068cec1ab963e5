"""Fixtures shared by the test modules (helpers live in tests/support)."""

from __future__ import annotations

import pytest

from tests.support import serve_docker_cmd


@pytest.fixture(scope="module")
def gunicorn_process():
    """The Dockerfile's CMD (gunicorn, 2 workers) run from the repo root on a loopback port.

    Yields a `tests.support.GunicornProcess` (``.base_url``, ``.pid``, ``.log()``) once
    ``/health`` answers; afterwards SIGTERMs it by PID, waits, and fails if it did not exit 0.
    State and data dirs are fresh temporary folders. One server per test module.
    """
    # PIPEX_QUICK_EXACT_S=0: a move always shows a live preview, then the page asks for the
    # exact result, possibly from the other worker (the path test_deploy drives)
    with serve_docker_cmd(workers=2, env={"PIPEX_QUICK_EXACT_S": "0"}) as server:
        yield server


@pytest.fixture(scope="module")
def gunicorn_server(gunicorn_process):
    """Base URL (``http://127.0.0.1:PORT``) of `gunicorn_process`, for DashClient."""
    return gunicorn_process.base_url


@pytest.fixture(scope="session")
def cluster():
    """A real dask.distributed scheduler and two worker processes on 127.0.0.1, started once
    for the session: (LocalCluster, Client)."""
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local:
        with distributed.Client(local) as client:
            yield local, client


def pytest_sessionfinish(session, exitstatus):
    """Kill background-job processes a test left running (a job of a page the test closed):
    multiprocessing joins its children at exit, so one still working would keep pytest alive
    after its summary."""
    try:
        import multiprocess
    except ImportError:  # dash's job runner not installed
        return
    for child in multiprocess.active_children():
        child.kill()
        child.join(5)
