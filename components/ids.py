"""Every component id of the app, in one place (layout, callbacks and tests import them)."""

APP_ROOT = "app-root"  # the page; class "app loading" while an image loads

# Stores (small JSON only: ids and parameters)
SESSION = "session-store"  # random session id, made when the page is served
IMAGE = "image-store"  # metadata of the current image: id, name, shape, dtype, range, notes
HISTORY = "history-store"  # pointer to the server-side undo history (callbacks.params)
ZOOM_SYNC = "zoom-sync-store"  # dummy output of the client-side zoom synchronisation
CLIENT_SINK = "client-sink-store"  # dummy output of client-side callbacks that act by side effect

# Loader
SAMPLE = "sample-dropdown"
UPLOAD = "upload"
DATA_FILE = "data-file-dropdown"
# the image series of a data-folder TIFF (OME-TIFF images, multi-series files): the menu,
# and the loader item holding it (shown only for a file of more than one series)
DATA_SERIES = "data-series-dropdown"
DATA_SERIES_ITEM = "data-series-item"
IMAGE_INFO = "image-info"
LOAD_MESSAGE = "load-message"

# Image panel
IMAGE_GRAPH = "image-graph"
SLICE_CONTROLS = "slice-controls"
SLICE_AXIS = "slice-axis"
SLICE_INDEX = "slice-index"

# Histogram panel
HIST_GRAPH = "histogram-graph"
HIST_LOG = "histogram-log"
THRESHOLDS = "thresholds-slider"
THRESHOLDS_TEXT = "thresholds-text"
PARAM_MESSAGE = "param-message"

# Binarization panel
SEG_GRAPH = "segmentation-graph"
OVERLAY_STYLE = "overlay-style"
SHOW_MARKERS = "show-markers"
SEG_SUMMARY = "segmentation-summary"
SEG_HOVER = "segmentation-hover"  # the pixel under the pointer: position, intensity, label
SEG_PENDING = "segmentation-pending-store"  # a live preview is shown: {"key", "token"} to settle
SEG_SETTLED = "segmentation-settled-store"  # the exact segmentation is shown: {"key", "token"}
# SEG_SETTLED passed on to a panel below it once that panel is in view (callbacks/visibility.py)
COMPARE_SETTLED = "compare-settled-store"
MEASURE_SETTLED = "measure-settled-store"
SEG_BASE = "segmentation-base-store"  # which image / slice the segmentation figure shows
COMPARE_BASE = "compare-base-store"  # which image / slice the comparison figure shows
# a new image's base, drawn in the segmentation graph before its first overlay:
# {"key", "figure", "summary"} (callbacks.display.image_update, FIRST_VIEW_JS)
SEG_FIRST_VIEW = "segmentation-first-view-store"

# A threshold move (callbacks.thresholds): the browser's gate and router write these
MOVE_REQUEST = "move-request-store"  # {"pair", "seq"}: a committed vmin / vmax (push + draw)
DRAG_REQUEST = "drag-request-store"  # {"pair", "seq"}: a handle being dragged (preview only)
DRAG_ACK = "drag-ack-store"  # the server answered a drag request: send the next one
FILTER_SIGNAL = "filter-signal-store"  # the filter stage changed: filtered image, histogram
SEG_SIGNAL = "segmentation-signal-store"  # the segmentation must be redrawn by its callback
MEASURE_SIGNAL = "measure-signal-store"  # only the measurement options changed
# the recipe changed, other than by a vmin / vmax move the page drew itself: the panels
# that show a part of the recipe a move never changes (callbacks.thresholds.ROUTE_JS)
RECIPE_SIGNAL = "recipe-signal-store"
PANEL_IDS = ("image-panel", "filter-panel", "histogram-panel", "binarization-panel",
             "compare-panel", "measure-panel")
SEG_MESSAGE = "segmentation-message"

# Random-walker parameters
BETA = "beta-input"
MODE = "mode-dropdown"
TOL = "tol-dropdown"

# History and downloads
UNDO = "undo-button"
REDO = "redo-button"
HISTORY_TEXT = "history-text"
DOWNLOAD_LABELS_BUTTON = "download-labels-button"
DOWNLOAD_OVERLAY_BUTTON = "download-overlay-button"
DOWNLOAD_LABELS = "download-labels"
DOWNLOAD_OVERLAY = "download-overlay"

# Pipeline steps (issue: the whole pipeline)
FILTER_METHOD = "filter-method"
FILTER_DOC = "filter-doc"
FILTERED_GRAPH = "filtered-graph"
FILTER_RUN = "filter-run"  # how the filter stage ran: blocks, workers, seconds, or from cache
SEG_METHOD = "segmentation-method"
SEG_DOC = "segmentation-doc"
POST_OPS = "postprocess-ops"
POST_CLOSING = "postprocess-closing-radius"
POST_OPENING = "postprocess-opening-radius"
POST_MIN_SIZE = "postprocess-min-size"
POST_CONNECTIVITY = "postprocess-connectivity"
STEP_MESSAGE = "step-message"  # pattern: {"type": STEP_MESSAGE, "stage": ...}
PARAM = "param"  # pattern: {"type": PARAM, "stage": "filter"|"segmentation", "name": ...}
PARAM_FORM = "param-form"  # pattern: {"type": PARAM_FORM, "stage": ...}
INTENSITY_INFO = "intensity-scale-info"  # the random walker's intensity scale, read-only
INTENSITY_VALUE = "intensity-scale-value"  # its value and where it comes from

# Threshold discovery
THRESHOLD_GALLERY = "threshold-gallery"
ADOPT = "adopt"  # pattern: {"type": ADOPT, "method": ..., "as": "vmin"|"vmax"}
LOCAL_WINDOW = "local-window"

# Comparison
COMPARE_METHOD = "compare-method"
COMPARE_GRAPH = "compare-graph"
COMPARE_TEXT = "compare-text"

# Result overlays
RESULT_VIEW = "result-view"  # which array: segmentation mask or final labels

# Measurements
MEASURE_TABLE = "measure-table"
MEASURE_CAPTION = "measure-caption"  # what the table measures; its title is the image id
MEASURE_PROPERTIES = "measure-properties"
PIXEL_SIZE = "pixel-size"
PIXEL_UNIT = "pixel-unit"
MEASURE_PLOT = "measure-plot"
MEASURE_COLUMN = "measure-column"
DOWNLOAD_CSV_BUTTON = "download-csv-button"
DOWNLOAD_CSV = "download-csv"
SELECTED_LABELS = "selected-labels-store"
MEASURE_BINS = "measure-bins-store"  # the distributions, binned on the server
MEASURE_WARNING = "measure-warning"  # implausibly many regions (noise?)
MEASURE_RELOAD = "measure-reload-store"  # when the grid last dropped its rows (a new table)

# Recipe
SAVE_RECIPE_BUTTON = "save-recipe-button"
DOWNLOAD_RECIPE = "download-recipe"
LOAD_RECIPE = "load-recipe-upload"
EXPORT_SCRIPT_BUTTON = "export-script-button"
DOWNLOAD_SCRIPT = "download-script"
RECIPE_MESSAGE = "recipe-message"
RECIPE_VIEW = "recipe-view"

# Parameter sweep
SWEEP_PARAM_A = "sweep-param-a"
SWEEP_VALUES_A = "sweep-values-a"
SWEEP_PARAM_B = "sweep-param-b"
SWEEP_VALUES_B = "sweep-values-b"
SWEEP_RUN = "sweep-run"
SWEEP_GRID = "sweep-grid"
SWEEP_ADOPT = "sweep-adopt"  # pattern: {"type": SWEEP_ADOPT, "index": i}
SWEEP_STORE = "sweep-store"

# Batch
BATCH_SOURCE = "batch-source"  # dropdown: "data:" (all files), "data:<folder>", "uploads"
BATCH_REFRESH = "batch-refresh"  # list the data folder again
BATCH_UPLOAD = "batch-upload"  # dcc.Upload(multiple=True)
BATCH_UPLOADS = "batch-uploads-store"  # names of this session's staged uploads
BATCH_CLEAR_UPLOADS = "batch-clear-uploads"
BATCH_RUN = "batch-run"
BATCH_CANCEL = "batch-cancel"
BATCH_PROGRESS = "batch-progress"  # html.Progress: value = files done, max = files
BATCH_PROGRESS_TEXT = "batch-progress-text"  # files done / total, current files, time left
BATCH_MESSAGE = "batch-message"
BATCH_SUMMARY = "batch-summary"
BATCH_TABLE = "batch-table"  # per-file results: file, regions, status / reason
BATCH_DOWNLOAD = "batch-download"  # the link to the results zip
BATCH_BROWSER = "batch-browser"  # dcc.Store(storage_type="local"): this browser's id (32 hex)
BATCH_JOB = "batch-job"  # the job this page shows (started here, or re-attached after a reload)
BATCH_POLL = "batch-poll"  # dcc.Interval: reads a re-attached job's status
BATCH_JOBS = "batch-jobs"  # the owner's running and recent batches

# 3D view
DISCOVERY_TABS = "discovery-tabs"  # the tabs under the panels; value: the open tab
VOLUME_TAB = "volume"  # value of the 3D view tab
VOLUME_SIGNAL = "volume-signal-store"  # the 3D tab is open and the labels changed: redraw
VOLUME_CURSOR = "volume-cursor-store"  # {"image": id, "point": [z, y, x]}: where planes cross
VOLUME_GRAPHS = {"zy": "volume-zy-graph", "zx": "volume-zx-graph", "yx": "volume-yx-graph"}
VOLUME_STYLE = "volume-overlay-style"  # the regions' outlines, or outlines and fill
VOLUME_INFO = "volume-info"  # cursor, voxel size, downsampling
VOLUME_MESSAGE = "volume-message"
VOXEL_SIZE = {"z": "voxel-size-z", "y": "voxel-size-y", "x": "voxel-size-x"}  # number inputs
VOXEL_APPLY = "voxel-size-apply"  # put the voxel size in the recipe (measurements)
VOXEL_SOURCE = "voxel-size-source"  # where the voxel size shown comes from, and its unit
SURFACE_BUTTON = "surface-button"
SURFACE_REGIONS = "surface-max-regions"
SURFACE_GRAPH = "surface-graph"
SURFACE_COST = "surface-cost"  # triangles, step, time; title: which labels it shows

# Split touching objects (post-processing: distance-transform watershed)
POST_SPLIT_DISTANCE = "postprocess-split-min-distance"  # peak_local_max min_distance, pixels
POST_SPLIT_SIGMA = "postprocess-split-sigma"  # smoothing of the distance map (0: none)

# Channel of a colour image (the recipe's "image" stage)
CHANNEL_CONTROLS = "channel-controls"  # shown only for a colour image
CHANNEL = "channel-dropdown"  # luminance, red, green, blue or weighted
CHANNEL_WEIGHTS = {"red": "channel-weight-red", "green": "channel-weight-green",
                   "blue": "channel-weight-blue"}  # number inputs of the weighted combination
CHANNEL_WEIGHTS_ROW = "channel-weights"  # the weight inputs, shown for "weighted"

# Hand-drawn markers (callbacks.scribbles; the recipe's markers.scribbles)
DRAW_MODE = "draw-markers-mode"  # off / object / background: the Segmentation graph draws
DRAW_WIDTH = "draw-markers-width"  # stroke width in image pixels
DRAW_CLEAR = "draw-markers-clear"  # remove every stroke (one undoable step)
DRAW_STROKE = "draw-markers-stroke-store"  # a finished stroke, from the browser: {path, seq}
DRAW_INFO = "draw-markers-info"  # how many strokes the recipe holds
DRAW_MESSAGE = "draw-markers-message"  # why a stroke was refused

# The exact segmentation as a background job (callbacks.exact_job, components.progress)
EXACT_JOB = "exact-job-store"  # {"key", "token", "rev"}: run the exact result of this state
EXACT_DONE = "exact-job-done-store"  # the job computed it: {"key", "token", "seconds"}, draw it
EXACT_BOX = "exact-job"  # the progress bar, its text and Cancel: shown while a job runs
EXACT_PROGRESS = "exact-job-progress"  # html.Progress: value / max in thousandths
EXACT_PROGRESS_TEXT = "exact-job-progress-text"  # stage, percent, time left
EXACT_CANCEL = "exact-job-cancel"  # stop the running job (its process is killed)
EXACT_RUN = "exact-job-run"  # "Compute": run the exact result of the current state again
EXACT_MESSAGE = "exact-job-message"  # cancelled, stopped at the time limit, refused

# Try on a crop first (callbacks/crop.py)
CROP_BUTTON = "crop-button"  # "Tune on this view": crop to the segmentation view's zoom
CROP_REQUEST = "crop-request-store"  # the view's ranges when it was clicked
APPLY_WHOLE_BUTTON = "apply-whole-button"  # back to the whole image, with the recipe
SIGN_OUT_TOKEN = "sign-out-token"  # the sign-out form's CSRF token (callbacks/auth.py)
