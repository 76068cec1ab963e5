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


def _bench_load():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import bench_load

    return bench_load


def test_heavy_image():
    img = _bench_load().heavy_image(300)
    assert img.shape == (300, 300) and img.dtype.name == "uint8"
    assert 40 < img.mean() < 160 and img.std() > 30  # blobs on a background, noisy


def _run(p50, p95, jobs=None, neighbour=None):
    def twice(v):
        return None if v is None else 2 * v

    r = {"move": {"n": 10, "p50_s": p50, "p95_s": p95, "max_s": p95},
         "filter": {"n": 2, "p50_s": twice(p50), "p95_s": twice(p95), "max_s": twice(p95)}}
    if jobs is not None:
        r["jobs"] = jobs
    if neighbour is not None:
        r["browser_neighbour"] = neighbour
    return r


def test_browser_scenario_and_text():
    bl = _bench_load()
    neighbour = {"steps": [
        {"what": "load", "at_s": 3.2, "overlay_s": 4.1, "exact_s": None},
        {"what": "key", "at_s": 50.0, "overlay_s": 0.45, "exact_s": 7.25}],
        "errors": [], "browser_cpu_s": 31.4}
    h = bl.browser_scenario(_run(0.1, 0.2), _run(0.12, 0.3, {"processes": 1, "cpu_s": 40.2,
                                                             "peak_rss_mb": 2100.0},
                                                  neighbour), 4096)
    assert h["size"] == 4096 and h["neighbour"] is neighbour
    assert h["move_p95_ratio"] == pytest.approx(1.5)
    assert h["move_p50_ratio"] == pytest.approx(1.2)
    assert h["filter_p95_ratio"] == pytest.approx(1.5)
    text = bl.browser_text(h)
    assert "100 / 200 ms alone → 120 / 300 ms with it (1.50× at p95)" in text
    assert "1 process(es), 40 s CPU, peak RSS 2100 MB" in text
    assert "load (at 3 s): first overlay 4.10 s, exact – (not by the end)" in text
    assert "key (at 50 s): first overlay 0.45 s, exact 7.25 s" in text
    assert "its Chromium used 31 s of CPU" in text
    # no move without the neighbour: no ratio, no crash
    assert bl.browser_scenario(_run(None, None), _run(0.1, 0.2), 64)["move_p95_ratio"] is None
