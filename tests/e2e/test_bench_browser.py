"""bench/bench_browser.py in its quick mode (coins, 2 key presses per page) in headless
Chromium: it runs, and every metric of this app and of the baseline is a positive number.
Never a limit on the times themselves (the machine is shared and noisy)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

#: Per-move metrics that must be > 0 for both pages (medians, and every single move).
METRICS = ("first_redraw_s", "exact_s", "settled_s", "busy_task_s", "busy_script_s",
           "busy_layout_s", "busy_style_s", "main_cpu_s", "renderer_cpu_s", "requests",
           "req_bytes", "resp_bytes")


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_browser_benchmark(tmp_path):
    if not (os.path.exists(CHROMIUM) and shutil.which("chromedriver")):
        pytest.fail(f"Chromium ({CHROMIUM}) and chromedriver are needed: run `make test`, which "
                    "installs Debian's chromium and chromium-driver.")
    out = tmp_path / "browser.json"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_browser.py"), "--quick",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| coins | first redraw" in proc.stdout

    results = json.loads(out.read_text())
    variants = results["cases"]["coins"]["variants"]
    assert set(variants) == {"app", "baseline"}
    for label, v in variants.items():
        assert len(v["moves"]) == 2, label
        for field in METRICS:
            assert _positive(v["summary"][field]["median"]), (label, field, v["summary"][field])
            for move in v["moves"]:
                assert _positive(move[field]), (label, field, move)
        for move in v["moves"]:
            # one slider step to a (vmin, vmax) the page had not shown, settled
            assert move["new_pair"] and move["idle"] and move["overlay_changed"], (label, move)
            assert move["exact_s"] >= move["first_redraw_s"] - 1e-9, (label, move)
            assert move["settled_s"] >= move["exact_s"] - 1e-9, (label, move)
        assert _positive(v["load_s"])
    targets = results["targets"]
    assert {t["target"].split(" ≤")[0] for t in targets} >= {"first redraw", "exact drawn",
                                                             "main-thread time"}
