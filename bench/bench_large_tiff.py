"""Peak memory of opening a large TIFF stack of the data folder (issue 9, "Large files without
copies").

Generates a uint16 stack in a temporary folder (about ``--gb`` GB, 2048 × 2048 pages; never
committed), then, each in a fresh process, runs the steps a data-folder load runs:

1. ``pipeline.io.read_image_file`` (the decode, the checks, ``validate_image``);
2. ``pipeline.io.content_hash`` (the image id);
3. ``callbacks.loading.image_meta`` (range, default thresholds, display range);
4. ``ArrayStore.put_image`` (the array written to the server's store).

After each step it prints the process's peak RSS (``resource.getrusage``, ``ru_maxrss``:
resident pages of every kind, the file pages of a memory map included) and the peak of its
anonymous memory (``RssAnon`` of /proc/self/status, sampled every 2 ms by a thread: the
memory a memory map does not count), and the step's time.

Usage::

    python bench/bench_large_tiff.py             # 2 GB uncompressed stack
    python bench/bench_large_tiff.py --gb 0.5 --compression zlib
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIDE = 2048


def _generate(path: Path, n_pages: int, compression) -> None:
    import numpy as np
    import tifffile

    ramp = np.add.outer(np.arange(SIDE, dtype=np.uint32), np.arange(SIDE, dtype=np.uint32))

    def pages():
        for z in range(n_pages):
            yield ((ramp * 7 + z * 131) % 60000).astype(np.uint16)

    tifffile.imwrite(path, pages(), shape=(n_pages, SIDE, SIDE), dtype=np.uint16,
                     photometric="minisblack", compression=compression, bigtiff=True)


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def _child(path: str, state: str) -> None:
    from callbacks.loading import image_meta
    from pipeline import io
    from pipeline.store import ArrayStore, new_session_id

    peak = {"anon": _rss_anon_kb()}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], _rss_anon_kb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rows = []

    def step(name, t0):
        peak["anon"] = max(peak["anon"], _rss_anon_kb())
        rows.append({"step": name, "seconds": round(time.perf_counter() - t0, 2),
                     "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                          / 1024),
                     "peak_anon_mb": round(peak["anon"] / 1024)})

    rows.append({"step": "start", "seconds": 0.0,
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                 "peak_anon_mb": round(peak["anon"] / 1024)})
    size = os.path.getsize(path)
    t0 = time.perf_counter()
    loaded = io.read_image_file(path, max_bytes=size + 1, max_pixels=2**31)
    step("read_image_file", t0)
    t0 = time.perf_counter()
    image_id = io.content_hash(loaded.array)
    step("content_hash", t0)
    t0 = time.perf_counter()
    meta = image_meta(loaded.array, loaded, image_id)
    step("image_meta", t0)
    nbytes = max(size, loaded.array.nbytes)
    store = ArrayStore(state, size_limit=4 * nbytes, quota=2 * nbytes)
    t0 = time.perf_counter()
    store.put_image(new_session_id(), image_id, loaded.array, meta)
    step("store.put_image", t0)
    stop.set()
    print(json.dumps({"array": [list(loaded.array.shape), str(loaded.array.dtype),
                                type(getattr(loaded.array, "base", None)).__name__],
                      "rows": rows}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="size of the stack (GB)")
    parser.add_argument("--compression", default=None, help="e.g. zlib (default: none)")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    n_pages = max(2, round(args.gb * 2**30 / (SIDE * SIDE * 2)))
    with tempfile.TemporaryDirectory(prefix="pipex-large-") as tmp:
        path = Path(tmp, "stack.tif")
        t0 = time.perf_counter()
        _generate(path, n_pages, args.compression)
        print(f"stack {n_pages} x {SIDE} x {SIDE} uint16, "
              f"{path.stat().st_size / 2**30:.2f} GB on disk "
              f"(compression {args.compression or 'none'}), written in "
              f"{time.perf_counter() - t0:.1f} s")
        out = subprocess.run([sys.executable, __file__, "--child", str(path),
                              str(Path(tmp, "state"))], capture_output=True, text=True,
                             cwd=ROOT, check=False)
        if out.returncode:
            print(out.stdout, out.stderr)
            return out.returncode
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print("array", result["array"])
        print(f"{'step':<18}{'seconds':>9}{'peak RSS MB':>14}{'peak anon MB':>15}")
        for row in result["rows"]:
            print(f"{row['step']:<18}{row['seconds']:>9}{row['peak_rss_mb']:>14}"
                  f"{row['peak_anon_mb']:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
