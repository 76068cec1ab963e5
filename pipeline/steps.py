"""The vocabulary of pipeline steps: parameters and steps, with their code for scripts.

Every step of the pipeline (a filter, a segmentation method, a post-processing operation) is a
:class:`Step`: the scikit-image function it runs, its parameters with their ranges, a function
that applies it to arrays, and the lines of plain Python that a reproducible script writes for
it. ``apply`` and ``code`` live side by side in each step module so that the app and the
exported script compute the same thing, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InputError

__all__ = ["Param", "Step", "check_params"]


@dataclass(frozen=True)
class Param:
    """One parameter of a step.

    Parameters
    ----------
    name : str
        Keyword argument name.
    kind : {'float', 'int', 'choice', 'bool'}
        Type of the value.
    default : object
        Default value.
    min, max : float, optional
        Inclusive bounds for numbers.
    choices : tuple, optional
        Allowed values for ``kind='choice'``.
    doc : str
        One line for the UI.
    """

    name: str
    kind: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    doc: str = ""

    def check(self, value, where: str):
        """Return `value` converted to this parameter's type, or raise InputError."""
        label = f"{where}: {self.name}"
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise InputError(f"{label} must be true or false, got {value!r}")
        if self.kind == "choice":
            if value in self.choices:
                return value
            raise InputError(f"{label} must be one of {', '.join(map(str, self.choices))}; "
                             f"got {value!r}")
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise InputError(f"{label} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{label} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InputError(f"{label} must be a finite number, got {value!r}")
        if self.kind == "int":
            if number != int(number):
                raise InputError(f"{label} must be a whole number, got {value!r}")
            number = int(number)
        if self.min is not None and number < self.min:
            raise InputError(f"{label} must be at least {self.min:g}, got {number:g}")
        if self.max is not None and number > self.max:
            raise InputError(f"{label} must be at most {self.max:g}, got {number:g}")
        return number


@dataclass(frozen=True)
class Step:
    """A step of the pipeline.

    Parameters
    ----------
    key : str
        Identifier used in recipes, e.g. ``"gaussian"``.
    stage : {'filter', 'segment', 'postprocess'}
        Where it sits in the pipeline.
    label : str
        Name shown in the UI.
    function : str
        The scikit-image (or scipy) function it runs, e.g. ``"skimage.filters.gaussian"``;
        the UI links its documentation.
    params : tuple of Param
        Its parameters.
    apply : callable
        ``apply(array, **params)`` (segmentation: ``apply(image, markers, **params)``) returning
        an array.
    code : callable
        ``code(src, dst, **params)`` returning the lines of Python that compute ``dst`` from
        ``src`` (segmentation: ``code(src, markers, dst, **params)``), using only names bound by
        `imports`.
    imports : tuple of str
        Import lines the code needs.
    examples : tuple of str
        Links to gallery examples.
    reach : callable, optional
        ``reach(params, ndim)`` for a *local* step: how far (in pixels) an output pixel
        depends on the input, so that :mod:`pipeline.parallel` can run the step over
        overlapping blocks and stitch a result identical, bit for bit, to the whole-array
        call. Returns an int (every axis) or a tuple with one entry per axis, where ``None``
        means "never cut along this axis". ``None`` (the default) marks a step that is not
        local (e.g. ``label``, total variation): it always runs on the whole array.
    blocks : callable, optional
        ``blocks(array, **params)``, for a local step whose blockwise result needs more than
        its reach: it sees the whole array (checks it as the whole call would, reads global
        values such as the maximum) and returns either a function
        ``run(block, edges) -> ndarray`` computing one block (with its overlap; ``edges``
        gives, per axis, whether the block touches the array's start and end), or a string
        saying why the blockwise result would differ for this array, which then runs whole.
        Without it a block is computed as ``apply(block, **params)``.
    separable : callable, optional
        ``separable(array, **params)``, for a step whose whole call is a sequence of 1-D
        passes, one per axis (the Gaussian: scipy's ``gaussian_filter`` is
        ``gaussian_filter1d`` along axis 0, then 1, ...): returns those passes in the whole
        call's order, a tuple of ``(axis, run)`` where ``run(source, out)`` filters `source`
        along `axis` into `out` (an array of the result's dtype and `source`'s shape, possibly
        `source` itself, as the whole call does after its first pass), or a string saying why
        the passes would differ from the whole call. :mod:`pipeline.parallel` then runs each
        pass over blocks that are whole along its axis: no overlap, and the same 1-D
        operations on the same values as the whole call.
    """

    key: str
    stage: str
    label: str
    function: str
    params: tuple = ()
    apply: Callable = None  # type: ignore[assignment]
    code: Callable = None  # type: ignore[assignment]
    imports: tuple = ()
    examples: tuple = field(default=())
    reach: Callable | None = None
    blocks: Callable | None = None
    separable: Callable | None = None

    @property
    def local(self) -> bool:
        """Whether the step declares a reach (can run over overlapping blocks)."""
        return self.reach is not None

    def reach_per_axis(self, params, ndim: int) -> tuple | None:
        """The reach of each axis for checked `params` on an `ndim`-D array, or None.

        Returns
        -------
        tuple of (int or None), or None
            One entry per axis (``None``: the axis is not cut); None for a non-local step.
        """
        if self.reach is None:
            return None
        value = self.reach(params, ndim)
        if value is None:
            return None
        if isinstance(value, (int,)):
            value = (value,) * ndim
        value = tuple(None if v is None else int(v) for v in value)
        if len(value) != ndim or any(v is not None and v < 0 for v in value):
            raise ValueError(f"{self.key}: reach must give {ndim} non-negative values, "
                             f"got {value!r}")
        return value

    def defaults(self) -> dict:
        """Default parameters."""
        return {p.name: p.default for p in self.params}

    def check(self, params) -> dict:
        """Complete `params` with defaults and check each value (see :func:`check_params`)."""
        return check_params(self, params)


def check_params(step: Step, params) -> dict:
    """Check the parameters of `step`.

    Parameters
    ----------
    step : Step
    params : dict or None
        Given parameters; missing ones take their defaults.

    Returns
    -------
    dict
        Every parameter of the step, checked and converted.

    Raises
    ------
    InputError
        Naming the step and the parameter, for an unknown name or a bad value.
    """
    params = dict(params or {})
    if not isinstance(params, dict):
        raise InputError(f"{step.label}: parameters must be a mapping")
    known = {p.name for p in step.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"{step.label}: unknown parameter {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(known)) or 'none'}")
    return {p.name: p.check(params.get(p.name, p.default), step.label) for p in step.params}
