"""Every component id of the app, in one place (layout, callbacks and tests import them)."""

# Stores (small JSON only: ids and parameters)
SESSION = "session-store"  # random session id, made when the page is served
IMAGE = "image-store"  # metadata of the current image: id, name, shape, dtype, range, notes
HISTORY = "history-store"  # undo history of parameters: {"image_id", "states", "index"}
ZOOM_SYNC = "zoom-sync-store"  # dummy output of the client-side zoom synchronisation

# Loader
SAMPLE = "sample-dropdown"
UPLOAD = "upload"
DATA_FILE = "data-file-dropdown"
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
