"""Shadow (engineers): put a model version in shadow beside production on a line, stop it, and compare
what the two decided on live parts (or on a replay of stored parts), per condition.

The edge scores every part with production and the challenger from the same served vector and acts
only on production's decision. Starting and stopping are checked server-side (engineer role, in the
callback and again by models.registry against the users table) and audited. The comparison is
models.shadow's, the same as ``pq models compare --live`` / ``--replay``. Linked from the Models page.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone

from dash import Input, Output, State, dcc, html, no_update

from pq.errors import PQError
from ui.format import clock, number
from ui.pages import Page
from ui.queries.lines import line_statuses
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]


def _registry():
    from models import registry

    return registry


def _running_box(ctx):
    try:
        running = _registry().shadows(ctx.store)
    except PQError as exc:
        return html.P(f"The model registry is not available: {exc}", className="pq-error")
    if not running:
        return html.P("No version runs in shadow.")
    rows = [html.Tr([html.Th("Line / product"), html.Th("Version in shadow"), html.Th("Since"), html.Th("By"),
                     html.Th("Why")])]
    for scope, sh in sorted(running.items()):
        rows.append(html.Tr([html.Td(scope), html.Td(f"#{sh.model_version_id}"), html.Td(clock(sh.since)),
                             html.Td(sh.by), html.Td(sh.reason)]))
    return html.Table(rows, className="pq-table", id="shadow-running-table")


def _version_options(ctx):
    try:
        return [{"label": f"{v.label} [{v.feature_set_version}]", "value": v.id}
                for v in _registry().list_versions(ctx.store)]
    except PQError:
        return []


def _line_options(ctx):
    try:
        return [{"label": s.name, "value": s.line_id} for s in line_statuses(ctx.store)]
    except PQError:
        return []


def layout(ctx, query=None, **_):
    versions, lines = _version_options(ctx), _line_options(ctx)
    return html.Div(className="pq-page", children=[
        html.H1("Shadow: challenger beside production"),
        dcc.Link("< Back to models", href="/models", className="pq-btn pq-btn-quiet"),
        html.P("A version in shadow scores every part of the line from the same readings as production. "
               "Only production's decision acts on the line; the page below shows how the two would have decided."),
        html.Section(className="pq-section", children=[
            html.H2("Running in shadow"), html.Div(_running_box(ctx), id="shadow-running")]),
        html.Section(className="pq-section", children=[
            html.H2("Put a version in shadow, or stop it"),
            html.Div(className="pq-toolbar", children=[
                html.Label("Version", htmlFor="shadow-version"),
                dcc.Dropdown(id="shadow-version", options=versions, className="pq-dropdown"),
                html.Label("Line", htmlFor="shadow-line"),
                dcc.Dropdown(id="shadow-line", options=lines, value=lines[0]["value"] if lines else None,
                             className="pq-dropdown"),
            ]),
            dcc.Textarea(id="shadow-reason", placeholder="Reason (required): what the challenger should show",
                         className="pq-textarea", maxLength=1000),
            html.Button("Put in shadow", id="shadow-start", className="pq-btn pq-btn-primary"),
            html.Button("Stop shadow on this line", id="shadow-stop", className="pq-btn"),
            html.Div(id="shadow-message", className="pq-message"),
        ]),
        html.Section(className="pq-section", children=[
            html.H2("Compare"),
            html.Div(className="pq-toolbar", children=[
                html.Label("Candidate", htmlFor="shadow-candidate"),
                dcc.Dropdown(id="shadow-candidate", options=versions, className="pq-dropdown"),
                html.Label("Line", htmlFor="shadow-compare-line"),
                dcc.Dropdown(id="shadow-compare-line", options=lines, className="pq-dropdown"),
                dcc.RadioItems(id="shadow-mode", value="live", className="pq-radio", options=[
                    {"label": " live parts (shadow)", "value": "live"},
                    {"label": " replay stored parts", "value": "replay"}]),
                html.Label("Parts from / to"),
                dcc.DatePickerRange(id="shadow-window", display_format="YYYY-MM-DD"),
                html.Button("Compare", id="shadow-compare", className="pq-btn"),
            ]),
            dcc.Loading(html.Div(id="shadow-result")),
        ]),
    ])


def _span(hours: float) -> str:
    minutes = hours * 60
    return f"{hours:.1f} h" if hours >= 2 else f"{minutes:.0f} min" if minutes >= 2 else f"{minutes * 60:.0f} s"


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def _result_view(res: dict):
    o = res["overall"]
    if not o["parts"]:
        return html.P("No parts to compare yet: the candidate has not scored any part in shadow"
                      if res["mode"] == "live" else "No stored parts decided by production in that window.")
    head = html.Tr([html.Th("Condition"), html.Th("Band"), html.Th("Parts"), html.Th("Same decision"),
                    html.Th("Operator alarms / h (production / candidate)"),
                    html.Th("Parts diverted (production / candidate)"),
                    html.Th("False alarm rate (production / candidate)"), html.Th("Recall (production / candidate)")])
    rows = [head]
    for r in [{"regime": "All parts", "band": "", **o}] + res["bands"]:
        p, c = r["production"], r["challenger"]
        rows.append(html.Tr([html.Td(r["regime"]), html.Td(str(r["band"])), html.Td(r["parts"]),
                             html.Td(_pct(r["agreement"])),
                             html.Td(f"{number(p['alarms_per_h'])} / {number(c['alarms_per_h'])}"),
                             html.Td(f"{_pct(p['diverted_share'])} / {_pct(c['diverted_share'])}"),
                             html.Td(f"{_pct(p['far'])} / {_pct(c['far'])}"),
                             html.Td(f"{_pct(p['recall'])} / {_pct(c['recall'])}")]))
    words = "on live parts in shadow" if res["mode"] == "live" else "replayed on stored parts"
    return html.Div(id="shadow-result-table", children=[
        html.P(f"Candidate #{res['candidate']} against production {', '.join(f'#{v}' for v in res['versions']['production'])} "
               f"{words}: {o['parts']} parts over {_span(o['hours'])}, {o['labelled']} with a label "
               f"({o['defects']} defects). False alarm rate and recall count diverted parts among labelled ones."),
        html.Table(rows, className="pq-table")])


def _day(value: str | None, end: bool = False) -> datetime | None:
    if not value:
        return None
    return datetime.combine(date.fromisoformat(value), time.max if end else time.min, timezone.utc)


def register(app, ctx):
    @secured_callback(app, "engineer", Output("shadow-message", "children"), Output("shadow-running", "children"),
                      Input("shadow-start", "n_clicks"), Input("shadow-stop", "n_clicks"),
                      State("shadow-version", "value"), State("shadow-line", "value"), State("shadow-reason", "value"),
                      prevent_initial_call=True)
    def start_stop(n_start, n_stop, version_id, line_id, reason):
        from dash import ctx as dash_ctx

        stopping = dash_ctx.triggered_id == "shadow-stop"
        if not (n_stop if stopping else n_start):
            return no_update, no_update
        if not line_id:
            return html.Span("Choose the line.", className="pq-error"), no_update
        reason = (reason or "").strip()
        if len(reason) < 5:
            return html.Span("A reason is required (at least a few words).", className="pq-error"), no_update
        actor = current_actor()
        reg = _registry()
        try:
            if stopping:
                sh = reg.stop_shadow(ctx.store, line_id=line_id, by=actor.username, reason=reason,
                                     client=actor.client, require_known_user=True)
                msg = f"Shadow of version #{sh.model_version_id} on {sh.scope} stopped."
            else:
                if not version_id:
                    return html.Span("Choose the version to put in shadow.", className="pq-error"), no_update
                sh = reg.start_shadow(ctx.store, int(version_id), line_id=line_id, by=actor.username, reason=reason,
                                      client=actor.client, require_known_user=True)
                msg = (f"Version #{sh.model_version_id} runs in shadow on {sh.scope}; the edge picks it up at "
                       "its next model check.")
        except PQError as exc:
            return html.Span(str(exc), className="pq-error"), no_update
        return html.Span(msg, className="pq-ok"), _running_box(ctx)

    @secured_callback(app, "engineer", Output("shadow-result", "children"), Input("shadow-compare", "n_clicks"),
                      State("shadow-candidate", "value"), State("shadow-compare-line", "value"),
                      State("shadow-mode", "value"), State("shadow-window", "start_date"),
                      State("shadow-window", "end_date"), prevent_initial_call=True)
    def compare(n, candidate, line_id, mode, start, end):
        from models.shadow import compare_live, compare_replay

        if not n:
            return no_update
        if not candidate:
            return html.P("Choose a candidate version.", className="pq-error")
        try:
            since, until = _day(start), _day(end, end=True)
            if mode == "replay":
                if not line_id:
                    return html.P("A replay needs a line.", className="pq-error")
                res = compare_replay(ctx.store, int(candidate), line_id=line_id, since=since, until=until,
                                     two=ctx.settings.edge_decisions == "two")
            else:
                res = compare_live(ctx.store, int(candidate), line_id=line_id or None, since=since, until=until)
        except (PQError, ValueError) as exc:
            return html.P(str(exc), className="pq-error")
        return _result_view(res)


PAGE = Page(path="/models/shadow", title="Shadow", role="engineer", layout=layout, register=register, nav=False)
