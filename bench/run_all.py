"""Run every benchmark of bench/ with its defaults (``make bench``).

1. ``bench_solver.py`` (if present): ``pipeline.randomwalker`` vs
   ``skimage.segmentation.random_walker``, in process.
2. ``bench_http.py``: a slider move over HTTP, this app vs the talk's app, on coins, a
   1024x1024 image and a 128^3 volume; JSON to ``bench/results/http.json``.
3. ``bench_browser.py --drag``: a key press on a threshold handle to pixels in headless
   Chromium, this app vs the talk's app, same cases, and a 2 s drag; JSON to
   ``bench/results/browser.json`` (``--browser-args`` replaces ``--drag``; ``--no-browser``
   skips it).

Each script runs in its own interpreter (this one), with ``OPENBLAS_NUM_THREADS=1`` (and
OMP / MKL). A failing script is reported and the next one still runs; the exit status is
non-zero if any failed. Extra arguments after ``--`` go to ``bench_http.py``::

    python bench/run_all.py
    python bench/run_all.py -- --cases coins --repeats 3
    python bench/run_all.py --browser-args "--cases coins --drag --long 300"
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: Path, args=()) -> int:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    # the venv's tools (gunicorn) first, as `make` does
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    print(f"\n===== {script.name} {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.call([sys.executable, str(script), *args], cwd=HERE.parent, env=env)
    print(f"===== {script.name}: exit {code} after {time.perf_counter() - t0:.0f} s", flush=True)
    return code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, http_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, None)
    parser = argparse.ArgumentParser(description="Run every benchmark of bench/.",
                                     allow_abbrev=False)
    parser.add_argument("--browser-args", default="--drag",
                        help="arguments of bench_browser.py (default: --drag)")
    parser.add_argument("--no-browser", action="store_true", help="skip bench_browser.py")
    opts, rest = parser.parse_known_args(own)
    if http_args is None:  # no "--": the other arguments go to bench_http.py, as before
        http_args = rest
    elif rest:
        parser.error(f"unknown arguments before --: {rest}")
    failed = []
    solver = HERE / "bench_solver.py"
    if solver.is_file():
        if run(solver) != 0:
            failed.append(solver.name)
    else:
        print("bench_solver.py not found: skipped", flush=True)
    if run(HERE / "bench_http.py", http_args) != 0:
        failed.append("bench_http.py")
    if not opts.no_browser:
        if run(HERE / "bench_browser.py", shlex.split(opts.browser_args)) != 0:
            failed.append("bench_browser.py")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
