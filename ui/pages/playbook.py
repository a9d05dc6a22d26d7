"""Playbook (engineers): edit the recommended actions per signal / mechanism, validated by the
edge's own parser (pq.alerts.playbook.parse_playbook) before a new version is stored in
``playbook_versions``; history with author and comment, and restoring an older version.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dash import ALL, Input, Output, State, ctx as dash_ctx, dcc, html, no_update
from sqlalchemy import select

from pq.alerts.playbook import DEFAULT_PLAYBOOK_PATH, parse_playbook
from pq.auth import audit
from pq.errors import ConfigError
from pq.storage import schema
from ui.format import clock
from ui.pages import Page
from ui.security import current_actor, secured_callback

__all__ = ["PAGE", "save_playbook"]

_MAX_CHARS = 200_000


def _history(ctx, limit: int = 20):
    p = schema.playbook_versions.c
    with ctx.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(p.id, p.author, p.comment, p.created_at).order_by(p.id.desc()).limit(limit))]


def _content(ctx, version_id: int | None = None) -> tuple[str, str]:
    p = schema.playbook_versions.c
    stmt = select(p.id, p.content).order_by(p.id.desc()).limit(1)
    if version_id is not None:
        stmt = select(p.id, p.content).where(p.id == version_id)
    with ctx.store.engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row:
        return row.content, f"version {row.id}"
    return DEFAULT_PLAYBOOK_PATH.read_text(), "the shipped default (not yet edited)"


def save_playbook(store, text: str, *, actor, comment: str | None) -> int:
    """Validate ``text`` and store it as a new version; raises ConfigError with line/key."""
    from pq.auth.roles import require

    require(actor, "engineer")
    if len(text) > _MAX_CHARS:
        raise ConfigError(f"playbook is {len(text)} characters, expected at most {_MAX_CHARS}")
    pb = parse_playbook(text, source="the edited playbook")
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        vid = conn.execute(schema.playbook_versions.insert().values(
            content=text, author=actor.username, comment=(comment or "").strip()[:500] or None, created_at=now)
        ).inserted_primary_key[0]
        audit.record(conn, username=actor.username, action="playbook.save", target=f"playbook_version:{vid}",
                     detail={"comment": comment, "signals": len(getattr(pb, "signals", {}) or {})},
                     client=actor.client, at=now)
    return int(vid)


def _history_view(ctx):
    rows = [html.Tr([html.Th("Version"), html.Th("By"), html.Th("When"), html.Th("Comment"), html.Th("")])]
    for h in _history(ctx):
        rows.append(html.Tr([html.Td(h["id"]), html.Td(h["author"]), html.Td(clock(h["created_at"])),
                             html.Td(h["comment"] or ""),
                             html.Td(html.Button("Load", id={"type": "playbook-load", "index": h["id"]},
                                                 className="pq-btn pq-btn-quiet"))]))
    return html.Table(rows, className="pq-table") if len(rows) > 1 else html.P("No edits yet.")


def layout(ctx, query=None, **_):
    text, source = _content(ctx)
    return html.Div(className="pq-page", children=[
        html.H1("Playbook"),
        html.P(["What operators are told to do, per signal or defect mechanism. Showing ",
                html.Strong(source, id="playbook-source"), ". The edge uses the newest saved version."]),
        dcc.Textarea(id="playbook-text", value=text, className="pq-textarea pq-mono", style={"minHeight": "480px"},
                     spellCheck=False),
        dcc.Input(id="playbook-comment", placeholder="What did you change and why?", className="pq-input", maxLength=500),
        html.Div(className="pq-card-buttons", children=[
            html.Button("Check", id="playbook-validate", className="pq-btn"),
            html.Button("Save as new version", id="playbook-save", className="pq-btn pq-btn-primary"),
        ]),
        html.Div(id="playbook-message", className="pq-message", role="status"),
        html.Section(className="pq-section", children=[html.H2("History"), html.Div(_history_view(ctx), id="playbook-history")]),
    ])


def register(app, ctx):
    @secured_callback(app, "engineer", Output("playbook-message", "children", allow_duplicate=True),
                      Input("playbook-validate", "n_clicks"), State("playbook-text", "value"), prevent_initial_call=True)
    def validate(n, text):
        if not n:
            return no_update
        try:
            parse_playbook(text or "", source="the edited playbook")
        except ConfigError as exc:
            return html.Span(str(exc), className="pq-error")
        return html.Span("The playbook is valid.", className="pq-ok")

    @secured_callback(app, "engineer", Output("playbook-message", "children", allow_duplicate=True),
                      Output("playbook-history", "children"), Output("playbook-source", "children", allow_duplicate=True),
                      Input("playbook-save", "n_clicks"), State("playbook-text", "value"), State("playbook-comment", "value"),
                      prevent_initial_call=True)
    def save(n, text, comment):
        if not n:
            return no_update, no_update, no_update
        if not (comment or "").strip():
            return html.Span("Say what you changed and why (comment).", className="pq-error"), no_update, no_update
        try:
            vid = save_playbook(ctx.store, text or "", actor=current_actor(), comment=comment)
        except ConfigError as exc:
            return html.Span(f"Not saved: {exc}", className="pq-error"), no_update, no_update
        return html.Span(f"Saved as version {vid}.", className="pq-ok"), _history_view(ctx), f"version {vid}"

    @secured_callback(app, "engineer", Output("playbook-text", "value"),
                      Output("playbook-source", "children", allow_duplicate=True),
                      Input({"type": "playbook-load", "index": ALL}, "n_clicks"), prevent_initial_call=True)
    def load(clicks):
        trig = dash_ctx.triggered_id
        if not trig or not dash_ctx.triggered[0]["value"]:
            return no_update, no_update
        text, source = _content(ctx, int(trig["index"]))
        return text, f"{source} (loaded: save to restore it)"


PAGE = Page(path="/playbook", title="Playbook", role="engineer", layout=layout, register=register)
