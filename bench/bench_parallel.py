"""Chunked against whole steps, and batches with 1 and 2 jobs, on this machine.

1. Filters on a 4096² uint8 image and a 256³ float32 volume (converted to float64, as the
   recipe's filter stage does): Gaussian sigma=2, median r=3, non-local means, and the filter
   stage of a recipe (``pipeline.recipe.filter_stage`` against
   ``pipeline.parallel.filter_stage``), whole and blockwise on 2 workers (threads; the
   local filters also with loky processes), interleaved, best of ``--repeats`` runs of each
   (the machine is shared: the least disturbed run; medians beside them); the blockwise
   result is checked identical to the whole one. Peak memory by tracemalloc (numpy's
   allocations, every thread) in a separate run: blockwise must stay below whole + one block
   per worker (the Gaussian on a volume runs as separable passes: blocks without overlap,
   the largest of its rounds).
2. Batches through the command line (``python -m pipeline run`` in a new process, as a user
   runs it): 48 coins-sized images and 8 1024² images, ``--jobs 1`` against ``--jobs 2``
   (processes forked from the command's, the default) and ``--jobs 2 --prefer threads``, and
   through a ``dask.distributed.LocalCluster`` of 2 worker processes (1 thread each) on
   127.0.0.1. Each run's CPU time (the process and its workers, user + system) is recorded
   beside its wall time, and for the coins batch the fixed costs of a worker (a new
   interpreter and the batch's imports, as loky starts one for the Batch tab; a worker forked
   from a process that has imported them, as the command line's) against an image's: the
   machine is shared, CPU seconds are what the other work on it does not change.

Prints a table and writes JSON to ``bench/results/parallel.json`` (git-ignored)::

    python bench/bench_parallel.py                    # everything, ~10 min on 2 cores
    python bench/bench_parallel.py --only batch --repeats 1
    python bench/bench_parallel.py --only filters --cases 256 --steps gaussian,stage
    python bench/bench_parallel.py --only filters --cases 256 --steps gaussian --no-staging

``--no-staging`` runs a separable step's passes in place on the arrays, as before they were
staged tile by tile (``PASS_TILE_MAX_BYTES = 0``): the staging's share of the speed-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data, transform  # noqa: E402

from pipeline import parallel as P  # noqa: E402
from pipeline import recipe as R  # noqa: E402
from pipeline.filters import FILTERS  # noqa: E402
from pipeline.io import blobs_3d  # noqa: E402

# Non-local means: the app's defaults (patch 5, distance 6) take minutes on these sizes
# whole; these finish in tens of seconds and keep the same algorithm (fast mode).
NLM_2D = {"h": 10.0, "patch_size": 5, "patch_distance": 3}
NLM_3D = {"h": 0.05, "patch_size": 3, "patch_distance": 2}
NLM_3D_UINT8 = {"h": 12.0, "patch_size": 3, "patch_distance": 2}


def image_4096() -> np.ndarray:
    """camera, resized to 4096² and given some noise: uint8."""
    big = transform.resize(data.camera(), (4096, 4096), order=1, preserve_range=True)
    noise = np.random.default_rng(0).normal(0, 8, big.shape)
    return np.clip(np.round(big + noise), 0, 255).astype(np.uint8)


def volume_256() -> np.ndarray:
    return blobs_3d(256).astype(np.float32)


def volume_256_uint8() -> np.ndarray:
    """The same volume scaled to 0..255 and rounded: integer values, where non-local means'
    blocks are exact."""
    volume = blobs_3d(256)
    return np.round((volume - volume.min()) / (volume.max() - volume.min()) * 255).astype(
        np.uint8)


def _median_time(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _peak(fn):
    """Peak bytes allocated (tracemalloc) while fn runs, above what was allocated before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def bench_filters(repeats: int, cases, steps_wanted=None) -> list:
    rows = []
    threads = P.Backend(jobs=2, prefer="threads")
    processes = P.Backend(jobs=2, prefer="processes")
    P.map_items(abs, [-1, -2], backend=processes)  # start the loky workers before any timing
    inputs = {"4096² uint8": ("4096", image_4096), "256³ float32": ("256", volume_256),
              "256³ uint8": ("256u8", volume_256_uint8)}
    for case, (short, make) in inputs.items():
        if short not in cases:
            continue
        loaded = make()
        image = loaded.astype(np.float64)
        nlm = NLM_2D if image.ndim == 2 else (NLM_3D if loaded.dtype != np.uint8 else
                                               NLM_3D_UINT8)
        steps = [("gaussian", {"sigma": 2.0}), ("median", {"radius": 3}), ("nl_means", nlm)]
        if short == "256u8":  # only to show non-local means blockwise on a volume
            steps = [("nl_means", nlm)]
        recipe = R.default_recipe(float(np.percentile(loaded, 30)),
                                  float(np.percentile(loaded, 70)))
        recipe["filter"] = {"name": "gaussian", "params": {"sigma": 2.0}}
        recipe = R.validate(recipe)
        for key, params in steps + ([("filter stage", None)] if short != "256u8" else []):
            if steps_wanted is not None and \
                    ("stage" if key == "filter stage" else key) not in steps_wanted:
                continue
            print(f"  {case} {key} {params or ''} ...", flush=True)
            if key == "filter stage":
                whole_fn = lambda: R.filter_stage(loaded, recipe)  # noqa: E731
                chunk_fn = lambda b: P.filter_stage(loaded, recipe, backend=b)  # noqa: E731
                label = "filter stage (uint→float64 + Gaussian σ=2)"
            else:
                step = FILTERS[key]
                checked = step.check(params)
                whole_fn = lambda s=step, c=checked: s.apply(image, **c)  # noqa: E731
                chunk_fn = lambda b, k=key, p=params: P.apply_step(k, p, image,  # noqa: E731
                                                                    backend=b)
                label = f"{step.label} {params}"
            # whole, blocks on threads and on processes, interleaved: the best of `repeats`
            # of each (the machine is shared: the minimum is the least disturbed run)
            variants = {"whole": whole_fn, "threads": lambda: chunk_fn(threads),
                        "processes": lambda: chunk_fn(processes)}
            times = {name: [] for name in variants}
            for _ in range(repeats):
                for name, fn in variants.items():
                    t0 = time.perf_counter()
                    value = fn()
                    times[name].append(time.perf_counter() - t0)
                    if name == "whole":
                        whole = value
                    elif name == "threads":
                        chunked, report = value
                        if isinstance(report, list):
                            report = report[0]
                        if report.backend == "whole":
                            variants.pop("processes", None)  # runs whole anyway
                            times.pop("processes", None)
                            break
                    del value
            whole_s, chunk_s = min(times["whole"]), min(times["threads"])
            whole_med, chunk_med = (statistics.median(times["whole"]),
                                    statistics.median(times["threads"]))
            identical = bool(np.array_equal(chunked, whole) and chunked.dtype == whole.dtype)
            row = {"case": case, "step": label, "whole_s": whole_s, "threads_s": chunk_s,
                   "speedup_threads": whole_s / chunk_s, "identical": identical,
                   "whole_median_s": whole_med, "threads_median_s": chunk_med,
                   "speedup_threads_median": whole_med / chunk_med,
                   "load_1min": os.getloadavg()[0],
                   "report": report.summary(), "blocks": report.blocks,
                   "backend": report.backend, "message": report.message,
                   "times": times}
            if "processes" in times:
                proc_s = min(times["processes"])
                row.update(processes_s=proc_s, speedup_processes=whole_s / proc_s)
            del chunked, whole
            if report.backend != "whole":
                whole_peak = _peak(whole_fn)
                chunk_peak = _peak(lambda: chunk_fn(threads))
                if getattr(report, "passes", ()):  # separable passes: no overlap, per round
                    outer = max(math.prod(chunks) for _, _, chunks in report.passes)
                else:
                    outer = max(math.prod(min(n, c + 2 * (r or 0)) for n, c, r in
                                          zip(image.shape, report.chunks, report.reach)), 1)
                block_bytes = outer * 8
                # target: whole + one block (with its overlap) per worker; 1 MB of slack for
                # bookkeeping (the block list, joblib's queues: tens of kB in practice)
                row.update(whole_peak_mb=whole_peak / 2**20, chunked_peak_mb=chunk_peak / 2**20,
                           block_mb=block_bytes / 2**20,
                           memory_ok=chunk_peak <= whole_peak + 2 * block_bytes + 2**20)
            rows.append(row)
            print(f"    whole {whole_s:.2f} s, blocks {chunk_s:.2f} s "
                  f"({whole_s / chunk_s:.2f}x; medians {whole_med:.2f} s / {chunk_med:.2f} s, "
                  f"{whole_med / chunk_med:.2f}x), identical={identical}; load "
                  f"{os.getloadavg()[0]:.1f}; {report.summary()}", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# batches


def _write_batch(folder: Path, base: np.ndarray, n: int) -> list:
    paths = []
    for i in range(n):
        image = np.roll(base if i % 2 == 0 else base[::-1], 5 * i, axis=1)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(path)
        paths.append(str(path))
    return paths


def _cpu_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli(args, cpu=None) -> float:
    """Wall time of ``python -m pipeline ARGS`` in a new process, as a user runs it
    (interpreter start and imports included, ~1.5 s here). The CPU time of the process and
    its workers (user + system) is appended to the list `cpu` when given."""
    import subprocess

    c0 = _cpu_children()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True,
                          text=True, cwd=HERE.parent, timeout=1800)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"pipeline run exited {done.returncode}: {done.stderr[-2000:]}")
    if cpu is not None:
        cpu.append(_cpu_children() - c0)
    return seconds


def bench_batch_costs(paths, recipe) -> dict:
    """Where a batch's time goes besides the images: CPU seconds of a new interpreter that
    imports the batch's code (each loky worker pays it), of a worker forked from a process
    that has imported it (the command line's: ``Backend(start="fork")``, with the executor's
    own work, per worker), of the first image in a process and of the next ones (median)."""
    import subprocess

    from pipeline import batch as B

    c0 = _cpu_children()
    subprocess.run([sys.executable, "-c", "import pipeline.batch"], check=True, cwd=HERE.parent)
    start = _cpu_children() - c0
    c0 = _cpu_children()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = _cpu_children() - c0
    c0 = _cpu_children()
    forking = ("import pipeline.batch\n"
               "from pipeline import parallel as P\n"
               "P.map_items(abs, [-1, -2], backend=P.Backend(2, prefer='processes', "
               "start='fork'))")
    subprocess.run([sys.executable, "-c", forking], check=True, cwd=HERE.parent)
    forked = (_cpu_children() - c0 - start) / 2
    work = B.ProcessImage(recipe, 64 * 2**20, 2**27)
    items = [(Path(p).name, Path(p).read_bytes()) for p in paths[:8]]
    times = []
    for item in items:
        c = time.process_time()
        work(item)
        times.append(time.process_time() - c)
    return {"interpreter_cpu_s": bare, "interpreter_and_import_cpu_s": start,
            "forked_worker_cpu_s": forked, "first_image_cpu_s": times[0],
            "image_cpu_s": statistics.median(times[1:])}


def _labels(folder: Path) -> dict:
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*_labels.tif"))}


def bench_batches(repeats: int, cases) -> list:
    from distributed import LocalCluster

    rows = []
    coins = data.coins()
    camera = transform.resize(data.camera(), (1024, 1024), order=1, preserve_range=True)
    camera = np.clip(np.round(camera), 0, 255).astype(np.uint8)
    batches = {"48 × coins 303×384": (coins, 48), "8 × 1024²": (camera, 8)}
    with tempfile.TemporaryDirectory(prefix="pipex-bench-") as tmp, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster:
        tmp = Path(tmp)
        for name, (base, n) in batches.items():
            if ("coins" in name and "coins" not in cases) or ("1024" in name and
                                                              "1024" not in cases):
                continue
            folder = tmp / name.split()[2].replace("×", "x")
            folder.mkdir()
            paths = _write_batch(folder, base, n)
            recipe = R.default_recipe(float(np.percentile(base, 30)),
                                      float(np.percentile(base, 70)))
            recipe["filter"] = {"name": "gaussian", "params": {"sigma": 1.0}}
            recipe["postprocess"] = [{"name": "fill_holes"}, {"name": "label"},
                                     {"name": "remove_small_objects", "params": {"min_size": 30}}]
            recipe_path = folder / "recipe.json"
            recipe_path.write_text(R.dumps(recipe), encoding="utf-8")
            print(f"  batch {name} ...", flush=True)
            row = {"case": name}
            if "coins" in name:  # the fixed costs of a worker, against an image's
                row["costs"] = bench_batch_costs(paths, R.validate(recipe))
            outs = {}
            for label, extra in (("jobs 1", ["--jobs", "1"]),
                                 ("jobs 2", ["--jobs", "2"]),
                                 ("jobs 2 threads", ["--jobs", "2", "--prefer", "threads"]),
                                 ("dask 2 workers", ["--dask", cluster.scheduler_address])):
                out = folder / label.replace(" ", "_")
                args = ["run", str(recipe_path), *paths, "--out", str(out), *extra]
                if label.startswith("dask"):
                    _cli(args)  # the workers import the pipeline: outside the timing
                cpu = []
                seconds, _ = _median_time(lambda a=args, c=cpu: _cli(a, c), repeats)
                row[label] = seconds
                row[f"{label} cpu"] = statistics.median(cpu)
                outs[label] = _labels(out)
                print(f"    {label}: {seconds:.2f} s (CPU {row[f'{label} cpu']:.2f} s, load "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
            row["speedup_jobs2"] = row["jobs 1"] / row["jobs 2"]
            row["dask_vs_jobs2"] = row["dask 2 workers"] / row["jobs 2"]
            first = outs["jobs 1"]
            row["identical"] = all(
                first.keys() == other.keys() and
                all(np.array_equal(first[k], other[k]) for k in first)
                for other in outs.values())
            rows.append(row)
    return rows


def _fmt_s(value):
    return "–" if value is None else f"{value:.2f} s"


def print_tables(filters, batches) -> None:
    if filters:
        print("\n| case | step | whole | blocks, 2 threads | speed-up | medians: whole / blocks "
              "(speed-up) | 2 processes | identical | peak memory whole → blocks (vs whole + a "
              "block per worker) | how it ran |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        for r in filters:
            if "whole_peak_mb" in r:
                excess = r["chunked_peak_mb"] - r["whole_peak_mb"] - 2 * r["block_mb"]
                memory = (f"{r['whole_peak_mb']:.0f} → {r['chunked_peak_mb']:.1f} MB "
                          f"(2 × {r['block_mb']:.1f} MB blocks; {excess:+.1f} MB)"
                          f"{'' if excess <= 1 else ' OVER'}")
            else:
                memory = "–"
            procs = (f"{r['processes_s']:.2f} s ({r['speedup_processes']:.2f}×)"
                     if "processes_s" in r else "–")
            medians = (f"{r['whole_median_s']:.2f} s / {r['threads_median_s']:.2f} s "
                       f"({r['speedup_threads_median']:.2f}×)" if "whole_median_s" in r else "–")
            print(f"| {r['case']} | {r['step']} | {r['whole_s']:.2f} s | {r['threads_s']:.2f} s "
                  f"| {r['speedup_threads']:.2f}× | {medians} | {procs} | {r['identical']} "
                  f"| {memory} | {r['report']} |")
    if batches:
        print("\n| batch (python -m pipeline run, new process) | --jobs 1 | --jobs 2 "
              "(forked processes) | speed-up | --jobs 2 --prefer threads | --dask LocalCluster, "
              "2 workers | dask / --jobs 2 | identical |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in batches:
            print(f"| {r['case']} | {r['jobs 1']:.2f} s | {r['jobs 2']:.2f} s | "
                  f"{r['speedup_jobs2']:.2f}× | {r['jobs 2 threads']:.2f} s "
                  f"({r['jobs 1'] / r['jobs 2 threads']:.2f}×) | {r['dask 2 workers']:.2f} s | "
                  f"{r['dask_vs_jobs2']:.2f}× | {r['identical']} |")
        print("\n| batch | CPU --jobs 1 | CPU --jobs 2 | extra CPU with 2 workers |")
        print("| --- | ---: | ---: | ---: |")
        for r in batches:
            if "jobs 1 cpu" in r:
                print(f"| {r['case']} | {r['jobs 1 cpu']:.2f} s | {r['jobs 2 cpu']:.2f} s | "
                      f"{r['jobs 2 cpu'] - r['jobs 1 cpu']:+.2f} s |")
        for r in batches:
            if "costs" in r:
                c = r["costs"]
                forked = (f"; forked from a process that has them (--jobs 2's) "
                          f"{c['forked_worker_cpu_s']:.2f} s"
                          if "forked_worker_cpu_s" in c else "")
                print(f"\n{r['case']}, CPU per worker: a new interpreter "
                      f"{c['interpreter_cpu_s']:.2f} s, with the batch's imports "
                      f"{c['interpreter_and_import_cpu_s']:.2f} s (a loky worker){forked}; "
                      f"per image: the first {c['first_image_cpu_s']:.3f} s, the next "
                      f"{c['image_cpu_s']:.3f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("filters", "batch"), default=None)
    parser.add_argument("--cases", default="4096,256,256u8,coins,1024",
                        help="comma-separated: 4096, 256, 256u8 (filters: the 256³ volume "
                             "as uint8, non-local means only), coins, 1024 (batches)")
    parser.add_argument("--steps", default="gaussian,median,nl_means,stage",
                        help="comma-separated filters to time: gaussian, median, nl_means, "
                             "stage (the recipe's filter stage)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-staging", action="store_true",
                        help="a separable step's passes in place on the arrays, not staged "
                             "tile by tile in small buffers (pipeline.parallel."
                             "PASS_TILE_MAX_BYTES = 0)")
    parser.add_argument("--out", default=str(HERE / "results" / "parallel.json"))
    parser.add_argument("--print", metavar="JSON", default=None,
                        help="only print the tables of an earlier results file")
    args = parser.parse_args(argv)
    if args.print:
        saved = json.loads(Path(args.print).read_text(encoding="utf-8"))
        print_tables(saved["filters"], saved["batches"])
        print(f"\n{saved['date']}, load average (1 min) at start, after the filters, at the "
              f"end: {', '.join(f'{x:.1f}' for x in saved['load_average_1min'])}")
        return 0
    cases = set(args.cases.split(","))
    if args.no_staging:
        P.PASS_TILE_MAX_BYTES = 0
    t0 = time.perf_counter()
    print(f"{P.cpu_limit()} CPUs, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    load = [os.getloadavg()[0]]
    filters = (bench_filters(args.repeats, cases, set(args.steps.split(",")))
               if args.only != "batch" else [])
    load.append(os.getloadavg()[0])
    batches = bench_batches(args.repeats, cases) if args.only != "filters" else []
    load.append(os.getloadavg()[0])
    print_tables(filters, batches)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": P.cpu_limit(),
              "python": platform.python_version(), "repeats": args.repeats,
              "nl_means_2d": NLM_2D, "nl_means_3d": NLM_3D, "filters": filters,
              "staging": not args.no_staging,
              "batches": batches, "seconds": time.perf_counter() - t0,
              "load_average_1min": load}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"\nload average (1 min) at start, after the filters, at the end: "
          f"{', '.join(f'{x:.1f}' for x in load)} (2 cores: other work was running when "
          "it is above ~2)")
    print(f"wrote {out} after {result['seconds']:.0f} s")
    return 0 if all(r["identical"] for r in filters + batches) else 1


if __name__ == "__main__":
    sys.exit(main())
