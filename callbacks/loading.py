"""Loading an image: a bundled sample, an upload, or a file of the lab's data folder."""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

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
    #: the image loaded, still in memory (for the rest of the load's request: its first
    #: view and first overlay read it instead of mapping the file just stored); never sent
    array: np.ndarray | None = field(default=None, repr=False, compare=False)


def image_meta(array, loaded, image_id) -> dict:
    """Small JSON description of an image kept in the browser."""
    lo, hi = float(np.min(array)), float(np.max(array))
    vmin, vmax = default_thresholds(array, (lo, hi))
    return {
        "id": image_id,
        "name": loaded.name,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "ndim": int(array.ndim),
        "notes": list(loaded.notes),
        "min": lo,
        "max": hi,
        "step": threshold_step(array, (lo, hi)),
        # the slider's bounds: its grid of `step` starts at a round number (threshold_range)
        "slider": list(threshold_range(array, (lo, hi))),
        "scale": intensity_scale(array.dtype),
        "vmin": vmin,
        "vmax": vmax,
        "display": [float(v) for v in display_range(array)],
    }


def hashed_meta(array, loaded) -> dict:
    """:func:`image_meta` with the image's content hash (:func:`pipeline.io.content_hash`)
    as its id, the two made at once on two threads (BLAKE3 and numpy's reductions release
    the GIL: on 512×512×128 uint16 the hash takes ~11 ms, the description ~30 ms)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashed = pool.submit(io.content_hash, array)
        try:
            meta = image_meta(array, loaded, None)
        finally:
            image_id = hashed.result()
    meta["id"] = image_id
    return meta


def _read(services, source, sample, contents, filename, data_file, series=0):
    cfg = services.config
    limits = dict(max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels)
    if source == ids.UPLOAD:
        return io.decode_upload(contents, filename or "upload", **limits)
    if source == ids.DATA_FILE:
        # a TIFF is memory-mapped (uncompressed) or decoded page by page, never read whole
        return io.read_image_file(io.resolve_data_file(cfg.data_dir, data_file),
                                  series=series, **limits)
    if sample == ARRAY_SAMPLE and services.initial is not None:
        return services.initial
    if sample not in io.SAMPLE_NAMES:
        raise InputError(f"Unknown sample {sample!r}; choose one of {', '.join(io.SAMPLE_NAMES)}.")
    return io.load_sample(sample)


def load_image(services, session_id, source, sample, contents, filename, data_file,
               series=0, on_described=None) -> LoadOutcome:
    """Read, validate and store an image for this session.

    Parameters
    ----------
    services : Services
    session_id : str
    source : str or None
        Id of the control that asked for the load (sample dropdown on first load).
    sample, contents, filename, data_file
        Values of the loader controls.
    series : int, optional
        The image series of a data-folder TIFF to load (the Series menu); 0 by default.
    on_described : callable, optional
        Called with ``(meta, array)`` once the image is read and described, before it is
        stored (the loader starts the new image's first view and first overlay then, made
        beside the store's write).

    Returns
    -------
    LoadOutcome
        On any failure ``meta`` is None: the page keeps its current image and settings.
    """
    what = {ids.UPLOAD: filename, ids.DATA_FILE: data_file}.get(source, sample) or "image"
    what = io.display_name(what)  # as the decoder's messages name it (no control characters)
    if source == ids.DATA_FILE and isinstance(series, int) and series > 0:
        what = f"series {series} of {what}"
    try:
        loaded = _read(services, source, sample, contents, filename, data_file, series)
        array = loaded.array
        meta = hashed_meta(array, loaded)
        image_id = meta["id"]
        if loaded.voxel_size is not None:  # shown and used by the 3D view (callbacks.volume)
            meta["voxel_size"] = dataclasses.asdict(loaded.voxel_size)
        if source == ids.DATA_FILE:  # which file and series (the Series menu goes back to it)
            meta["data_file"] = data_file
            meta["series"] = int(series)
        # a colour file's channels, kept for the Channel menu (callbacks.channels)
        from .channels import store_channels
        kept = store_channels(services, session_id, loaded, meta)
        if on_described is not None:
            on_described(meta, array)
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
    return LoadOutcome(meta, f"Loaded {loaded.name}. {notes}".strip(), "info", array=array)


def format_value(value, dtype) -> str:
    """An intensity as a person reads it: integers of integer images whole with thousands
    separators (40,000, not 4e+04), others with 4 significant digits, in exponent form only
    when very large or very small."""
    value = float(value)
    if str(dtype).startswith(("int", "uint", "bool")) and value.is_integer():
        return f"{int(value):,}"
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.3e}"
    # from 1,000 whole with separators, as the page's own numbers are (assets/format.js)
    return f"{value:,.0f}" if abs(value) >= 1e3 else f"{value:.4g}"


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
        Output(ids.DATA_SERIES, "options"),
        Output(ids.DATA_SERIES, "value"),
        Output(ids.DATA_SERIES_ITEM, "style"),
        Output(ids.SEG_FIRST_VIEW, "data"),
        Input(ids.SAMPLE, "value"),
        Input(ids.UPLOAD, "contents"),
        Input(ids.DATA_FILE, "value"),
        Input(ids.DATA_SERIES, "value"),
        State(ids.UPLOAD, "filename"),
        State(ids.SESSION, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SLICE_AXIS, "value"),
        # what the first overlay, answered with the first view, needs (display.first_preview)
        State(ids.HISTORY, "data"),
        State(ids.OVERLAY_STYLE, "value"),
        State(ids.SHOW_MARKERS, "value"),
        running=[(Output(ids.APP_ROOT, "className"), "app loading", "app")],
    )
    def _load(sample, contents, data_file, series, filename, session_id, current, axis,
              history, style, show):
        source = ctx.triggered_id or ids.SAMPLE
        held = {}
        with ThreadPoolExecutor(max_workers=1) as pool:
            def described(meta, array):  # the first view and overlay, while it is stored
                from .display import load_first_view  # (display imports this module)

                held["first"] = pool.submit(load_first_view, services, session_id, meta,
                                            axis, history, style, show, image=array)

            out = loader_outputs(services, session_id, source, sample, contents, filename,
                                 data_file, series, current, held=held,
                                 on_described=described)
            return out + (with_first_view(services, session_id, out[0], axis, history, style,
                                          show, image=held.get("array"),
                                          made=held.get("first")),)


def with_first_view(services, session_id, meta, axis, history=None, style=None, show=None,
                    image=None, made=None):
    """The segmentation graph's first view of a newly loaded image, answered by the load
    itself (``display.load_first_view``: at most 512² pixels, a labelled preview on blocks
    above that; a large image or a volume with its first overlay, a preview made from the
    image itself for the recipe its history will start from, given the page's `history`
    pointer, overlay `style` and `show` options), so that the page draws it as soon as the
    load's answer arrives — with no request behind the load, before the callbacks the new
    metadata fires. The metadata then says so (``"first_view"``: the first-view callback it
    fires sends nothing). ``no_update`` when nothing was loaded. `image`: the loaded image
    still in memory (:attr:`LoadOutcome.array`), read instead of the stored file; `made`:
    the future of that first view, started as soon as the image was described (the loader
    makes it while the image is stored)."""
    if not isinstance(meta, dict) or not meta.get("id"):
        return no_update
    from .display import load_first_view  # (display imports this module)

    if made is not None:
        first = made.result()
    else:
        first = load_first_view(services, session_id, meta, axis, history, style, show,
                                image=image)
    if first is None:
        return no_update
    meta["first_view"] = first["key"]
    return first


def _series_item_style(shown: bool) -> dict:
    """The style of the Series menu's loader item (a new dict each time: no shared state)."""
    return {} if shown else {"display": "none"}


def series_options(infos) -> list:
    """The Series menu's options: one per image series of a file (index, name, shape, dtype:
    ``pipeline.io.TiffSeriesInfo.label``)."""
    return [{"label": info.label(), "value": info.index} for info in infos]


def data_file_series(services, data_file) -> tuple:
    """The image series of a data-folder file (``pipeline.io.tiff_series``); empty for a PNG
    or JPEG and for a file that cannot be listed (its load then says why)."""
    cfg = services.config
    try:
        return io.tiff_series(io.resolve_data_file(cfg.data_dir, data_file),
                              max_bytes=cfg.max_bytes)
    except InputError:
        return ()
    except Exception:  # the menu is optional; the load reports the failure
        log.exception("listing the series of %s failed", io.display_name(data_file))
        return ()


def loader_outputs(services, session_id, source, sample, contents, filename, data_file,
                   series, current, held=None, on_described=None):
    """The loader's outputs for one load: :func:`load_outputs`, then the Series menu's
    options, value and loader item style.

    A data-folder file with more than one image series shows the menu, listing them, its first
    series loaded; choosing another in the menu loads that one (a failure says why, the image
    shown stays and the menu goes back to its series). A sample, an upload or a file of one
    series hides it.

    Parameters
    ----------
    source : str or None
        Id of the control that asked for the load (``ids.DATA_SERIES``: the Series menu).
    series : int or None
        The Series menu's value.
    current : dict or None
        Metadata of the image shown now (``ids.IMAGE``).
    held : dict, optional
        Given, a loaded image is kept in it under ``"array"`` (:func:`load_outputs`).
    on_described : callable, optional
        As for :func:`load_image`.
    """
    keep = (no_update,) * 3
    if source == ids.DATA_SERIES:
        if not data_file or series is None:
            return (no_update,) * 9
        out = load_outputs(services, session_id, ids.DATA_FILE, sample, contents, filename,
                           data_file, series=series, held=held, on_described=on_described)
        if out[0] is not no_update:  # loaded: the menu shows it already
            return out[:5] + (no_update,) + keep
        shown = current or {}
        back = shown.get("series") if shown.get("data_file") == data_file else None
        return out + (no_update, back, no_update)
    out = load_outputs(services, session_id, source, sample, contents, filename, data_file,
                       held=held, on_described=on_described)
    if all(value is no_update for value in out):  # nothing to load
        return out + keep
    if source == ids.DATA_FILE:
        infos = data_file_series(services, data_file)
        if len(infos) > 1:  # the menu, even when series 0 failed: another may load
            value = 0 if out[0] is not no_update else None
            return out + (series_options(infos), value, _series_item_style(True))
        return out + ([], None, _series_item_style(False))
    if out[0] is no_update:  # a sample or an upload that failed: the menu stays as it is
        return out + keep
    return out + ([], None, _series_item_style(False))


def load_outputs(services, session_id, source, sample, contents, filename, data_file,
                 series=0, held=None, on_described=None):
    """Outputs of the loader for one load: image metadata, info, message, cleared upload, and
    the sample / data-file dropdowns showing what is loaded (the others emptied, so that
    choosing the same sample again loads it). `series`: the image series of a data-folder
    file (:func:`loader_outputs` adds the Series menu). `held`: a dict that gets the loaded
    image, still in memory, under ``"array"`` (the rest of the load's request reads it);
    `on_described`: as for :func:`load_image`."""
    skip = (no_update,) * 6
    if ((source == ids.UPLOAD and contents is None) or (source == ids.DATA_FILE and not data_file)
            or (source == ids.SAMPLE and not sample)):
        return skip
    outcome = load_image(services, session_id, source, sample, contents, filename, data_file,
                         series=series, on_described=on_described)
    # Clear the upload so that choosing the same file again triggers a new load.
    cleared = None if source == ids.UPLOAD else no_update
    if outcome.meta is None:
        return (no_update, no_update, message_children(outcome.message, "error"), cleared,
                no_update, no_update)
    if held is not None:
        held["array"] = outcome.array
    shown_sample = no_update if source == ids.SAMPLE else None
    shown_file = no_update if source == ids.DATA_FILE else (None if data_file else no_update)
    return (outcome.meta, describe(outcome.meta), message_children(outcome.message, "info"),
            cleared, shown_sample, shown_file)
