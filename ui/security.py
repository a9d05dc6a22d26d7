"""Server-side security of the UI: login required everywhere, a role on every callback, CSRF.

Dash sends every callback to one endpoint (``/_dash-update-component``), so hiding a button is not
security. Here:

- a Flask ``before_request`` guard lets only the login page and static assets through without a
  session; pages redirect to the login, Dash's own endpoints answer 401;
- every callback is registered through :func:`secured_callback` with the role it needs; the guard
  looks the posted callback up and answers **403** when the user's role is too low, and **403** for
  any callback that was registered without a role (deny by default); the wrapped function checks
  the role again (defence in depth) before it touches data;
- state-changing requests (every POST) must carry the session's CSRF token: Dash's renderer sends
  the ``_csrf_token`` cookie back in the ``X-CSRFToken`` header, which another site cannot read;
  a request whose ``Origin`` is another host is refused as well.

Example::

    @secured_callback(app, "engineer", Output("models-table", "children"), Input("models-refresh", "n_clicks"))
    def refresh(_n): ...
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from urllib.parse import urlsplit

import flask
from flask_login import current_user

from pq.auth.roles import Actor, allows

__all__ = ["secured_callback", "install_guard", "current_actor", "csrf_token", "CSRF_COOKIE",
           "PUBLIC_PREFIXES"]

logger = logging.getLogger(__name__)

CSRF_COOKIE = "_csrf_token"        # the name Dash's renderer reads (Dash(csrf_token_name=...))
CSRF_HEADER = "X-CSRFToken"
_ROLE_ATTR = "_pq_required_role"
# Paths served without a session: the login form and static files that hold no data.
PUBLIC_PREFIXES = ("/login", "/_dash-component-suites/", "/assets/", "/_favicon.ico", "/healthz")


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    token = flask.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        flask.session["csrf"] = token
    return token


def current_actor() -> Actor | None:
    """The logged-in user as an :class:`Actor` (with the client address), or None."""
    if not current_user or not current_user.is_authenticated:
        return None
    return Actor(current_user.username, current_user.role, client=flask.request.remote_addr or "?")


def secured_callback(app, role: str, *args, **kwargs):
    """``app.callback(*args, **kwargs)`` for a function that only ``role`` and above may run."""
    allows(None, role)  # validates the role name at registration time

    def decorate(fn):
        @functools.wraps(fn)
        def guarded(*a, **k):
            actor = current_actor()
            if actor is None or not allows(actor.role, role):
                logger.warning("callback %s refused for %s", fn.__name__, actor.username if actor else "anonymous")
                flask.abort(403)
            return fn(*a, **k)

        setattr(guarded, _ROLE_ATTR, role)
        return app.callback(*args, **kwargs)(guarded)

    return decorate


def _required_role(dash_app, body: dict) -> str | None:
    entry = dash_app.callback_map.get(body.get("output", ""))
    if entry is None:
        return None
    return getattr(entry.get("callback"), _ROLE_ATTR, None)


def _same_origin(request: flask.Request) -> bool:
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None  # a "null" origin (sandboxed frame, file://) is never ours
    return urlsplit(origin).netloc == request.host


def install_guard(server: flask.Flask, dash_app) -> None:
    """Register the before_request guard and the security headers on ``server``."""

    @server.before_request
    def _guard():
        request = flask.request
        path = request.path
        if request.method == "POST" and not _same_origin(request):
            logger.warning("refused cross-origin POST to %s from %s", path, request.remote_addr)
            flask.abort(403)
        if path.startswith(PUBLIC_PREFIXES):
            return None
        if not current_user.is_authenticated:
            if path.startswith("/_") or request.method != "GET":
                flask.abort(401)
            return flask.redirect(flask.url_for("login", next=path if path.startswith("/") else "/"))
        if request.method == "POST":
            sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf", "")
            if not sent or not hmac.compare_digest(sent, csrf_token()):
                logger.warning("refused POST to %s by %s: missing or wrong CSRF token", path, current_user.username)
                flask.abort(403)
        if path.endswith("/_dash-update-component"):
            body = request.get_json(silent=True) or {}
            role = _required_role(dash_app, body)
            if role is None or not allows(current_user.role, role):
                logger.warning("refused callback %r for %s (role %s, needs %s)", body.get("output"),
                               current_user.username, current_user.role, role or "a registered role")
                flask.abort(403)
        return None

    @server.after_request
    def _headers(response: flask.Response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'; object-src 'none'; base-uri 'self'")
        if current_user and current_user.is_authenticated:
            response.headers.setdefault("Cache-Control", "no-store")
            token = csrf_token()
            if flask.request.cookies.get(CSRF_COOKIE) != token:
                # Readable by the page's script on purpose (double-submit); SameSite keeps other sites out.
                response.set_cookie(CSRF_COOKIE, token, httponly=False, samesite="Strict",
                                    secure=server.config.get("SESSION_COOKIE_SECURE", False))
        return response
