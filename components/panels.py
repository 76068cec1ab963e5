"""Panels of the pipeline steps: filtering, markers, segmentation and post-processing,
comparison, measurements, and the discovery tabs (thresholds, sweep, recipe)."""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .batch import batch_tab_body
from .common import graph_config, message, panel
from .docs import doc_link
from .measurements import measurements_panel  # noqa: F401  (moved; kept importable here)
from .progress import exact_job_row
from .volume import volume_tab


def _method_dropdown(component_id, steps, value):
    return dcc.Dropdown(id=component_id, className="method-dropdown", clearable=False,
                        options=[{"label": s.label, "value": s.key} for s in steps.values()],
                        value=value)


def filter_panel(filters):
    """Filtering: the filtered image (zoom synchronised with the original) and its method."""
    return panel("1 · Filtering", None, [
        dcc.Graph(id=ids.FILTERED_GRAPH, className="image-graph", config=graph_config()),
        html.Div(id=ids.FILTER_RUN, className="summary"),
        html.Div(id=ids.FILTER_DOC),
        html.Div(id={"type": ids.PARAM_FORM, "stage": "filter"}, className="param-form"),
        message({"type": ids.STEP_MESSAGE, "stage": "filter"}),
    ], panel_id="filter-panel", header_extra=_method_dropdown(ids.FILTER_METHOD, filters, "none"))


def histogram_panel():
    """Markers: intensity histogram of the filtered image with vmin / vmax."""
    return panel("2 · Markers", "skimage.exposure.histogram", [
        dcc.Graph(id=ids.HIST_GRAPH, className="histogram-graph",
                  config={"edits": {"shapePosition": True}, "displaylogo": False,
                          "modeBarButtonsToRemove": ["select2d", "lasso2d"]}),
        html.Div(className="threshold-row", children=[
            html.Label("vmin / vmax", htmlFor=ids.THRESHOLDS),
            dcc.RangeSlider(id=ids.THRESHOLDS, min=0, max=255, step=1, value=[50, 200],
                            allowCross=False, marks=None, updatemode="mouseup",
                            tooltip={"placement": "bottom", "always_visible": True,
                                     "transform": "pipexNumber"}),
            dcc.Checklist(id=ids.HIST_LOG, options=[{"label": " log counts", "value": "log"}],
                          value=[], inline=True),
        ]),
        html.P(className="hint", children=[
            "Click the histogram to move the nearest threshold, or drag a line. Dotted lines: "
            "automatic thresholds (", html.Em("Threshold discovery"), " tab below). Fine "
            "steps: click a handle, then ← / → (one step) or Shift + ← / → (ten); type a "
            "value in a box and press Enter; or zoom the histogram (drag a box over it, "
            "double-click to zoom out) and drag a line: it moves as finely as the zoom."]),
        html.Div(id=ids.THRESHOLDS_TEXT, className="thresholds-text"),
        message(ids.PARAM_MESSAGE),
    ], panel_id="histogram-panel")


_POST_OPS = (
    ("closing", "closing", "skimage.morphology.closing"),
    ("opening", "opening", "skimage.morphology.opening"),
    ("fill_holes", "fill holes", "scipy.ndimage.binary_fill_holes"),
    ("remove_small_objects", "remove small objects", "skimage.morphology.remove_small_objects"),
    ("split_touching", "split touching objects", "skimage.segmentation.watershed"),
    ("clear_border", "clear border", "skimage.segmentation.clear_border"),
    ("relabel_sequential", "relabel sequential", "skimage.segmentation.relabel_sequential"),
)


def _number(label, component_id, value, **kwargs):
    return html.Div(className="param", children=[
        html.Label(label, htmlFor=component_id),
        dcc.Input(id=component_id, type="number", value=value, debounce=True,
                  className="number-input", **kwargs)])


def channel_controls():
    """Which image of a colour file the pipeline segments (hidden for a gray image): its
    luminance, one channel or a weighted combination of the three."""
    weights = (("red", 0.2125), ("green", 0.7154), ("blue", 0.0721))
    return html.Div(id=ids.CHANNEL_CONTROLS, className="channel-controls",
                    style={"display": "none"}, children=[
        html.Div(className="param param-wide", children=[
            html.Label("Channel", htmlFor=ids.CHANNEL),
            dcc.Dropdown(id=ids.CHANNEL, clearable=False, value="luminance", options=[
                {"label": "luminance (rgb2gray)", "value": "luminance"},
                {"label": "red", "value": "red"}, {"label": "green", "value": "green"},
                {"label": "blue", "value": "blue"},
                {"label": "weighted channels", "value": "weighted"}]),
        ]),
        html.Div(id=ids.CHANNEL_WEIGHTS_ROW, className="param-form", style={"display": "none"},
                 children=[_number(f"{name} ×", ids.CHANNEL_WEIGHTS[name], value, step="any",
                                   min=-1000, max=1000) for name, value in weights]),
        html.Div(className="doc-line",
                 children=["luminance: ", doc_link("skimage.color.rgb2gray")]),
    ])


def post_controls():
    """Post-processing operations (in pipeline order) and their parameters."""
    return html.Div(className="post-controls", children=[
        html.H3("4 · Post-processing"),
        dcc.Checklist(id=ids.POST_OPS, className="post-ops", value=[], options=[
            {"label": html.Span([f" {label} ", doc_link(fn)]), "value": key}
            for key, label, fn in _POST_OPS]),
        html.Div(className="param-form", children=[
            _number("closing radius", ids.POST_CLOSING, 1, min=1, max=25, step=1),
            _number("opening radius", ids.POST_OPENING, 1, min=1, max=25, step=1),
            _number("min size (px)", ids.POST_MIN_SIZE, 64, min=0, step=1),
            _number("label connectivity", ids.POST_CONNECTIVITY, 1, min=1, max=3, step=1),
            _number("split min distance (px)", ids.POST_SPLIT_DISTANCE, 5, min=1, max=100,
                    step=1),
            _number("split smoothing σ (px)", ids.POST_SPLIT_SIGMA, 0, min=0, max=20,
                    step="any"),
        ]),
        html.Div(className="doc-line", children=["labels: ", doc_link("skimage.measure.label")]),
        # issue 10 item 1: the counts are true counts; why the numbers are not 1 … N
        html.P(className="hint post-hint", children=[
            ("Region counts are counts of objects. Removing, splitting or clearing objects "
             "keeps the other labels' numbers (as the label image and the measurements' "
             "label column do), so they can have gaps; tick "),
            html.Em("relabel sequential"), " to number them 1 … N."]),
        html.Div(className="doc-line", children=[
            "split touching objects: ", doc_link("scipy.ndimage.distance_transform_edt"), " ",
            doc_link("skimage.feature.peak_local_max"), " ",
            doc_link("skimage.segmentation.watershed")]),
        message({"type": ids.STEP_MESSAGE, "stage": "postprocess"}),
    ])


def draw_controls():
    """Draw markers by hand on the Segmentation graph: off / object / background, the stroke
    width, Clear (callbacks.scribbles; the strokes are the recipe's ``markers.scribbles``)."""
    return html.Div(className="overlay-row draw-row", children=[
        html.Span("draw markers: "),
        dcc.RadioItems(id=ids.DRAW_MODE, value="off", inline=True, options=[
            {"label": " off", "value": "off"}, {"label": " object", "value": "object"},
            {"label": " background", "value": "background"}]),
        html.Label(["width ", dcc.Input(id=ids.DRAW_WIDTH, type="number", min=1, max=50,
                                         step=1, value=5, debounce=True, size="3",
                                         className="number-input")],
                   title="stroke width in image pixels (1 … 50)"),
        html.Button("Clear scribbles", id=ids.DRAW_CLEAR, n_clicks=0,
                    title="remove every stroke drawn (undo brings them back)"),
        html.Span(id=ids.DRAW_INFO, className="summary"),
        html.Span(className="doc-line", children=[
            " ", doc_link("skimage.draw.line"), " ", doc_link("skimage.draw.polygon"), " ",
            doc_link("skimage.draw.disk")]),
        dcc.Store(id=ids.DRAW_STROKE),
        message(ids.DRAW_MESSAGE),
    ])


def intensity_info():
    """The random walker's intensity scale as information, not a control: its value and where
    it comes from (callbacks.params.INTENSITY_JS), what it is in the expanded text."""
    return html.Details(id=ids.INTENSITY_INFO, className="intensity-info", children=[
        html.Summary(["intensity scale ", html.Span(id=ids.INTENSITY_VALUE),
                      html.Span(" · read-only", className="intensity-note")]),
        html.P(className="hint", children=[
            "The random walker divides the image by this number before it runs, as ",
            doc_link("skimage.util.img_as_float"), " does for integer images (255 for 8-bit, "
            "65,535 for 16-bit; float images are used as they are), so that beta means what "
            "it means in skimage. It follows from the image's type, not a choice; the recipe "
            "and the exported script keep it, so that they reproduce this result exactly."]),
    ])


def binarization_panel(segmenters):
    """Segmentation and post-processing: markers and result drawn over the image."""
    return panel("3 · Segmentation", None, [
        dcc.Graph(id=ids.SEG_GRAPH, className="image-graph", config=graph_config()),
        html.Div(id=ids.SEG_HOVER, className="summary hover-line"),
        html.Div(className="overlay-row", children=[
            dcc.RadioItems(id=ids.RESULT_VIEW, inline=True, value="labels", options=[
                {"label": " after post-processing", "value": "labels"},
                {"label": " segmentation only", "value": "mask"}]),
        ]),
        html.Div(className="overlay-row", children=[
            dcc.RadioItems(id=ids.OVERLAY_STYLE, value="contour", inline=True, options=[
                {"label": " contour", "value": "contour"}, {"label": " fill", "value": "fill"},
                {"label": " label colours", "value": "labels"},
                {"label": " boxes", "value": "boxes"}]),
            dcc.Checklist(id=ids.SHOW_MARKERS, value=["markers"], inline=True,
                          options=[{"label": " markers", "value": "markers"}]),
        ]),
        draw_controls(),
        html.Span(className="legend", children=[
            html.Span(className="swatch swatch-bg"), " background marker (< vmin, or drawn) ",
            html.Span(className="swatch swatch-obj"), " object marker (> vmax, or drawn) ",
            html.Span(className="swatch swatch-seg"), " segmentation"]),
        html.Div(id=ids.SEG_SUMMARY, className="summary"),
        exact_job_row(),  # the exact result as a background job: progress, Cancel
        html.Div(id=ids.SEG_DOC),
        html.Div(className="doc-line", children=[
            "overlays: ", doc_link("skimage.segmentation.find_boundaries"), " ",
            doc_link("skimage.color.label2rgb")]),
        html.Div(id={"type": ids.PARAM_FORM, "stage": "segmentation"}, className="param-form"),
        intensity_info(),
        message(ids.SEG_MESSAGE),
        post_controls(),
    ], panel_id="binarization-panel",
        header_extra=_method_dropdown(ids.SEG_METHOD, segmenters, "random_walker"))


def compare_panel(segmenters):
    """A second segmentation method from the same markers, with the pixel agreement."""
    return panel("Compare with", None, [
        dcc.Graph(id=ids.COMPARE_GRAPH, className="image-graph", config=graph_config()),
        html.Div(id=ids.COMPARE_TEXT, className="summary"),
    ], panel_id="compare-panel",
        header_extra=_method_dropdown(ids.COMPARE_METHOD, segmenters, "watershed"))


def discovery_tabs():
    """Threshold discovery gallery, parameter sweep and the recipe."""
    return dcc.Tabs(className="tabs", children=[
        dcc.Tab(label="Threshold discovery", value="thresholds", children=html.Div(
            className="tab-body", children=[
                html.P(className="hint", children=[
                    "Every automatic threshold (as ", doc_link("skimage.filters.try_all_threshold"),
                    " shows them) on the filtered image, and local thresholds. Adopt a value as "
                    "vmin or vmax."]),
                _number("local window size", ids.LOCAL_WINDOW, 15, min=3, max=501, step=2),
                dcc.Loading(html.Div(id=ids.THRESHOLD_GALLERY, className="gallery")),
            ])),
        dcc.Tab(label="Parameter sweep", value="sweep", children=html.Div(
            className="tab-body", children=[
                html.P(className="hint", children=(
                    "Pick one or two parameters and a few values each: every combination is "
                    "computed in parallel (and cached) and shown in a grid, A along the rows "
                    "and B along the columns; the current recipe's cell is outlined. Click a "
                    "cell to adopt its values (Undo goes back).")),
                html.Div(className="param-form", children=[
                    html.Div(className="param param-wide", children=[
                        html.Label("parameter A"),
                        dcc.Dropdown(id=ids.SWEEP_PARAM_A, clearable=False)]),
                    html.Div(className="param", children=[
                        html.Label("values A"),
                        dcc.Input(id=ids.SWEEP_VALUES_A, type="text",
                                  placeholder="e.g. 70, 80, 90", className="text-input")]),
                    html.Div(className="param param-wide", children=[
                        html.Label("parameter B"), dcc.Dropdown(id=ids.SWEEP_PARAM_B)]),
                    html.Div(className="param", children=[
                        html.Label("values B"),
                        dcc.Input(id=ids.SWEEP_VALUES_B, type="text", placeholder="optional",
                                  className="text-input")]),
                    html.Button("Run sweep", id=ids.SWEEP_RUN, n_clicks=0),
                ]),
                dcc.Store(id=ids.SWEEP_STORE),
                message({"type": ids.STEP_MESSAGE, "stage": "sweep"}),
                dcc.Loading(html.Div(id=ids.SWEEP_GRID, className="sweep-result")),
            ])),
        dcc.Tab(label="Recipe", value="recipe", children=html.Div(
            className="tab-body", children=[
                html.P(className="hint", children=(
                    "The whole pipeline as a versioned JSON recipe: save it, load it, or export "
                    "a Python script that reproduces the labels and measurements from an image "
                    "path.")),
                html.Div(className="buttons", children=[
                    html.Button("Save recipe (JSON)", id=ids.SAVE_RECIPE_BUTTON, n_clicks=0),
                    dcc.Upload(id=ids.LOAD_RECIPE, className="upload upload-small",
                               children=html.Div(["Load recipe: drop or ", html.A("choose")])),
                    html.Button("Export Python script", id=ids.EXPORT_SCRIPT_BUTTON, n_clicks=0),
                    dcc.Download(id=ids.DOWNLOAD_RECIPE),
                    dcc.Download(id=ids.DOWNLOAD_SCRIPT),
                ]),
                message(ids.RECIPE_MESSAGE),
                html.Pre(id=ids.RECIPE_VIEW, className="recipe-view"),
            ])),
        dcc.Tab(label="Batch", value="batch", children=batch_tab_body()),
        volume_tab(),
    ], id=ids.DISCOVERY_TABS, value="thresholds")
