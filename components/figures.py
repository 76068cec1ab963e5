"""Plotly figures of the panels. Images are PNG data URIs (``go.Image(source=...)``), never
JSON arrays; overlays are separate traces so a parameter change swaps only their sources."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# Trace order of the Binarization figure (callbacks patch these by index).
BASE_TRACE, MARKER_TRACE, SEG_TRACE, HIGHLIGHT_TRACE = 0, 1, 2, 3
# Shape order of the histogram figure.
VMIN_LINE, VMAX_LINE, BG_RANGE, OBJ_RANGE = 0, 1, 2, 3

_AXIS = dict(visible=False, showgrid=False, zeroline=False)


def _image_layout(uirevision, height):
    return go.Layout(
        margin=dict(l=0, r=0, t=0, b=0),
        height=height,
        xaxis=dict(_AXIS),
        yaxis=dict(_AXIS, scaleanchor="x", autorange="reversed"),
        uirevision=uirevision,
        dragmode="pan",
        plot_bgcolor="#111",
        paper_bgcolor="rgba(0,0,0,0)",
    )


def image_figure(base_uri, *, uirevision, height=420, factor=1):
    """The Image panel: the (slice of the) image as a PNG, on blocks of `factor` pixels
    (a reduced display level, ``pipeline.render.display_factor``: :func:`seg_geometry`);
    the axes stay in pixels of the image."""
    fig = go.Figure(layout=_image_layout(uirevision, height))
    fig.add_trace(go.Image(source=base_uri, name="image", hoverinfo="x+y",
                           **_geometry(factor)))
    return fig


def _geometry(factor):
    return seg_geometry(factor) if int(factor) > 1 else {}


def seg_geometry(factor=1) -> dict:
    """Where the segmentation overlay's pixels sit on the image (``go.Image``'s x0, y0, dx,
    dy): one per pixel (`factor` 1), or one per block of `factor` × `factor` pixels (a
    preview drawn at the resolution it was computed at: block ``(i, j)`` covers pixels
    ``factor * i`` to ``factor * (i + 1) - 1``, centred at ``factor * i + (factor - 1) / 2``).
    """
    factor = int(factor)
    centre = (factor - 1) / 2
    return {"x0": centre, "y0": centre, "dx": factor, "dy": factor}


def segmentation_figure(base_uri, marker_uri, seg_uri, *, uirevision, highlight=None,
                        height=420, seg_factor=None, factor=1):
    """The Binarization panel: image, marker overlay, result overlay (on blocks of
    `seg_factor` pixels, :func:`seg_geometry`; default `factor`), selected regions. The
    image, markers and selection are on blocks of `factor` pixels (the display level)."""
    fig = image_figure(base_uri, uirevision=uirevision, height=height, factor=factor)
    fig.add_trace(go.Image(source=marker_uri, name="markers", hoverinfo="skip",
                           **_geometry(factor)))
    fig.add_trace(go.Image(source=seg_uri, name="segmentation", hoverinfo="skip",
                           **seg_geometry(factor if seg_factor is None else seg_factor)))
    fig.add_trace(go.Image(source=highlight or marker_uri, name="selected", hoverinfo="skip",
                           visible=highlight is not None, **_geometry(factor)))
    return fig


#: The threshold names' band at the top of the histogram: rows of this many pixels, above
#: the counts and above the reach of the vmin / vmax lines and shaded ranges.
NAME_ROW_PX = 12
#: Below the band's first row (px).
NAME_BAND_PAD_PX = 3
#: Names drawn white-haloed: a bar or a dotted line behind them never hides them.
_HALO = ", ".join(f"{dx}px {dy}px 1px #fff" for dx in (-1, 1) for dy in (-1, 1))


def label_rows(values, x_range, width_px=360.0, char_px=6.0, gap_px=4.0):
    """Where each threshold's name goes so that no two overlap: ``{name: (row, side)}``.

    Names are placed left to right, each in the lowest row (0: the row nearest the counts)
    where it clears every name already in that row; there are as many rows as that takes.
    `side` is ``"center"``, or ``"right"`` / ``"left"`` (the text starts / ends at the line)
    near the plot's edges so that it is never clipped. `width_px` is a plot width the page
    is assumed to have at least (the narrower, the more rows).
    """
    lo, hi = float(x_range[0]), float(x_range[1])
    span = hi - lo if hi > lo else 1.0
    ends = []  # per row, where its last name ends (px)
    out = {}
    for name, value in sorted(values.items(), key=lambda kv: (kv[1], kv[0])):
        x = min(max((float(value) - lo) / span * width_px, 0.0), width_px)
        w = len(name) * char_px
        if x - w / 2 < 0:
            side, start = "right", x
        elif x + w / 2 > width_px:
            side, start = "left", x - w
        else:
            side, start = "center", x - w / 2
        row = next((r for r, end in enumerate(ends) if end + gap_px <= start), len(ends))
        if row == len(ends):
            ends.append(-np.inf)
        ends[row] = start + w
        out[name] = (row, side)
    return out


def _plot_height_px(fig):
    layout = fig.layout
    height = layout.height or 300
    margin = layout.margin
    return max(float(height) - float(margin.t or 0) - float(margin.b or 0), 60.0)


def add_threshold_markers(fig, values, x_range=None):
    """Dotted lines at automatic thresholds ({method: value}) on the histogram, their names
    in a band of their own at the top of the plot (:func:`label_rows`: staggered rows, never
    overlapping).

    The band lies above the reach of the vmin / vmax lines and shaded ranges (drawn on the
    overlay axis ``y2`` from 0 to 1, :func:`threshold_shapes`): ``y2``'s range is extended
    past 1 by the band's height, and the count axis's ranges by the same share (kept in
    ``layout.meta.clip`` and ``meta.logclip``, which the log switch applies;
    :func:`_reserve_band`), so no line, range, bar or note of the counts reaches a name, in
    linear or log counts. The dotted lines run up to their names, under them: the names
    are one text trace drawn last, white-haloed.
    """
    if x_range is None:
        x_range = fig.layout.xaxis.range or (min(values.values(), default=0),
                                             max(values.values(), default=1))
    rows = label_rows(values, x_range)
    n_rows = 1 + max((row for row, _ in rows.values()), default=-1)
    plot_px = _plot_height_px(fig)
    band_px = n_rows * NAME_ROW_PX + (NAME_BAND_PAD_PX + 2 if n_rows else 0)
    below_px = max(plot_px - band_px, plot_px / 2)
    per_px = 1.0 / below_px  # y2 units per pixel; y2 = 1 at the band's bottom
    top = plot_px * per_px
    ordered = sorted(values.items(), key=lambda kv: (kv[1], kv[0]))
    ys, sides = [], []
    for name, value in ordered:
        row, side = rows[name]
        y = 1 + (NAME_BAND_PAD_PX + row * NAME_ROW_PX) * per_px
        ys.append(y)
        sides.append(f"top {side}")
        fig.add_trace(go.Scatter(
            x=[value, value], y=[0, y], yaxis="y2", mode="lines",
            line=dict(color="#555", width=1, dash="dot"), name=name,
            hoverinfo="skip", showlegend=False))  # clicks go to the histogram bars
    if ordered:
        fig.add_trace(go.Scatter(
            x=[value for _, value in ordered], y=ys, yaxis="y2", mode="text",
            text=[name for name, _ in ordered], textposition=sides,
            textfont=dict(size=9, color="#333", shadow=_HALO), name="threshold names",
            hoverinfo="skip", showlegend=False, cliponaxis=False))
    fig.update_layout(yaxis2=dict(overlaying="y", range=[0, top], visible=False,
                                  fixedrange=True))
    _reserve_band(fig, top)
    return fig


def _reserve_band(fig, top):
    """Grow the count axis's ranges so that its counts end at ``y2 = 1``, below the names'
    band whose top is ``y2 = top``.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        A figure of :func:`histogram_figure`; figures without ``layout.meta.counts`` are
        left as they are.
    top : float
        The top of the overlay axis ``y2`` (the names' band's top; 1 without names).

    Notes
    -----
    ``layout.meta.clip``, the linear range the log switch applies
    (callbacks.thresholds.LOG_JS), is ``[0, meta.counts * top]``; ``meta.logclip``, the log
    range it applies, is ``meta.logcounts`` (the counts' own log10 range) with its top raised
    so that the largest count ends at the same height: the axis's share below the band is
    ``1 / top`` on either scale. The range of the axis's current type is applied.
    """
    meta = dict(fig.layout.meta or {})
    if "counts" not in meta:
        return
    meta["clip"] = [0, float(meta["counts"]) * float(top)]
    if meta.get("logcounts"):
        lo, hi = (float(v) for v in meta["logcounts"])
        meta["logclip"] = [lo, lo + (hi - lo) * float(top)]
    fig.update_layout(meta=meta)
    if fig.layout.yaxis.type == "log":
        if meta.get("logclip"):
            fig.update_layout(yaxis_range=meta["logclip"], yaxis_autorange=False)
    else:
        fig.update_layout(yaxis_range=meta["clip"], yaxis_autorange=False)


def _log_counts_range(counts):
    """The log10 range ``[lo, hi]`` of the counts on a log axis: the largest count at the top
    (`hi`), the smallest non-zero one a little above the bottom; None when no bin holds a
    pixel."""
    positive = np.asarray(counts, dtype=float)
    positive = positive[positive > 0]
    if not positive.size:
        return None
    hi = float(np.log10(positive.max()))
    low = float(np.log10(positive.min()))
    return [low - max(0.05 * (hi - low), 0.1), hi]


def empty_figure(text="", height=420):
    """A blank figure with a centred note."""
    fig = go.Figure(layout=_image_layout("empty", height))
    if text:
        fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(color="#ddd"))
    return fig


def threshold_shapes(vmin, vmax, xmin, xmax, colors):
    """Lines at vmin and vmax and the two marker ranges shaded in the overlay colours, on
    the overlay axis ``y2`` from 0 to 1 (the names' band above, :func:`add_threshold_markers`).

    Parameters
    ----------
    vmin, vmax : float
        Thresholds.
    xmin, xmax : float
        Extent of the histogram.
    colors : mapping
        ``{"background": "#rrggbb", "object": "#rrggbb"}``.
    """
    # on the overlay axis y2, from 0 to 1: below the threshold names' band, which starts at
    # y2 = 1 (add_threshold_markers)
    line = dict(type="line", yref="y2", y0=0, y1=1, line=dict(width=3))
    rect = dict(type="rect", yref="y2", y0=0, y1=1, line=dict(width=0), opacity=0.25,
                layer="below")
    return [
        dict(line, x0=vmin, x1=vmin, line=dict(width=3, color=colors["background"]),
             name="vmin"),
        dict(line, x0=vmax, x1=vmax, line=dict(width=3, color=colors["object"]), name="vmax"),
        dict(rect, x0=xmin, x1=vmin, fillcolor=colors["background"], name="background"),
        dict(rect, x0=vmax, x1=xmax, fillcolor=colors["object"], name="object"),
    ]


def histogram_figure(counts, edges, vmin, vmax, *, colors, log=False, uirevision=None,
                     height=300):
    """Intensity histogram with vmin / vmax drawn on it.

    Parameters
    ----------
    counts : ndarray
        Counts per bin.
    edges : ndarray
        Bin edges, ``len(counts) + 1``.
    vmin, vmax : float
        Thresholds.
    colors : mapping
        Marker colours (see :func:`threshold_shapes`).
    log : bool
        Logarithmic counts axis.
    uirevision : object, optional
        The figure's ``uirevision`` (a zoom is kept while it is the same).
    height : int, optional
        Figure height (px).

    Returns
    -------
    plotly.graph_objects.Figure
        One bar trace (``customdata``: the true counts, which the hover says), the vmin /
        vmax shapes, and ``layout.meta``: ``counts`` and ``clip`` (the linear axis's top and
        range), ``logcounts`` and ``logclip`` (the log axis's log10 range, when a bin holds
        a pixel) and, when bins are clipped (:func:`dominant_bins`), ``y``: the bars'
        heights ``{"linear": ..., "log": ...}``, which the log switch swaps.

    Notes
    -----
    The count axis's range is explicit on either scale, the counts ending at the top of the
    counts' part of the plot (``y2 = 1`` once :func:`add_threshold_markers` has made room
    for the names' band above). On the linear axis, bins that dwarf the others are drawn
    up to the clip level only, each with a note of its count below the band.
    """
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts)
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    clip = dominant_bins(counts)
    true_y = counts.tolist()
    if clip is not None:
        # a few bins (e.g. a black surround) dwarf the others: the linear axis is clipped
        # above the rest, and those bins are drawn up to the clip level only, so that no bar
        # reaches the names' band above the counts (add_threshold_markers); log counts show
        # every bin whole
        top, indices = clip
        linear_y = np.minimum(counts.astype(float), top).tolist()
    else:
        peak = float(counts.max()) if counts.size else 0.0
        top = 1.05 * peak if peak > 0 else 1.0
        indices, linear_y = [], true_y
    fig = go.Figure(
        go.Bar(x=centers.tolist(), y=true_y if log else linear_y, width=widths.tolist(),
               # the true counts, whatever the height drawn: the hover says them
               customdata=true_y,
               marker=dict(color="#777", line=dict(width=0)), name="pixels",
               hovertemplate="intensity %{x:,.5~r}<br>%{customdata:,} pixels<extra></extra>"),
        layout=go.Layout(
            # the top margin holds the mode bar (shown on hover) above the names' band
            margin=dict(l=50, r=10, t=28, b=40),
            height=height,
            bargap=0,
            xaxis=dict(title="intensity", range=[float(edges[0]), float(edges[-1])],
                       hoverformat=",.5~r"),  # 11,905, not 11.90464k
            yaxis=dict(title="pixels", type="log" if log else "linear", fixedrange=True),
            # the axis of the vmin / vmax lines and the threshold names: 0 to 1 the counts'
            # height, above 1 the names' band (add_threshold_markers)
            yaxis2=dict(overlaying="y", range=[0, 1], visible=False, fixedrange=True),
            shapes=threshold_shapes(vmin, vmax, float(edges[0]), float(edges[-1]), colors),
            uirevision=uirevision,
            clickmode="event",
            hovermode="x",
            dragmode="zoom",
            showlegend=False,
            plot_bgcolor="white",
        ),
    )
    middle = (float(edges[0]) + float(edges[-1])) / 2
    for k, index in enumerate(indices):
        # each clipped bin says its count (one note under another), hanging from the top of
        # the counts (y2 = 1, the band's bottom) beside its run of clipped bins, on the
        # side of the plot's middle; a white ground so that no dotted line crosses the text
        first = last = index
        while first - 1 in indices:
            first -= 1
        while last + 1 in indices:
            last += 1
        right = float(centers[index]) > middle
        fig.add_annotation(x=float(edges[first] if right else edges[last + 1]), y=1,
                           yref="y2", yanchor="top", xanchor="right" if right else "left",
                           xshift=-3 if right else 3, yshift=-12 * k,
                           text=f"▲ {int(counts[index]):,}", showarrow=False,
                           font=dict(size=9, color="#555"), bgcolor="rgba(255,255,255,0.9)",
                           borderpad=1)
    # the count axis's ranges, always explicit (callbacks.thresholds.LOG_JS applies the one
    # of the axis's type): meta.counts is the linear counts' own top and meta.logcounts
    # their log10 range, which the names' band raises the ranges above (_reserve_band, into
    # meta.clip and meta.logclip); meta.y holds the bars' heights of either type when they
    # differ (the clipped bins), which the log switch swaps
    meta = {"counts": top, "clip": [0, top]}
    log_range = _log_counts_range(counts)
    if log_range is not None:
        meta.update(logcounts=log_range, logclip=list(log_range))
    if indices:
        meta["y"] = {"linear": linear_y, "log": true_y}
    fig.update_layout(meta=meta)
    if not log:
        fig.update_layout(yaxis_range=[0, top], yaxis_autorange=False)
    elif log_range is not None:
        fig.update_layout(yaxis_range=log_range, yaxis_autorange=False)
    return fig


def with_datarevision(fig):
    """`fig` with ``layout.datarevision`` set to a digest of its traces.

    ``Plotly.react`` takes a data array of a new identity for new data unless the layout's
    ``datarevision`` says otherwise; dcc.Graph passes new copies of the arrays whenever its
    figure is patched (e.g. the histogram's threshold lines), so without it every patch
    recalculates every trace. The digest changes exactly when the traces do.
    """
    import hashlib

    import plotly.io as pio

    traces = pio.to_json({"data": fig.to_plotly_json()["data"]}, validate=False)
    digest = hashlib.blake2b(traces.encode(), digest_size=8)
    fig.update_layout(datarevision=digest.hexdigest())
    return fig


def dominant_bins(counts, ratio=4.0, share=0.02):
    """``(top, indices)`` when a few bins dwarf the others (a black surround, a saturated
    background: retina has one bin of 404,288 pixels beside a tissue whose bins hold at most
    41,432): the linear axis's top (1.15 × the largest other bin) and those bins' indices,
    in order; else None.

    A bin dwarfs the others when its count is over `ratio` times a robust high level of the
    histogram: the count of the (k + 1)-th largest bin, k = `share` of the bins (at least 2).
    The k largest bins can be dominant together (two dark bins of an image), whereas a peak
    spread over more bins than that (hubble's, coins') is the histogram's shape: it is never
    clipped.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.size < 3:
        return None
    k = max(2, int(np.ceil(share * counts.size)))
    k = min(k, counts.size - 1)
    level = np.sort(counts)[::-1][k]
    if level <= 0:
        return None
    dominant = counts > ratio * level
    if not dominant.any():
        return None
    return float(1.15 * counts[~dominant].max()), [int(i) for i in np.flatnonzero(dominant)]
