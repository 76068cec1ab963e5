"""Tests of pipeline.render: slicing, display scaling, PNG data URIs, overlays, histogram."""

from __future__ import annotations

import base64
import io as _io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pipeline import render
from pipeline.errors import InputError
from tests.support.images import sixteen_bit_cells


def decode_uri(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    image = Image.open(_io.BytesIO(base64.b64decode(uri[len(prefix):])))
    if image.mode == "P":  # overlays with few colours are palette PNGs
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    return np.asarray(image)


def square_labels(shape=(40, 50), box=(slice(10, 30), slice(15, 35))):
    labels = np.ones(shape, np.uint8)
    labels[box] = 2
    return labels


# --------------------------------------------------------------------------------------------
# Colours


def test_colours():
    assert dict(render.MARKER_COLORS) == {1: (0, 114, 178), 2: (230, 159, 0)}
    assert render.MARKER_HEX[1] == "#0072b2" and render.MARKER_HEX[2] == "#e69f00"
    assert render.SEGMENTATION_COLOR not in render.MARKER_COLORS.values()
    assert render.SEGMENTATION_HEX == "#ff00ff"
    with pytest.raises(TypeError):
        render.MARKER_COLORS[1] = (0, 0, 0)  # read-only mapping, no module-level mutable state


# --------------------------------------------------------------------------------------------
# Slicing


def test_take_slice():
    stack = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    np.testing.assert_array_equal(render.take_slice(stack, 0, 2), stack[2])
    np.testing.assert_array_equal(render.take_slice(stack, 1, 4), stack[:, 4])
    np.testing.assert_array_equal(render.take_slice(stack, 2, 0), stack[:, :, 0])
    assert render.take_slice(stack, np.int64(0), np.int64(3)).shape == (5, 6)
    image = np.zeros((3, 4))
    assert render.take_slice(image, 0, 99) is image


@pytest.mark.parametrize("axis, index, message", [
    (0, 4, "out of range"),
    (2, -1, "out of range"),
    (3, 0, "axis must be 0, 1 or 2"),
    (0, "a", "must be an integer"),
    (0, 1.5, "must be an integer"),
])
def test_take_slice_refuses(axis, index, message):
    with pytest.raises(InputError, match=message):
        render.take_slice(np.zeros((4, 5, 6)), axis, index)


def test_take_slice_refuses_4d():
    with pytest.raises(InputError, match="2D image or a 3D stack"):
        render.take_slice(np.zeros((2, 2, 2, 2)), 0, 0)


# --------------------------------------------------------------------------------------------
# Display range and scaling


def test_display_range_percentiles():
    image = np.arange(1000, dtype=np.float32).reshape(20, 50)
    lo, hi = render.display_range(image)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(image, [0.5, 99.5])))
    assert isinstance(lo, float) and isinstance(hi, float)


def test_display_range_falls_back_to_min_max():
    image = np.zeros((100, 100), np.uint8)
    image[0, 0] = 200  # both percentiles are 0
    assert render.display_range(image) == (0.0, 200.0)
    assert render.display_range(np.full((3, 3), 5.0)) == (5.0, 5.0)


def test_display_range_ignores_nan_and_inf():
    image = np.linspace(0, 1, 10_000).reshape(100, 100)
    image[:5] = np.nan
    image[5, :3] = np.inf
    lo, hi = render.display_range(image)
    assert 0 <= lo < hi <= 1
    assert render.display_range(np.full((2, 2), np.nan)) == (0.0, 1.0)


def test_display_range_large_array_is_subsampled_deterministically():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, size=(24, 256, 256)).astype(np.float32)  # 1.5 M values
    first = render.display_range(image)
    assert render.display_range(image) == first
    exact = np.percentile(image, [0.5, 99.5])
    assert first == pytest.approx(tuple(exact), abs=0.5)


def test_to_uint8():
    image = np.array([[0.0, 5.0, 10.0], [-3.0, 20.0, np.nan]])
    out = render.to_uint8(image, 0, 10)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 128, 255], [0, 255, 0]])
    np.testing.assert_array_equal(render.to_uint8(np.array([[1, 2], [3, 4]]), 2, 2),
                                  [[0, 0], [255, 255]])
    image8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(render.to_uint8(image8, 0, 255), image8)
    deep = np.array([[0, 1000, 65535]], np.uint16)
    np.testing.assert_array_equal(render.to_uint8(deep, 0, 1000), [[0, 255, 255]])
    with pytest.raises(InputError, match="finite"):
        render.to_uint8(image8, 0, np.inf)


# --------------------------------------------------------------------------------------------
# PNG data URIs


@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 3), (30, 40, 4)])
def test_png_data_uri_round_trip(shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    np.testing.assert_array_equal(decode_uri(render.png_data_uri(array)), array)


def test_png_data_uri_accepts_slices_and_refuses_bad_input():
    stack = np.random.default_rng(0).integers(0, 256, size=(3, 20, 30), dtype=np.uint8)
    view = render.take_slice(stack, 2, 5)  # non-contiguous
    np.testing.assert_array_equal(decode_uri(render.png_data_uri(view)), view)
    with pytest.raises(InputError, match="uint8"):
        render.png_data_uri(np.zeros((4, 4)))


# --------------------------------------------------------------------------------------------
# Overlays


def test_marker_overlay_colours_and_transparency():
    markers = np.array([[0, 1], [2, 0]], np.uint8)
    out = render.marker_overlay(markers)
    assert out.shape == (2, 2, 4) and out.dtype == np.uint8
    a = round(0.45 * 255)
    assert tuple(out[0, 1]) == (0, 114, 178, a)
    assert tuple(out[1, 0]) == (230, 159, 0, a)
    assert tuple(out[0, 0]) == (0, 0, 0, 0) and tuple(out[1, 1]) == (0, 0, 0, 0)
    assert render.marker_overlay(markers, alpha=1.0)[0, 1, 3] == 255
    assert not render.marker_overlay(np.zeros((3, 3), np.uint8))[..., 3].any()


@pytest.mark.parametrize("call, message", [
    (lambda: render.marker_overlay(np.zeros((2, 2, 2))), "2D"),
    (lambda: render.marker_overlay(np.zeros((2, 2)), alpha=1.5), "alpha"),
    (lambda: render.segmentation_overlay(np.zeros((2, 2)), style="outline"),
     "unknown overlay style 'outline'"),
    (lambda: render.segmentation_overlay(np.zeros((2, 2)), style=None), "unknown overlay style"),
    (lambda: render.segmentation_overlay(np.zeros(4)), "2D"),
])
def test_overlay_refuses(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_contour_only_on_boundaries():
    labels = square_labels()
    out = render.segmentation_overlay(labels, style="contour")
    drawn = out[..., 3] > 0
    assert np.all(out[drawn][:, :3] == render.SEGMENTATION_COLOR)
    assert np.all(out[drawn][:, 3] == 255)  # opaque
    obj = labels == 2
    edge = obj ^ ndimage.binary_erosion(obj)  # object pixels touching the background
    assert drawn[edge].all()  # the whole edge is drawn
    near_edge = ndimage.binary_dilation(obj) & ~ndimage.binary_erosion(obj)
    assert not (drawn & ~near_edge).any()  # nothing away from the edge
    assert not drawn[15:25, 20:30].any()  # deep inside
    assert not drawn[:5].any()  # far outside
    assert tuple(out[20, 15]) == (*render.SEGMENTATION_COLOR, 255)  # on the left edge


def test_contour_of_empty_object_is_transparent():
    assert not render.segmentation_overlay(np.ones((10, 10), np.uint8))[..., 3].any()


def test_fill_overlay():
    labels = square_labels()
    out = render.segmentation_overlay(labels, style="fill", alpha=0.35)
    obj = labels == 2
    assert np.all(out[obj] == (*render.SEGMENTATION_COLOR, round(0.35 * 255)))
    assert not out[~obj].any()


def test_overlays_round_trip_through_png():
    out = render.segmentation_overlay(square_labels(), style="contour")
    np.testing.assert_array_equal(decode_uri(render.png_data_uri(out)), out)


# --------------------------------------------------------------------------------------------
# Histogram


def test_histogram_uint8_one_bin_per_value():
    image = np.array([[10, 11, 11], [12, 12, 12]], np.uint8)
    counts, edges = render.histogram(image)
    assert counts.dtype == np.int64 and edges.dtype == np.float64
    np.testing.assert_array_equal(counts, [1, 2, 3])
    np.testing.assert_array_equal(edges, [9.5, 10.5, 11.5, 12.5])


def test_histogram_integer_wide_range_uses_whole_number_bins():
    image = np.arange(0, 1000, dtype=np.uint16).reshape(20, 50)
    counts, edges = render.histogram(image, bins=256)
    assert counts.sum() == image.size
    assert len(counts) <= 256 and len(edges) == len(counts) + 1
    widths = np.diff(edges)
    assert np.all(widths == widths[0]) and widths[0] == int(widths[0])
    assert np.all(counts[:-1] == widths[0])  # no comb pattern: every full bin alike
    assert edges[0] == -0.5 and edges[-1] >= 999.5


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 2**16, size=(64, 80), dtype=np.uint16),
    np.random.default_rng(1).integers(-128, 128, size=(7, 9, 11), dtype=np.int8),
    np.random.default_rng(2).integers(-2**40, 2**40, size=(30, 30), dtype=np.int64),
    np.random.default_rng(3).random((50, 60)).astype(np.float32),
    np.array([[2**40 + 1, 2**40 + 7], [2**40, 3]], dtype=np.uint64),
    np.eye(5, dtype=bool),
])
def test_histogram_sums_to_pixel_count(image):
    counts, edges = render.histogram(image)
    assert counts.sum() == image.size
    assert len(edges) == len(counts) + 1
    assert np.all(np.diff(edges) > 0)
    assert edges[0] <= float(image.min()) and edges[-1] >= float(image.max())


def test_histogram_uint64_near_the_top_does_not_overflow():
    image = np.array([[2**64 - 1, 2**64 - 3], [2**64 - 2, 2**64 - 1]], dtype=np.uint64)
    counts, _ = render.histogram(image)
    np.testing.assert_array_equal(counts, [1, 1, 2])  # float64 edges cannot tell them apart


def test_histogram_float_range_and_non_finite_values():
    image = np.linspace(-1, 3, 1000).reshape(10, 100)
    image[0, :10] = np.nan
    image[1, :5] = np.inf
    counts, edges = render.histogram(image, bins=50)
    assert len(counts) == 50
    assert counts.sum() == image.size - 15
    finite = image[np.isfinite(image)]
    assert edges[0] == finite.min() and edges[-1] == finite.max()


def test_histogram_constant_and_degenerate():
    counts, edges = render.histogram(np.full((4, 4), 2.5))
    assert counts.sum() == 16 and edges[0] < 2.5 < edges[-1]
    counts, edges = render.histogram(np.full((4, 4), 7, np.uint8))
    np.testing.assert_array_equal(counts, [16])
    counts, _ = render.histogram(np.full((2, 2), np.nan))
    assert counts.sum() == 0
    with pytest.raises(InputError, match="bins"):
        render.histogram(np.zeros((2, 2)), bins=0)


def test_marker_overlay_any_integer_dtype():
    markers = np.array([[0, 1, 2], [-1, 5, 258]], np.int64)
    out = render.marker_overlay(markers)
    expected = render.marker_overlay(np.array([[0, 1, 2], [0, 0, 0]], np.uint8))
    np.testing.assert_array_equal(out, expected)


def test_contour_is_find_boundaries_thick():
    from skimage.segmentation import find_boundaries

    labels = np.where(ndimage.gaussian_filter(
        np.random.default_rng(0).normal(size=(60, 70)), 3) > 0, 2, 1)
    out = render.segmentation_overlay(labels)
    np.testing.assert_array_equal(out[..., 3] > 0, find_boundaries(labels == 2, mode="thick"))


def test_composite_blends_layers_in_order():
    from pipeline.render import composite

    gray = np.full((2, 2), 100, np.uint8)
    red = np.zeros((2, 2, 4), np.uint8)
    red[0, 0] = (255, 0, 0, 255)
    half_blue = np.zeros((2, 2, 4), np.uint8)
    half_blue[0, 0] = (0, 0, 255, 128)
    out = composite(gray, [red, half_blue])
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert tuple(out[1, 1]) == (100, 100, 100)
    assert tuple(out[0, 0]) == (127, 0, 128)
    with pytest.raises(InputError, match="layers must be RGBA"):
        composite(gray, [np.zeros((3, 3, 4), np.uint8)])


def test_pack_values16_is_exact_for_integer_images_and_within_half_a_step_otherwise():
    rng = np.random.default_rng(0)
    ints = rng.integers(-300, 4000, (17, 23)).astype(np.int32)
    rgb, lo, scale = render.pack_values16(ints)
    assert rgb.dtype == np.uint8 and rgb.shape == (17, 23, 3) and scale == 1.0
    back = lo + (rgb[..., 0].astype(np.int64) * 256 + rgb[..., 1]) * scale
    np.testing.assert_array_equal(back, ints)
    floats = rng.normal(0.5, 1e-3, (9, 11))
    rgb, lo, scale = render.pack_values16(floats)
    back = lo + (rgb[..., 0].astype(np.int64) * 256 + rgb[..., 1]) * scale
    assert np.abs(back - floats).max() <= scale / 2 + 1e-15
    flat = np.full((3, 3), 7.25)
    rgb, lo, scale = render.pack_values16(flat)
    assert lo == 7.25 and not rgb.any()
    with pytest.raises(InputError, match="values2d"):
        render.pack_values16(np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="finite"):
        render.pack_values16(np.array([[1.0, np.nan]]))


def test_threshold_labels_on_the_histogram_never_overlap_nor_leave_the_plot():
    from components import figures

    # coins' automatic thresholds: four within 15 grey levels, one near the left edge
    values = {"triangle": 3.0, "mean": 97.0, "otsu": 103.0, "yen": 107.0, "isodata": 110.0,
              "li": 94.0, "minimum": 150.0}
    rows = figures.label_rows(values, (0, 255), width_px=380)
    assert rows["triangle"][1] == "right"  # near the left edge: the text starts at its line
    placed = {}
    for name, (row, side) in rows.items():
        x = values[name] / 255 * 380
        w = len(name) * 5.6
        start = {"center": x - w / 2, "right": x, "left": x - w}[side]
        assert start >= 0 and start + w <= 380
        placed.setdefault(row, []).append((start, start + w))
    for spans in placed.values():
        spans.sort()
        assert all(a[1] + 4 <= b[0] for a, b in zip(spans, spans[1:]))
    fig = figures.add_threshold_markers(figures.go.Figure(), values, x_range=(0, 255))
    tops = {t.name: t.y[1] for t in fig.data if t.mode == "lines"}
    assert len(set(tops.values())) > 1  # staggered
    names = next(t for t in fig.data if t.name == "threshold names")
    # each name at the end of its own dotted line
    assert dict(zip(names.text, names.y)) == tops


def test_threshold_names_have_a_band_no_line_range_bar_or_note_reaches():
    """Issue 10 item 6: the dotted threshold names sat under the vmin / vmax lines. The
    names are in a band at the top of the plot; the vmin / vmax lines and shaded ranges end
    below it (the browser moves them with shapes of the same extent:
    callbacks.thresholds.GATE_JS), and so do the counts and the clipped bin's note."""
    from components import figures

    colors = {"background": "#00f", "object": "#f80"}
    values = {"triangle": 3.0, "mean": 97.0, "otsu": 103.0, "yen": 107.0, "isodata": 110.0,
              "li": 94.0, "minimum": 150.0}
    counts = np.r_[90000, np.tile([300, 420, 380, 250, 100], 51)]  # a dominant bin
    edges = np.linspace(0, 256, counts.size + 1)
    for log in (False, True):
        fig = figures.histogram_figure(counts, edges, 97.0, 110.0, colors=colors, log=log)
        figures.add_threshold_markers(fig, values)
        names = next(t for t in fig.data if t.name == "threshold names")
        assert sorted(names.text) == sorted(values)
        assert names.yaxis == "y2"
        band = min(names.y)  # where the lowest row's text stands
        for shape in fig.layout.shapes:  # the vmin / vmax lines and the shaded ranges
            assert shape.yref == "y2" and shape.y0 == 0 and shape.y1 == 1 < band, shape
        for note in fig.layout.annotations:  # the clipped bin's count hangs below 1
            assert note.yref == "y2" and note.y == 1 and note.yanchor == "top", note
        top = fig.layout.yaxis2.range[1]
        # the top row of names has room for its text (9 px font) inside the plot
        plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
        assert (top - max(names.y)) * plot_px / top >= figures.NAME_ROW_PX - 1
        # the linear count axis: the counts but the clipped bin end at y2 = 1
        clip = fig.layout.meta["clip"]
        assert clip[1] / top == pytest.approx(fig.layout.meta["counts"])
        assert counts[1:].max() <= fig.layout.meta["counts"]
        bars = np.asarray(fig.data[0].y, dtype=float)
        if log:
            # log counts: every bin whole, the largest ending at y2 = 1 too
            lo, hi = fig.layout.meta["logclip"]
            assert list(fig.layout.yaxis.range) == [lo, hi]
            assert list(bars) == list(counts)
            assert (np.log10(counts.max()) - lo) / (hi - lo) == pytest.approx(1 / top)
        else:
            assert list(fig.layout.yaxis.range) == clip
            assert bars.max() <= fig.layout.meta["counts"]  # the clipped bin too
    # the shapes the browser draws on a move are the figure's
    assert figures.threshold_shapes(0, 1, 0, 1, colors)[0]["yref"] == "y2"


def test_a_dominant_histogram_bin_is_clipped_on_the_linear_axis():
    """Issue 10 item 6: retina's black surround made the histogram a spike and a flat
    line: the linear axis is clipped above the other bins, the spike says its count."""
    from components import figures

    counts = np.array([90000, 300, 420, 380, 250, 100])
    edges = np.arange(7, dtype=float)
    fig = figures.histogram_figure(counts, edges, 1.5, 4.5, colors={"background": "#00f",
                                                                   "object": "#f80"})
    assert fig.layout.yaxis.range == (0, 1.15 * 420)
    assert fig.layout.meta["clip"] == [0, 1.15 * 420]
    assert any("90,000" in a.text for a in fig.layout.annotations)
    log = figures.histogram_figure(counts, edges, 1.5, 4.5, log=True,
                                   colors={"background": "#00f", "object": "#f80"})
    # log counts: every bin whole, the largest at the top of the (explicit) range
    assert list(log.data[0].y) == list(counts)
    assert log.layout.yaxis.range[1] == pytest.approx(np.log10(90000))
    assert log.layout.yaxis.range[0] < np.log10(100)
    flat = figures.histogram_figure(np.array([300, 420, 380, 250]), edges[:5], 1.5, 3.5,
                                    colors={"background": "#00f", "object": "#f80"})
    # no bin dominates: the whole of every bin, a little headroom, no note
    assert flat.layout.yaxis.range == (0, 1.05 * 420) and not flat.layout.annotations


def test_the_count_axis_is_clipped_above_a_few_dominant_bins_only():
    """Issue 10 item 6, retina: its black surround is one bin of 404,288 pixels beside a
    tissue whose bins hold at most 41,432 (and a dark bin of 40,484 next to it), under the
    10x of a single-spike test: the histogram was a spike and a flat line. The axis is
    clipped above the bins that dwarf a robust high level of the histogram; hubble's and
    coins' narrow or broad peaks are their shape and stay whole."""
    from skimage import color, data

    from components import figures

    colors = {"background": "#00f", "object": "#f80"}
    counts, edges = render.histogram(color.rgb2gray(data.retina()))
    fig = figures.histogram_figure(counts, edges, 0.1, 0.3, colors=colors)
    tissue = counts[2:].max()  # the informative part: everything but the surround's bins
    top = fig.layout.yaxis.range[1]
    assert tissue <= top <= 1.2 * tissue  # the tissue fills the plot's height
    assert fig.layout.meta["clip"] == [0, top]
    assert [a.text for a in fig.layout.annotations] == [f"▲ {counts[0]:,}"]
    # two dominant bins (a surround of two dark values): both clipped, both say their count
    two = np.r_[400_000, 300_000, np.tile([30_000, 41_000, 35_000, 20_000], 60)]
    fig = figures.histogram_figure(two, np.arange(two.size + 1.0), 10, 100, colors=colors)
    assert fig.layout.yaxis.range[1] == pytest.approx(1.15 * 41_000)
    assert [a.text for a in fig.layout.annotations] == ["▲ 400,000", "▲ 300,000"]
    assert fig.layout.annotations[1].yshift < fig.layout.annotations[0].yshift  # stacked
    # a peak over a few per cent of the bins is the histogram's shape: never clipped
    for image in (data.hubble_deep_field(), data.coins()):
        counts, edges = render.histogram(color.rgb2gray(image) if image.ndim == 3 else image)
        assert figures.dominant_bins(counts) is None
        fig = figures.histogram_figure(counts, edges, edges[5], edges[-5], colors=colors)
        assert fig.layout.yaxis.range[1] == pytest.approx(1.05 * counts.max())
        assert not fig.layout.annotations


@pytest.mark.parametrize("sample", ["sixteen_bit", "retina"])
def test_clipped_bars_end_below_the_names_band_and_hover_their_true_counts(sample):
    """Issue 10 item 6: the clipped bins' bars were drawn up to the top of the plot, into
    the threshold names' band (a 16-bit image's three dark bins crossed "mean" and "yen");
    log counts were autoranged, the tallest bars reaching the band too. A clipped bar now
    ends at the clip level (y2 = 1, the band's bottom) and says its true count on hover and
    in its note; the log axis's range is explicit, the largest count at the band's bottom,
    and the log switch swaps the bars' heights (layout.meta.y)."""
    from skimage import color, data

    from components import figures

    image = sixteen_bit_cells() if sample == "sixteen_bit" else color.rgb2gray(data.retina())
    counts, edges = render.histogram(image)
    level, dominant = figures.dominant_bins(counts)
    assert dominant == ([0, 1, 2] if sample == "sixteen_bit" else [0])
    colors = {"background": "#00f", "object": "#f80"}
    values = {"otsu": float(edges[100]), "mean": float(edges[30]), "yen": float(edges[5]),
              "li": float(edges[60])}
    for log in (False, True):
        fig = figures.histogram_figure(counts, edges, edges[20], edges[120], colors=colors,
                                       log=log)
        figures.add_threshold_markers(fig, values)
        meta = fig.layout.meta
        top = fig.layout.yaxis2.range[1]  # y2 = 1 at the band's bottom
        bars = fig.data[0]
        # the hover says every bin's true count, whatever the bar's height
        assert list(bars.customdata) == counts.tolist()
        assert "%{customdata:,} pixels" in bars.hovertemplate
        assert "%{y" not in bars.hovertemplate
        # both heights kept for the log switch (callbacks.thresholds.LOG_JS)
        assert meta["y"]["log"] == counts.tolist()
        linear = np.asarray(meta["y"]["linear"], dtype=float)
        assert linear.max() <= level == meta["counts"]
        assert linear[dominant].tolist() == [level] * len(dominant)
        rest = np.setdiff1d(np.arange(counts.size), dominant)
        assert np.array_equal(linear[rest], counts[rest])
        # the linear axis: the clip level at y2 = 1
        assert meta["clip"][1] / top == pytest.approx(level)
        # the log axis: explicit, the largest count at y2 = 1, the smallest one drawn
        lo, hi = meta["logclip"]
        assert (np.log10(counts.max()) - lo) / (hi - lo) == pytest.approx(1 / top)
        assert lo < np.log10(counts[counts > 0].min())
        if log:
            assert list(bars.y) == counts.tolist()
            assert list(fig.layout.yaxis.range) == [lo, hi]
            assert fig.layout.yaxis.autorange is False
        else:
            assert list(bars.y) == linear.tolist()
            assert list(fig.layout.yaxis.range) == meta["clip"]
        # the notes say the true counts, hang from y2 = 1 (below the names) beside the run
        # of clipped bins, on a white ground that hides the dotted lines behind the text
        assert [a.text for a in fig.layout.annotations] == [
            f"▲ {counts[i]:,}" for i in dominant]
        for note in fig.layout.annotations:
            assert note.yref == "y2" and note.y == 1 and note.yanchor == "top"
            assert note.xanchor == "left" and note.x == pytest.approx(edges[dominant[-1] + 1])
            assert note.bgcolor and note.bgcolor.startswith("rgba(255,255,255")


def test_the_note_of_a_clipped_bin_at_the_right_stays_inside_the_plot():
    """A saturated bin at the right end of the histogram: its note ends beside it (to its
    left), not past the plot's right edge."""
    from components import figures

    counts = np.r_[np.tile([300, 420, 380, 250, 100], 51), 90000]
    edges = np.arange(counts.size + 1.0)
    fig = figures.histogram_figure(counts, edges, 10, 200, colors={"background": "#00f",
                                                                   "object": "#f80"})
    (note,) = fig.layout.annotations
    assert note.xanchor == "right" and note.x == edges[-2] and note.xshift < 0


def test_the_histogram_names_its_data_revision_by_content():
    from components import figures

    colors = {"background": "#ff0000", "object": "#00ff00"}

    def fig(counts, vmin):
        return figures.with_datarevision(figures.histogram_figure(
            np.asarray(counts), np.arange(len(counts) + 1), vmin, 3, colors=colors))

    a = fig([1, 2, 3, 4], 1).layout.datarevision
    assert a and a == fig([1, 2, 3, 4], 2).layout.datarevision  # lines moved: same data
    assert a != fig([1, 2, 3, 5], 1).layout.datarevision  # other counts: new data


def test_a_large_image_is_shown_at_a_display_level():
    assert render.display_factor((1024, 1024)) == 1
    assert render.display_factor((2048, 2048)) == 2
    assert render.display_factor((4096, 4096)) == 3
    for shape in [(1449, 1449), (1, 10**7), (3000, 700), (2049, 1025)]:
        f = render.display_factor(shape)
        blocks = -(-shape[0] // f) * -(-shape[1] // f)
        assert blocks <= render.DISPLAY_MAX_PIXELS
        if f > 1:  # the smallest such factor
            assert -(-shape[0] // (f - 1)) * -(-shape[1] // (f - 1)) > render.DISPLAY_MAX_PIXELS
    with pytest.raises(InputError, match="shape"):
        render.display_factor((0, 5))
    with pytest.raises(InputError, match="max_pixels"):
        render.display_factor((5, 5), max_pixels=0)


@pytest.mark.parametrize("shape", [(12, 12), (7, 10), (5, 9), (1, 4)])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_the_display_level_blocks(shape, factor, dtype):
    rng = np.random.default_rng(sum(shape) + factor)
    image = (rng.random(shape) * 250).astype(dtype)
    mean, near = render.reduce_mean(image, factor), render.reduce_nearest(image, factor)
    rows, cols = range(0, shape[0], factor), range(0, shape[1], factor)
    want = np.array([[image[r:r + factor, c:c + factor].astype(float).mean() for c in cols]
                     for r in rows])
    if np.issubdtype(dtype, np.integer):
        want = np.rint(want)
    np.testing.assert_allclose(mean, want, rtol=1e-6)
    assert mean.dtype == image.dtype and near.dtype == image.dtype
    assert near.shape == mean.shape == want.shape
    for i, r in enumerate(rows):  # the pixel nearest each block's centre, inside the block
        for j, c in enumerate(cols):
            rr = min(r + factor // 2, shape[0] - 1)
            cc = min(c + factor // 2, shape[1] - 1)
            assert near[i, j] == image[rr, cc]
    with pytest.raises(InputError, match="factor"):
        render.reduce_mean(image, 0)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "uint64"])
def test_percentiles_of_integers_are_counted_and_equal_numpys(dtype):
    """Issue 9: an 8- or 16-bit sample's display percentiles come from its counts (a fifth
    of the time of a partition on a million values), the very values of np.percentile."""
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    for trial in range(200):
        lo = int(rng.integers(max(info.min, -40_000), min(info.max, 40_000)))
        hi = min(int(info.max), lo + int(rng.integers(0, 70_000)))
        sample = rng.integers(lo, hi + 1, size=int(rng.integers(1, 2_000))).astype(dtype)
        qs = (0.5, 99.5, float(rng.uniform(0, 100)), 0.0, 100.0)
        assert render._percentiles(sample, qs) == tuple(
            float(v) for v in np.percentile(sample, qs)), (trial, sample.size)


def test_percentiles_of_wide_integers_and_floats_fall_back_to_numpy():
    wide = np.array([0, 1, 70_000, 5, 2**40], dtype=np.int64)  # a span over 2**16: partitioned
    floats = np.linspace(-1.5, 3.0, 101)
    for sample in (wide, floats):
        assert render._percentiles(sample, (0.5, 99.5)) == tuple(
            float(v) for v in np.percentile(sample, (0.5, 99.5)))
