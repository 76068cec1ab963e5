"""Sign-in for a shared server, with Flask's own tools.

Off unless configured (``make run`` on 127.0.0.1 is single-user): with ``PIPEX_USERS_FILE``
(``user:hash`` lines, werkzeug password hashes, written by ``python -m callbacks.auth adduser
NAME``) or ``PIPEX_TRUST_REMOTE_USER=1`` (a reverse proxy's ``REMOTE_USER`` /
``X-Forwarded-User`` from ``PIPEX_TRUSTED_PROXIES``), every route but ``/login``, ``/health``
and the login page's stylesheet needs a signed-in user: a page is redirected to ``/login``,
anything else (Dash's ``/_dash-*`` routes, the ``/_pipex/*`` fast path, assets, downloads)
answers 401. The sign-in lives in Flask's signed session cookie, whose key is
``PIPEX_SECRET_KEY`` or one generated once in the state folder (shared by every worker).

Sessions belong to users: the session id a page is given carries an HMAC of its user
(:func:`pipeline.store.new_session_id`), and a request naming a session id that was not issued
to its user is refused (403) before any callback runs.

The sign-in form carries a CSRF token: a random nonce kept in the (signed) cookie session when
the form is served, handed to the form signed and dated (``itsdangerous``, salted for this
form). A POST whose token is missing, forged, older than :data:`CSRF_MAX_AGE_S` or not the
nonce of the cookie that comes with it is refused (400) and the form shown again, before the
password is looked at: another site cannot sign a visitor in (login CSRF).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import re
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from flask import Response, g, has_app_context, redirect, request, session
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from components import ids
from pipeline.errors import InputError
from pipeline.store import new_session_id, session_belongs_to

log = logging.getLogger(__name__)

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: Failed sign-ins of one user name from one address allowed per window (then 429).
MAX_FAILURES, FAILURE_WINDOW_S = 5, 300.0
#: Routes open without signing in.
OPEN_PATHS = ("/login", "/logout", "/health", "/assets/style.css")
UPDATE_PATH = "/_dash-update-component"
FAST_PREFIX = "/_pipex/"
#: Largest fast-path body read for its session id (the route refuses larger ones itself).
MAX_FAST_BODY = 64 * 1024
#: Name of the sign-in form's CSRF token field, and the token's lifetime (a form left open
#: longer is shown again with a new token).
CSRF_FIELD, CSRF_MAX_AGE_S = "csrf_token", 2 * 3600
#: The cookie session's key of the nonce the token signs.
_CSRF_NONCE = "csrf"
#: Compared against when the user is unknown, so that a wrong name takes as long as a wrong
#: password.
_DUMMY_HASH = generate_password_hash("not a password")


# --- the users file ------------------------------------------------------------------------

def check_user_name(name) -> str:
    """`name` if it is a valid user name (letters, digits, ``._@-``, at most 64)."""
    if not isinstance(name, str) or not USER_RE.match(name):
        raise InputError(f"user name {name!r} must be 1-64 letters, digits or . _ @ - "
                         "(starting with a letter or digit)")
    return name


def read_users(path) -> dict:
    """``{user: password hash}`` of a users file (blank lines and ``#`` comments skipped).

    Raises
    ------
    InputError
        If a line is not ``user:hash``.
    """
    users = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not USER_RE.match(name) or not hashed:
            raise InputError(f"{path}, line {number}: expected 'user:password-hash'")
        users[name] = hashed
    return users


def add_user(path, name: str, password: str) -> None:
    """Add `name` to the users file at `path` (or change its password), atomically.

    Parameters
    ----------
    path : str or Path
        The users file (created with mode 600 if missing).
    name : str
        User name (see :func:`check_user_name`).
    password : str
        At least 8 characters; only its hash is written.
    """
    check_user_name(name)
    if not isinstance(password, str) or len(password) < 8:
        raise InputError("password must have at least 8 characters")
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [ln for ln in lines if ln.partition(":")[0].strip() != name]
    lines.append(f"{name}:{generate_password_hash(password)}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def secret_key(config) -> str:
    """``config.secret_key``, or the key kept in the state folder (made once, atomically, so
    that every worker of every start signs with the same key)."""
    if config.secret_key:
        return config.secret_key
    path = Path(config.state_dir) / "secret_key"
    if not path.exists():
        Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # fails if another worker was first: then its key is used
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _is_loopback(bind: str) -> bool:
    if bind.startswith(("unix:", "fd://")):
        return True
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- sign-in on the Flask server -----------------------------------------------------------


def client_address(request, trusted_proxies) -> str:
    """The person's address: behind a trusted proxy (``PIPEX_TRUSTED_PROXIES``, e.g. the
    nginx of deploy/nginx.conf) the last address of ``X-Forwarded-For`` (the one the proxy
    saw; earlier ones are the client's own claims), else the connection's."""
    remote = request.remote_addr or ""
    if remote in trusted_proxies:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")
                     if a.strip()]
        if forwarded:
            return forwarded[-1][:64]
    return remote

class Auth:
    """The sign-in of one app (kept in ``server.extensions['pipex_auth']``).

    Parameters
    ----------
    config : pipeline.config.Config
    store : pipeline.store.ArrayStore
        Where a session's owner is recorded (for its quota and job slots).
    """

    def __init__(self, config, store):
        self.config = config
        self.store = store
        self.enabled = bool(config.users_file) or bool(config.trust_remote_user)
        self.secret = secret_key(config) if self.enabled else None
        self._users = (None, {})  # (mtime, users): re-read when the file changes

    @property
    def session_secret(self) -> str:
        """Key of the session ids' HMAC (derived: not the cookie's key itself)."""
        return hmac.new(self.secret.encode(), b"pipex session ids", hashlib.sha256).hexdigest()

    def users(self) -> dict:
        """The users file's ``{user: hash}`` (empty without one), re-read when it changes."""
        if not self.config.users_file:
            return {}
        path = Path(self.config.users_file)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            log.error("PIPEX_USERS_FILE %s does not exist: nobody can sign in", path)
            return {}
        if self._users[0] != mtime:
            self._users = (mtime, read_users(path))
        return self._users[1]

    @staticmethod
    def _fingerprint(hashed: str) -> str:
        # in the cookie: a changed password (or a removed user) ends the sign-in
        return hashlib.sha256(hashed.encode()).hexdigest()[:16]

    def check_password(self, name, password) -> bool:
        """Whether `password` is `name`'s (as long for an unknown name as for a wrong one)."""
        hashed = self.users().get(name) if isinstance(name, str) else None
        ok = check_password_hash(hashed or _DUMMY_HASH, password or "")
        return bool(hashed) and ok

    def sign_in(self, name) -> None:
        """Put `name` in the signed session cookie."""
        session.clear()
        session.permanent = True
        session["user"] = name
        session["pw"] = self._fingerprint(self.users()[name])

    def current_user(self):
        """The signed-in user of this request, or None."""
        if self.config.trust_remote_user and request.remote_addr in self.config.trusted_proxies:
            name = request.environ.get("REMOTE_USER") or request.headers.get("X-Forwarded-User")
            if name and USER_RE.match(name):
                return name
        name = session.get("user")
        if not name:
            return None
        hashed = self.users().get(name)
        if hashed is None or session.get("pw") != self._fingerprint(hashed):
            return None
        return name

    def owner(self, user) -> str:
        """The quota and job-slot owner of a user."""
        return f"user:{user}"

    def _form_signer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="pipex sign-in form")

    def form_token(self) -> str:
        """The CSRF token of a sign-in form served in this request: the cookie session's
        nonce (made now if it has none), signed and dated."""
        nonce = session.get(_CSRF_NONCE)
        if not isinstance(nonce, str) or not nonce:
            nonce = session[_CSRF_NONCE] = secrets.token_urlsafe(24)
        return self._form_signer().dumps(nonce)

    def check_form_token(self, token) -> bool:
        """Whether `token` (the POSTed form's) is a token of :meth:`form_token` made for
        this cookie session's nonce less than :data:`CSRF_MAX_AGE_S` ago."""
        nonce = session.get(_CSRF_NONCE)
        if not (isinstance(token, str) and 0 < len(token) <= 256 and isinstance(nonce, str)
                and nonce):
            return False
        try:
            signed = self._form_signer().loads(token, max_age=CSRF_MAX_AGE_S)
        except BadData:
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed, nonce)


def _json(status, message):
    return Response(json.dumps({"error": message}), status, mimetype="application/json")


def _login_page(token, message="", next_url="/", status=200):
    error = f'<p class="message-error" role="alert">{html.escape(message)}</p>' if message else ""
    return _form_page("Sign in", f"""<p>Sign in to the lab's server.</p>{error}
<form method="post" action="/login">
<input type="hidden" name="{CSRF_FIELD}" value="{html.escape(token)}">
<input type="hidden" name="next" value="{html.escape(next_url)}">
<label for="user">User</label>
<input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>""", status)


def _sign_out_page(token):
    """Asked when a sign-out came without a valid token (another site's form, or a page
    open for longer than the token lives): the person confirms."""
    return _form_page("Sign out", f"""<p>Sign out of the lab's server?</p>
<form method="post" action="/logout">
<input type="hidden" name="{CSRF_FIELD}" value="{html.escape(token)}">
<button type="submit" autofocus>Sign out</button>
</form>""", 200)


def _form_page(title, inner, status):
    """A small page of this server's own (sign-in, sign-out), in the app's style."""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Pipeline Explorer</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/style.css">
<style>
.signin {{ max-width: 360px; margin: 12vh auto; background: var(--panel);
  border: 1px solid var(--line); border-radius: 8px; padding: 20px 24px; }}
.signin h1 {{ margin: 0 0 4px; font-size: 20px; }}
.signin p {{ color: var(--muted); margin: 0 0 14px; }}
.signin input {{ width: 100%; padding: 6px 8px; margin-bottom: 10px; font: inherit;
  border: 1px solid var(--line); border-radius: 4px; }}
.signin button {{ width: 100%; padding: 7px; font: inherit; font-weight: 600; color: #fff;
  background: var(--accent); border: 0; border-radius: 4px; cursor: pointer; }}
.signin .message-error {{ color: var(--error); background: var(--error-bg); padding: 6px 8px;
  border-radius: 4px; }}
</style></head>
<body><main class="signin">
<h1>Pipeline Explorer</h1>{inner}</main></body></html>"""
    response = Response(body, status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # its token belongs to this cookie
    return response


def _safe_next(url) -> str:
    if isinstance(url, str) and url.startswith("/") and not url.startswith("//") \
            and "\\" not in url and not url.startswith("/login"):
        return url
    return "/"


def _session_ids(body) -> list:
    """The session ids named by a callback body (its ``session-store.data`` inputs/states)."""
    found = []
    for key in ("inputs", "state"):
        for spec in body.get(key) or []:
            for item in spec if isinstance(spec, list) else [spec]:
                if (isinstance(item, dict) and item.get("id") == ids.SESSION
                        and item.get("property") == "data"):
                    found.append(item.get("value"))
    return found


def _request_session_ids(app):
    """Session ids named by this request: a route's ``<session_id>`` (e.g. the Batch tab's
    zip), a Dash callback's or a fast-path body's; [] if none."""
    in_path = (request.view_args or {}).get("session_id")
    if in_path is not None:
        return [in_path]
    if request.method != "POST":
        return []
    if request.path == UPDATE_PATH:
        body = g.get("pipex_update_body")  # parsed and checked by callbacks.guard
        return _session_ids(body) if isinstance(body, dict) else []
    if request.path.startswith(FAST_PREFIX):
        if (request.content_length or 0) > MAX_FAST_BODY:
            return []  # the route answers 413
        try:
            body = json.loads(request.get_data(cache=True, as_text=True) or "null")
        except (ValueError, RecursionError):
            return []  # the route answers 400
        return [body.get("session")] if isinstance(body, dict) else []
    return []


def register(app, services):
    """Install the sign-in on the app's Flask server (call after the other ``register``:
    its check of the user runs before every other hook, its check of the session ids after
    :mod:`callbacks.guard` has checked the body)."""
    config = services.config
    auth = Auth(config, services.store)
    server = app.server
    server.extensions["pipex_auth"] = auth
    if not auth.enabled:
        binds = [b.strip() for b in config.bind.split(",") if b.strip()]
        if any(not _is_loopback(b) for b in binds):
            log.warning("serving %s without sign-in: anyone who reaches this address can use "
                        "the app and its data folder; set PIPEX_USERS_FILE (see README, "
                        "Deployment)", config.bind)
        return auth
    server.secret_key = auth.secret
    server.config.update(SESSION_COOKIE_NAME="pipex_session", SESSION_COOKIE_HTTPONLY=True,
                         SESSION_COOKIE_SAMESITE="Lax",
                         PERMANENT_SESSION_LIFETIME=timedelta(hours=12))

    def require_user():
        if request.path in OPEN_PATHS:
            return None
        user = auth.current_user()
        if user is None:
            wants_page = (request.method == "GET" and not request.path.startswith(
                ("/_", "/assets/")) and "text/html" in request.headers.get("Accept", ""))
            if wants_page:
                target = quote(request.full_path.rstrip("?"), safe="/")
                return redirect(f"/login?next={target}", 302)
            return _json(401, "sign in first (/login)")
        g.pipex_user = user
        return None

    def require_own_session():
        user = g.get("pipex_user")
        if not user:
            return None
        for sid in _request_session_ids(app):
            if not session_belongs_to(sid, user, auth.session_secret):
                log.warning("user %s named a session id not issued to them: refused", user)
                return _json(403, "this session belongs to another sign-in: reload the page")
            services.store.set_owner(sid, auth.owner(user))
        return None

    hooks = server.before_request_funcs.setdefault(None, [])
    hooks.insert(0, require_user)
    hooks.append(require_own_session)

    @server.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":
            return _login_page(auth.form_token(), next_url=_safe_next(request.args.get("next")))
        name, password = request.form.get("user", ""), request.form.get("password", "")
        next_url = _safe_next(request.form.get("next"))
        address = client_address(request, config.trusted_proxies)
        if not auth.check_form_token(request.form.get(CSRF_FIELD)):
            # before the password is looked at, and not counted as a failed sign-in
            log.warning("sign-in form without a valid CSRF token from %s: refused", address)
            return _login_page(auth.form_token(), "This sign-in form has expired or did not "
                               "come from this page: please sign in again.", next_url,
                               status=400)
        attempts = f"sign-in/{name[:64]}/{address}"
        if services.store.recent(attempts, FAILURE_WINDOW_S) >= MAX_FAILURES:
            return _login_page(auth.form_token(), f"Too many failed sign-ins: wait "
                               f"{FAILURE_WINDOW_S / 60:g} minutes, then try again.", next_url,
                               status=429)
        if not auth.check_password(name, password):
            services.store.recent(attempts, FAILURE_WINDOW_S, add=True)
            log.warning("failed sign-in for %r from %s", name[:64], address)
            return _login_page(auth.form_token(), "Wrong user name or password.", next_url,
                               status=401)
        auth.sign_in(name)
        log.info("%s signed in from %s", name, address)
        return redirect(next_url, 303)

    @server.route("/logout", methods=["POST"])
    def logout():
        # a sign-out needs the token of the page's own form: another site's form cannot
        # sign a person out (it is asked to confirm instead)
        if not auth.check_form_token(request.form.get(CSRF_FIELD)):
            return _sign_out_page(auth.form_token())
        session.clear()
        return redirect("/login", 303)

    return auth


def signed_in_as(app):
    """The signed-in user of this request (None in local mode or outside a request)."""
    auth = app.server.extensions.get("pipex_auth")
    if auth is None or not auth.enabled or not has_app_context():
        return None
    return g.get("pipex_user")


def page_session_id(app) -> str:
    """A session id for a new page: bound to the signed-in user (random in local mode)."""
    user = signed_in_as(app)
    if user:
        return new_session_id(user, app.server.extensions["pipex_auth"].session_secret)
    return new_session_id()


def with_sign_out(app, layout):
    """`layout` with "signed in as NAME · Sign out" above it when someone is signed in."""
    user = signed_in_as(app)
    if not user:
        return layout
    from dash import dcc, html

    bar = html.Form(className="signed-in", action="/logout", method="POST",
                    style={"display": "flex", "justifyContent": "flex-end", "gap": "6px",
                           "alignItems": "baseline", "padding": "6px 16px 0",
                           "color": "var(--muted)", "fontSize": "12px"},
                    children=[html.Span(f"Signed in as {user}"),
                              # the form's token: only this page signs its person out
                              dcc.Input(type="hidden", name=CSRF_FIELD, id=ids.SIGN_OUT_TOKEN,
                                        value=app.server.extensions["pipex_auth"].form_token()),
                              html.Button("Sign out", type="submit", className="sign-out")])
    return html.Div([bar, layout])


# --- command line --------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python -m callbacks.auth adduser NAME [--users-file PATH] [--password-stdin]``."""
    parser = argparse.ArgumentParser(prog="python -m callbacks.auth",
                                     description="Manage the users of Pipeline Explorer.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("adduser", help="add a user, or change a user's password")
    add.add_argument("name")
    add.add_argument("--users-file", default=os.environ.get("PIPEX_USERS_FILE"),
                     help="the users file (default: $PIPEX_USERS_FILE)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    args = parser.parse_args(argv)
    if not args.users_file:
        parser.error("give --users-file or set PIPEX_USERS_FILE")
    try:
        check_user_name(args.name)
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"Password for {args.name}: ")
            if getpass.getpass("Again: ") != password:
                raise InputError("the passwords differ")
        add_user(args.users_file, args.name, password)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name} can sign in ({args.users_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
