"""The page: loader, the three panels (Image, Histogram, Binarization) and the controls."""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .docs import doc_link

# Step name -> (scikit-image function, its API page). Shown in each panel's header.
_MODES = [
    {"label": "cg_mg: conjugate gradient + algebraic multigrid (pyamg)", "value": "cg_mg"},
    {"label": "cg_j: conjugate gradient + Jacobi", "value": "cg_j"},
    {"label": "bf: direct sparse solve (small images)", "value": "bf"},
]
_TOLS = [{"label": f"{t:g}", "value": t} for t in (1e-2, 1e-3, 1e-4, 1e-5)]


def _panel(title, function, body, *, panel_id):
    return html.Section(
        className="panel",
        id=panel_id,
        children=[
            html.Header(className="panel-header", children=[html.H2(title), doc_link(function)]),
            html.Div(className="panel-body", children=body),
        ],
    )


def _message(component_id):
    return html.Div(id=component_id, className="message", role="alert", **{"aria-live": "polite"})


def loader(sample_names, data_files, *, default_sample, max_upload_mb):
    """The image loader: bundled samples, an upload area and the lab's data folder."""
    data_options = [{"label": f, "value": f} for f in data_files]
    return html.Section(
        className="loader",
        children=[
            html.Div(
                className="loader-item",
                children=[
                    html.Label("Sample", htmlFor=ids.SAMPLE),
                    dcc.Dropdown(
                        id=ids.SAMPLE,
                        options=[{"label": n, "value": n} for n in sample_names],
                        value=default_sample,
                        clearable=False,
                    ),
                ],
            ),
            html.Div(
                className="loader-item loader-upload",
                children=[
                    dcc.Upload(
                        id=ids.UPLOAD,
                        className="upload",
                        max_size=-1,  # the server enforces the limit and explains it
                        children=html.Div(
                            [
                                "Drop or ",
                                html.A("choose a file"),
                                html.Br(),
                                html.Small(
                                    f"PNG, JPEG or TIFF (2D or 3D stack), up to {max_upload_mb:g} MB"
                                ),
                            ]
                        ),
                    )
                ],
            ),
            html.Div(
                className="loader-item",
                children=[
                    html.Label("Data folder", htmlFor=ids.DATA_FILE),
                    dcc.Dropdown(
                        id=ids.DATA_FILE,
                        options=data_options,
                        placeholder="a file from the lab's data folder"
                        if data_files
                        else "no image in the data folder",
                        disabled=not data_files,
                    ),
                ],
            ),
            html.Div(className="loader-item loader-info", children=[html.Div(id=ids.IMAGE_INFO)]),
            _message(ids.LOAD_MESSAGE),
        ],
    )


def image_panel():
    """Image panel: the image, zoom and pan, and slice controls for 3D stacks."""
    return _panel(
        "Image",
        "skimage.io.imread",
        [
            dcc.Graph(id=ids.IMAGE_GRAPH, className="image-graph", config=_graph_config()),
            html.Div(
                id=ids.SLICE_CONTROLS,
                className="slice-controls",
                style={"display": "none"},
                children=[
                    html.Label("Slice axis"),
                    dcc.RadioItems(
                        id=ids.SLICE_AXIS,
                        options=[{"label": a, "value": i} for i, a in enumerate("ZYX")],
                        value=0,
                        inline=True,
                    ),
                    dcc.Slider(id=ids.SLICE_INDEX, min=0, max=1, step=1, value=0, marks=None,
                               tooltip={"placement": "bottom", "always_visible": True},
                               updatemode="mouseup"),
                ],
            ),
        ],
        panel_id="image-panel",
    )


def histogram_panel():
    """Histogram panel: intensity histogram with vmin / vmax and the marker ranges."""
    return _panel(
        "Histogram",
        "skimage.exposure.histogram",
        [
            dcc.Graph(
                id=ids.HIST_GRAPH,
                className="histogram-graph",
                config={"edits": {"shapePosition": True}, "displaylogo": False,
                        "modeBarButtonsToRemove": ["select2d", "lasso2d"]},
            ),
            html.Div(
                className="threshold-row",
                children=[
                    html.Label("vmin / vmax", htmlFor=ids.THRESHOLDS),
                    dcc.RangeSlider(
                        id=ids.THRESHOLDS, min=0, max=255, step=1, value=[50, 200],
                        allowCross=False, marks=None, updatemode="mouseup",
                        tooltip={"placement": "bottom", "always_visible": True},
                    ),
                    dcc.Checklist(id=ids.HIST_LOG, options=[{"label": " log counts",
                                                             "value": "log"}], value=[],
                                  inline=True),
                ],
            ),
            html.P(
                className="hint",
                children="Click the histogram to move the nearest threshold, or drag a line.",
            ),
            html.Div(id=ids.THRESHOLDS_TEXT, className="thresholds-text"),
            _message(ids.PARAM_MESSAGE),
        ],
        panel_id="histogram-panel",
    )


def binarization_panel():
    """Binarization panel: markers and random-walker segmentation over the image."""
    return _panel(
        "Binarization",
        "skimage.segmentation.random_walker",
        [
            dcc.Graph(id=ids.SEG_GRAPH, className="image-graph", config=_graph_config()),
            html.Div(
                className="overlay-row",
                children=[
                    dcc.RadioItems(
                        id=ids.OVERLAY_STYLE,
                        options=[{"label": " contour", "value": "contour"},
                                 {"label": " fill", "value": "fill"}],
                        value="contour",
                        inline=True,
                    ),
                    dcc.Checklist(id=ids.SHOW_MARKERS,
                                  options=[{"label": " markers", "value": "markers"}],
                                  value=["markers"], inline=True),
                    html.Span(className="legend", children=[
                        html.Span(className="swatch swatch-bg"), " background marker (< vmin) ",
                        html.Span(className="swatch swatch-obj"), " object marker (> vmax) ",
                        html.Span(className="swatch swatch-seg"), " segmentation",
                    ]),
                ],
            ),
            html.Div(id=ids.SEG_SUMMARY, className="summary"),
            html.Div(className="doc-line", children=["contour: ",
                                                     doc_link("skimage.segmentation.find_boundaries")]),
            _message(ids.SEG_MESSAGE),
        ],
        panel_id="binarization-panel",
    )


def controls(mode_default):
    """Random-walker parameters, undo / redo and downloads."""
    return html.Section(
        className="controls",
        children=[
            html.Div(className="control", children=[
                html.Label("beta", htmlFor=ids.BETA),
                dcc.Input(id=ids.BETA, type="number", value=130, min=1, max=100000, step="any",
                          debounce=True, className="number-input"),
            ]),
            html.Div(className="control control-wide", children=[
                html.Label("mode", htmlFor=ids.MODE),
                dcc.Dropdown(id=ids.MODE, options=_MODES, value=mode_default, clearable=False),
            ]),
            html.Div(className="control", children=[
                html.Label("tol", htmlFor=ids.TOL),
                dcc.Dropdown(id=ids.TOL, options=_TOLS, value=1e-3, clearable=False),
            ]),
            html.Div(className="control buttons", children=[
                html.Button("↶ Undo", id=ids.UNDO, n_clicks=0, disabled=True,
                            title="Undo (Ctrl+Z)"),
                html.Button("↷ Redo", id=ids.REDO, n_clicks=0, disabled=True,
                            title="Redo (Ctrl+Shift+Z)"),
                html.Span(id=ids.HISTORY_TEXT, className="history-text"),
            ]),
            html.Div(className="control buttons", children=[
                html.Button("Download labels (TIFF)", id=ids.DOWNLOAD_LABELS_BUTTON, n_clicks=0),
                html.Button("Download overlay (PNG)", id=ids.DOWNLOAD_OVERLAY_BUTTON, n_clicks=0),
                dcc.Download(id=ids.DOWNLOAD_LABELS),
                dcc.Download(id=ids.DOWNLOAD_OVERLAY),
            ]),
        ],
    )


def _graph_config():
    return {"displaylogo": False, "scrollZoom": True,
            "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}


def page(session_id, sample_names, data_files, *, default_sample, max_upload_mb, mode_default):
    """The whole page for one visitor.

    Parameters
    ----------
    session_id : str
        A new random session id; the page keeps it in memory only.
    sample_names : sequence of str
        Bundled samples offered in the loader.
    data_files : sequence of str
        Files of the lab's data folder offered in the loader.
    default_sample : str
        Sample loaded when the page opens.
    max_upload_mb : float
        Upload limit shown to the user.
    mode_default : str
        Default random-walker mode.
    """
    return html.Div(
        className="app",
        children=[
            dcc.Store(id=ids.SESSION, data=session_id),
            dcc.Store(id=ids.IMAGE),
            dcc.Store(id=ids.HISTORY),
            dcc.Store(id=ids.ZOOM_SYNC),
            html.Header(className="app-header", children=[
                html.H1("Pipeline Explorer"),
                html.P("Image → Markers (vmin / vmax on the histogram) → random-walker "
                       "segmentation. Every step names the scikit-image function it runs."),
            ]),
            loader(sample_names, data_files, default_sample=default_sample,
                   max_upload_mb=max_upload_mb),
            html.Div(className="panels", children=[image_panel(), histogram_panel(),
                                                   binarization_panel()]),
            controls(mode_default),
        ],
    )
