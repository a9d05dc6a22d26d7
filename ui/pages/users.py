"""Users (admins): add users, change roles, reset passwords, disable and enable accounts.

Every change goes through pq.auth.users (role checked again there, audited). Passwords are typed
in password fields and never shown, logged or sent back to the page.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dash import Input, Output, State, dcc, html, no_update

from pq.auth import users as users_mod
from pq.errors import AuthError
from pq.auth.roles import ROLES
from ui.format import ago
from ui.pages import Page
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]


def _table(ctx):
    now = datetime.now(timezone.utc)
    rows = [html.Tr([html.Th("User"), html.Th("Role"), html.Th("State"), html.Th("Last sign-in")])]
    for u in users_mod.list_users(ctx.store):
        locked = u.locked_until is not None and u.locked_until > now
        rows.append(html.Tr([html.Td(u.username), html.Td(u.role),
                             html.Td("disabled" if not u.active else "locked" if locked else "active"),
                             html.Td(ago(u.last_login_at, now))]))
    return html.Table(rows, className="pq-table", id="users-table")


def layout(ctx, query=None, **_):
    return html.Div(className="pq-page", children=[
        html.H1("Users"),
        html.Div(_table(ctx), id="users-list"),
        html.Section(className="pq-section", children=[
            html.H2("Add a user or change one"),
            html.Div(className="pq-toolbar", children=[
                dcc.Input(id="users-name", placeholder="User name", className="pq-input", style={"width": "220px"}),
                dcc.Dropdown(id="users-role", options=list(ROLES), value="operator", clearable=False, className="pq-dropdown"),
                dcc.Input(id="users-password", type="password", placeholder=f"Password (at least {ctx.settings.ui_password_min_length})",
                          className="pq-input", style={"width": "320px"}, autoComplete="new-password"),
            ]),
            html.Div(className="pq-card-buttons", children=[
                html.Button("Add user", id="users-add", className="pq-btn pq-btn-primary"),
                html.Button("Set role", id="users-set-role", className="pq-btn"),
                html.Button("Set password", id="users-set-password", className="pq-btn"),
                html.Button("Disable", id="users-disable", className="pq-btn pq-btn-danger"),
                html.Button("Enable", id="users-enable", className="pq-btn"),
            ]),
            html.Div(id="users-message", className="pq-message", role="status"),
        ]),
    ])


def register(app, ctx):
    @secured_callback(app, "admin", Output("users-message", "children"), Output("users-list", "children"),
                      Output("users-password", "value"),
                      Input("users-add", "n_clicks"), Input("users-set-role", "n_clicks"),
                      Input("users-set-password", "n_clicks"), Input("users-disable", "n_clicks"),
                      Input("users-enable", "n_clicks"), State("users-name", "value"), State("users-role", "value"),
                      State("users-password", "value"), prevent_initial_call=True)
    def change(_a, _r, _p, _d, _e, name, role, password):
        from dash import ctx as dash_ctx

        which = dash_ctx.triggered_id
        if not which or not dash_ctx.triggered[0]["value"]:
            return no_update, no_update, no_update
        actor = current_actor()
        name = (name or "").strip()
        try:
            if which == "users-add":
                users_mod.add_user(ctx.store, name, password or "", role, actor=actor)
                msg = f"User {name} added as {role}."
            elif which == "users-set-role":
                users_mod.set_role(ctx.store, name, role, actor=actor)
                msg = f"{name} is now {role}."
            elif which == "users-set-password":
                users_mod.set_password(ctx.store, name, password or "", actor=actor)
                msg = f"Password of {name} changed; their open sessions end."
            elif which == "users-disable":
                users_mod.set_active(ctx.store, name, False, actor=actor)
                msg = f"{name} disabled."
            else:
                users_mod.set_active(ctx.store, name, True, actor=actor)
                msg = f"{name} enabled."
        except AuthError as exc:
            return html.Span(str(exc), className="pq-error"), no_update, ""
        return html.Span(msg, className="pq-ok"), _table(ctx), ""


PAGE = Page(path="/users", title="Users", role="admin", layout=layout, register=register)
