"""bench/bench_load.py runs: 2 simulated users for a few seconds against gunicorn (2 x 2).

A quick check that the load benchmark still drives the app (page, sample, moves with their
settle, undo, filter changes, downloads) and reports what README's "Under load" quotes. No
time is asserted: the machine may be busy; errors are.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "bench_load.py"


@pytest.mark.server
def test_bench_load_reports_two_users_without_errors(tmp_path):
    out = tmp_path / "load.json"
    # think times short and a mix heavy on the rarer actions, so that each one runs in 5 s
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--users", "2", "--seconds", "5", "--think", "0.2", "0.5",
         "--mix", "move=0.4,undo=0.2,filter=0.2,download=0.2", "--out", str(out)],
        check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    [run] = report["runs"]
    assert run["users"] == 2 and run["seconds"] == 5
    assert run["crashes"] == [] and run["hung_users"] == []
    assert run["errors"] == {} and run["errors_total"] == 0, run["error_times"]
    assert run["unrecovered_total"] == 0
    assert run["requests"] > 10
    for action in ("page", "load", "move", "filter", "download"):
        stats = run[action]
        assert set(stats) == {"n", "p50_s", "p95_s", "max_s"}, action
    assert run["page"]["n"] == 2 and run["load"]["n"] == 2
    assert run["move"]["n"] >= 1 and 0 < run["move"]["p50_s"] <= run["move"]["p95_s"] \
        <= run["move"]["max_s"]
    workers = run["workers"]
    assert workers["cpu_s"] > 0 and workers["peak_rss_mb"] > 50 and workers["pids_seen"] >= 2
    caches = run["caches"]
    assert caches["store_limit_mb"] == 4096 and caches["cache_limit_mb"] == 8192
    assert 0 < caches["store_max_mb"] and caches["within_limits"] is True
    assert run["gunicorn"]["worker_boots"] >= 2 and run["gunicorn"]["tracebacks"] == 0
    assert len(run["loadavg_before"]) == 3
    # the markdown table
    assert "| N=2 |" in result.stdout and "p50 / p95 / max" in result.stdout
