"""Errors raised by the compute package."""


class InputError(ValueError):
    """An error whose message is meant for the user.

    Raised when an argument (an image, a file, a parameter) cannot be used. The message
    says what was wrong and what is accepted; the UI shows it as it is.
    """


class Cancelled(Exception):
    """Work stopped before its end because it is no longer wanted (e.g. a newer slider
    position superseded it). Nothing of it is cached; the caller answers nothing."""
