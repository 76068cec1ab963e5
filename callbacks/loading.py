"""Loading an image: a bundled sample, an upload, or a file of the lab's data folder."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from dash import Input, Output, State, ctx, html, no_update

from components import ids
from pipeline import io
from pipeline.errors import InputError
from pipeline.render import display_range
from pipeline.segment import (default_thresholds, intensity_scale, threshold_range,
                              threshold_step)

log = logging.getLogger(__name__)

#: Name of the sample that is the array handed to ``app.explore`` from a notebook.
ARRAY_SAMPLE = "array"


@dataclass(frozen=True)
class LoadOutcome:
    """What a load attempt gives the page: new image metadata, or a message and nothing else."""

    meta: dict | None
    message: str
    level: str  # "info" or "error"


def image_meta(array, loaded, image_id) -> dict:
    """Small JSON description of an image kept in the browser."""
    lo, hi = float(np.min(array)), float(np.max(array))
    vmin, vmax = default_thresholds(array)
    return {
        "id": image_id,
        "name": loaded.name,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "ndim": int(array.ndim),
        "notes": list(loaded.notes),
        "min": lo,
        "max": hi,
        "step": threshold_step(array),
        # the slider's bounds: its grid of `step` starts at a round number (threshold_range)
        "slider": list(threshold_range(array)),
        "scale": intensity_scale(array.dtype),
        "vmin": vmin,
        "vmax": vmax,
        "display": [float(v) for v in display_range(array)],
    }


def _read(services, source, sample, contents, filename, data_file):
    cfg = services.config
    limits = dict(max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels)
    if source == ids.UPLOAD:
        return io.decode_upload(contents, filename or "upload", **limits)
    if source == ids.DATA_FILE:
        return io.read_image_file(io.resolve_data_file(cfg.data_dir, data_file), **limits)
    if sample == ARRAY_SAMPLE and services.initial is not None:
        return services.initial
    if sample not in io.SAMPLE_NAMES:
        raise InputError(f"Unknown sample {sample!r}; choose one of {', '.join(io.SAMPLE_NAMES)}.")
    return io.load_sample(sample)


def load_image(services, session_id, source, sample, contents, filename, data_file) -> LoadOutcome:
    """Read, validate and store an image for this session.

    Parameters
    ----------
    services : Services
    session_id : str
    source : str or None
        Id of the control that asked for the load (sample dropdown on first load).
    sample, contents, filename, data_file
        Values of the loader controls.

    Returns
    -------
    LoadOutcome
        On any failure ``meta`` is None: the page keeps its current image and settings.
    """
    what = {ids.UPLOAD: filename, ids.DATA_FILE: data_file}.get(source, sample) or "image"
    what = io.display_name(what)  # as the decoder's messages name it (no control characters)
    try:
        loaded = _read(services, source, sample, contents, filename, data_file)
        array = loaded.array
        image_id = io.content_hash(array)
        meta = image_meta(array, loaded, image_id)
        if loaded.voxel_size is not None:  # shown and used by the 3D view (callbacks.volume)
            meta["voxel_size"] = dataclasses.asdict(loaded.voxel_size)
        # a colour file's channels, kept for the Channel menu (callbacks.channels)
        from .channels import store_channels
        kept = store_channels(services, session_id, loaded, meta)
        # within the quota of the session's owner (its user): room is made from that
        # owner's oldest images, never from another user's current one
        removed = kept + services.store.put_image(session_id, image_id, array, meta,
                                                  owner=services.owner(session_id))
        services.store.set_current(session_id, image_id)
    except InputError as exc:
        return LoadOutcome(None, f"Could not load {what}: {exc}", "error")
    except MemoryError:
        log.exception("out of memory loading %s", what)
        return LoadOutcome(None, f"Could not load {what}: not enough memory on the server.", "error")
    except Exception as exc:  # noqa: BLE001 - any failure must leave the page usable
        log.exception("unexpected error loading %s", what)
        return LoadOutcome(None, f"Could not load {what}: unexpected error ({type(exc).__name__}).",
                           "error")
    try:
        services.compute.trim()
        if services.admission is not None:
            services.admission.prune()  # job-slot files of owners idle for a day
    except OSError:  # a concurrent trim removed the same entries
        log.warning("cache trim failed", exc_info=True)
    notes = " ".join(loaded.notes)
    if removed:
        notes += (" To stay within your storage quota, your oldest images were removed from "
                  f"the server: {', '.join(removed)}.")
    return LoadOutcome(meta, f"Loaded {loaded.name}. {notes}".strip(), "info")


def format_value(value, dtype) -> str:
    """An intensity as a person reads it: integers of integer images whole with thousands
    separators (40,000, not 4e+04), others with 4 significant digits, in exponent form only
    when very large or very small."""
    value = float(value)
    if str(dtype).startswith(("int", "uint", "bool")) and value.is_integer():
        return f"{int(value):,}"
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.3e}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def describe(meta) -> list:
    """Text of the image info box."""
    if not meta:
        return []
    shape = " × ".join(str(s) for s in meta["shape"])
    kind = "3D stack" if meta["ndim"] == 3 else "2D image"
    parts = [html.Strong(meta["name"]), f" — {kind}, {shape}, {meta['dtype']}, "
             f"values {format_value(meta['min'], meta['dtype'])} … "
             f"{format_value(meta['max'], meta['dtype'])}"]
    for note in meta.get("notes", []):
        parts += [html.Br(), html.Em(note)]
    return parts


def message_children(text, level):
    """A message line; errors are styled and announced."""
    if not text:
        return None
    return html.Div(text, className=f"message-{level}")


TOO_LARGE_JS = """
function(contents, filename) {
    if (!contents) { return window.dash_clientside.no_update; }
    const comma = contents.indexOf(',');
    const bytes = Math.floor((contents.length - comma - 1) * 3 / 4);
    const limit = %(limit)d;
    if (bytes <= limit) { return window.dash_clientside.no_update; }
    const mb = function (b) { return (b / 1048576).toFixed(1); };
    return {namespace: 'dash_html_components', type: 'Div', props: {className: 'message-error',
        children: 'Could not load ' + (filename || 'the file') + ': file is ' + mb(bytes) +
                  ' MB, the limit is ' + mb(limit) + ' MB.'}};
}
"""


def register(app, services):
    """Wire the loader."""

    # Files over the limit are refused in the browser already (the server refuses them too:
    # before decoding, and at the HTTP level past a margin).
    app.clientside_callback(
        TOO_LARGE_JS % {"limit": services.config.max_bytes},
        Output(ids.LOAD_MESSAGE, "children", allow_duplicate=True),
        Input(ids.UPLOAD, "contents"),
        State(ids.UPLOAD, "filename"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.IMAGE, "data"),
        Output(ids.IMAGE_INFO, "children"),
        Output(ids.LOAD_MESSAGE, "children"),
        Output(ids.UPLOAD, "contents"),
        Output(ids.SAMPLE, "value"),
        Output(ids.DATA_FILE, "value"),
        Input(ids.SAMPLE, "value"),
        Input(ids.UPLOAD, "contents"),
        Input(ids.DATA_FILE, "value"),
        State(ids.UPLOAD, "filename"),
        State(ids.SESSION, "data"),
        running=[(Output(ids.APP_ROOT, "className"), "app loading", "app")],
    )
    def _load(sample, contents, data_file, filename, session_id):
        source = ctx.triggered_id or ids.SAMPLE
        return load_outputs(services, session_id, source, sample, contents, filename, data_file)


def load_outputs(services, session_id, source, sample, contents, filename, data_file):
    """Outputs of the loader for one load: image metadata, info, message, cleared upload, and
    the sample / data-file dropdowns showing what is loaded (the others emptied, so that
    choosing the same sample again loads it)."""
    skip = (no_update,) * 6
    if ((source == ids.UPLOAD and contents is None) or (source == ids.DATA_FILE and not data_file)
            or (source == ids.SAMPLE and not sample)):
        return skip
    outcome = load_image(services, session_id, source, sample, contents, filename, data_file)
    # Clear the upload so that choosing the same file again triggers a new load.
    cleared = None if source == ids.UPLOAD else no_update
    if outcome.meta is None:
        return (no_update, no_update, message_children(outcome.message, "error"), cleared,
                no_update, no_update)
    shown_sample = no_update if source == ids.SAMPLE else None
    shown_file = no_update if source == ids.DATA_FILE else (None if data_file else no_update)
    return (outcome.meta, describe(outcome.meta), message_children(outcome.message, "info"),
            cleared, shown_sample, shown_file)
