"""The app factory: ``create_app(settings, store) -> dash.Dash``.

Builds the Flask server (session cookie HttpOnly + SameSite=Strict, key from
:func:`pq.auth.secret_key.load_secret_key`), the login routes, the security guard, the page shell
and every page's callbacks. Data comes from the store only; ``ui/`` never imports connectors or
asyncua.

Example::

    app = create_app(load_settings(), store)
    app.server.test_client().get("/login")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import dash
import flask
from dash import Input, Output, State, dcc, html

from pq.auth.roles import allows
from pq.auth.secret_key import load_secret_key
from pq.config import Settings
from pq.storage.engine import Store
from ui.login import install_login
from ui.pages import Page, all_pages
from ui.security import CSRF_COOKIE, csrf_token, current_actor, install_guard, secured_callback

__all__ = ["create_app", "UiContext"]

logger = logging.getLogger(__name__)

_ASSETS = Path(__file__).with_name("assets")


@dataclass
class UiContext:
    """What pages receive: the settings, the store, and long-lived helpers (training jobs)."""

    settings: Settings
    store: Store
    extras: dict = field(default_factory=dict)


def _nav(pages: list[Page], role: str, username: str):
    links = [dcc.Link(p.title, href=p.path, className="pq-nav-link", id=f"nav-{p.title.lower().replace(' ', '-')}")
             for p in pages if p.nav and allows(role, p.role)]
    return html.Header(className="pq-header", children=[
        html.Div("pq", className="pq-brand"),
        html.Nav(links, className="pq-nav"),
        html.Div(className="pq-user", children=[
            html.Span(f"{username} ({role})", id="shell-user"),
            html.Form(method="post", action="/logout", children=[
                dcc.Input(type="hidden", name="csrf", value=csrf_token()),
                html.Button("Sign out", type="submit", className="pq-btn pq-btn-quiet", id="shell-logout"),
            ]),
        ]),
    ])


def create_app(settings: Settings, store: Store) -> dash.Dash:
    """The Dash app with its Flask server; serve with ``app.server`` (WSGI)."""
    server = flask.Flask("pq-ui")
    server.config.update(
        SECRET_KEY=load_secret_key(settings),
        SESSION_COOKIE_NAME="pq_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.ui_cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,  # callbacks and forms are small; refuse floods of JSON
    )
    ctx = UiContext(settings, store)
    app = dash.Dash(
        "pq-ui",
        server=server,
        title="pq",
        update_title=None,
        assets_folder=str(_ASSETS),
        serve_locally=True,           # the shop-floor LAN has no internet
        suppress_callback_exceptions=True,
        csrf_token_name=CSRF_COOKIE,
    )
    install_login(server, store, settings)
    install_guard(server, app)
    pages = all_pages()

    @server.route("/healthz")
    def _healthz():
        return {"status": "ok"}

    def shell():
        actor = current_actor()
        if actor is None:  # the guard redirects first; this only serves the layout endpoint
            return html.Div("Please sign in.", id="shell-signed-out")
        return html.Div(className="pq-app", children=[
            dcc.Location(id="url", refresh=False),
            _nav(pages, actor.role, actor.username),
            html.Main(id="page-content", className="pq-main"),
        ])

    app.layout = shell

    @secured_callback(app, "operator", Output("page-content", "children"), Input("url", "pathname"),
                      State("url", "search"))
    def _route(pathname, search):
        actor = current_actor()
        for page in pages:
            params = page.match(pathname or "/")
            if params is None:
                continue
            if not allows(actor.role, page.role):
                logger.info("page %s refused for %s (role %s)", pathname, actor.username, actor.role)
                return html.Div(id="page-denied", className="pq-denied", children=[
                    html.H1("Not available"),
                    html.P(f"The page '{page.title}' needs the {page.role} role. You are signed in as "
                           f"{actor.username} ({actor.role})."),
                    dcc.Link("Back to the lines", href="/", className="pq-btn"),
                ])
            query = {k: v[0] for k, v in parse_qs((search or "").lstrip("?")).items() if v}
            return page.layout(ctx, query=query, **params)
        return html.Div(id="page-missing", children=[html.H1("Page not found"),
                                                     dcc.Link("Back to the lines", href="/", className="pq-btn")])

    for page in pages:
        page.register(app, ctx)
    logger.info("UI app built for %s with %d pages", store.display_url, len(pages))
    return app
