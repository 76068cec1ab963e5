"""Sign-in (callbacks/auth.py): every route needs it when a users file is configured,
sessions belong to their user, and local mode (no users file) is unchanged."""

from __future__ import annotations

import io
import json
import logging
import re
import threading

import pytest
import requests
from werkzeug.security import check_password_hash
from werkzeug.serving import make_server

from app import create_app
from callbacks import auth
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.store import session_belongs_to
from tests.support.dashclient import DashCallbackError, DashClient

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
DATA_FILE = "confidential_scan_42.tif"


def _config(tmp, **more):
    users = tmp / "users"
    if not users.exists():
        for name, password in PASSWORDS.items():
            auth.add_user(users, name, password)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    (data / DATA_FILE).write_bytes(b"not really a tiff")
    return Config(state_dir=tmp / "state", data_dir=data, users_file=users, **more)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app with a users file, on a real loopback server (cookies over HTTP)."""
    tmp = tmp_path_factory.mktemp("auth")
    app = create_app(_config(tmp))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}/", tmp
    finally:
        server.shutdown()
        thread.join(10)


TOKEN_RE = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


def _form_token(page_html):
    """The CSRF token of the sign-in form in `page_html`."""
    found = TOKEN_RE.findall(page_html)
    assert len(found) == 1, page_html[:500]
    return found[0]


def _login(session, url, **fields):
    """POST the sign-in form as a browser does: GET it first (its cookie and token)."""
    form = session.get(url + "login", timeout=30)
    assert form.status_code == 200
    data = {auth.CSRF_FIELD: _form_token(form.text), **fields}
    return session.post(url + "login", data=data, allow_redirects=False, timeout=30)


def _client_login(client, headers=None, environ_base=None, **fields):
    """The same through a Flask test client (which keeps the cookie)."""
    where = dict(headers=headers or {}, environ_base=environ_base or {})
    form = client.get("/login", **where)
    data = {auth.CSRF_FIELD: _form_token(form.get_data(as_text=True)), **fields}
    return client.post("/login", data=data, **where)


def _signed_in(url, name, password=None):
    session = requests.Session()
    res = _login(session, url, user=name, password=password or PASSWORDS[name], next="/")
    assert res.status_code == 303, res.text[:300]
    return session


def _load_body(client, sid):
    """The loader's callback body (load the coins sample) naming session `sid`."""
    _, body = client.build_request("image-store.data", inputs={"sample-dropdown.value": "coins"},
                                   state={"session-store.data": sid}, triggered=[])
    return body


def test_nothing_is_served_without_signing_in(served):
    _, url, _ = served
    anonymous = requests.Session()
    page = anonymous.get(url, headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/")
    layout = anonymous.get(url + "_dash-layout", timeout=30)
    assert layout.status_code == 401
    assert DATA_FILE not in layout.text  # issue 11 item 12: the data folder's names
    for path in ("_dash-dependencies", "assets/fastmove.js",
                 "_dash-component-suites/dash/deps/react@18.3.1.min.js", "some/dash/page"):
        assert anonymous.get(url + path, timeout=30).status_code == 401, path
    # a callback (loading, a download...) and the fast path
    alice = DashClient(url, session=_signed_in(url, "alice"))
    body = _load_body(alice, alice.find_component("session-store")["data"])
    res = anonymous.post(url + "_dash-update-component", json=body, timeout=30)
    assert res.status_code == 401
    _, download = alice.build_request("download-labels.data",
                                      inputs={"download-labels-button.n_clicks": 1})
    assert anonymous.post(url + "_dash-update-component", json=download,
                          timeout=30).status_code == 401
    res = anonymous.post(url + "_pipex/move", json={"session": "0" * 32}, timeout=30)
    assert res.status_code == 401
    # what stays open: the sign-in page, its stylesheet, the health check
    login = anonymous.get(url + "login", timeout=30)
    assert login.status_code == 200 and 'action="/login"' in login.text
    assert '<link rel="stylesheet" href="/assets/style.css">' in login.text
    assert anonymous.get(url + "assets/style.css", timeout=30).status_code == 200
    assert anonymous.get(url + "health", timeout=30).json()["status"] == "ok"


def test_the_sign_in_form_carries_a_token_tied_to_its_cookie(served):
    _, url, _ = served
    one, two = requests.Session(), requests.Session()
    page = one.get(url + "login", timeout=30)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    token = _form_token(page.text)
    assert one.cookies.get("pipex_session")  # the nonce it signs is in the cookie session
    other = _form_token(two.get(url + "login", timeout=30).text)
    assert other != token
    # the same cookie keeps its nonce: a second form (another tab) is valid too
    again = _form_token(one.get(url + "login", timeout=30).text)
    for used in (again, token):
        res = one.post(url + "login", data={"csrf_token": used, "user": "alice",
                                            "password": "wrong password"},
                       allow_redirects=False, timeout=30)
        assert res.status_code == 401  # past the token: the password was checked


def test_a_sign_in_without_its_token_is_refused_and_the_form_shown_again(served):
    _, url, _ = served
    good = {"user": "alice", "password": PASSWORDS["alice"], "next": "/"}
    session = requests.Session()
    token = _form_token(session.get(url + "login", timeout=30).text)
    stranger = requests.Session()
    strangers_token = _form_token(stranger.get(url + "login", timeout=30).text)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for sent in ({}, {"csrf_token": ""}, {"csrf_token": "x" * 10_000},
                 {"csrf_token": forged}, {"csrf_token": strangers_token}):
        res = session.post(url + "login", data={**good, **sent}, allow_redirects=False,
                           timeout=30)
        assert res.status_code == 400, sent
        assert "This sign-in form has expired or did not come from this page" in res.text
        assert 'action="/login"' in res.text  # the form again, with a token to use
        assert session.get(url + "_dash-layout", timeout=30).status_code == 401
    # a token without the cookie it was made for (another site posting the form)
    res = requests.post(url + "login", data={**good, "csrf_token": token},
                        allow_redirects=False, timeout=30)
    assert res.status_code == 400
    # more refusals than MAX_FAILURES: not counted as failed sign-ins; the form's token works
    retry = _form_token(session.get(url + "login", timeout=30).text)
    res = session.post(url + "login", data={**good, "csrf_token": retry},
                       allow_redirects=False, timeout=30)
    assert res.status_code == 303 and res.headers["Location"] == "/"
    assert session.get(url + "_dash-layout", timeout=30).status_code == 200
    # the token was for that form: signed in, the cookie has a new nonce and it is refused
    assert requests.Session().post(url + "login", data={**good, "csrf_token": retry},
                                   allow_redirects=False, timeout=30).status_code == 400
    assert session.post(url + "login", data={**good, "csrf_token": retry},
                        allow_redirects=False, timeout=30).status_code == 400


def test_a_refused_form_shows_a_token_that_works(tmp_path):
    client = create_app(_config(tmp_path)).server.test_client()
    client.get("/login")
    res = client.post("/login", data={"user": "alice", "password": PASSWORDS["alice"]})
    assert res.status_code == 400
    token = _form_token(res.get_data(as_text=True))
    res = client.post("/login", data={"user": "alice", "password": PASSWORDS["alice"],
                                      "csrf_token": token})
    assert res.status_code == 303


def test_an_old_sign_in_form_is_refused(tmp_path, monkeypatch):
    client = create_app(_config(tmp_path)).server.test_client()
    token = _form_token(client.get("/login").get_data(as_text=True))
    monkeypatch.setattr(auth, "CSRF_MAX_AGE_S", -1)  # every token is older than that
    res = client.post("/login", data={"user": "alice", "password": PASSWORDS["alice"],
                                      "csrf_token": token})
    assert res.status_code == 400 and "has expired" in res.get_data(as_text=True)
    monkeypatch.setattr(auth, "CSRF_MAX_AGE_S", 3600)
    res = client.post("/login", data={"user": "alice", "password": PASSWORDS["alice"],
                                      "csrf_token": token})
    assert res.status_code == 303


def test_a_wrong_password_or_unknown_user_does_not_sign_in(served):
    _, url, _ = served
    for name, password in (("alice", "bob-password"), ("mallory", "alice-password"),
                           ("alice", "")):
        session = requests.Session()
        res = _login(session, url, user=name, password=password)
        assert res.status_code == 401 and "Wrong user name or password" in res.text
        assert session.get(url + "_dash-layout", timeout=30).status_code == 401


def test_signed_in_the_page_works_and_lists_the_data_folder(served):
    app, url, _ = served
    session = _signed_in(url, "alice")
    layout = session.get(url + "_dash-layout", timeout=30)
    assert layout.status_code == 200 and DATA_FILE in layout.text
    assert "Signed in as alice" in layout.text
    client = DashClient(url, session=session)
    sid = client.find_component("session-store")["data"]
    secret = app.server.extensions["pipex_auth"].session_secret
    assert session_belongs_to(sid, "alice", secret) and not session_belongs_to(sid, "bob", secret)
    out = client.call("image-store.data", inputs={"sample-dropdown.value": "coins"},
                      state={"session-store.data": sid}, triggered=[])
    assert out["image-store"]["data"]["name"] == "coins"
    # its images count against alice's quota, whichever session she uses
    assert app._pipex_services.store.owner(sid) == "user:alice"
    assert app._pipex_services.store.usage("user:alice") > 0
    # the page's own routes: a redirect after sign-in lands on the page
    assert session.get(url, timeout=30).status_code == 200


def test_a_session_of_one_user_is_refused_to_another(served):
    _, url, tmp = served
    alice = DashClient(url, session=_signed_in(url, "alice"))
    sid = alice.find_component("session-store")["data"]
    meta = alice.call("image-store.data", inputs={"sample-dropdown.value": "coins"},
                      state={"session-store.data": sid}, triggered=[])["image-store"]["data"]
    bob = DashClient(url, session=_signed_in(url, "bob"))
    with pytest.raises(DashCallbackError) as refused:
        bob.call("image-store.data", inputs={"sample-dropdown.value": "coins"},
                 state={"session-store.data": sid}, triggered=[])
    assert refused.value.status_code == 403
    res = bob.session.post(url + "_pipex/move", timeout=30, json={
        "session": sid, "image": meta["id"], "history": {"image_id": meta["id"]}})
    assert res.status_code == 403 and "another sign-in" in res.json()["error"]
    # a made-up session id is refused too (any 32-hex value was accepted before)
    with pytest.raises(DashCallbackError) as forged:
        bob.call("image-store.data", inputs={"sample-dropdown.value": "coins"},
                 state={"session-store.data": "0123456789abcdef" * 2}, triggered=[])
    assert forged.value.status_code == 403
    # alice's own request with it passes the check (it reaches the route: 400 = bad body)
    res = alice.session.post(url + "_pipex/move", timeout=30, json={"session": sid})
    assert res.status_code == 400
    # the Batch tab's zip (its address names the owner, not the session): alice's only
    from callbacks import batch

    job = "ab" * 16
    zip_file = tmp / "state" / batch.BATCH_FOLDER / batch.owner_key("user:alice") / job / \
        batch.ZIP_NAME
    zip_file.parent.mkdir(parents=True, exist_ok=True)
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    zip_path = batch.zip_url("user:alice", job).lstrip("/")
    assert alice.session.get(url + zip_path, timeout=30).status_code == 200
    assert bob.session.get(url + zip_path, timeout=30).status_code == 404
    assert requests.get(url + zip_path, timeout=30).status_code == 401


def test_sign_out_and_a_changed_password_end_the_sign_in(served):
    _, url, tmp = served
    session = _signed_in(url, "alice")
    # a sign-out without the page's token (another site's form): asked to confirm, still in
    res = session.post(url + "logout", allow_redirects=False, timeout=30)
    assert res.status_code == 200 and "Sign out of the lab's server?" in res.text
    assert session.get(url + "_dash-layout", timeout=30).status_code == 200
    res = session.post(url + "logout", data={"csrf_token": "forged"}, allow_redirects=False,
                       timeout=30)
    assert res.status_code == 200
    assert session.get(url + "_dash-layout", timeout=30).status_code == 200
    # the page's own form: its token is in the layout
    layout = session.get(url + "_dash-layout", timeout=30).text
    token = re.search(r'"id": ?"sign-out-token"[^}]*?"value": ?"([^"]+)"|'
                      r'"value": ?"([^"]+)"[^}]*?"id": ?"sign-out-token"', layout)
    assert token, layout[:500]
    res = session.post(url + "logout", data={"csrf_token": token.group(1) or token.group(2)},
                       allow_redirects=False, timeout=30)
    assert res.status_code == 303
    assert session.get(url + "_dash-layout", timeout=30).status_code == 401
    session = _signed_in(url, "bob")
    auth.add_user(tmp / "users", "bob", "a-new-password")
    try:
        assert session.get(url + "_dash-layout", timeout=30).status_code == 401
        _signed_in(url, "bob", "a-new-password")
    finally:
        auth.add_user(tmp / "users", "bob", PASSWORDS["bob"])


def test_the_redirect_after_sign_in_stays_on_this_server(served):
    _, url, _ = served
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        res = _login(requests.Session(), url, user="alice", password=PASSWORDS["alice"],
                     next=target)
        assert res.status_code == 303 and res.headers["Location"] == "/"


def test_two_workers_share_the_secret_key(tmp_path):
    # gunicorn workers are separate processes: a cookie signed by one is accepted by another
    cfg = _config(tmp_path)
    one, two = create_app(cfg).server, create_app(cfg).server
    assert one.secret_key == two.secret_key and len(one.secret_key) == 64
    assert (tmp_path / "state" / "secret_key").stat().st_mode & 0o777 == 0o600
    c1, c2 = one.test_client(), two.test_client()
    assert _client_login(c1, user="alice", password=PASSWORDS["alice"]).status_code == 303
    cookie = c1.get_cookie("pipex_session")
    c2.set_cookie("pipex_session", cookie.value)
    assert c2.get("/_dash-layout").status_code == 200
    # PIPEX_SECRET_KEY wins over the generated one
    three = create_app(_config(tmp_path, secret_key="from the environment")).server
    assert three.secret_key == "from the environment"


def test_a_trusted_proxy_names_the_user(tmp_path):
    cfg = Config(state_dir=tmp_path / "state", data_dir=tmp_path, trust_remote_user=True,
                 trusted_proxies=("127.0.0.1",))
    client = create_app(cfg).server.test_client()
    assert client.get("/_dash-layout").status_code == 401
    assert client.get("/_dash-layout", headers={"X-Forwarded-User": "carol"}).status_code == 200
    # from an address that is not the proxy, the header is ignored
    res = client.get("/_dash-layout", headers={"X-Forwarded-User": "carol"},
                     environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert res.status_code == 401


def test_local_mode_needs_no_sign_in_and_warns_off_loopback(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="callbacks.auth"):
        client = create_app(Config(state_dir=tmp_path / "s1", data_dir=tmp_path)).server
        assert client.test_client().get("/_dash-layout").status_code == 200
    assert "without sign-in" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="callbacks.auth"):
        create_app(Config(state_dir=tmp_path / "s2", data_dir=tmp_path, bind="0.0.0.0:8050"))
    assert "serving 0.0.0.0:8050 without sign-in" in caplog.text


def test_adduser_writes_a_password_hash(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert auth.main(["adduser", "carol", "--users-file", str(users), "--password-stdin"]) == 0
    line = users.read_text().strip()
    name, _, hashed = line.partition(":")
    assert name == "carol" and "correct horse" not in line
    assert check_password_hash(hashed, "correct horse")
    assert users.stat().st_mode & 0o777 == 0o600
    # again: the password is replaced, not added
    monkeypatch.setattr("sys.stdin", io.StringIO("battery staple\n"))
    assert auth.main(["adduser", "carol", "--users-file", str(users), "--password-stdin"]) == 0
    assert list(auth.read_users(users)) == ["carol"]
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert auth.main(["adduser", "dave", "--users-file", str(users), "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    with pytest.raises(InputError, match="user name"):
        auth.add_user(users, "../x", "long enough password")


def test_a_malformed_users_file_names_the_line(tmp_path):
    users = tmp_path / "users"
    users.write_text("# the lab\nalice:scrypt:32768:8:1$abc$def\nno hash here\n")
    with pytest.raises(InputError, match="line 3"):
        auth.read_users(users)


def test_json_body_helpers_find_the_session_ids():
    body = {"inputs": [{"id": "session-store", "property": "data", "value": "a" * 32}],
            "state": [[{"id": "x", "property": "y"}],
                      {"id": "session-store", "property": "data", "value": "b" * 32}]}
    assert auth._session_ids(json.loads(json.dumps(body))) == ["a" * 32, "b" * 32]


def test_gunicorn_with_two_workers_and_a_users_file(tmp_path):
    # the Dockerfile's command, 2 workers started at once: both make or read the same secret
    # key, so a sign-in made by one worker is honoured by the other
    from tests.support import serve_docker_cmd

    users = tmp_path / "users"
    auth.add_user(users, "alice", PASSWORDS["alice"])
    auth.add_user(users, "bob", PASSWORDS["bob"])
    env = {"PIPEX_USERS_FILE": str(users)}
    with serve_docker_cmd(workers=2, env=env, state_dir=tmp_path / "state") as server:
        url = server.base_url + "/"
        assert requests.get(url + "_dash-layout", timeout=30).status_code == 401
        assert requests.get(url + "health", timeout=30).status_code == 200
        alice = _signed_in(url, "alice")
        cookie = alice.cookies.get("pipex_session")
        pids = set()
        for _ in range(80):  # a new connection each time, until both workers have answered
            res = requests.get(url + "_dash-layout", cookies={"pipex_session": cookie},
                               timeout=60)
            assert res.status_code == 200
            pids = set(re.findall(r'"GET /_dash-layout HTTP/1.1" 200 .* pid=<?(\d+)',
                                  server.log()))
            if len(pids) == 2:
                break
        client = DashClient(url, session=alice)
        sid = client.find_component("session-store")["data"]
        bob = _signed_in(url, "bob")
        _, body = client.build_request("image-store.data",
                                       inputs={"sample-dropdown.value": "coins"},
                                       state={"session-store.data": sid}, triggered=[])
        assert bob.post(url + "_dash-update-component", json=body, timeout=60).status_code == 403
        res = alice.post(url + "_dash-update-component", json=body, timeout=120)
        assert res.status_code == 200 and '"coins"' in res.text
    assert len(pids) == 2, "both workers answered a signed-in request"


def test_repeated_failed_sign_ins_are_slowed_down(tmp_path):
    client = create_app(_config(tmp_path)).server.test_client()
    for _ in range(auth.MAX_FAILURES):
        assert _client_login(client, user="alice", password="guess").status_code == 401
    # from now on even the right password waits (shared by every worker: in the store)
    res = _client_login(client, user="alice", password=PASSWORDS["alice"])
    assert res.status_code == 429 and "Too many failed sign-ins" in res.get_data(as_text=True)
    # another user, or the same user from another address, is not held back
    assert _client_login(client, user="bob", password=PASSWORDS["bob"]).status_code == 303
    assert _client_login(client, user="alice", password=PASSWORDS["alice"],
                         environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 303


def test_behind_the_proxy_failed_sign_ins_are_counted_per_client_address(tmp_path):
    """Behind nginx every connection comes from 127.0.0.1: the throttle reads the address
    the proxy saw (the last X-Forwarded-For), so one client cannot lock a user out for all."""
    client = create_app(_config(tmp_path)).server.test_client()
    mallory = {"X-Forwarded-For": "10.0.0.66"}
    for _ in range(auth.MAX_FAILURES):
        assert _client_login(client, user="alice", password="guess",
                             headers=mallory).status_code == 401
    assert _client_login(client, user="alice", password=PASSWORDS["alice"],
                         headers=mallory).status_code == 429
    # alice from her own address (through the same proxy) signs in
    assert _client_login(client, user="alice", password=PASSWORDS["alice"],
                         headers={"X-Forwarded-For": "10.0.0.7"}).status_code == 303
    # a client's own claims before the proxy's entry do not change the address counted
    assert _client_login(client, user="alice", password=PASSWORDS["alice"],
                         headers={"X-Forwarded-For": "10.0.0.7, 10.0.0.66"}).status_code == 429
    # from an address that is not a trusted proxy the header is ignored
    assert auth.client_address(type("R", (), {"remote_addr": "192.0.2.1", "headers":
                                              {"X-Forwarded-For": "10.0.0.7"}})(),
                               ("127.0.0.1",)) == "192.0.2.1"
