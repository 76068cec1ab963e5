"""The command line (python -m pipeline): batch runs, script export, errors and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from pipeline import recipe as R
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.io import blobs_3d, content_hash, read_image_file

REPO = Path(__file__).resolve().parents[1]
LIMITS = dict(max_bytes=64 * 2**20, max_pixels=2**27)


def _recipe(**sections):
    recipe = R.default_recipe(83, 131)
    recipe["postprocess"].append({"name": "remove_small_objects", "params": {"min_size": 64}})
    recipe.update(sections)
    return R.validate(recipe)


@pytest.fixture
def files(tmp_path):
    """A recipe and two images (coins as PNG, and as TIFF upside down)."""
    coins = data.coins()
    png = tmp_path / "coins.png"
    Image.fromarray(coins).save(png)
    tif = tmp_path / "flipped.tif"
    tifffile.imwrite(tif, np.ascontiguousarray(coins[::-1]))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(R.dumps(_recipe()), encoding="utf-8")
    return {"recipe": recipe, "png": png, "tif": tif, "dir": tmp_path}


def _read_csv(path: Path, summaries=False):
    """Comment lines, header and the object rows (label set); with `summaries`, also the
    per-image summary rows (label empty) as dicts."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("# ")]
    rows = list(csv.reader(line for line in lines if not line.startswith("# ")))
    header, rows = rows[0], rows[1:]
    objects = [row for row in rows if row[1] != ""]
    assert rows[:len(objects)] == objects  # objects first, then the summaries
    if summaries:
        return comments, header, objects, [dict(zip(header, row)) for row in rows
                                           if row[1] == ""]
    return comments, header, objects


def _provenance(comments):
    line = next(c for c in comments if c.startswith("# provenance: "))
    return json.loads(line[len("# provenance: "):])


# --------------------------------------------------------------------------------------------
# run


def test_run_two_images(files, capsys):
    out = files["dir"] / "results"
    code = main(["run", str(files["recipe"]), str(files["png"]), str(files["tif"]),
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    recipe = R.read_file(files["recipe"])

    # one summary line per image, then the CSV
    lines = captured.out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("coins.png: ") and " objects in " in lines[0]
    assert lines[1].startswith("flipped.tif: ")
    assert lines[2].endswith("measurements.csv")

    counts = {}
    for path in (files["png"], files["tif"]):
        loaded = read_image_file(path, **LIMITS)
        expected = R.run(loaded.array, recipe)
        tif = out / f"{path.stem}_labels.tif"
        assert tif.is_file()
        with tifffile.TiffFile(tif) as t:
            labels = t.asarray()
            meta = json.loads(t.pages[0].description)
        np.testing.assert_array_equal(labels, expected.labels)
        assert meta["recipe"] == recipe
        assert meta["input_hash"] == content_hash(loaded.array)
        assert meta["input"]["name"] == path.name
        assert meta["versions"]["scikit-image"]
        assert meta["steps"]["segmentation"] == "random_walker"
        assert meta["command"] == "python -m pipeline run"  # how it was made: not the tab
        counts[path.name] = expected.measurements.n_objects
        assert f"{path.name}: {counts[path.name]} objects in " in captured.out

    comments, header, rows = _read_csv(out / "measurements.csv")
    assert comments[0] == "# Pipeline Explorer measurements"
    assert header[:3] == ["image", "label", "area [px²]"]
    assert {name: sum(row[0] == name for row in rows) for name in counts} == counts
    assert len(rows) == sum(counts.values())
    provenance = _provenance(comments)
    assert provenance["recipe"] == recipe
    assert [i["image"] for i in provenance["inputs"]] == ["coins.png", "flipped.tif"]
    assert provenance["inputs"][0]["input_hash"] == content_hash(
        read_image_file(files["png"], **LIMITS).array)
    assert provenance["versions"]["numpy"] == np.__version__
    # the measurements are those of the app (to_csv) for each image
    coins_areas = [row[2] for row in rows if row[0] == "coins.png"]
    expected = R.run(read_image_file(files["png"], **LIMITS).array, recipe).measurements
    np.testing.assert_allclose(np.array(coins_areas, dtype=float), expected.columns["area"])


def test_run_mixed_2d_and_3d_images_share_one_table(files, capsys):
    volume = blobs_3d(24)
    stack = files["dir"] / "stack.tif"
    tifffile.imwrite(stack, volume)
    recipe = files["dir"] / "r.json"
    small = {"name": "remove_small_objects", "params": {"min_size": 27}}
    recipe.write_text(R.dumps(_recipe(markers={"vmin": 0.3, "vmax": 0.5},
                                      postprocess=[{"name": "label"}, small])),
                      encoding="utf-8")
    out = files["dir"] / "out"
    code = main(["run", str(recipe), str(stack), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    comments, header, rows = _read_csv(out / "measurements.csv")
    assert "centroid-2 [px]" in header and "area [px³]" in header
    assert any("stack.tif: perimeter, eccentricity: defined for 2D images only" in c
               for c in comments)

    recipe.write_text(R.dumps(_recipe(postprocess=[{"name": "label"}, small])),
                      encoding="utf-8")
    vol8 = (volume - volume.min()) / (volume.max() - volume.min()) * 255
    tifffile.imwrite(stack, vol8.astype(np.uint8))
    code = main(["run", str(recipe), str(files["png"]), str(stack), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    comments, header, rows = _read_csv(out / "measurements.csv")
    assert "area [px² or px³]" in header
    assert "centroid-2 [px]" in header
    centroid2 = header.index("centroid-2 [px]")
    assert {row[centroid2] for row in rows if row[0] == "coins.png"} == {""}
    assert all(row[centroid2] for row in rows if row[0] == "stack.tif")


def test_unreadable_image_is_reported_and_the_others_are_processed(files, capsys):
    bad = files["dir"] / "broken.tif"
    whole = files["tif"].read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])  # truncated
    missing = files["dir"] / "missing.png"
    out = files["dir"] / "out"
    code = main(["run", str(files["recipe"]), str(bad), str(files["png"]), str(missing),
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: {bad}: could not decode broken.tif as TIFF (file truncated or corrupt)" \
        in captured.err
    assert f"error: {missing} was not found" in captured.err
    assert "2 of 3 images could not be processed" in captured.err
    assert (out / "coins_labels.tif").is_file()
    assert not (out / "broken_labels.tif").exists()
    _, _, rows = _read_csv(out / "measurements.csv")
    assert {row[0] for row in rows} == {"coins.png"}


def test_image_failing_in_the_pipeline_is_named(files, capsys):
    dark = files["dir"] / "dark.png"
    Image.fromarray((np.arange(400).reshape(20, 20) % 50).astype(np.uint8)).save(dark)
    code = main(["run", str(files["recipe"]), str(dark), str(files["png"]),
                 "--out", str(files["dir"] / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: {dark}: No object marker: no pixel is above vmax = 131" in captured.err
    assert "coins.png: " in captured.out


def test_max_mb_limits_the_file_size(files, capsys):
    code = main(["run", str(files["recipe"]), str(files["tif"]), "--out",
                 str(files["dir"] / "out"), "--max-mb", "0.01"])
    captured = capsys.readouterr()
    assert code == 1
    assert "flipped.tif" in captured.err and "the limit is 10.24 kB" in captured.err
    assert not (files["dir"] / "out" / "measurements.csv").exists()


def test_same_file_names_in_different_folders_do_not_overwrite(files, capsys):
    (files["dir"] / "a").mkdir()
    (files["dir"] / "b").mkdir()
    first, second = files["dir"] / "a" / "x.png", files["dir"] / "b" / "x.png"
    Image.open(files["png"]).save(first)
    Image.fromarray(data.coins()[:, ::-1]).save(second)
    out = files["dir"] / "out"
    assert main(["run", str(files["recipe"]), str(first), str(second), "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "x_labels.tif").is_file() and (out / "x-2_labels.tif").is_file()
    _, _, rows = _read_csv(out / "measurements.csv")
    assert {row[0] for row in rows} == {str(first), str(second)}


# --------------------------------------------------------------------------------------------
# bad recipes: exit code 2, nothing processed


def _bad(recipe: dict) -> str:
    return json.dumps(recipe)


BAD_RECIPES = [
    (_bad(dict(_recipe(), filter={"name": "sharpen"})), r"unknown filter 'sharpen'"),
    (_bad(dict(_recipe(), segmentation={"name": "random_walker",
                                        "params": {"beta": -1}})),
     r"segmentation \(random_walker\): Random walker: beta must be at least"),
    (_bad(dict(_recipe(), version=2)),
     r"recipe version 2 is not supported \(this app reads version 1\)"),
    ('{"format": "pipeline-explorer-recipe",\n  "version": 1,\n  oops}',
     r"recipe is not valid JSON: line 3 column 3"),
    ("[]", r"a recipe must be a mapping"),
]


@pytest.mark.parametrize("text, message", BAD_RECIPES, ids=["unknown-step", "bad-parameter",
                                                            "version", "not-json", "list"])
def test_bad_recipe_exits_2_with_the_problem(files, capsys, text, message):
    import re

    files["recipe"].write_text(text, encoding="utf-8")
    out = files["dir"] / "out"
    code = main(["run", str(files["recipe"]), str(files["png"]), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert re.search(message, captured.err), captured.err
    assert captured.err.startswith("error: recipe.json: ")
    assert not out.exists() or not any(out.iterdir())


def test_missing_recipe_file_exits_2(files, capsys):
    code = main(["run", str(files["dir"] / "nope.json"), str(files["png"]), "--out",
                 str(files["dir"] / "out")])
    assert code == 2
    assert "nope.json' was not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["run"],
    ["run", "recipe.json", "--out", "x"],          # no image
    ["run", "recipe.json", "image.png"],            # no --out
    ["run", "r.json", "i.png", "--out", "x", "--max-mb", "-3"],
    ["frobnicate"],
])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "export-script" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# export-script


def test_export_script_to_a_file_and_to_stdout(files, capsys):
    target = files["dir"] / "seg.py"
    assert main(["export-script", str(files["recipe"]), "-o", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    source = target.read_text(encoding="utf-8")
    compile(source, str(target), "exec")
    assert source.startswith("#!/usr/bin/env python3")
    assert target.stat().st_mode & stat.S_IXUSR
    assert '"recipe_file": "recipe.json"' in source
    assert main(["export-script", str(files["recipe"])]) == 0
    printed = capsys.readouterr().out
    # the same script, apart from the export time
    strip = lambda text: [line for line in text.splitlines() if "created" not in line]  # noqa
    assert strip(printed) == strip(source)


def test_export_script_bad_recipe_exits_2(files, capsys):
    files["recipe"].write_text(json.dumps(dict(_recipe(), version=3)), encoding="utf-8")
    target = files["dir"] / "seg.py"
    assert main(["export-script", str(files["recipe"]), "-o", str(target)]) == 2
    assert "recipe version 3 is not supported" in capsys.readouterr().err
    assert not target.exists()


# --------------------------------------------------------------------------------------------
# as a real process


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return env


def test_python_m_pipeline(files):
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pipeline", *map(str, args)], cwd=files["dir"], env=_env(),
        capture_output=True, text=True, timeout=120)
    done = run("--help")
    assert done.returncode == 0
    assert "run" in done.stdout and "export-script" in done.stdout
    assert "Exit codes" in done.stdout

    bad = files["dir"] / "bad.png"
    bad.write_bytes(b"GIF89a" + b"\x00" * 30)
    done = run("run", files["recipe"], bad, files["png"], "--out", "out")
    assert done.returncode == 1
    assert "bad.png is not a PNG, JPEG or TIFF image (it looks like a GIF image)" in done.stderr
    assert done.stdout.startswith("coins.png: ")
    assert (files["dir"] / "out" / "coins_labels.tif").is_file()

    files["recipe"].write_text("{", encoding="utf-8")
    done = run("run", files["recipe"], files["png"], "--out", "out2")
    assert done.returncode == 2
    assert "recipe is not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------------
# batch: parallel, summaries, failures, progress, atomic outputs, dask


def _batch(files, n=4):
    """`n` images: coins and variations of it (flipped, shifted), as PNG and TIFF."""
    coins = data.coins()
    paths = []
    for i in range(n):
        image = np.roll(coins if i % 2 == 0 else coins[::-1], 7 * i, axis=1)
        path = files["dir"] / f"img{i:02d}{'.png' if i % 3 else '.tif'}"
        if path.suffix == ".png":
            Image.fromarray(np.ascontiguousarray(image)).save(path)
        else:
            tifffile.imwrite(path, np.ascontiguousarray(image))
        paths.append(path)
    return paths


def _outputs(out: Path):
    """Label arrays, TIFF provenance (without its time) and CSV rows of a batch's output."""
    tiffs = {}
    for tif in sorted(out.glob("*_labels.tif")):
        with tifffile.TiffFile(tif) as t:
            meta = json.loads(t.pages[0].description)
            meta.pop("created")
            tiffs[tif.name] = (t.asarray(), meta)
    comments, header, rows, summaries = _read_csv(out / "measurements.csv", summaries=True)
    provenance = _provenance(comments)
    provenance.pop("created")
    return tiffs, provenance, header, rows, summaries


def test_batch_with_two_jobs_gives_the_same_outputs_as_one(files, capsys):
    paths = [str(p) for p in _batch(files, 5)]
    results = {}
    for jobs, extra in (("1", []), ("2", []), ("2t", ["--prefer", "threads"])):
        out = files["dir"] / f"out{jobs}"
        code = main(["run", str(files["recipe"]), *paths, "--out", str(out),
                     "--jobs", jobs[0], *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert captured.err == ""
        # one line per image, in the order given, whatever order they finished in
        lines = captured.out.splitlines()
        assert [line.split(":")[0] for line in lines[:5]] == [Path(p).name for p in paths]
        results[jobs] = _outputs(out)
        assert not list(out.glob("*.part"))
    one = results["1"]
    for two in (results["2"], results["2t"]):  # loky processes (the default), threads
        assert one[0].keys() == two[0].keys() and len(one[0]) == 5
        for name in one[0]:
            np.testing.assert_array_equal(one[0][name][0], two[0][name][0])
            assert one[0][name][1] == two[0][name][1]
        assert one[1:] == two[1:]


def test_summary_rows_and_a_broken_file_among_good_ones(files, capsys):
    good = _batch(files, 3)
    broken = files["dir"] / "broken.tif"
    whole = good[0].read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])
    empty = files["dir"] / "empty.png"
    empty.write_bytes(b"")
    paths = [good[0], broken, good[1], empty, good[2]]
    out = files["dir"] / "out"
    code = main(["run", str(files["recipe"]), *map(str, paths), "--out", str(out),
                 "--jobs", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: {broken}: could not decode broken.tif as TIFF" in captured.err
    assert f"error: {empty}: the file is empty (0 bytes)" in captured.err
    assert "2 of 5 images could not be processed" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p.stem}_labels.tif" for p in good] + ["measurements.csv"])

    comments, header, rows, summaries = _read_csv(out / "measurements.csv", summaries=True)
    assert header[-4:] == ["objects", "area_fraction", "mean_area [px²]", "error"]
    assert [s["image"] for s in summaries] == [p.name for p in paths]
    recipe = R.read_file(files["recipe"])
    for path, summary in zip(paths, summaries):
        if path in good:
            labels = R.run(read_image_file(path, **LIMITS).array, recipe).labels
            sizes = np.unique(labels[labels > 0], return_counts=True)[1]
            assert int(summary["objects"]) == len(sizes) == \
                sum(row[0] == path.name for row in rows)
            assert float(summary["area_fraction"]) == np.count_nonzero(labels) / labels.size
            assert float(summary["mean_area [px²]"]) == sizes.mean()
            assert summary["error"] == ""
        else:
            assert summary["objects"] == "" and summary["error"]
    assert "could not decode broken.tif" in summaries[1]["error"]
    provenance = _provenance(comments)
    assert [f["image"] for f in provenance["failed"]] == ["broken.tif", "empty.png"]
    assert [i["image"] for i in provenance["inputs"]] == [p.name for p in good]


def test_progress_bar_only_on_a_terminal(files, capsys, monkeypatch):
    paths = [str(p) for p in _batch(files, 2)]
    out = files["dir"] / "out"
    main(["run", str(files["recipe"]), *paths, "--out", str(out), "--jobs", "1"])
    assert "\r" not in capsys.readouterr().out  # captured: not a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    main(["run", str(files["recipe"]), *paths, "--out", str(out), "--jobs", "1"])
    printed = capsys.readouterr().out
    assert "\r[" in printed and "] 2/2 images" in printed and "] 0/2 images" in printed
    # the bar is cleared before each result line
    assert "\r\033[K" + Path(paths[0]).name + ": " in printed


def test_interrupted_batch_leaves_only_complete_files(files):
    """Ctrl-C in the middle: exit 130, every *_labels.tif present is complete, nothing else."""
    import signal

    paths = _batch(files, 30)
    out = files["dir"] / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(files["recipe"]), *map(str, paths),
         "--out", str(out), "--jobs", "1"], cwd=files["dir"], env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a test run in the background (nohup, `cmd &` in a script) inherits an ignored
        # SIGINT, and Python then installs no KeyboardInterrupt handler: restore it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()  # the first image is done
        assert first.startswith("img00.tif: "), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 30
    assert not (out / "measurements.csv").exists()
    recipe = R.read_file(files["recipe"])
    for tif in written:
        assert tif.name.endswith("_labels.tif"), tif.name
        source = files["dir"] / tif.name.replace("_labels.tif", ".tif")
        if not source.exists():
            source = source.with_suffix(".png")
        expected = R.run(read_image_file(source, **LIMITS).array, recipe).labels
        np.testing.assert_array_equal(tifffile.imread(tif), expected)


def test_bad_jobs_exit_2(files, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(files["recipe"]), str(files["png"]), "--out", "x", "--jobs", "0"])
    assert exc.value.code == 2
    monkeypatch.setenv("PIPEX_JOBS", "lots")
    assert main(["run", str(files["recipe"]), str(files["png"]), "--out",
                 str(files["dir"] / "out")]) == 2
    assert "PIPEX_JOBS must be a whole number" in capsys.readouterr().err


def test_batch_on_a_dask_cluster_matches_the_local_one(files, capsys, cluster):
    from distributed import get_task_stream

    local, client = cluster
    paths = [str(p) for p in _batch(files, 4)]
    out_local, out_dask = files["dir"] / "local", files["dir"] / "dask"
    assert main(["run", str(files["recipe"]), *paths, "--out", str(out_local),
                 "--jobs", "1"]) == 0
    with get_task_stream(client) as stream:
        code = main(["run", str(files["recipe"]), *paths, "--out", str(out_dask),
                     "--dask", local.scheduler_address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    workers = set(client.run(os.getpid))
    ran_on = {task["worker"] for task in stream.data}
    assert len(stream.data) >= 4 and ran_on <= workers, stream.data
    one, two = _outputs(out_local), _outputs(out_dask)
    for name in one[0]:
        np.testing.assert_array_equal(one[0][name][0], two[0][name][0])
        assert one[0][name][1] == two[0][name][1]
    assert one[1:] == two[1:]


def test_unreachable_scheduler_runs_the_batch_locally(files, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = files["dir"] / "out"
    code = main(["run", str(files["recipe"]), str(files["png"]), "--out", str(out),
                 "--dask", f"tcp://127.0.0.1:{port}", "--jobs", "2"])
    captured = capsys.readouterr()
    assert code == 0
    assert f"note: dask scheduler tcp://127.0.0.1:{port} could not be reached" in captured.err
    assert "ran locally" in captured.err
    assert (out / "coins_labels.tif").is_file()


# --------------------------------------------------------------------------------------------
# pipeline.batch: the pieces the command line and the Batch tab share


def test_the_batch_pieces_are_public_and_check_their_input(files, tmp_path):
    from pipeline import batch

    recipe = _recipe()
    raw = files["png"].read_bytes()
    cli = batch.ProcessImage(recipe, **LIMITS)
    tab = batch.ProcessImage(recipe, **LIMITS, command=batch.TAB_COMMAND)
    a, b = cli(("coins.png", raw)), tab(("coins.png", raw))
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(a["tiff"])),
                                  tifffile.imread(io.BytesIO(b["tiff"])))
    for value, command in ((a, batch.CLI_COMMAND), (b, batch.TAB_COMMAND)):
        with tifffile.TiffFile(io.BytesIO(value["tiff"])) as tif:
            assert json.loads(tif.pages[0].description)["command"] == command
    assert a["summary"] == b["summary"] and a["summary"]["objects"] > 0
    # the versions are read once, when the work is made, and written as given
    given = batch.ProcessImage(recipe, **LIMITS, versions={"numpy": "x"})(("coins.png", raw))
    with tifffile.TiffFile(io.BytesIO(given["tiff"])) as tif:
        assert json.loads(tif.pages[0].description)["versions"] == {"numpy": "x"}

    for kwargs, name in (({"max_bytes": 0}, "max_bytes"), ({"max_pixels": -1}, "max_pixels"),
                         ({"max_bytes": True}, "max_bytes"), ({"command": " "}, "command"),
                         ({"versions": []}, "versions")):
        with pytest.raises(InputError, match=name):
            batch.ProcessImage(recipe, **{**LIMITS, **kwargs})
    with pytest.raises(InputError, match="recipe"):
        batch.ProcessImage("recipe.json", **LIMITS)
    with pytest.raises(InputError):
        batch.ProcessImage({**recipe, "filter": {"name": "nope"}}, **LIMITS)
    unreadable = batch.read_bytes(tmp_path / "missing.png", 100)
    assert isinstance(unreadable, batch.Unreadable) and "was not found" in unreadable.message
    with pytest.raises(InputError, match="not found"):
        cli(("missing.png", unreadable))
    assert isinstance(batch.read_bytes(files["png"], 10), batch.Unreadable)  # over the limit
    assert batch.read_bytes(files["png"], 2**20) == raw
    with pytest.raises(InputError, match="path"):
        batch.read_bytes(3, 100)
    with pytest.raises(InputError, match="max_bytes"):
        batch.read_bytes(files["png"], 0)
    assert batch.output_names(["a/x.png", "b/x.png", "y.tif"]) == [
        ("a/x.png", "x"), ("b/x.png", "x-2"), ("y.tif", "y")]
    with pytest.raises(InputError, match="paths"):
        batch.output_names("x.png")
    with pytest.raises(InputError, match=r"paths\[1\]"):
        batch.output_names(["x.png", None])
    with pytest.raises(InputError, match="tables"):
        batch.combine([("a", {})], [])
    with pytest.raises(InputError, match="data"):
        batch.write_atomic(tmp_path / "x", 3)
    batch.write_atomic(tmp_path / "x.txt", "é\n")
    assert (tmp_path / "x.txt").read_bytes() == "é\n".encode()
    assert not (tmp_path / "x.txt.part").exists()


_FORKED_CLI = r"""
import json, os, sys

from pipeline import batch, cli

real = batch.ProcessImage.__call__


def recording(self, item):  # set here, after the imports: a new interpreter would not have it
    with open(os.path.join(sys.argv[1], f"{item[0]}.json"), "w") as fh:
        json.dump({"pid": os.getpid(), "ppid": os.getppid()}, fh)
    return real(self, item)


batch.ProcessImage.__call__ = recording
print(json.dumps({"pid": os.getpid(), "code": cli.main(sys.argv[2:])}))
"""


def test_run_forks_its_workers_from_itself_and_stops_them(files):
    """``python -m pipeline run --jobs 2``: the images are processed in copies of the
    command's process, made once it has imported the pipeline (new interpreters each paid the
    imports again, ~0.5 s of CPU: the batch was 1.6x faster than --jobs 1, not 1.8x); they are
    gone when it ends; the outputs are those of --jobs 1. In a new process, as a user runs it
    (this test process runs threads: it would not fork)."""
    paths = [str(p) for p in _batch(files, 4)]
    seen = files["dir"] / "seen"
    seen.mkdir()
    script = files["dir"] / "forked_cli.py"
    script.write_text(_FORKED_CLI, encoding="utf-8")
    outs = {}
    for jobs in ("2", "1"):
        out = files["dir"] / f"out{jobs}"
        done = subprocess.run(
            [sys.executable, str(script), str(seen), "run", str(files["recipe"]), *paths,
             "--out", str(out), "--jobs", jobs], env=_env(), capture_output=True, text=True,
            timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stderr == ""
        info = json.loads(done.stdout.strip().splitlines()[-1])
        assert info["code"] == 0
        outs[jobs] = _outputs(out)
        workers = {}
        for path in paths:  # every image went through the patched (inherited) code
            record = json.loads((seen / f"{Path(path).name}.json").read_text())
            workers[record["pid"]] = record["ppid"]
            (seen / f"{Path(path).name}.json").unlink()
        if jobs == "1":
            assert set(workers) == {info["pid"]}  # in the command's own process
            continue
        assert info["pid"] not in workers and 1 <= len(workers) <= 2, workers
        assert set(workers.values()) == {info["pid"]}  # its children, forked
        for pid in workers:  # killed at the end of the batch (gone with their parent anyway)
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    one, two = outs["1"], outs["2"]
    assert one[0].keys() == two[0].keys() and len(one[0]) == 4
    for name in one[0]:
        np.testing.assert_array_equal(one[0][name][0], two[0][name][0])
        assert one[0][name][1] == two[0][name][1]
    assert one[1:] == two[1:]


def test_a_batch_on_processes_stops_its_workers_at_the_end(files, capsys, monkeypatch):
    """Loky workers (the command's process ran another thread: nothing was forked; a test
    process) are killed once the batch is done (the process's exit would wait for them to
    unload their imports); a batch on threads or on one job has none to stop."""
    from pipeline import parallel

    stopped = []
    real = parallel.stop_local_workers
    monkeypatch.setattr(parallel, "stop_local_workers", lambda: stopped.append(1) or real())
    paths = [str(p) for p in _batch(files, 3)]
    for jobs, extra, calls in (("2", [], 1), ("2", ["--prefer", "threads"], 1), ("1", [], 1)):
        out = files["dir"] / f"out{jobs}{len(extra)}"
        code = main(["run", str(files["recipe"]), *paths, "--out", str(out), "--jobs", jobs,
                     *extra])
        assert code == 0, capsys.readouterr().err
        assert len(list(out.glob("*_labels.tif"))) == 3
        assert len(stopped) == calls
