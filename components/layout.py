"""The page: loader, controls, the panels of each pipeline step, and the discovery tabs."""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .batch import batch_stores
from .common import graph_config, message, panel
from .panels import (binarization_panel, channel_controls, compare_panel, discovery_tabs,
                     filter_panel, histogram_panel, measurements_panel)


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
                        placeholder="a bundled sample",
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
            data_series_item(),
            html.Div(className="loader-item loader-info", children=[
                html.Div(id=ids.IMAGE_INFO),
                channel_controls(),  # a colour image: which channel to segment
            ]),
            message(ids.LOAD_MESSAGE),
        ],
    )


def data_series_item():
    """The Series menu of a data-folder TIFF with several image series (OME-TIFF images, a
    multi-series file): hidden until such a file is loaded (callbacks.loading fills it)."""
    return html.Div(
        id=ids.DATA_SERIES_ITEM,
        className="loader-item",
        style={"display": "none"},
        children=[
            html.Label("Series", htmlFor=ids.DATA_SERIES),
            dcc.Dropdown(id=ids.DATA_SERIES, options=[], value=None, clearable=False,
                         placeholder="an image series of the file"),
        ],
    )


def image_panel():
    """Image panel: the image, zoom and pan, and slice controls for 3D stacks."""
    return panel(
        "Image",
        "skimage.io.imread",
        [
            dcc.Graph(id=ids.IMAGE_GRAPH, className="image-graph", config=graph_config()),
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


def controls():
    """Undo / redo and downloads."""
    return html.Section(
        className="controls",
        children=[
            html.Div(className="control buttons", children=[
                html.Button("↶ Undo", id=ids.UNDO, n_clicks=0, disabled=True,
                            title="Undo (Ctrl+Z)"),
                html.Button("↷ Redo", id=ids.REDO, n_clicks=0, disabled=True,
                            title="Redo (Ctrl+Shift+Z)"),
                html.Span(id=ids.HISTORY_TEXT, className="history-text"),
            ]),
            html.Div(className="control buttons", children=[
                # try on a crop first (callbacks/crop.py)
                html.Button("Tune on this view", id=ids.CROP_BUTTON, n_clicks=0,
                            title="Zoom the Segmentation graph to a region, then tune the "
                                  "recipe on that crop only (every step is faster); 'Apply "
                                  "to the whole image' takes the recipe back."),
                html.Button("Apply to the whole image", id=ids.APPLY_WHOLE_BUTTON, n_clicks=0,
                            style={"display": "none"}),
                dcc.Store(id=ids.CROP_REQUEST),
            ]),
            html.Div(className="control buttons", children=[
                html.Button("Download labels (TIFF)", id=ids.DOWNLOAD_LABELS_BUTTON, n_clicks=0),
                html.Button("Download overlay (PNG)", id=ids.DOWNLOAD_OVERLAY_BUTTON, n_clicks=0),
                dcc.Download(id=ids.DOWNLOAD_LABELS),
                dcc.Download(id=ids.DOWNLOAD_OVERLAY),
            ]),
        ],
    )


def page(session_id, sample_names, data_files, *, default_sample, max_upload_mb, filters,
         segmenters, properties):
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
    filters, segmenters : mapping of str to pipeline.steps.Step
        Filters and segmentation methods offered.
    properties : sequence of str
        Measurements offered.
    """
    return html.Div(
        className="app",
        id=ids.APP_ROOT,
        children=[
            dcc.Store(id=ids.SESSION, data=session_id),
            dcc.Store(id=ids.IMAGE),
            dcc.Store(id=ids.HISTORY),
            dcc.Store(id=ids.SEG_PENDING),
            dcc.Store(id=ids.SEG_SETTLED),
            dcc.Store(id=ids.COMPARE_SETTLED),
            dcc.Store(id=ids.MEASURE_SETTLED),
            dcc.Store(id=ids.SEG_BASE),
            dcc.Store(id=ids.COMPARE_BASE),
            dcc.Store(id=ids.SEG_FIRST_VIEW),
            dcc.Store(id=ids.MOVE_REQUEST),
            dcc.Store(id=ids.DRAG_REQUEST),
            dcc.Store(id=ids.DRAG_ACK),
            dcc.Store(id=ids.FILTER_SIGNAL),
            dcc.Store(id=ids.SEG_SIGNAL),
            dcc.Store(id=ids.MEASURE_SIGNAL),
            dcc.Store(id=ids.RECIPE_SIGNAL),
            dcc.Store(id=ids.ZOOM_SYNC),
            dcc.Store(id=ids.CLIENT_SINK),
            *batch_stores(),  # mounted whatever the tab: the browser's id, the job polled
            html.Header(className="app-header", children=[
                html.H1("Pipeline Explorer"),
                html.P("Image → Filtering → Markers (vmin / vmax on the histogram) → "
                       "Segmentation → Post-processing → Measurements. Every step names the "
                       "scikit-image function it runs."),
            ]),
            loader(sample_names, data_files, default_sample=default_sample,
                   max_upload_mb=max_upload_mb),
            controls(),
            # the steps a person tunes side by side (a threshold move and its segmentation
            # in one row, on one screen); then the checks: comparison, measurements, the
            # original image
            html.Div(className="panels", children=[filter_panel(filters), histogram_panel(),
                                                   binarization_panel(segmenters)]),
            html.Div(className="panels", children=[compare_panel(segmenters),
                                                   measurements_panel(properties),
                                                   image_panel()]),
            discovery_tabs(),
        ],
    )
