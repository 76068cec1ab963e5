"""The 3D view tab: three orthogonal planes through a cursor, the regions' surface, and the
voxel size; and its figures (PNG planes, a Mesh3d surface)."""

from __future__ import annotations

import plotly.graph_objects as go
from dash import dcc, html

from . import ids
from .common import message
from .docs import doc_link
from .figures import empty_figure

#: Axis name of each array axis of a volume.
AXES = "zyx"
#: Colour of the cursor lines (yellow: away from the label colours' reds and blues).
CURSOR_COLOR = "#ffd400"
PLANE_TITLES = {"zy": "ZY plane (side)", "zx": "ZX plane (front)", "yx": "YX plane (top)"}
VIEW_HEIGHT = 340


def _voxel_input(axis):
    return html.Div(className="param", children=[
        html.Label(f"voxel {axis}", htmlFor=ids.VOXEL_SIZE[axis]),
        dcc.Input(id=ids.VOXEL_SIZE[axis], type="number", min=0, step="any", value=1,
                  className="number-input")])


def volume_tab():
    """The "3D view" tab (:data:`components.ids.VOLUME_TAB`)."""
    views = [dcc.Graph(id=ids.VOLUME_GRAPHS[name], className="volume-graph",
                       figure=empty_figure("3D view: load a 3D stack", height=VIEW_HEIGHT),
                       config={"displaylogo": False, "scrollZoom": True,
                               "modeBarButtonsToRemove": ["select2d", "lasso2d"]},
                       style={"flex": "1 1 0", "minWidth": "260px"})
             for name in ("zy", "zx", "yx")]
    return dcc.Tab(label="3D view", value=ids.VOLUME_TAB, children=html.Div(
        className="tab-body", children=[
            html.P(className="hint", children=[
                "A 3D stack seen in 3D: three orthogonal planes through a cursor, with the "
                "current segmentation's regions outlined in their colours (",
                doc_link("skimage.segmentation.find_boundaries"), "); click a plane to move "
                "the cursor there (the other two planes follow). Planes larger than 1 M "
                "pixels are shown downsampled (their titles say so). ",
                html.Em("Show surface"), " draws the largest regions as a 3D mesh (",
                doc_link("skimage.measure.marching_cubes"), ", coarser steps to stay under "
                "200,000 triangles)."]),
            html.Div(className="param-form", children=[
                *(_voxel_input(axis) for axis in AXES),
                html.Button("Apply voxel size", id=ids.VOXEL_APPLY, n_clicks=0,
                            title="Measure with this voxel size (regionprops spacing)"),
                html.Span(id=ids.VOXEL_SOURCE, className="hint"),
            ]),
            html.Div(className="doc-line", children=[
                "voxel size: the views' aspect, the surface (marching_cubes spacing) and the "
                "measurements (", doc_link("skimage.measure.regionprops_table"),
                " spacing)"]),
            html.Div(className="overlay-row", children=[
                dcc.RadioItems(id=ids.VOLUME_STYLE, inline=True, value="outline", options=[
                    {"label": " outlines", "value": "outline"},
                    {"label": " outlines and fill", "value": "fill"}]),
            ]),
            html.Div(id=ids.VOLUME_INFO, className="summary"),
            html.Div(className="volume-views", children=views,
                     style={"display": "flex", "flexWrap": "wrap", "gap": "8px"}),
            message(ids.VOLUME_MESSAGE),
            html.Div(className="param-form", children=[
                html.Button("Show surface", id=ids.SURFACE_BUTTON, n_clicks=0),
                html.Div(className="param", children=[
                    html.Label("largest regions", htmlFor=ids.SURFACE_REGIONS),
                    dcc.Input(id=ids.SURFACE_REGIONS, type="number", min=1, max=500, step=1,
                              value=50, className="number-input")]),
            ]),
            html.Div(id=ids.SURFACE_COST, className="summary"),
            dcc.Graph(id=ids.SURFACE_GRAPH, className="surface-graph",
                      figure=empty_figure("", height=60), config={"displaylogo": False}),
            dcc.Store(id=ids.VOLUME_CURSOR),
            dcc.Store(id=ids.VOLUME_SIGNAL),
        ]))


def plane_figure(gray_uri, overlay_uri, *, name, dx, dy, cross, title, unit, uirevision,
                 height=VIEW_HEIGHT):
    """One orthogonal plane: the image and the regions' outlines as PNGs, the cursor lines.

    Parameters
    ----------
    gray_uri, overlay_uri : str
        PNG data URIs (the plane, possibly strided, and its RGBA overlay).
    name : {"zy", "zx", "yx"}
        Rows and columns of the plane (``pipeline.mesh.PLANES``).
    dx, dy : float
        Physical size of a shown pixel along the columns and the rows (stride times the
        voxel size): the plane is drawn in physical units, its aspect true.
    cross : tuple of 2 float
        ``(column, row)`` position of the cursor, in physical units.
    title : str
    unit : str
        Length unit of the axes.
    uirevision : str
        Zoom is kept while it is the same.
    """
    row_axis, col_axis = name[0], name[1]
    image = dict(x0=0, y0=0, dx=dx, dy=dy)
    fig = go.Figure(layout=go.Layout(
        height=height, margin=dict(l=40, r=8, t=28, b=36),
        title=dict(text=title, font=dict(size=12), x=0.02, y=0.98),
        xaxis=dict(title=dict(text=f"{col_axis} ({unit})", font=dict(size=10)),
                   showgrid=False, zeroline=False, constrain="domain"),
        yaxis=dict(title=dict(text=f"{row_axis} ({unit})", font=dict(size=10)),
                   showgrid=False, zeroline=False, scaleanchor="x", autorange="reversed",
                   constrain="domain"),
        uirevision=uirevision, dragmode="pan", plot_bgcolor="#111",
        paper_bgcolor="rgba(0,0,0,0)",
        shapes=[dict(type="line", xref="x", yref="paper", x0=cross[0], x1=cross[0], y0=0,
                     y1=1, line=dict(color=CURSOR_COLOR, width=1, dash="dot")),
                dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=cross[1],
                     y1=cross[1], line=dict(color=CURSOR_COLOR, width=1, dash="dot"))]))
    fig.add_trace(go.Image(source=gray_uri, name=name, hoverinfo="x+y", **image))
    fig.add_trace(go.Image(source=overlay_uri, name="regions", hoverinfo="skip", **image))
    return fig


#: Opacity of the regions not selected in the measurements table, while some are.
UNSELECTED_OPACITY = 0.2


def surface_figure(regions, *, unit, uirevision, selected=(), height=520):
    """A Mesh3d trace per region, in its colour, axes in physical units (true aspect); while
    regions are selected (rows of the measurements table) the others are faded.

    Parameters
    ----------
    regions : sequence of pipeline.mesh.RegionSurface
        Vertices ``(z, y, x)``; the arrays travel as binary (plotly's typed arrays), not
        as JSON lists of numbers.
    unit : str
    uirevision : str
        The camera is kept while it is the same.
    selected : sequence of int, optional
        Labels of the selected regions.
    """
    selected = {int(v) for v in selected or ()}
    fig = go.Figure(layout=go.Layout(
        height=height, margin=dict(l=0, r=0, t=0, b=0), uirevision=uirevision,
        scene=dict(aspectmode="data", xaxis_title=f"x ({unit})", yaxis_title=f"y ({unit})",
                   zaxis_title=f"z ({unit})"),
        showlegend=False, paper_bgcolor="rgba(0,0,0,0)"))
    for r in regions:
        v, f = r.vertices, r.faces
        fig.add_trace(go.Mesh3d(
            x=v[:, 2], y=v[:, 1], z=v[:, 0], i=f[:, 0], j=f[:, 1], k=f[:, 2],
            color=r.color, name=f"region {r.label}", meta=int(r.label), flatshading=False,
            opacity=UNSELECTED_OPACITY if selected and r.label not in selected else 1.0,
            hovertemplate=f"region {r.label} · {r.voxels:,} voxels<extra></extra>",
            lighting=dict(ambient=0.45, diffuse=0.8, specular=0.15)))
    return fig
