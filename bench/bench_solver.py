"""Benchmark ``pipeline.randomwalker`` against ``skimage.segmentation.random_walker``.

For each image (coins, camera resized to 1024x1024, a blurred noisy 3D blob volume), and a
few distinct (vmin, vmax) marker sets, prints per solver mode:

* ``skimage``: time of ``skimage.segmentation.random_walker`` called directly (it
  rebuilds the graph every time);
* ``build``: time of :func:`pipeline.randomwalker.build_graph` (once per image and beta);
* ``solve``: time of :func:`pipeline.randomwalker.solve` for a new vmin/vmax with the
  graph already built (nothing is cached between calls, so repeating a call is a full
  solve);

Times are the median over marker sets of the best of ``--best-of`` calls (skimage's
times on a shared 2-core machine are bimodal, e.g. 0.9 s or 2.2 s for the same call).
* speedups against skimage in the same mode and against skimage's fastest mode;
* pixel agreement with skimage in the same mode and with the exact (skimage 'bf') labels.

Run with ``OPENBLAS_NUM_THREADS=1`` (set below before numpy is imported)::

    python bench/bench_solver.py --size 128 --repeats 5 [--ablation]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from skimage import data, filters, transform  # noqa: E402
from skimage.segmentation import random_walker as sk_random_walker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import randomwalker as rw  # noqa: E402

MODES = ("cg_mg", "cg_j", "bf")


def blob_volume(size, seed=1):
    """Blurred binary blobs with Gaussian noise (0.3 * std), values roughly in [0, 1]."""
    vol = data.binary_blobs(length=size, n_dim=3, volume_fraction=0.3, rng=seed)
    vol = filters.gaussian(vol.astype(float), sigma=2)
    rng = np.random.default_rng(seed)
    return vol + 0.3 * vol.std() * rng.standard_normal(vol.shape)


def cases(size, repeats):
    """(name, image, list of (vmin, vmax), run bf?) for each benchmark image."""
    coins = data.coins()
    coin_pairs = [(50, 180), (60, 170), (70, 160), (45, 190), (55, 150), (65, 175), (40, 200)]
    camera = transform.resize(data.camera(), (1024, 1024))
    cam_pairs = [(0.2, 0.7), (0.25, 0.65), (0.15, 0.75), (0.3, 0.6), (0.22, 0.72), (0.1, 0.8)]
    vol = blob_volume(size)
    vol_pairs = [(0.2, 0.7), (0.25, 0.65), (0.3, 0.6), (0.15, 0.75), (0.22, 0.68), (0.18, 0.6)]
    return [
        ("coins 303x384", coins, coin_pairs[:repeats], True),
        ("camera 1024x1024", camera, cam_pairs[:repeats], True),
        (f"blobs {size}^3", vol, vol_pairs[:repeats], size <= 64),
    ]


def markers_of(image, vmin, vmax):
    markers = np.zeros(image.shape, dtype=np.uint8)
    markers[image < vmin] = 1
    markers[image > vmax] = 2
    return markers


def timed(fn, best_of=1):
    """(shortest wall time of `best_of` calls, result of the last call)."""
    best = math.inf
    for _ in range(best_of):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_case(name, image, pairs, with_bf, beta, tol, best_of=2, ablation=False):
    modes = [m for m in MODES if with_bf or m != "bf"]
    all_markers = [markers_of(image, lo, hi) for lo, hi in pairs]
    fractions = [float((m == 0).mean()) for m in all_markers]

    sk_times = {m: [] for m in modes}
    sk_labels = {m: [] for m in modes}
    for markers in all_markers:
        for mode in modes:
            t, labels = timed(
                lambda: sk_random_walker(image, markers, beta=beta, mode=mode, tol=tol),
                best_of if mode != "bf" else 1,
            )
            sk_times[mode].append(t)
            sk_labels[mode].append(labels)

    t_build, graph = timed(lambda: rw.build_graph(image, beta=beta))
    # warm-up on a marker set not in the list (imports, allocator), then time new sets
    warm = markers_of(image, *np.mean(pairs, axis=0))
    for mode in modes:
        rw.solve(graph, warm, mode=mode, tol=tol)

    if "bf" in sk_labels:
        exact_labels, exact_name = sk_labels["bf"], "skimage bf"
    else:  # no direct 3D solve at this size: a tightly converged Jacobi-CG instead
        exact_labels = [rw.solve(graph, m, mode="cg_j", tol=1e-8) for m in all_markers]
        exact_name = "our cg_j at tol=1e-8"

    rows = []
    for mode in modes:
        times, agree_same, agree_exact = [], [], []
        for i, markers in enumerate(all_markers):
            t, labels = timed(lambda: rw.solve(graph, markers, mode=mode, tol=tol),
                              best_of if mode != "bf" else 1)
            times.append(t)
            agree_same.append(float((labels == sk_labels[mode][i]).mean()))
            agree_exact.append(float((labels == exact_labels[i]).mean()))
        rows.append((mode, times, agree_same, agree_exact))

    sk_med = {m: float(np.median(v)) for m, v in sk_times.items()}
    best_mode = min(sk_med, key=sk_med.get)
    print(f"\n## {name}  (n={image.size:,}, undecided pixels {min(fractions):.0%}-"
          f"{max(fractions):.0%}, {len(pairs)} marker sets, beta={beta:g}, tol={tol:g})")
    print(f"build_graph: {t_build:.3f} s   skimage fastest mode: {best_mode} "
          f"({sk_med[best_mode]:.3f} s)")
    header = (f"{'mode':6} {'skimage s':>10} {'solve s':>9} {'x same':>8} {'x best':>8} "
              f"{'agree same':>11} {'agree exact':>12}")
    print(header)
    print("-" * len(header))
    for mode, times, agree_same, agree_exact in rows:
        med = float(np.median(times))
        print(f"{mode:6} {sk_med[mode]:10.3f} {med:9.3f} {sk_med[mode] / med:8.1f} "
              f"{sk_med[best_mode] / med:8.1f} {min(agree_same):11.4%} "
              f"{min(agree_exact):12.4%}")
    print(f"agree exact = agreement with {exact_name}")
    _preview_rows(image, graph, pairs, tol, best_of)
    if not with_bf:
        print("bf: skipped for this size (direct 3D factorisation: minutes and many GB)")
    if ablation:
        _ablation(graph, all_markers, exact_labels, tol, best_of)


def _preview_rows(image, graph, pairs, tol, best_of):
    """Live preview (:func:`pipeline.randomwalker.preview`) after a small slider move.

    For each pair, the previous state is the pair moved by 2 % of the intensity range (vmin
    down, vmax up): its probability map is the warm start, as in the app.
    """
    mode = "cg_j" if image.ndim == 3 else "cg_mg"  # the app's default modes
    step = 0.02 * float(np.ptp(image))
    times, canon_times, agree = [], [], []
    for lo, hi in pairs:
        markers = markers_of(image, lo, hi)
        _, prob = rw.solve(graph, markers_of(image, lo - step, hi + step), mode=mode, tol=tol,
                           return_probability=True)
        t_canon, exact = timed(lambda: rw.solve(graph, markers, mode=mode, tol=tol), best_of)
        t, labels = timed(lambda: rw.preview(graph, markers, prob), best_of)
        times.append(t)
        canon_times.append(t_canon)
        agree.append(float((labels == exact).mean()))
    print(f"live preview ({rw.PREVIEW_ITERATIONS} Jacobi-CG iterations from the previous "
          f"state's probability, a 2 % slider move): {np.median(times):.3f} s vs {mode} "
          f"{np.median(canon_times):.3f} s; agreement with {mode}: worst {min(agree):.3%}, "
          f"median {np.median(agree):.3%}")


def _ablation(graph, all_markers, exact_labels, tol, best_of):
    """cg_j with and without the cascadic (coarse-grid) initial guess."""
    if graph.coarse_laplacians:
        other = rw.RandomWalkerGraph(graph.shape, graph.laplacian, graph.degree, (),
                                     graph.beta, graph.spacing)
        names = ("cascadic x0 (default)", "flat x0 P=0.5")
    else:
        levels, shape, lap = [], graph.shape, graph.laplacian
        for _ in range(3):
            lap, shape = rw._galerkin_coarse(lap, shape)
            levels.append(lap)
        other = rw.RandomWalkerGraph(graph.shape, graph.laplacian, graph.degree, levels,
                                     graph.beta, graph.spacing)
        names = ("flat x0 P=0.5 (default)", "cascadic x0")
    for name, g in zip(names, (graph, other)):
        times, agree = [], []
        for markers, exact in zip(all_markers, exact_labels):
            t, labels = timed(lambda: rw.solve(g, markers, mode="cg_j", tol=tol), best_of)
            times.append(t)
            agree.append(float((labels == exact).mean()))
        print(f"ablation cg_j {name:24}: median {np.median(times):.3f} s "
              f"(per set: {' '.join(f'{t:.3f}' for t in times)}), "
              f"worst agreement with exact {min(agree):.4%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="edge of the 3D volume")
    parser.add_argument("--repeats", type=int, default=5,
                        help="number of distinct (vmin, vmax) marker sets per image (<= 6)")
    parser.add_argument("--best-of", type=int, default=2,
                        help="time each (marker set, mode) as the best of this many calls "
                             "(skimage's times are bimodal on a shared machine); bf: 1")
    parser.add_argument("--beta", type=float, default=130.0)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--ablation", action="store_true",
                        help="also time cg_j with and without the cascadic initial guess "
                             "(2D default: cascadic; 3D default: P=0.5)")
    parser.add_argument("--cases", default="coins,camera,blobs",
                        help="comma-separated subset of coins,camera,blobs")
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 6:
        parser.error("--repeats must be between 1 and 6")
    wanted = {c.strip() for c in args.cases.split(",")}
    warnings.simplefilter("ignore")  # skimage's cg_j convergence / probability warnings
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; times: median "
          f"over marker sets of the best of {args.best_of} calls (bf: 1 call); agreement: "
          f"worst marker set;\nx same / x best = skimage time (same / fastest mode) / our "
          f"solve time for a new vmin/vmax (graph already built)")
    for name, image, pairs, with_bf in cases(args.size, args.repeats):
        if name.split()[0] in wanted:
            run_case(name, image, pairs, with_bf, args.beta, args.tol, args.best_of, args.ablation)


if __name__ == "__main__":
    main()
