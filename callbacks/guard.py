"""Checks in front of Dash's routes: a malformed request gets a 4xx, never a 500.

Dash trusts the body of ``/_dash-update-component``: a JSON array or ``null``, an unknown
output, missing inputs, a ``NaN`` literal or a 200,000-deep nesting answered 500 with a
traceback in the log; so did ``/_dash-component-suites/..%2f..%2fapp.py``. The body is checked
here before Dash reads it (shape, known output, finite numbers, bounded depth), and an error
that still escapes a callback's input handling is answered 400 (and logged).
"""

from __future__ import annotations

import json
import logging

from flask import Response, g, request

log = logging.getLogger(__name__)

UPDATE_PATH = "/_dash-update-component"
SUITES_PATH = "/_dash-component-suites/"
#: Deepest nesting of a callback body (a figure Patch is ~10 levels deep).
MAX_DEPTH = 64
#: Errors of Dash's (and a callback's) handling of malformed inputs: answered 400.
INPUT_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError)


class BadBody(ValueError):
    """A callback request body that Dash would not understand."""


def _no_constant(name):
    raise BadBody(f"{name} is not a number")


def _depth(value, limit):
    """Raise BadBody if `value` nests deeper than `limit` (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise BadBody(f"nested deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _specs(body, key, required):
    specs = body.get(key)
    if specs is None and not required:
        return
    if not isinstance(specs, list):
        raise BadBody(f"{key} must be a list")
    for spec in specs:
        items = spec if isinstance(spec, list) else [spec]  # pattern-matching: a list of specs
        for item in items:
            if not isinstance(item, dict) or "id" not in item or not isinstance(
                    item.get("property"), str):
                raise BadBody(f"{key}: every entry needs an id and a property")


def check_update_body(text, callback_map) -> dict:
    """The parsed body of a ``/_dash-update-component`` request, or BadBody saying why not.

    Parameters
    ----------
    text : str
        The request body.
    callback_map : mapping
        The app's callbacks (``app.callback_map``): the output must name one of them.
    """
    if len(text) > 0 and text.lstrip()[:1] not in ("{",):
        raise BadBody("the body must be a JSON object")
    # A bracket-depth scan first: json.loads itself recurses on a 200k-deep body.
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise BadBody(f"nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadBody(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    _depth(body, MAX_DEPTH)
    output = body.get("output")
    if not isinstance(output, str) or output not in callback_map:
        raise BadBody("unknown output")
    if not isinstance(body.get("outputs"), (dict, list)):
        raise BadBody("outputs must be given")
    _specs(body, "inputs", required=True)
    _specs(body, "state", required=False)
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise BadBody("changedPropIds must be a list of names")
    return body


def _bad(message, status=400):
    return Response(json.dumps({"error": message}), status, mimetype="application/json")


def content_security_policy(app) -> str:
    """A Content-Security-Policy that Dash works with: scripts from this server and the
    page's own inline scripts (Dash's config and renderer, the clientside callbacks) by their
    hashes; plotly.js builds some functions at run time ('unsafe-eval'); React and plotly
    set inline styles; images are PNG data URIs; no framing."""
    hashes = " ".join(app.csp_hashes())  # quoted already: 'sha256-...'
    return ("default-src 'self'; "
            f"script-src 'self' 'unsafe-eval' {hashes}; "
            "style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; "
            "font-src 'self' data:; "
            "connect-src 'self'; "
            "worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; "
            "frame-ancestors 'none'")


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def register(app, services):
    """Install the checks and the security headers on the app's Flask server."""
    del services
    policy = {}  # built on the first response (the inline scripts are known by then)

    @app.server.after_request
    def _headers(response):
        # app.explore() shows the app inline in a notebook, i.e. in a frame of another port
        framed = app.server.config.get("PIPEX_ALLOW_FRAMING", False)
        for name, value in SECURITY_HEADERS.items():
            if not (framed and name == "X-Frame-Options"):
                response.headers.setdefault(name, value)
        if "csp" not in policy:
            policy["csp"] = content_security_policy(app)
        csp = policy["csp"]
        if framed:
            csp = csp.replace("frame-ancestors 'none'", "frame-ancestors *")
        response.headers.setdefault("Content-Security-Policy", csp)
        return response

    @app.server.before_request
    def _check():
        path = request.path
        if path.startswith(SUITES_PATH) and ".." in request.full_path:
            return _bad("not found", 404)
        if path == UPDATE_PATH and request.method == "POST":
            try:
                # kept for callbacks.auth, which checks the session ids it names
                g.pipex_update_body = check_update_body(
                    request.get_data(cache=True, as_text=True), app.callback_map)
            except BadBody as exc:
                return _bad(f"malformed callback request: {exc}")
        return None

    @app.server.errorhandler(Exception)
    def _error(exc):
        # An error that escaped the handling of a callback's inputs: the request was bad.
        if request.path == UPDATE_PATH and isinstance(exc, INPUT_ERRORS):
            log.warning("malformed callback request answered 400: %s: %s",
                        type(exc).__name__, exc)
            return _bad("the callback request could not be processed")
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 600:
            return exc  # an HTTP error (404, 405, 413...): Flask's own answer
        log.exception("unexpected error", exc_info=exc)
        return _bad("internal error", 500)
