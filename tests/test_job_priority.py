"""Background jobs run at a lower CPU priority than the workers serving requests (issue 11:
a neighbour's 4096² exact job at the workers' priority raised five others' move p95
1.8–6.9×, bench_load --heavy-browser)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import diskcache
import pytest

from callbacks import jobs
from pipeline import admission
from pipeline.config import Config
from pipeline.errors import InputError


def _record_priority(path):
    """A job function: writes its process's nice value and pid, then returns."""
    def job(*_args):
        with open(path, "w") as out:
            out.write(f"{os.getpriority(os.PRIO_PROCESS, 0)} {os.getpid()}")
    return job


def _wait_for(path, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text():
            return path.read_text().split()
        time.sleep(0.05)
    raise AssertionError("the job did not run")


def test_the_local_job_runner_runs_its_jobs_at_the_configured_priority(tmp_path):
    before = os.getpriority(os.PRIO_PROCESS, 0)
    manager = jobs.background_manager(Config(state_dir=tmp_path / "s", data_dir=tmp_path,
                                             job_nice=12))
    assert isinstance(manager, jobs.NicedDiskcacheManager) and manager.nice == 12
    out = tmp_path / "job.txt"
    pid = manager.call_job_fn("k", _record_priority(out), (), {})
    nice, job_pid = _wait_for(out)
    assert int(job_pid) == pid != os.getpid()
    assert int(nice) == max(12, before)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the server's own priority: unchanged

    plain = jobs.NicedDiskcacheManager(diskcache.Cache(str(tmp_path / "c")), nice=0)
    out0 = tmp_path / "job0.txt"
    plain.call_job_fn("k0", _record_priority(out0), (), {})
    assert int(_wait_for(out0)[0]) == before


def test_the_app_uses_the_niced_runner(tmp_path):
    from app import create_app

    app = create_app(Config(state_dir=tmp_path / "s", data_dir=tmp_path / "d", job_nice=7))
    assert isinstance(app._background_manager, jobs.NicedDiskcacheManager)
    assert app._background_manager.nice == 7


def test_lower_priority_only_lowers_and_checks_its_argument():
    code = ("from pipeline import admission; import os\n"
            "print(admission.lower_priority(5), admission.lower_priority(3), "
            "admission.lower_priority(0), os.getpriority(os.PRIO_PROCESS, 0))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    start = os.getpriority(os.PRIO_PROCESS, 0)
    expected = max(5, start)
    assert done.stdout.split() == [str(expected)] * 4
    for bad in (-1, 20, 2.5, True, "10"):
        with pytest.raises(InputError, match="nice must be a whole number from 0 to 19"):
            admission.lower_priority(bad)


def test_config_reads_the_job_priority():
    assert Config.from_env({}).job_nice == 10
    assert Config.from_env({"PIPEX_JOB_NICE": "0"}).job_nice == 0
    assert Config.from_env({"PIPEX_JOB_NICE": " 19 "}).job_nice == 19
    for bad in ("20", "-1", "low"):
        with pytest.raises(InputError, match="PIPEX_JOB_NICE must be"):
            Config.from_env({"PIPEX_JOB_NICE": bad})


def _hang_once(flag):
    """A job process's probe that hangs (as a fork holding a locked SQLite mutex does) when
    `flag` exists, removing it first: the first process hangs, the next one passes."""
    def probe():
        if flag.exists():
            flag.with_suffix(".pid").write_text(str(os.getpid()))
            flag.unlink()
            time.sleep(3600)
    return probe


def test_a_job_process_that_hangs_before_its_work_is_killed_and_the_job_started_again(
        tmp_path):
    flag = tmp_path / "hang"
    flag.touch()
    manager = jobs.NicedDiskcacheManager(diskcache.Cache(str(tmp_path / "c")), nice=0,
                                         start_timeout=1.5, probe=_hang_once(flag))
    out = tmp_path / "job.txt"
    pid = manager.call_job_fn("k", _record_priority(out), (), {})
    _, job_pid = _wait_for(out)
    assert int(job_pid) == pid  # the job ran, in the second process: the one returned
    assert not flag.exists()  # the first process did hang (it removed the flag)
    import psutil
    hung = int(flag.with_suffix(".pid").read_text())
    assert hung != pid
    assert (not psutil.pid_exists(hung)
            or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE)  # killed


def test_a_job_that_never_starts_fails_with_a_clear_error(tmp_path):
    def never():
        time.sleep(3600)
    manager = jobs.NicedDiskcacheManager(diskcache.Cache(str(tmp_path / "c")), nice=0,
                                         start_timeout=0.5, start_attempts=2, probe=never)
    with pytest.raises(RuntimeError, match="could not start"):
        manager.call_job_fn("k", _record_priority(tmp_path / "x"), (), {})
    assert not (tmp_path / "x").exists()
