"""The random walker solved by overlapping blocks (issue 9's memory budget): the plan fits
the budget, the stitched labels mean what the whole solve's mean, blocks without markers of
both labels, cancel between blocks, the agreement measured on a window."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data

from pipeline import blocks
from pipeline import randomwalker as rw
from pipeline.errors import Cancelled, InputError
from pipeline.segment import make_markers


def _synthetic(shape, seed=0, sigma=50.0):
    """Discs (balls) of 170 on 90, with noise, smoothed: a bench-like image."""
    rng = np.random.default_rng(seed)
    n = max(3, math.prod(shape) // (20 ** len(shape)))
    seeds = np.zeros(shape, bool)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = True
    obj = ndi.distance_transform_edt(~seeds) < (10 if len(shape) == 2 else 6)
    image = np.where(obj, 170.0, 90.0) + rng.normal(0, sigma, shape)
    return ndi.gaussian_filter(image, 1.0).clip(0, 255) / 255


def _markers(image, vmin=100 / 255, vmax=160 / 255):
    return make_markers(image, vmin, vmax, check=False)


@pytest.fixture(scope="module")
def coins():
    image = data.coins() / 255.0
    return image, make_markers(image, 80 / 255, 150 / 255, check=False)


# --------------------------------------------------------------------------- the same answer


@pytest.mark.parametrize("mode", ["cg_mg", "cg_j", "bf"])
def test_one_block_covering_the_image_is_the_whole_solve_bit_for_bit(coins, mode):
    image, markers = coins
    whole = rw.random_walker(image, markers, mode=mode)
    labels, report = blocks.random_walker_blocks(image, markers, mode=mode,
                                                 chunks=image.shape, margin=0, measure=False)
    assert report.blocks == 1 and report.solved == 1
    assert labels.dtype == np.uint8 and np.array_equal(labels, whole)


def test_a_budget_that_fits_the_whole_image_plans_one_block_and_the_whole_answer(coins):
    image, markers = coins
    budget = (rw.estimate_bytes(image.shape, "cg_mg")
              + blocks.IMAGE_BYTES_PER_PIXEL * image.size) / blocks.BUDGET_SHARE + 1
    plan = blocks.plan_blocks(image.shape, "cg_mg", budget)
    assert plan.n_blocks == 1 and plan.chunks == image.shape
    labels, _ = blocks.random_walker_blocks(image, markers, plan=plan, measure=False)
    assert np.array_equal(labels, rw.random_walker(image, markers))


def test_many_blocks_whose_margin_reaches_the_whole_image_give_the_whole_answer(coins):
    """Each block then solves the whole image and keeps its core: the stitched labels are the
    whole solve's, bit for bit (the blocks' graphs are the whole graph: same weights)."""
    image, markers = coins
    labels, report = blocks.random_walker_blocks(image, markers, chunks=(100, 130),
                                                 margin=400, measure=False)
    assert report.blocks == 12
    assert np.array_equal(labels, rw.random_walker(image, markers))


def test_a_3d_volume_with_blocks_spanning_it_is_the_whole_solve():
    image = _synthetic((24, 30, 28), seed=3)
    markers = _markers(image)
    whole = rw.random_walker(image, markers, mode="cg_j")
    one, _ = blocks.random_walker_blocks(image, markers, mode="cg_j", chunks=image.shape,
                                         margin=0, measure=False)
    many, report = blocks.random_walker_blocks(image, markers, mode="cg_j", chunks=(10, 11, 9),
                                               margin=40, measure=False)
    assert report.blocks == 3 * 3 * 4
    assert np.array_equal(one, whole) and np.array_equal(many, whole)


@pytest.mark.parametrize("mode", ["cg_mg", "cg_j"])
def test_small_blocks_agree_with_the_whole_solve_on_a_noisy_2d_image(mode):
    image = _synthetic((301, 257), seed=1)  # odd sizes: the blocks do not divide them
    markers = _markers(image)
    assert 0.2 < (markers == 0).mean() < 0.8  # a third undecided
    whole = rw.random_walker(image, markers, mode=mode)
    labels, report = blocks.random_walker_blocks(image, markers, mode=mode, chunks=(64, 70),
                                                 margin=24, measure=False)
    assert report.blocks == 5 * 4 and report.chunks == (64, 70)
    assert set(np.unique(labels)) == {1, 2}
    assert np.array_equal(labels[markers > 0], markers[markers > 0])  # markers keep theirs
    undecided = markers == 0
    assert (labels == whole).mean() >= 0.99
    assert (labels[undecided] == whole[undecided]).mean() >= 0.97
    # a margin of 0 (each block blind to its neighbours) agrees less: the margin matters
    blind, _ = blocks.random_walker_blocks(image, markers, mode=mode, chunks=(64, 70),
                                           margin=0, measure=False)
    assert (blind[undecided] == whole[undecided]).mean() < \
        (labels[undecided] == whole[undecided]).mean()


def test_small_blocks_agree_with_the_whole_solve_on_a_noisy_volume():
    image = _synthetic((41, 50, 37), seed=2)
    markers = _markers(image)
    assert 0.1 < (markers == 0).mean() < 0.8
    whole = rw.random_walker(image, markers, mode="cg_j")
    labels, report = blocks.random_walker_blocks(image, markers, mode="cg_j", chunks=16,
                                                 margin=8, measure=False)
    assert report.blocks == 3 * 4 * 3
    undecided = markers == 0
    assert (labels == whole).mean() >= 0.99
    assert (labels[undecided] == whole[undecided]).mean() >= 0.97


def test_the_cores_tile_the_image_exactly():
    plan = blocks.plan_blocks((101, 77, 33), "cg_j", chunks=(40, 30, 33), margin=5)
    cover = np.zeros(plan.shape, int)
    for b in plan.blocks:
        cover[b.core] += 1
        outer = tuple(s.stop - s.start for s in b.outer)
        assert all(o <= c + 2 * 5 for o, c in zip(outer, plan.chunks))
    assert (cover == 1).all() and plan.n_blocks == 3 * 3 * 1


# --------------------------------------------------------------------------- no markers


def test_a_block_with_markers_of_one_label_only_takes_that_label():
    image = _synthetic((120, 240), seed=4)
    markers = np.zeros(image.shape, np.uint8)
    markers[:, :10] = rw.BACKGROUND  # background on the left edge only
    markers[40:80, 200:230] = rw.OBJECT  # an object on the right only
    labels, report = blocks.random_walker_blocks(image, markers, chunks=(120, 60), margin=10,
                                                 measure=False)
    assert report.one_label >= 1  # the left block sees background only
    assert (labels[:, :60] == rw.BACKGROUND).all()
    assert (labels[40:80, 200:230] == rw.OBJECT).all()


def test_blocks_without_any_marker_take_their_neighbours_answer():
    """Scribbles along the left (background) and right (object) edges only: the middle blocks
    have no marker in their region; they are solved from the labels their margins receive,
    fronts from both sides meeting in the middle, where the image's edge decides, as in the
    whole solve."""
    rng = np.random.default_rng(5)
    image = np.full((200, 200), 0.3) + rng.normal(0, 0.02, (200, 200))
    image[:, 100:] += 0.4  # left half dark, right half bright
    markers = np.zeros(image.shape, np.uint8)
    markers[:, :4] = rw.BACKGROUND
    markers[:, 196:] = rw.OBJECT
    progress = []
    labels, report = blocks.random_walker_blocks(
        image, markers, chunks=40, margin=8, measure=False,
        progress=lambda stage, f: progress.append((stage, f)))
    assert report.one_label == 10 and report.from_neighbours == 15
    assert report.solved + report.one_label + report.from_neighbours \
        + report.markers_only == report.blocks == 25
    whole = rw.random_walker(image, markers)
    assert (whole[:, :100] == rw.BACKGROUND).all() and (whole[:, 100:] == rw.OBJECT).all()
    assert np.array_equal(labels, whole)
    fractions = [f for s, f in progress if s == "blocks"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # the same labels whatever the order the blocks finish in (one worker, two)
    again, _ = blocks.random_walker_blocks(image, markers, chunks=40, margin=8, measure=False,
                                           workers=1)
    assert np.array_equal(again, labels)


def test_scattered_scribbles_leave_no_block_undecided():
    image = _synthetic((240, 200), seed=11)
    markers = np.zeros(image.shape, np.uint8)
    markers[10:14, 10:30] = rw.BACKGROUND
    markers[200:204, 150:170] = rw.OBJECT
    labels, report = blocks.random_walker_blocks(image, markers, chunks=40, margin=8,
                                                 measure=False)
    assert report.from_neighbours >= 20
    assert set(np.unique(labels)) <= {1, 2} and labels.min() == 1
    assert (labels[10:14, 10:30] == 1).all() and (labels[200:204, 150:170] == 2).all()
    # without any margin, the neighbours' labels still reach a block (one pixel around it)
    bare, report = blocks.random_walker_blocks(image, markers, chunks=40, margin=0,
                                               measure=False)
    assert report.from_neighbours >= 20 and set(np.unique(bare)) == {1, 2}


def test_a_block_all_markers_is_not_solved():
    image = _synthetic((100, 100), seed=6)
    markers = np.full(image.shape, rw.BACKGROUND, np.uint8)
    markers[60:, 60:] = 0
    markers[80:, 80:] = rw.OBJECT
    labels, report = blocks.random_walker_blocks(image, markers, chunks=50, margin=5,
                                                 measure=False)
    assert report.markers_only == 3 and report.solved == 1  # three blocks: markers only
    assert (labels[:50, :] == rw.BACKGROUND).all() and (labels[:, :50] == rw.BACKGROUND).all()


# --------------------------------------------------------------------------- the budget


@pytest.mark.parametrize("shape, mode, gb", [
    ((4096, 4096), "cg_mg", 2.0), ((4096, 4096), "cg_j", 1.0), ((2048, 2048), "bf", 0.5),
    ((512, 512, 512), "cg_mg", 2.0), ((60, 1024, 1024), "cg_j", 1.0),
    ((256, 256, 256), "bf", 4.0), ((3001, 2999), "cg_mg", 0.25)])
def test_the_plan_fits_the_budget(shape, mode, gb):
    budget = int(gb * 1024**3)
    assert rw.estimate_bytes(shape, mode) > budget  # a whole solve does not fit
    assert blocks.needs_blocks(shape, mode, budget)
    plan = blocks.plan_blocks(shape, mode, budget)
    assert plan.n_blocks > 1 and 1 <= plan.in_flight <= blocks.BLOCKS_IN_FLIGHT
    largest = max(rw.estimate_bytes(tuple(s.stop - s.start for s in b.outer), mode)
                  for b in plan.blocks)
    assert largest <= plan.block_bytes
    peak = blocks.IMAGE_BYTES_PER_PIXEL * math.prod(shape) + plan.in_flight * largest
    assert peak == plan.peak_bytes <= blocks.BUDGET_SHARE * budget
    # the cores are as even as the shape allows, and larger than the overlap they pay
    for n, c in zip(shape, plan.chunks):
        counts = -(-n // c)
        assert c * counts >= n and c * (counts - 1) < n
    assert min(plan.chunks) >= min(min(shape), plan.margin)
    # the agreement window fits beside the image's arrays too
    window = blocks._window_shape(plan)
    assert window is not None
    assert rw.estimate_bytes(window, mode) + blocks.IMAGE_BYTES_PER_PIXEL * math.prod(shape) \
        <= blocks.BUDGET_SHARE * budget


def test_a_budget_too_small_for_one_block_is_refused_saying_what_it_needs():
    with pytest.raises(InputError, match="PIPEX_MAX_JOB_GB") as err:
        blocks.plan_blocks((4096, 4096), "cg_mg", 64 * 1024**2)  # the image's arrays alone
    assert "by blocks" in str(err.value) and "Crop or downsample" in str(err.value)
    assert not blocks.needs_blocks((100, 100), "cg_mg", 1024**3)
    assert not blocks.needs_blocks((100, 100), "cg_mg", None)


def test_one_block_at_a_time_when_two_would_not_fit():
    shape = (2000, 2000)
    roomy = blocks.plan_blocks(shape, "cg_mg", 600 * 1024**2, workers=2)
    assert roomy.in_flight == 2
    one = blocks.plan_blocks(shape, "cg_mg", 600 * 1024**2, workers=1)
    assert one.in_flight == 1 and one.n_blocks < roomy.n_blocks
    # given chunks too large for two at once: one block at a time
    big = blocks.plan_blocks(shape, "cg_mg", 600 * 1024**2, chunks=1300, margin=64)
    assert big.in_flight == 1 and big.peak_bytes <= 600 * 1024**2


def test_a_real_solve_within_a_budget_counts_its_blocks(coins):
    image, markers = coins
    budget = 10 * 1024**2  # a whole solve of coins needs ≈ 33 MB
    labels, report = blocks.random_walker_blocks(image, markers, budget_bytes=budget,
                                                 margin=32)
    plan = blocks.plan_blocks(image.shape, "cg_mg", budget, margin=32)
    assert report.blocks == plan.n_blocks > 1 and report.peak_bytes <= budget
    assert (labels == rw.random_walker(image, markers)).mean() >= 0.99
    assert report.agreement is not None and report.agreement["pixels"] >= 0.97


# --------------------------------------------------------------------------- cancel, progress


def test_a_cancel_stops_between_blocks_and_returns_nothing():
    image = _synthetic((200, 200), seed=7)
    markers = _markers(image)
    progress, asked = [], []

    def should_stop():
        asked.append(1)
        return sum(1 for s, f in progress if s == "blocks" and f > 0) >= 3

    with pytest.raises(Cancelled, match="cancelled after"):
        blocks.random_walker_blocks(image, markers, chunks=50, margin=8, workers=1,
                                    should_stop=should_stop,
                                    progress=lambda s, f: progress.append((s, f)))
    done = [f for s, f in progress if s == "blocks"]
    assert 0 < max(done) < 1  # stopped before the last of the 16 blocks
    assert not any(s == "agreement" for s, _ in progress)


def test_progress_goes_block_by_block_then_the_agreement():
    image = _synthetic((160, 150), seed=8)
    markers = _markers(image)
    calls = []
    blocks.random_walker_blocks(image, markers, chunks=40, margin=8,
                                progress=lambda s, f: calls.append((s, f)))
    stages = [s for s, _ in calls]
    assert stages.index("agreement") > max(i for i, s in enumerate(stages) if s == "blocks")
    fractions = [f for s, f in calls if s == "blocks"]
    assert fractions[0] == 0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(set(fractions)) == 4 * 4 + 1  # one step per block
    assert calls[-1] == ("agreement", 1.0)


# --------------------------------------------------------------------------- agreement


def test_the_agreement_window_crosses_the_seams_and_compares_its_inner_part():
    image = _synthetic((400, 300), seed=9)
    markers = _markers(image)
    plan = blocks.plan_blocks(image.shape, "cg_mg", chunks=(100, 100), margin=16)
    labels, report = blocks.random_walker_blocks(image, markers, plan=plan)
    a = report.agreement
    assert a["window"] == [173, 173]  # a quarter of the image (no budget)
    (r0, c0), (h, w) = a["start"], a["window"]
    assert (r0 < 200 < r0 + h) and (c0 < 200 < c0 + w)  # the block corner (200, 200) inside
    assert a["compared"] == [h - 32, w - 32]  # the margin off each side inside the image
    # the number is the fraction of equal labels of the window's own whole solve
    window = (slice(r0, r0 + h), slice(c0, c0 + w))
    whole = rw.solve(rw.build_graph(image[window], std=image.std()), markers[window])
    inner = (slice(16, h - 16), slice(16, w - 16))
    assert a["pixels"] == pytest.approx((whole[inner] == labels[window][inner]).mean())
    assert a["pixels"] >= 0.97
    # on a wrong answer it says so
    flipped = labels.copy()
    flipped[window][inner][:50] = 3 - flipped[window][inner][:50]
    worse = blocks.agreement(image, markers, flipped, plan)
    assert worse["pixels"] < a["pixels"] - 0.1


def test_the_report_round_trips_and_reads_as_the_ui_says_it():
    report = blocks.BlockReport(blocks=12, chunks=(1024, 1024), margin=64, in_flight=2,
                                peak_bytes=10, budget_bytes=2 * 1024**3, solved=12,
                                agreement={"window": [2048, 2048], "pixels": 0.998,
                                           "undecided": 0.991})
    assert blocks.BlockReport.from_dict(report.as_dict()) == report
    assert report.summary() == (
        "solved in 12 blocks of 1024² with 64 px overlap (image above the 2.0 GB per-job "
        "limit); agreement with a whole solve on a 2048² window: 99.8 % of pixels (99.1 % "
        "of the undecided)")
    close = blocks.BlockReport(blocks=9, chunks=(683, 683), margin=64, in_flight=2,
                               peak_bytes=1, budget_bytes=512 * 1024**2,
                               agreement={"window": [1024, 1024], "pixels": 0.99999,
                                          "undecided": 0.9997})
    assert close.summary().endswith("window: > 99.99 % of pixels (99.97 % of the undecided)")
    assert "(image above the 0.5 GB per-job limit)" in close.summary()
    volume = blocks.BlockReport(blocks=8, chunks=(60, 512, 512), margin=16, in_flight=1,
                                peak_bytes=1, budget_bytes=None)
    assert volume.summary() == ("solved in 8 blocks of 60 × 512 × 512 with 16 voxel "
                                "overlap; agreement with a whole solve not measured")


# --------------------------------------------------------------------------- input checks


def test_arguments_are_checked_and_named(coins):
    image, markers = coins
    with pytest.raises(InputError, match="budget_bytes or chunks"):
        blocks.plan_blocks(image.shape, "cg_mg")
    with pytest.raises(InputError, match="margin"):
        blocks.plan_blocks(image.shape, "cg_mg", chunks=50, margin=-1)
    with pytest.raises(InputError, match="chunks"):
        blocks.plan_blocks(image.shape, "cg_mg", chunks=(50, 0))
    with pytest.raises(InputError, match="chunks"):
        blocks.plan_blocks(image.shape, "cg_mg", chunks=(50, 50, 50))
    with pytest.raises(InputError, match="budget_bytes"):
        blocks.plan_blocks(image.shape, "cg_mg", -5)
    with pytest.raises(InputError, match="mode"):
        blocks.plan_blocks(image.shape, "lu", 10**9)
    with pytest.raises(InputError, match="shape"):
        blocks.plan_blocks((10,), "cg_mg", 10**9)
    with pytest.raises(InputError, match="markers must have the shape"):
        blocks.random_walker_blocks(image, markers[:10], chunks=50)
    with pytest.raises(InputError, match="no object marker"):
        blocks.random_walker_blocks(image, np.where(markers == 2, 0, markers), chunks=50)
    other = blocks.plan_blocks((10, 10), "cg_mg", chunks=5)
    with pytest.raises(InputError, match="plan is for shape"):
        blocks.random_walker_blocks(image, markers, plan=other)
    with pytest.raises(InputError, match="plan must be a BlockPlan"):
        blocks.random_walker_blocks(image, markers, plan={"chunks": 5})
    with pytest.raises(InputError, match="image must be a 2D image or a 3D volume"):
        blocks.random_walker_blocks(np.zeros(10), np.zeros(10, np.uint8), chunks=5)
    with pytest.raises(InputError, match="constant"):
        flat = np.zeros((40, 40))
        m = np.zeros((40, 40), np.uint8)
        m[0, 0], m[-1, -1] = 1, 2
        blocks.random_walker_blocks(flat, m, chunks=20, margin=2)
    with pytest.raises(InputError, match="should_stop must be callable"):
        blocks.random_walker_blocks(image, markers, chunks=100, should_stop=5)


def test_a_tight_budget_narrows_the_default_margin_rather_than_solve_mostly_margins():
    budget = 28 * 1024**2  # a whole solve of 40 × 60 × 50 needs ≈ 34 MB
    plan = blocks.plan_blocks((40, 60, 50), "cg_mg", budget)
    assert blocks.MIN_MARGIN <= plan.margin < blocks.DEFAULT_MARGIN[3]
    assert min(plan.chunks) >= 2 * plan.margin and plan.peak_bytes <= budget
    # a margin asked for is kept, whatever it costs
    asked = blocks.plan_blocks((40, 60, 50), "cg_mg", budget, margin=16)
    assert asked.margin == 16 and asked.n_blocks > plan.n_blocks
    # and a roomy budget keeps the default
    assert blocks.plan_blocks((160, 160, 160), "cg_mg", 2**29).margin == 16


def test_mostly_undecided_blocks_are_solved_fewer_at_once_and_a_smaller_window():
    """The estimate per pixel is for ≈ 30 % undecided; scribbles only leave nearly all of
    it undecided (measured: 1.7x the memory): fewer blocks at once, a smaller window."""
    assert blocks.undecided_scale(0.3) == pytest.approx(1.0, abs=0.01)
    assert blocks.undecided_scale(0.0) == 1.0 and blocks.undecided_scale(1.0) > 1.6
    image = _synthetic((300, 300), seed=12)
    dense = _markers(image)
    sparse = np.zeros(image.shape, np.uint8)
    sparse[10:20, 10:40], sparse[250:260, 200:240] = rw.BACKGROUND, rw.OBJECT
    budget = 40 * 1024**2
    plan = blocks.plan_blocks(image.shape, "cg_mg", budget, margin=16)
    assert plan.in_flight == 2
    _, fine = blocks.random_walker_blocks(image, dense, plan=plan)
    _, tight = blocks.random_walker_blocks(image, sparse, plan=plan)
    assert fine.in_flight == 2 and tight.in_flight == 1
    assert tight.peak_bytes <= blocks.BUDGET_SHARE * budget
    assert tight.agreement is None  # the window holds markers of one label only: not measured
    assert fine.agreement["window"] == list(blocks._window_shape(plan, 0.3))
    big = blocks.plan_blocks((2048, 2048), "cg_mg", 2**29)  # the budget limits its window
    assert math.prod(blocks._window_shape(big, 0.98)) < math.prod(blocks._window_shape(big, 0.3))
