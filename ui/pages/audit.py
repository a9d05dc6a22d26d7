"""Audit log (engineers and admins): who did what when, filterable by user, action and text.

Covers acknowledge, shelve, feedback, retrain, promote, rollback, playbook edits, user changes
and logins. Newest first, at most 500 rows per view (the ``at`` index keeps this cheap).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone

from dash import Input, Output, dcc, html

from pq.auth import audit
from ui.format import clock
from ui.pages import Page
from ui.security import secured_callback

__all__ = ["PAGE"]

_ACTIONS = [("", "Everything"), ("alert.", "Alerts (acknowledge, shelve, feedback)"), ("model.", "Models (retrain, promote, roll back)"),
            ("playbook.", "Playbook"), ("user.", "Users"), ("login", "Sign-ins")]


def _table(ctx, user, action, text, start, end):
    start_dt = datetime.combine(date.fromisoformat(start), time.min, timezone.utc) if start else None
    end_dt = datetime.combine(date.fromisoformat(end), time.min, timezone.utc) + timedelta(days=1) if end else None
    with ctx.store.engine.connect() as conn:
        rows = audit.query(conn, start=start_dt, end=end_dt, username=(user or "").strip() or None,
                           action_prefix=action or None, text_filter=(text or "").strip() or None, limit=500)
    if not rows:
        return html.P("Nothing matches.", id="audit-empty")
    body = [html.Tr([html.Th("When"), html.Th("Who"), html.Th("What"), html.Th("On"), html.Th("Details"), html.Th("From")])]
    for r in rows:
        detail = json.dumps(r["detail"], ensure_ascii=False, default=str)[:400] if r["detail"] else ""
        body.append(html.Tr([html.Td(clock(r["at"])), html.Td(r["username"]), html.Td(r["action"]),
                             html.Td(r["target"] or ""), html.Td(detail, className="pq-mono"), html.Td(r["client"] or "")]))
    return html.Table(body, className="pq-table", id="audit-table")


def layout(ctx, query=None, **_):
    return html.Div(className="pq-page", children=[
        html.H1("Audit log"),
        html.Div(className="pq-toolbar", children=[
            dcc.Input(id="audit-user", placeholder="User", className="pq-input", style={"width": "180px"}, debounce=True),
            dcc.Dropdown(id="audit-action", options=[{"label": l, "value": v} for v, l in _ACTIONS], value="",
                         clearable=False, className="pq-dropdown"),
            dcc.Input(id="audit-text", placeholder="Search (alert, version, user ...)", className="pq-input",
                      style={"width": "300px"}, debounce=True),
            dcc.DatePickerRange(id="audit-dates", display_format="YYYY-MM-DD"),
        ]),
        html.Div(id="audit-results"),
    ])


def register(app, ctx):
    @secured_callback(app, "engineer", Output("audit-results", "children"), Input("audit-user", "value"),
                      Input("audit-action", "value"), Input("audit-text", "value"), Input("audit-dates", "start_date"),
                      Input("audit-dates", "end_date"))
    def filter_(user, action, text, start, end):
        return _table(ctx, user, action, text, start, end)


PAGE = Page(path="/audit", title="Audit log", role="engineer", layout=layout, register=register)
