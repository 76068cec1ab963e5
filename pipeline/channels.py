"""The image stage: which image of a colour file the pipeline runs on.

A colour image (RGB, RGBA, a palette) is converted to gray on loading
(:func:`skimage.color.rgb2gray`, see :mod:`pipeline.io`): that *luminance* is what the
pipeline segments by default. The recipe's optional ``image`` section may instead pick one
channel, or a weighted combination of the three, from the decoded channels that
:func:`pipeline.io.color_channels` keeps (``LoadedImage.channels``):

* ``luminance`` — the loaded gray image, as without an ``image`` section;
* ``channel`` (``index`` 0 = red, 1 = green, 2 = blue) — that channel, in its own dtype
  (a uint8 file's green channel: uint8, 0…255);
* ``weighted`` (``red``, ``green``, ``blue``) — ``red * R + green * G + blue * B`` in float64,
  in the channels' units.

Each is a :class:`pipeline.steps.Step` whose ``apply(gray, channels, **params)`` and
``code(src, dst, **params)`` compute the same array, so that the exported script gives the
app's labels bit for bit. The result is checked as a loaded image is (finite, not constant).
"""

from __future__ import annotations

import types

import numpy as np

from .errors import InputError
from .steps import Param, Step

__all__ = ["CHANNELS", "CHANNEL_NAMES", "DEFAULT", "is_default", "select", "describe"]

#: Names of the three channels, by index.
CHANNEL_NAMES = ("red", "green", "blue")

#: The image section of a recipe without one: the luminance.
DEFAULT = types.MappingProxyType({"name": "luminance", "params": {}})


def _check_channels(channels, where):
    if channels is None:
        raise InputError(f"{where}: this image has no colour channels (it is grayscale): "
                         "use the luminance")
    if not isinstance(channels, np.ndarray) or channels.ndim not in (3, 4) \
            or channels.shape[-1] != 3:
        shape = getattr(channels, "shape", None)
        raise InputError(f"{where}: channels must be an array (H, W, 3) or (Z, Y, X, 3), "
                         f"got {shape if shape is not None else type(channels).__name__}")
    if channels.dtype.kind not in "buif":
        raise InputError(f"{where}: channels must hold real numbers, got {channels.dtype}")
    return channels


def _check_result(image, what):
    """Refuse an image the pipeline cannot segment (as the loader refuses a file)."""
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError(f"{what} has NaN or infinite values: choose other weights")
    lo, hi = image.min(), image.max()
    if lo == hi:
        value = f"{int(lo)}" if image.dtype.kind in "biu" else f"{float(lo):g}"
        raise InputError(f"{what} has the value {value} everywhere: nothing to segment; "
                         "choose another channel")
    return image


def _luminance(gray, channels):
    return gray


def _luminance_code(src, dst):
    return [f"{dst} = {src}  # the luminance: the loaded gray image (skimage.color.rgb2gray)"]


def _channel(gray, channels, *, index):
    channels = _check_channels(channels, "image: channel")
    image = np.ascontiguousarray(channels[..., index])
    if gray is not None and image.shape != np.shape(gray):
        raise InputError(f"image: channel: channels of shape {channels.shape[:-1]} do not "
                         f"match the image's {np.shape(gray)}")
    return _check_result(image, f"the {CHANNEL_NAMES[index]} channel")


def _channel_code(src, dst, *, index):
    return [f"{dst} = np.ascontiguousarray(channels[..., {int(index)}])  "
            f"# the {CHANNEL_NAMES[int(index)]} channel"]


def _weighted(gray, channels, *, red, green, blue):
    channels = _check_channels(channels, "image: weighted")
    if gray is not None and channels.shape[:-1] != np.shape(gray):
        raise InputError(f"image: weighted: channels of shape {channels.shape[:-1]} do not "
                         f"match the image's {np.shape(gray)}")
    # the very expression the script writes (same order of operations: same bits)
    image = (float(red) * channels[..., 0].astype(np.float64)
             + float(green) * channels[..., 1].astype(np.float64)
             + float(blue) * channels[..., 2].astype(np.float64))
    return _check_result(image, "the weighted combination of the channels")


def _weighted_code(src, dst, *, red, green, blue):
    terms = [f"{float(w)!r} * channels[..., {i}].astype(np.float64)"
             for i, w in enumerate((red, green, blue))]
    pad = " " * len(f"{dst} = (")
    return [f"{dst} = ({terms[0]}", f"{pad}+ {terms[1]}", f"{pad}+ {terms[2]})"]


def _weight(name, default):
    return Param(name, "float", default, min=-1000, max=1000,
                 doc=f"Weight of the {name} channel (in the channels' units)")


CHANNELS = types.MappingProxyType({
    step.key: step
    for step in (
        Step(key="luminance", stage="image", label="Luminance (gray)",
             function="skimage.color.rgb2gray", apply=_luminance, code=_luminance_code),
        Step(key="channel", stage="image", label="One channel",
             function="numpy.ascontiguousarray",
             params=(Param("index", "int", 1, min=0, max=2,
                           doc="0 = red, 1 = green, 2 = blue"),),
             apply=_channel, code=_channel_code, imports=("import numpy as np",)),
        Step(key="weighted", stage="image", label="Weighted channels",
             function="numpy.add",
             params=(_weight("red", 0.2125), _weight("green", 0.7154), _weight("blue", 0.0721)),
             apply=_weighted, code=_weighted_code, imports=("import numpy as np",)),
    )
})


def is_default(section) -> bool:
    """Whether an (checked) image section is the luminance, i.e. what no section means."""
    return section is None or section.get("name") == "luminance"


def select(gray, channels, name="luminance", params=None) -> np.ndarray:
    """The image the pipeline runs on.

    Parameters
    ----------
    gray : ndarray, 2D or 3D
        The loaded image (for a colour file, its luminance).
    channels : ndarray or None
        The colour channels of the file (``LoadedImage.channels``), ``(..., 3)``; None for
        a gray image.
    name : {'luminance', 'channel', 'weighted'}
        The image stage (:data:`CHANNELS`).
    params : dict, optional
        Its parameters (missing ones take their defaults).

    Returns
    -------
    ndarray
        `gray` itself for ``luminance``; the channel (its own dtype) for ``channel``; a
        float64 image for ``weighted``.

    Raises
    ------
    InputError
        For an unknown name or a bad parameter (naming it), a channel choice on an image
        without channels, channels whose shape differs from `gray`'s, or a result that is
        constant or not finite.
    """
    step = CHANNELS.get(name) if isinstance(name, str) else None
    if step is None:
        raise InputError(f"image: unknown stage {name!r}; choose one of {', '.join(CHANNELS)}")
    return step.apply(gray, channels, **step.check(params))


def describe(section) -> str:
    """A few words for people: ``"luminance"``, ``"green channel"`` or
    ``"weighted channels 0.5 R + 0.5 G + 0 B"``."""
    if is_default(section):
        return "luminance"
    params = section.get("params", {})
    if section["name"] == "channel":
        return f"{CHANNEL_NAMES[int(params['index'])]} channel"
    return "weighted channels " + " + ".join(f"{params[c]:g} {c[0].upper()}"
                                             for c in CHANNEL_NAMES)
