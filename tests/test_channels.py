"""The image stage: a channel (or weighted combination) of a colour image instead of its
luminance — pipeline.io.color_channels, pipeline.channels, the recipe, the cache keys and the
command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from pipeline import channels as C
from pipeline import io
from pipeline import recipe as R
from pipeline.cli import main
from pipeline.compute import stage_keys
from pipeline.errors import InputError
from pipeline.script import to_script
from pipeline.segment import default_thresholds

LIMITS = dict(max_bytes=64 * 2**20, max_pixels=2**27)


def _two_colour_image():
    """Red disks on a green background (uint8 RGB, a little noise)."""
    yy, xx = np.indices((96, 128))
    disks = np.zeros((96, 128), dtype=bool)
    for cy, cx in ((30, 30), (30, 90), (70, 60)):
        disks |= (yy - cy) ** 2 + (xx - cx) ** 2 < 14 ** 2
    rng = np.random.default_rng(1)
    rgb = np.empty((96, 128, 3), dtype=np.uint8)
    rgb[..., 0] = np.where(disks, 230, 40)
    rgb[..., 1] = np.where(disks, 40, 120)
    rgb[..., 2] = 60
    noise = rng.integers(0, 8, size=rgb.shape, dtype=np.uint8)
    return rgb + noise, disks


@pytest.fixture(scope="module")
def rgb_file(tmp_path_factory):
    rgb, disks = _two_colour_image()
    path = tmp_path_factory.mktemp("rgb") / "colour.png"
    Image.fromarray(rgb).save(path)
    return path, rgb, disks


# --- pipeline.io keeps the channels ----------------------------------------------------------


def test_a_colour_file_keeps_its_channels_and_a_gray_file_has_none(rgb_file, tmp_path):
    path, rgb, _ = rgb_file
    loaded = io.read_image_file(path, **LIMITS)
    assert loaded.array.ndim == 2 and loaded.array.dtype == np.float32  # luminance, as before
    assert loaded.channels.shape == (96, 128, 3) and loaded.channels.dtype == np.uint8
    np.testing.assert_array_equal(loaded.channels, rgb)
    gray = tmp_path / "gray.png"
    Image.fromarray(rgb[..., 0]).save(gray)
    assert io.read_image_file(gray, **LIMITS).channels is None


def test_color_channels_drops_alpha_squeezes_and_ignores_gray_colour():
    rgba = np.zeros((1, 8, 9, 4), dtype=np.uint16)
    rgba[..., 0] = 7
    rgba[0, 2, 3, 1] = 9
    out = io.color_channels(rgba)
    assert out.shape == (8, 9, 3) and out.dtype == np.uint16 and out.flags.c_contiguous
    same = np.repeat(np.arange(20, dtype=np.uint8).reshape(4, 5, 1), 3, axis=2)
    assert io.color_channels(same) is None  # a gray image stored as colour: nothing to choose
    assert io.color_channels(np.zeros((5, 6))) is None
    assert io.color_channels(np.zeros((5, 6, 7))) is None
    big_endian = np.arange(60, dtype=">f8").reshape(4, 5, 3)
    assert io.color_channels(big_endian).dtype == np.float64


def test_colour_tiff_stack_and_sample_keep_their_channels(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (3, 10, 12, 3), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="rgb")
    loaded = io.read_image_file(path, **LIMITS)
    assert loaded.array.shape == (3, 10, 12)
    np.testing.assert_array_equal(loaded.channels, stack)
    sample = io.load_sample("immunohistochemistry")
    assert sample.channels.shape == sample.array.shape + (3,)
    assert io.load_sample("coins").channels is None


# --- pipeline.channels -----------------------------------------------------------------------


def test_select_each_stage():
    rgb, _ = _two_colour_image()
    gray = np.zeros(rgb.shape[:2], np.float32)
    assert C.select(gray, rgb) is gray
    assert C.select(gray, None, "luminance") is gray
    green = C.select(gray, rgb, "channel", {"index": 1})
    assert green.dtype == np.uint8 and green.flags.c_contiguous
    np.testing.assert_array_equal(green, rgb[..., 1])
    weighted = C.select(gray, rgb, "weighted", {"red": 1.0, "green": -1.0, "blue": 0.0})
    assert weighted.dtype == np.float64
    np.testing.assert_array_equal(weighted, rgb[..., 0].astype(float) - rgb[..., 1])


@pytest.mark.parametrize("name, params", [("channel", {"index": 2}),
                                          ("weighted", {"red": 0.3, "green": 0.5, "blue": -2})])
def test_code_gives_the_same_array_as_apply(name, params):
    rgb, _ = _two_colour_image()
    step = C.CHANNELS[name]
    checked = step.check(params)
    expected = step.apply(None, rgb, **checked)
    namespace = {"channels": rgb, "gray": None}
    exec("\n".join((*step.imports, *step.code("gray", "out", **checked))), namespace)
    assert namespace["out"].dtype == expected.dtype
    np.testing.assert_array_equal(namespace["out"], expected)


@pytest.mark.parametrize("gray, channels, name, params, message", [
    (np.zeros((4, 4)), None, "channel", {}, "no colour channels .* use the luminance"),
    (np.zeros((4, 4)), np.zeros((4, 4)), "channel", {}, r"channels must be an array \(H, W, 3\)"),
    (np.zeros((4, 5)), np.ones((4, 4, 3)), "channel", {}, "do not match the image's"),
    (None, np.ones((4, 4, 3), np.uint8) * 9, "channel", {"index": 0},
     "red channel has the value 9 everywhere"),
    (None, np.ones((4, 4, 3)), "weighted", {"red": 0, "green": 0, "blue": 0},
     "weighted combination of the channels has the value 0 everywhere"),
    (None, np.ones((4, 4, 3)), "channel", {"index": 3}, "index must be at most 2"),
    (None, np.ones((4, 4, 3)), "weighted", {"alpha": 1}, "unknown parameter alpha"),
    (None, np.ones((4, 4, 3)), "hue", {}, "unknown stage 'hue'"),
])
def test_select_refuses_with_a_message(gray, channels, name, params, message):
    with pytest.raises(InputError, match=message):
        C.select(gray, channels, name, params)


# --- the recipe ------------------------------------------------------------------------------


def _recipe(**sections):
    return R.validate({**R.default_recipe(100, 150), **sections})


def test_the_image_section_is_optional_and_the_luminance_is_kept_out():
    old = R.default_recipe(100, 150)
    assert "image" not in old
    assert R.validate({**old, "image": {"name": "luminance"}}) == old  # same pipeline, same recipe
    green = _recipe(image={"name": "channel", "params": {"index": 1}})
    assert list(green)[:3] == ["format", "version", "image"]
    assert green["image"] == {"name": "channel", "params": {"index": 1}}
    assert R.validate(R.loads(R.dumps(green))) == green
    weighted = _recipe(image={"name": "weighted", "params": {"red": 1}})
    assert weighted["image"]["params"] == {"red": 1.0, "green": 0.7154, "blue": 0.0721}
    assert R.describe(green).startswith("green channel → ")
    assert R.step_names(green)["image"] == "channel" and "image" not in R.step_names(old)


@pytest.mark.parametrize("section, message", [
    ({"name": "chanel"}, "unknown image stage 'chanel' \\(did you mean 'channel'\\?\\)"),
    ({"name": "channel", "params": {"index": -1}}, r"recipe image \(channel\).*index must be "
                                                   "at least 0"),
    ({"name": "weighted", "params": {"red": "x"}}, "red must be a number"),
    ("green", "recipe image must be a mapping"),
])
def test_bad_image_sections_are_refused(section, message):
    with pytest.raises(InputError, match=message):
        _recipe(image=section)


def test_cache_keys_carry_the_channel_and_keep_their_old_meaning():
    old = R.default_recipe(100, 150)
    keys = stage_keys(old)
    assert keys["filter"] == json.dumps(old["filter"], sort_keys=True, separators=(",", ":"))
    green = stage_keys(_recipe(image={"name": "channel", "params": {"index": 1}}))
    blue = stage_keys(_recipe(image={"name": "channel", "params": {"index": 2}}))
    assert len({keys["filter"], green["filter"], blue["filter"]}) == 3
    # every later stage is keyed on the filter's key too (the cache keys on the chain)
    assert green["markers"] == keys["markers"]


def test_run_on_a_channel_segments_what_the_luminance_cannot(rgb_file):
    path, rgb, disks = rgb_file
    loaded = io.read_image_file(path, **LIMITS)
    section = {"name": "channel", "params": {"index": 0}}
    red = R.image_stage(loaded.array, _recipe(image=section), loaded.channels)
    vmin, vmax = default_thresholds(red)
    recipe = _recipe(image=section, markers={"vmin": vmin, "vmax": vmax},
                     segmentation={"name": "threshold"})
    result = R.run(loaded.array, recipe, channels=loaded.channels)
    assert result.image.dtype == np.uint8
    assert result.measurements.n_objects == 3
    assert (result.labels > 0).sum() == pytest.approx(disks.sum(), rel=0.05)
    # intensities are measured on the channel segmented
    assert result.measurements.columns["intensity_mean"].min() > 200
    # without the channels the recipe cannot run, and says why
    with pytest.raises(InputError, match="no colour channels"):
        R.run(loaded.array, recipe)


def test_the_command_line_runs_a_channel_recipe(rgb_file, tmp_path, capsys):
    path, rgb, _ = rgb_file
    loaded = io.read_image_file(path, **LIMITS)
    section = {"name": "channel", "params": {"index": 1}}
    green = R.image_stage(loaded.array, _recipe(image=section), loaded.channels)
    vmin, vmax = default_thresholds(green)
    recipe = _recipe(image=section, markers={"vmin": vmin, "vmax": vmax},
                     segmentation={"name": "threshold"})
    recipe_path = tmp_path / "recipe.json"
    recipe_path.write_text(R.dumps(recipe))
    gray = tmp_path / "gray.png"
    Image.fromarray(rgb[..., 1]).save(gray)
    code = main(["run", str(recipe_path), str(path), str(gray), "--out", str(tmp_path / "out")])
    assert code == 1  # the gray file cannot give a green channel; the colour file is processed
    out = capsys.readouterr()
    assert "no colour channels" in out.out + out.err
    labels = tifffile.imread(tmp_path / "out" / "colour_labels.tif")
    expected = R.run(loaded.array, recipe, channels=loaded.channels)
    np.testing.assert_array_equal(labels, expected.labels)
    with tifffile.TiffFile(tmp_path / "out" / "colour_labels.tif") as t:
        meta = json.loads(t.pages[0].description)
    assert meta["input_hash"] == io.content_hash(green)


def test_the_exported_script_refuses_a_gray_file_for_a_channel_recipe(tmp_path):
    recipe = _recipe(image={"name": "channel", "params": {"index": 0}})
    script = tmp_path / "script.py"
    script.write_text(to_script(recipe), encoding="utf-8")
    gray = tmp_path / "gray.png"
    Image.fromarray(data.coins()).save(gray)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, str(script), str(gray), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "gray.png has no colour channels (it is grayscale): the recipe uses the red " \
           "channel" in done.stderr
