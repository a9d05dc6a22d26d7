"""The login and logout routes and the session user (flask-login).

The login form is a plain server-rendered page (no Dash, no script), large enough to use with
gloves on a touch screen. A session remembers the user id plus a fingerprint of the password hash,
so changing a password or disabling the account ends every open session at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import flask
from flask_login import LoginManager, UserMixin, login_user, logout_user
from markupsafe import escape

from pq.auth import users as users_mod
from pq.errors import LoginRefused
from pq.auth.ratelimit import LoginRateLimiter
from pq.config import Settings
from pq.storage.engine import Store
from ui.security import csrf_token

__all__ = ["SessionUser", "install_login"]

logger = logging.getLogger(__name__)


@dataclass
class SessionUser(UserMixin):
    id: int
    username: str
    role: str
    fingerprint: str

    def get_id(self) -> str:
        return f"{self.id}:{self.fingerprint}"


def _fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>pq - sign in</title><link rel="stylesheet" href="/assets/pq.css"></head>
<body class="pq-login-body"><main class="pq-login">
<h1>pq</h1><p class="pq-login-sub">Predictive quality - sign in</p>
{message}
<form method="post" action="/login" autocomplete="off">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label for="login-username">User name</label>
<input id="login-username" name="username" required autofocus autocapitalize="none" value="{username}">
<label for="login-password">Password</label>
<input id="login-password" name="password" type="password" required>
<button id="login-submit" type="submit">Sign in</button>
</form></main></body></html>"""


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a phishing link borrow our login page.
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


def _client() -> str:
    return flask.request.remote_addr or "?"


def install_login(server: flask.Flask, store: Store, settings: Settings) -> LoginManager:
    manager = LoginManager()
    manager.init_app(server)
    manager.session_protection = "strong"
    limiter = LoginRateLimiter(settings.ui_login_max_failures, settings.ui_login_window_s)
    server.extensions["pq_login_limiter"] = limiter

    @manager.user_loader
    def _load(session_id: str):
        try:
            uid, fingerprint = session_id.split(":", 1)
            user = users_mod.get_user(store, int(uid))
        except (ValueError, TypeError):
            return None
        if user is None or not user.active or not hmac.compare_digest(fingerprint, _fingerprint(user.password_hash)):
            return None
        return SessionUser(user.id, user.username, user.role, fingerprint)

    def render(message: str = "", username: str = "", status: int = 200):
        box = f'<p class="pq-login-error" role="alert">{escape(message)}</p>' if message else ""
        html = _PAGE.format(message=box, csrf=escape(csrf_token()),
                            next=escape(_safe_next(flask.request.values.get("next"))), username=escape(username))
        return flask.Response(html, status=status, mimetype="text/html")

    @server.route("/login", methods=["GET", "POST"], endpoint="login")
    def login():
        if flask.request.method == "GET":
            return render()
        form = flask.request.form
        username = (form.get("username") or "").strip()[:100]
        if not hmac.compare_digest(form.get("csrf", ""), csrf_token()):
            return render("Your sign-in page expired: please try again.", username, 400)
        wait = limiter.retry_after_s(username, _client())
        if wait > 0:
            resp = render(f"Too many failed sign-ins: wait {wait / 60:.0f} min and try again.", username, 429)
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        try:
            user = users_mod.authenticate(store, username, form.get("password") or "", client=_client())
        except LoginRefused as exc:
            limiter.failed(username, _client())
            return render(str(exc), username, 401)
        limiter.succeeded(username, _client())
        flask.session.clear()  # a fresh session on login: no fixation of a pre-login session
        flask.session.permanent = True
        login_user(SessionUser(user.id, user.username, user.role, _fingerprint(user.password_hash)))
        csrf_token()
        logger.info("user %s signed in from %s", user.username, _client())
        return flask.redirect(_safe_next(form.get("next")))

    @server.route("/logout", methods=["POST"], endpoint="logout")
    def logout():
        logout_user()
        flask.session.clear()
        return flask.redirect("/login")

    server.permanent_session_lifetime = timedelta(hours=settings.ui_session_hours)
    return manager
