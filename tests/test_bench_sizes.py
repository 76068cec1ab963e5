"""bench/bench_sizes.py's pure parts: sizes, synthetic images, the table, the targets and the
memory-capped direct call on a tiny image. The browser run itself is not run here."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tifffile

from tests.support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import bench_sizes as bs  # noqa: E402


def test_parse_shape_and_labels():
    assert bs.parse_shape("2048") == (2048, 2048)
    assert bs.parse_shape("256x256x256") == (256, 256, 256)
    assert bs.parse_shape("128×512×512") == (128, 512, 512)
    with pytest.raises(ValueError):
        bs.parse_shape("1x2x3x4")
    assert bs.shape_label((2048, 2048)) == "2048²"
    assert bs.shape_label((256, 256, 256)) == "256³"
    assert bs.shape_label((128, 512, 512)) == "512×512×128"
    assert bs.image_name((128, 512, 512), "uint16") == "sz_128x512x512_uint16.tif"


@pytest.mark.parametrize("shape", [(96, 80), (24, 40, 32)])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_synthetic_image(shape, dtype):
    img = bs.synthetic_image(shape, dtype, seed=1)
    assert img.shape == shape and img.dtype == np.dtype(dtype)
    top = np.iinfo(dtype).max
    # noisy, over most of the range, not constant; the same for the same seed
    assert img.min() < 0.2 * top and img.max() > 0.8 * top
    assert np.unique(img).size > 50
    np.testing.assert_array_equal(img, bs.synthetic_image(shape, dtype, seed=1))
    if len(shape) == 3:  # blobs at 0.25 / 0.75 of the range: about 40 % object
        frac = (img > 0.5 * top).mean()
        assert 0.2 < frac < 0.6


def test_write_image_once(tmp_path):
    path = bs.write_image(tmp_path, (40, 50), "uint16")
    assert path.name == "sz_40x50_uint16.tif"
    img = tifffile.imread(path)
    assert img.shape == (40, 50) and img.dtype == np.uint16
    mtime = path.stat().st_mtime_ns
    assert bs.write_image(tmp_path, (40, 50), "uint16") == path
    assert path.stat().st_mtime_ns == mtime


def _row(label="2048² uint8", overlay=0.21, moves=(0.2, 0.4), est=1.2e9, peak=1.5e9,
         direct=None, says=""):
    return {"label": label, "estimate_bytes": est, "job_estimate_bytes": est,
            "budget_bytes": 4 * 1024**3,
            "moves": [{"overlay_s": m, "exact_s": 3.0} for m in moves],
            "memory": {"peak_worker_bytes": peak + 2e8, "peak_above_idle_bytes": peak,
                       "ratio_to_estimate": peak / est},
            "direct": direct,
            "load": {"view_s": 0.2, "overlay_s": overlay, "exact_s": 9.5,
                     "stop_message": says or None},
            "page_messages_end": [["load-message", "Loaded x.tif."],
                                  ["exact-job-message", "" if says else "solved in 4 blocks"]],
            "loadavg": {"before": [1.0, 1, 1], "after": [2.5, 1, 1]}}


def test_table_and_targets():
    rows = [_row(direct={"fits": True, "seconds": 12.3, "maxrss_bytes": 2 * 1024**3}),
            _row("4096² uint8", overlay=None, moves=(), est=5e9, peak=6e9,
                 direct={"fits": False, "why": "estimate 4.7 GB > cap 4.0 GB"},
                 says="Random walker (cg_mg) … PIPEX_MAX_JOB_GB")]
    md = bs.table(rows)
    lines = md.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| image |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| 2048² uint8 | 0.20 s | 0.21 s | 9.50 s | 0.30 s (0.20–0.40) | 3.00 s |" in md
    assert "solved in 4 blocks" in md and "Loaded" not in md
    assert "12.3 s, 2.00 GB" in md and "1.25×" in md and "1.0 → 2.5" in md
    assert "does not fit (estimate 4.7 GB > cap 4.0 GB)" in md and "PIPEX_MAX_JOB_GB" in md
    t = bs.targets(rows)
    assert t[0]["first_overlay_ok"] is False and t[0]["first_overlay_max_s"] == 0.4
    assert t[0]["rss_ratio_ok"] is True and t[0]["under_budget"] is True
    assert t[1]["first_overlay_ok"] is False and t[1]["first_overlay_max_s"] is None
    assert t[1]["rss_ratio_ok"] is True and t[1]["under_budget"] is False
    assert bs.targets([_row(moves=(0.1,))])[0]["first_overlay_ok"] is True


def test_stop_message():
    assert bs._stop_message({"a": "Loaded x.tif."}) is None
    text = "needs ≈ 9.4 GB of memory, above this server's limit (PIPEX_MAX_JOB_GB)"
    assert bs._stop_message({"a": "", "b": text}) == text


def test_direct_random_walker_capped(tmp_path):
    img = bs.synthetic_image((48, 64), "uint8", seed=2)
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, img)
    params = {"beta": 130.0, "tol": 1e-3, "mode": "cg_j"}
    # fits: run in the capped child, timed, its peak RSS
    out = bs.direct_random_walker(path, img.shape, 90, 160, params, 3 * 1024**3, 120,
                                  tmp_path)
    assert out["fits"] is True, out
    assert out["seconds"] > 0 and out["maxrss_bytes"] > 10 * 2**20
    assert 0 < out["object_fraction"] < 1 and 0 < out["undecided_fraction"] < 1
    # the estimate above the cap: "does not fit" without running
    small = bs.direct_random_walker(path, img.shape, 90, 160, params, 1000, 120, tmp_path)
    assert small["fits"] is False and "cap" in small["why"] and "seconds" not in small
    # a cap too small for the child: reported, not raised
    res, _code, _err = bs.run_capped(["--direct-child", str(tmp_path / "direct.json")],
                                     64 * 2**20, 60)
    assert res["ok"] is False and res["error"]


def test_direct_cap_bytes():
    assert bs.direct_cap_bytes(0.5) <= 0.5 * 1024**3
    assert bs.direct_cap_bytes(10**6) < 10**6 * 1024**3  # at most 60 % of what is free


def test_job_estimate():
    from pipeline.randomwalker import estimate_bytes

    budget = 4 * 1024**3
    est, how = bs.job_estimate((2048, 2048), budget)
    assert est == estimate_bytes((2048, 2048), "cg_mg") and how == "whole"
    est, how = bs.job_estimate((4096, 4096), budget)  # above the budget: solved by blocks
    assert est <= budget and how.startswith("blocks of")
    # computed by a checkout's own pipeline (the code a server ran), in a child process
    assert tuple(bs.job_estimate((4096, 4096), budget, app_dir=REPO_ROOT)) == (est, how)


def test_the_first_views_empty_overlay_is_not_counted_as_a_first_overlay():
    """A new image's base is drawn first with the empty overlay (callbacks.display.first_view):
    the watcher knows that PNG, so that "first overlay" is the new image's own overlay."""
    from callbacks.display import blank_uri

    assert bs.BLANK_OVERLAY == blank_uri()
    assert "ov !== blank" in bs.WATCH_JS


def test_the_breakdown_of_a_load():
    """Where a load's time went: the page's requests and the segmentation graph's redraws
    in seconds since the file was chosen, later ones left out; as text."""
    t0 = 1000.0
    raw = {"fetches": [
        {"start": 1035.0, "headers": 1160.0, "end": 1205.0, "output": "..image-store.data..",
         "resp_bytes": 104_500, "status": 200},
        {"start": 1250.0, "headers": 1330.0, "end": 1340.0,
         "output": "segmentation-first-view-store.data@abc", "resp_bytes": 0, "status": 204},
        {"start": 3000.0, "headers": None, "end": None, "output": "late", "resp_bytes": None},
    ], "draws": [
        {"fn": "react", "graph": "segmentation-graph", "start": 1165.0, "end": 1195.0,
         "paint": 1204.0},
        {"fn": "react", "graph": "image-graph", "start": 1170.0, "end": 1200.0, "paint": None},
        {"fn": "react", "graph": "segmentation-graph", "start": 2900.0, "end": 2950.0,
         "paint": None},
    ]}
    b = bs.breakdown(raw, t0, profile={"dash_renderer": 70.0}, metrics={"busy_task_s": 0.5},
                     until_s=1.0)
    assert [r["output"] for r in b["requests"]] == ["..image-store.data..",
                                                     "segmentation-first-view-store.data@abc"]
    first = b["requests"][0]
    assert (first["start_s"], first["headers_s"], first["end_s"]) == (0.035, 0.16, 0.205)
    assert b["seg_draws"] == [{"fn": "react", "start_s": 0.165, "end_s": 0.195,
                               "paint_s": 0.204}]
    text = bs.breakdown_text("2048² uint8", b)
    assert "image-store.data" in text and "segmentation graph react" in text
    assert "busy_task_s 0.500 s" in text and "dash_renderer 70" in text
    everything = bs.breakdown(raw, t0)
    assert len(everything["requests"]) == 3 and len(everything["seg_draws"]) == 2
    assert "main_thread" not in everything and "profile_ms" not in everything
    bs.breakdown_text("x", everything)  # unanswered requests print too
