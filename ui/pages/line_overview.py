"""Lines overview: one tile per line, status in words and colour, live every PQ_UI_REFRESH_S.

The tiles are replaced only when something on them changed (a signature is kept in the browser), so
the page does not flicker and the operator keeps their place.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from dash import Input, Output, State, dcc, html, no_update

from ui.format import ago, duration
from ui.pages import Page
from ui.queries.lines import DivertedPart, LineStatus, line_statuses, recent_diverted
from ui.security import secured_callback

__all__ = ["PAGE"]


def _diverted(parts: list[DivertedPart], now: datetime):
    """The latest diverted parts: which part to take off the line, and why (nobody was paged for them)."""
    if not parts:
        return None
    return html.Div(className="pq-tile-diverted", children=[
        html.Div("Set aside for inspection", className="pq-tile-subhead"),
        html.Ul([html.Li(f"{p.serial} ({ago(p.decided_at, now)}){': ' + p.reason if p.reason else ''}",
                         className="pq-diverted-part") for p in parts]),
    ])


def _tile(s: LineStatus, now: datetime, diverted: list[DivertedPart]):
    fresh = "unknown" if s.freshness_s is None else duration(s.freshness_s) + " old"
    return html.Div(className=f"pq-tile pq-status-{s.status}", id=f"overview-tile-{s.line_id}", children=[
        html.Div(className="pq-tile-head", children=[
            html.H2(s.name, className="pq-tile-name"),
            html.Span(s.station or "", className="pq-tile-station"),
        ]),
        html.Div(s.words, className="pq-tile-status", id=f"overview-status-{s.line_id}"),
        html.Div(s.why, className="pq-tile-why") if s.why else None,
        html.Dl(className="pq-tile-facts", children=[
            html.Dt("Parts in the last hour"), html.Dd(str(s.parts_last_hour)),
            html.Dt("Alarms open"), html.Dd(str(s.open_alerts), id=f"overview-alerts-{s.line_id}"),
            html.Dt("Parts diverted in the last hour"),
            html.Dd(str(s.diverted_last_hour), id=f"overview-diverted-{s.line_id}"),
            html.Dt("Newest data"), html.Dd(fresh),
            html.Dt("Last part"), html.Dd(ago(s.last_part_at, now)),
        ]),
        _diverted(diverted, now),
        dcc.Link("Open alarms", href=f"/alerts?line={s.line_id}", className="pq-btn pq-btn-wide"),
    ])


def _render(ctx, previous: str | None = None):
    """(tiles, signature); tiles is None when the signature equals ``previous``."""
    now = datetime.now(timezone.utc)
    statuses = line_statuses(ctx.store, now)
    if not statuses:
        return [html.P("No lines yet: the connector creates them when it first reads a line.")], "empty"
    # The signature leaves out the ages that tick every second; they are re-rendered once a minute.
    diverted = {s.line_id: recent_diverted(ctx.store, s.line_id, limit=3) for s in statuses}
    sig = hashlib.sha1(json.dumps(
        [[s.line_id, s.status, s.why, s.parts_last_hour, s.open_alerts, s.diverted_last_hour,
          [p.serial for p in diverted[s.line_id]], now.minute] for s in statuses]
    ).encode()).hexdigest()
    if sig == previous:
        return None, sig
    return [_tile(s, now, diverted[s.line_id]) for s in statuses], sig


def layout(ctx, query=None, **_):
    tiles, sig = _render(ctx)
    return html.Div(className="pq-page", children=[
        html.H1("Lines"),
        dcc.Interval(id="overview-interval", interval=int(ctx.settings.ui_refresh_s * 1000)),
        dcc.Store(id="overview-signature", data=sig),
        html.Div(tiles, id="overview-tiles", className="pq-tiles"),
    ])


def register(app, ctx):
    @secured_callback(app, "operator", Output("overview-tiles", "children"), Output("overview-signature", "data"),
                      Input("overview-interval", "n_intervals"), State("overview-signature", "data"),
                      prevent_initial_call=True)
    def refresh(_n, previous):
        tiles, sig = _render(ctx, previous)
        if sig == previous:
            return no_update, no_update
        return tiles, sig


PAGE = Page(path="/", title="Lines", role="operator", layout=layout, register=register)
