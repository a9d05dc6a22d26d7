"""The UI's server-side security through Flask's test client (no browser): login everywhere, roles
on every callback (deny by default), CSRF and origin checks, rate-limited login, cookie flags."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from benchmarks.synthetic_store import add_live_alert, seed
from pq.auth import users
from pq.auth.roles import Actor
from pq.storage import schema
from tests._ui_helpers import PASSWORDS, add_users
from ui.app import create_app


@pytest.fixture
def app(sqlite_store, settings_factory):
    seed(sqlite_store, lines=2, parts_per_line=50, alerts=4, active_alerts=1)
    add_users(sqlite_store)
    settings = settings_factory(ui_login_max_failures=3)
    return create_app(settings, sqlite_store), sqlite_store


def _login(client, name, password=None):
    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    r = client.post("/login", data={"username": name, "password": password or PASSWORDS[name], "csrf": token,
                                    "next": "/alerts"})
    with client.session_transaction() as s:  # a new session (and token) after signing in
        token = s.get("csrf", token)
    return r, token


def _callback_output(dash_app, contains: str) -> str:
    return next(k for k in dash_app.callback_map if contains in k)


def _post_callback(client, output: str, token: str, **headers):
    body = {"output": output, "outputs": [], "inputs": [], "state": [], "changedPropIds": []}
    return client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token, **headers})


@pytest.mark.timeout(60)
def test_everything_needs_a_login(app):
    dash_app, _ = app
    c = dash_app.server.test_client()
    r = c.get("/models")
    assert r.status_code == 302 and "/login?next=/models" in r.headers["Location"]
    assert c.get("/_dash-layout").status_code == 401
    assert c.get("/_dash-dependencies").status_code == 401
    assert c.post("/_dash-update-component", json={"output": "page-content.children"}).status_code == 401
    assert c.get("/login").status_code == 200 and c.get("/assets/pq.css").status_code == 200


@pytest.mark.timeout(60)
def test_login_cookie_flags_and_no_open_redirect(app):
    dash_app, _ = app
    c = dash_app.server.test_client()
    c.get("/login")
    with c.session_transaction() as s:
        token = s["csrf"]
    r = c.post("/login", data={"username": "op", "password": PASSWORDS["op"], "csrf": token, "next": "//evil.example/x"})
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("pq_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert dash_app.server.debug is False
    # Without the form's CSRF token the login is refused.
    c2 = dash_app.server.test_client()
    assert c2.post("/login", data={"username": "op", "password": PASSWORDS["op"]}).status_code == 400


@pytest.mark.timeout(60)
def test_login_rate_limited_per_user_and_address(app):
    dash_app, store = app
    c = dash_app.server.test_client()
    for _ in range(3):
        r, _ = _login(c, "op", "wrong password!")
        assert r.status_code == 401 and b"wrong user name or password" in r.data
    r, _ = _login(c, "op")  # the right password, but too many failures from here
    assert r.status_code == 429 and "Retry-After" in r.headers
    with store.engine.connect() as conn:
        failed = conn.execute(select(func.count()).select_from(schema.audit_log)
                              .where(schema.audit_log.c.action == "login.failed")).scalar()
    assert failed == 3


@pytest.mark.timeout(60)
def test_callbacks_need_role_csrf_and_same_origin(app):
    dash_app, store = app
    c = dash_app.server.test_client()
    r, token = _login(c, "op")
    assert r.status_code == 302
    promote = _callback_output(dash_app, "models-promote-message")
    users_cb = _callback_output(dash_app, "users-message")
    assert _post_callback(c, promote, token).status_code == 403          # operator -> engineer callback
    assert _post_callback(c, users_cb, token).status_code == 403         # operator -> admin callback
    assert _post_callback(c, "made-up.children", token).status_code == 403  # unregistered: deny by default
    assert _post_callback(c, promote, "wrong-token").status_code == 403    # CSRF
    assert _post_callback(c, "page-content.children", token, Origin="http://evil.example").status_code == 403
    body = {"output": "page-content.children", "outputs": {"id": "page-content", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": "/models"}],
            "state": [{"id": "url", "property": "search", "value": ""}], "changedPropIds": ["url.pathname"]}
    r = c.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})
    assert r.status_code == 200 and b"page-denied" in r.data              # the page itself says no
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.model_deployments)).scalar() == 0


@pytest.mark.timeout(60)
def test_operator_can_acknowledge_through_callback(app):
    dash_app, store = app
    aid = add_live_alert(store, "line-01")
    c = dash_app.server.test_client()
    _, token = _login(c, "op")
    output = _callback_output(dash_app, "alerts-message.children")
    ack_output = next(k for k, v in dash_app.callback_map.items()
                      if "alerts-message" in k and any("alerts-ack" in str(i["id"]) for i in v["inputs"]))
    idd = {"type": "alerts-ack", "index": aid}
    body = {"output": ack_output, "outputs": [{"id": "alerts-message", "property": "children"},
                                              {"id": "alerts-changed", "property": "data"}],
            "inputs": [[{"id": idd, "property": "n_clicks", "value": 1}]],
            "state": [{"id": "alerts-changed", "property": "data", "value": 0}],
            "changedPropIds": [f'{{"index":"{aid}","type":"alerts-ack"}}.n_clicks']}
    r = c.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})
    assert r.status_code == 200, r.data[:300]
    assert output
    with store.engine.connect() as conn:
        assert conn.execute(select(schema.alerts.c.acked_by).where(schema.alerts.c.id == aid)).scalar() == "op"


@pytest.mark.timeout(60)
def test_password_change_or_disable_ends_sessions(app):
    dash_app, store = app
    c = dash_app.server.test_client()
    _login(c, "op")
    assert c.get("/_dash-layout").status_code == 200
    users.set_password(store, "op", "a brand new passphrase", actor=Actor("boss", "admin"))
    assert c.get("/_dash-layout").status_code == 401
    c2 = dash_app.server.test_client()
    _login(c2, "eng")
    users.set_active(store, "eng", False, actor=Actor("boss", "admin"))
    assert c2.get("/_dash-layout").status_code == 401
