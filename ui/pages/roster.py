"""Roster (admins): who is on duty per line and shift as operator, shift lead and quality engineer.

Alarms are assigned to the on-duty operator and escalated to the shift lead and the quality engineer
(``pq/edge/duty.py``); the edges pick up a change within ``PQ_EDGE_ALERT_SYNC_S``. Every change goes
through :mod:`pq.alerts.roster_store` (admin role checked again there, audited).
"""

from __future__ import annotations

from dash import Input, Output, State, dcc, html, no_update

from pq.alerts import roster_store
from pq.alerts.roster import DUTY_ROLES, ROLE_WORDS
from pq.auth import users as users_mod
from pq.errors import AuthError
from ui.pages import Page
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]


def _table(ctx):
    rows = [html.Tr([html.Th("Line"), html.Th("Shift"), html.Th("Duty"), html.Th("Who"), html.Th("Contact")])]
    for d in roster_store.list_duties(ctx.store):
        rows.append(html.Tr([html.Td("every line" if d.line_id == "*" else d.line_id),
                             html.Td("every shift" if d.shift == "*" else d.shift), html.Td(ROLE_WORDS[d.role]),
                             html.Td(d.username), html.Td(d.contact or "")]))
    if len(rows) == 1:
        return html.P("Nobody is on the roster yet: alarms are not assigned or escalated.", id="roster-table")
    return html.Table(rows, className="pq-table", id="roster-table")


def layout(ctx, query=None, **_):
    people = [u.username for u in users_mod.list_users(ctx.store) if u.active]
    return html.Div(className="pq-page", children=[
        html.H1("Roster"),
        html.P("Who answers for the alarms of a line in a shift. The shift is the one the line reports with "
               "its parts (A, B, C ...); * means every line or every shift. Alarms go to the operator and, "
               "when nobody acknowledges them, to the shift lead and then the quality engineer."),
        html.Div(_table(ctx), id="roster-list"),
        html.Section(className="pq-section", children=[
            html.H2("Put someone on duty or take them off"),
            html.Div(className="pq-toolbar", children=[
                dcc.Input(id="roster-line", placeholder="Line (or *)", className="pq-input", style={"width": "160px"}),
                dcc.Input(id="roster-shift", placeholder="Shift (or *)", className="pq-input", style={"width": "120px"}),
                dcc.Dropdown(id="roster-role", options=[{"label": ROLE_WORDS[r], "value": r} for r in DUTY_ROLES],
                             value="operator", clearable=False, className="pq-dropdown"),
                dcc.Dropdown(id="roster-user", options=people, placeholder="Who", className="pq-dropdown"),
                dcc.Input(id="roster-contact", placeholder="Contact for the pager/e-mail gateway (optional)",
                          className="pq-input", style={"width": "320px"}),
            ]),
            html.Div(className="pq-card-buttons", children=[
                html.Button("Set", id="roster-set", className="pq-btn pq-btn-primary"),
                html.Button("Remove", id="roster-remove", className="pq-btn pq-btn-danger"),
            ]),
            html.Div(id="roster-message", className="pq-message", role="status"),
        ]),
    ])


def register(app, ctx):
    @secured_callback(app, "admin", Output("roster-message", "children"), Output("roster-list", "children"),
                      Input("roster-set", "n_clicks"), Input("roster-remove", "n_clicks"),
                      State("roster-line", "value"), State("roster-shift", "value"), State("roster-role", "value"),
                      State("roster-user", "value"), State("roster-contact", "value"), prevent_initial_call=True)
    def change(_s, _r, line, shift, role, user, contact):
        from dash import ctx as dash_ctx

        if not dash_ctx.triggered_id or not dash_ctx.triggered[0]["value"]:
            return no_update, no_update
        actor = current_actor()
        try:
            if dash_ctx.triggered_id == "roster-set":
                d = roster_store.set_duty(ctx.store, line or "", shift or "", role, user or "", actor=actor,
                                          contact=contact)
                msg = f"{d.username} is {ROLE_WORDS[d.role]} for line {d.line_id}, shift {d.shift}."
            else:
                who = roster_store.remove_duty(ctx.store, line or "", shift or "", role, actor=actor)
                msg = f"{who} is no longer {ROLE_WORDS[role]} for line {line}, shift {shift}."
        except AuthError as exc:
            return html.Span(str(exc), className="pq-error"), no_update
        return html.Span(msg, className="pq-ok"), _table(ctx)


PAGE = Page(path="/roster", title="Roster", role="admin", layout=layout, register=register)
