"""The channel of a colour image that the pipeline segments (the recipe's ``image`` stage).

A colour file is loaded as its luminance (``skimage.color.rgb2gray``), as before; its decoded
red, green and blue channels are kept in the store next to it (:func:`store_channels`, called
by the loader). The Channel menu of the loader, shown only for a colour image, picks the
luminance, one channel or a weighted combination (:mod:`pipeline.channels`): the chosen image
becomes the session's image (its own content hash, metadata, range and default thresholds:
every cache is keyed on it), and its history starts from the current recipe with the recipe's
``image`` section saying which channel (``callbacks.params.initial_history``), so that the
saved recipe, the exported script and the CLI pick the same channel.
"""

from __future__ import annotations

import logging

from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import channels as _channels
from pipeline import io
from pipeline.errors import InputError

from .loading import LoadOutcome, describe, hashed_meta, message_children

log = logging.getLogger(__name__)

#: Choices of the Channel menu: value → the recipe's image section (weights come from the
#: inputs).
CHOICES = {
    "luminance": {"name": "luminance", "params": {}},
    "red": {"name": "channel", "params": {"index": 0}},
    "green": {"name": "channel", "params": {"index": 1}},
    "blue": {"name": "channel", "params": {"index": 2}},
    "weighted": {"name": "weighted", "params": {}},
}

_HIDDEN = {"display": "none"}


def store_channels(services, session_id, loaded, meta) -> list:
    """Keep the colour channels of a loaded file in the store, and say so in its `meta`.

    Parameters
    ----------
    services : Services
    session_id : str
    loaded : pipeline.io.LoadedImage
        The image just read; nothing is stored when it has no channels (a gray file).
    meta : dict
        Its metadata, completed here with ``"channels"`` (their names) and ``"channels_id"``.

    Returns
    -------
    list of str
        Names of the owner's images removed to make room (the channels count in its quota).
    """
    channels = loaded.channels
    if channels is None:
        return []
    channels_id = io.content_hash(channels)
    removed = services.store.put_image(
        session_id, channels_id, channels,
        {"name": f"{loaded.name} (colour channels)", "kind": "channels"},
        owner=services.owner(session_id))
    meta["channels"] = list(_channels.CHANNEL_NAMES)
    meta["channels_id"] = channels_id
    return removed


def section_of(choice, weights=None) -> dict:
    """The recipe's image section for a menu choice (and the weight inputs), checked.

    Raises
    ------
    InputError
        For an unknown choice or a bad weight (naming it).
    """
    if choice not in CHOICES:
        raise InputError(f"channel: unknown choice {choice!r}; choose one of "
                         f"{', '.join(CHOICES)}")
    section = CHOICES[choice]
    params = dict(section["params"])
    if section["name"] == "weighted":
        params = {name: (weights or {}).get(name) for name in _channels.CHANNEL_NAMES}
    step = _channels.CHANNELS[section["name"]]
    try:
        return {"name": section["name"], "params": step.check(params)}
    except InputError as exc:
        raise InputError(f"Channel weights: {exc}") from None


def choice_of(meta) -> str:
    """The menu value of the image a page shows."""
    section = (meta or {}).get("channel")
    if not section or section["name"] == "luminance":
        return "luminance"
    if section["name"] == "channel":
        return _channels.CHANNEL_NAMES[section["params"]["index"]]
    return "weighted"


def choose_channel(services, session_id, meta, choice, weights=None) -> LoadOutcome:
    """Make the chosen channel of the current colour image the session's image.

    Parameters
    ----------
    services : Services
    session_id : str
    meta : dict
        Metadata of the image the page shows (the luminance or an earlier choice).
    choice : str
        A key of :data:`CHOICES`.
    weights : dict, optional
        ``{"red": w, "green": w, "blue": w}`` for ``"weighted"``.

    Returns
    -------
    LoadOutcome
        The new image's metadata (the luminance: the loaded image's own), or a message and
        no metadata (the page keeps its image).
    """
    if not meta or not meta.get("channels"):
        return LoadOutcome(None, "This image has no colour channels to choose from.", "error")
    store = services.store
    source = meta.get("source", meta["id"])
    try:
        section = section_of(choice, weights)
        source_meta = store.get_meta(session_id, source)
        if not source_meta or not store.has_image(session_id, source):
            raise InputError("the colour image is no longer on the server: load it again")
        if section["name"] == "luminance":
            store.set_current(session_id, source)
            return LoadOutcome(source_meta, f"Segmenting the luminance of {source_meta['name']}.",
                               "info")
        gray = store.get_image(session_id, source)
        try:
            channels = store.get_image(session_id, source_meta["channels_id"])
        except InputError:
            raise InputError("the colour channels are no longer on the server: load the image "
                             "again") from None
        image = _channels.select(gray, channels, section["name"], section["params"])
        what = _channels.describe(section)
        loaded = io.LoadedImage(image, f"{source_meta['name']} · {what}", (
            f"The {what} of the colour image ({image.dtype}), instead of its luminance: "
            "the recipe's image stage.",))
        new = hashed_meta(image, loaded)
        image_id = new["id"]
        new.update(channels=source_meta["channels"], channels_id=source_meta["channels_id"],
                   source=source, channel=section)
        removed = store.put_image(session_id, image_id, image, new,
                                  owner=services.owner(session_id))
        store.set_current(session_id, image_id)
    except InputError as exc:
        return LoadOutcome(None, f"Could not use that channel: {exc}", "error")
    except MemoryError:
        log.exception("out of memory choosing a channel")
        return LoadOutcome(None, "Could not use that channel: not enough memory on the server.",
                           "error")
    text = f"Segmenting the {what} of {source_meta['name']}."
    if removed:
        text += (" To stay within your storage quota, your oldest images were removed from "
                 f"the server: {', '.join(removed)}.")
    return LoadOutcome(new, text, "info")


def controls_of(meta):
    """What the channel controls show for an image: (style, menu value, weights style,
    weights)."""
    if not meta or not meta.get("channels"):
        return _HIDDEN, no_update, _HIDDEN, [no_update] * 3
    choice = choice_of(meta)
    section = meta.get("channel") or {}
    if choice == "weighted":
        weights = [section["params"][name] for name in _channels.CHANNEL_NAMES]
        return {}, choice, {}, weights
    return {}, choice, _HIDDEN, [no_update] * 3


def register(app, services):
    """Wire the Channel menu and its weights."""
    weight_ids = [ids.CHANNEL_WEIGHTS[name] for name in _channels.CHANNEL_NAMES]

    @app.callback(
        Output(ids.CHANNEL_CONTROLS, "style"),
        Output(ids.CHANNEL, "value"),
        Output(ids.CHANNEL_WEIGHTS_ROW, "style"),
        *[Output(i, "value") for i in weight_ids],
        Input(ids.IMAGE, "data"),
    )
    def _show(meta):
        style, value, weights_style, weights = controls_of(meta)
        return (style, value, weights_style, *weights)

    @app.callback(
        Output(ids.IMAGE, "data", allow_duplicate=True),
        Output(ids.IMAGE_INFO, "children", allow_duplicate=True),
        Output(ids.LOAD_MESSAGE, "children", allow_duplicate=True),
        Output(ids.CHANNEL_WEIGHTS_ROW, "style", allow_duplicate=True),
        Input(ids.CHANNEL, "value"),
        *[Input(i, "value") for i in weight_ids],
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        running=[(Output(ids.APP_ROOT, "className"), "app loading", "app")],
        prevent_initial_call=True,
    )
    def _choose(choice, red, green, blue, meta, session_id):
        return choose_outputs(services, session_id, meta, choice,
                              {"red": red, "green": green, "blue": blue},
                              weights_changed=ctx.triggered_id in weight_ids)


def choose_outputs(services, session_id, meta, choice, weights, *, weights_changed=False):
    """Outputs of the channel callback: image metadata, info, message, weights row style."""
    if not choice or not meta or not meta.get("channels"):
        raise PreventUpdate
    if weights_changed and choice != "weighted":
        raise PreventUpdate  # weights of a combination not in use
    if choice == choice_of(meta) and (choice != "weighted" or not weights_changed):
        raise PreventUpdate  # the page shows it already (the menu was set from the image)
    if choice == "weighted" and weights_changed and all(
            w is not None for w in weights.values()):
        try:
            if section_of(choice, weights) == meta.get("channel"):
                raise PreventUpdate
        except InputError:
            pass  # choose_channel says why
    outcome = choose_channel(services, session_id, meta, choice, weights)
    row = {} if choice == "weighted" else _HIDDEN
    if outcome.meta is None:
        return no_update, no_update, message_children(outcome.message, "error"), row
    return outcome.meta, describe(outcome.meta), message_children(outcome.message, "info"), row
