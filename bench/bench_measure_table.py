"""What the measurements table's update costs on the server, before and after paging (issue 9).

For label sets of 1,000 / 10,000 / 50,000 regions (a synthetic image of one-pixel or small
bright dots on a noisy ground, segmented by the app's own random walker recipe, through
``callbacks.services.Services`` on a fresh state folder), with the measurement table cached
(the update after a settled segmentation; the first measurement's time is reported apart):

* **before**: what the old ``_table`` callback sent, every row (``callbacks.measure.table``)
  and the column definitions, encoded as Dash encodes an answer (``plotly.io.json``);
* **after**: the grid's first block (``callbacks.measure.rows_update``: 100 rows, columns,
  caption, the distributions binned on the server, the warning), a block further down, and
  the first block sorted by area (descending) with a filter.

Usage: ``python bench/bench_measure_table.py [--sizes 1000 10000 50000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from plotly.io.json import to_json_plotly

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks import loading, measure
from callbacks.params import next_state
from callbacks.services import Services
from components import ids
from pipeline.config import Config
from pipeline.store import new_session_id


def dots_image(n_regions, seed=0):
    """A square uint8 image of at least `n_regions` bright dots (1 to 3 pixels a side) on a
    noisy ground, 6 pixels apart, cut to exactly `n_regions` dots."""
    side = int(np.ceil(np.sqrt(n_regions)))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 30, (side * 6, side * 6)).astype(np.uint8)
    k = 0
    for i in range(side):
        for j in range(side):
            if k == n_regions:
                return image
            s = int(rng.integers(1, 4))
            image[i * 6 + 1:i * 6 + 1 + s, j * 6 + 1:j * 6 + 1 + s] = 240
            k += 1
    return image


def _timed(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(sizes, repeat):
    tmp = Path(tempfile.mkdtemp(prefix="bench-measure-"))
    (tmp / "data").mkdir()
    services = Services.create(Config(state_dir=tmp / "state", data_dir=tmp / "data",
                                      max_upload_mb=64, max_pixels=16_000_000))
    results = []
    for n in sizes:
        sid = new_session_id()
        buf = io.BytesIO()
        tifffile.imwrite(buf, dots_image(n))
        url = "data:image/tiff;base64," + base64.b64encode(buf.getvalue()).decode()
        meta = loading.load_image(services, sid, ids.UPLOAD, "coins", url, f"dots{n}.tif",
                                  None).meta
        history = next_state(ids.IMAGE, None, meta, {})[0]
        recipe = copy.deepcopy(history["states"][0])
        recipe["markers"] = {**recipe["markers"], "vmin": 20, "vmax": 200}
        recipe["postprocess"] = [{"name": "label", "params": {"connectivity": 1}}]
        history = {**history, "states": [recipe]}
        t = time.perf_counter()
        m = services.measurements(sid, meta["id"], recipe)
        first = time.perf_counter() - t
        assert m.n_objects == n, (m.n_objects, n)

        def before(sid=sid, meta=meta, recipe=recipe):
            rows, columns, _ = measure.table(services, sid, meta, recipe)
            return to_json_plotly({"rowData": rows, "columnDefs": columns})

        def after(request, sid=sid, meta=meta, history=history):
            return to_json_plotly(list(measure.rows_update(services, sid, meta, history,
                                                           request, None, [], [])))

        blocks = {
            "first block": {"startRow": 0, "endRow": 100},
            "block further down": {"startRow": n - 100, "endRow": n},
            "first block, sorted and filtered": {
                "startRow": 0, "endRow": 100,
                "sortModel": [{"colId": "area", "sort": "desc"}],
                "filterModel": {"area": {"filterType": "number", "type": "greaterThan",
                                         "filter": 1}}},
        }
        row = {"regions": n, "pixels": int(np.prod(meta["shape"])),
               "first measurement s": round(first, 2)}
        s, text = _timed(before, repeat)
        row["before: all rows s"], row["before: all rows bytes"] = round(s, 4), len(text)
        for name, request in blocks.items():
            s, text = _timed(lambda r=request: after(r), repeat)
            row[f"after: {name} s"], row[f"after: {name} bytes"] = round(s, 4), len(text)
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(args.sizes, args.repeat)
    out = ROOT / "bench" / "results" / "measure_table.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
