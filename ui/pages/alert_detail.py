"""Alert detail: why the part is at risk, the trend of those signals, the part's context, similar
past alerts and how they ended, and the operator's feedback (a label for retraining).

The "normal range" shown is the one the edge computed for today's conditions (stored in the alert's
explanation), not a fixed limit from the drawing.
"""

from __future__ import annotations

from datetime import datetime, timezone

import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html, no_update
from plotly.subplots import make_subplots

from pq.alerts import actions
from pq.alerts.explain import fmt_range, fmt_reading
from pq.errors import AuthError
from ui.format import SEVERITY_WORDS, VERDICT_WORDS, ago, clock, number
from ui.pages import Page
from ui.queries import alerts as q
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]

_CONTEXT_WORDS = (("ambient_temp_c", "Hall temperature", "°C"), ("humidity_pct", "Humidity", "%"),
                  ("supplier", "Material supplier", ""), ("tool_wear_pct", "Tool wear", "%"))
_STATE_WORDS = {"active": "Waiting for acknowledgement", "acknowledged": "Acknowledged", "cleared": "Cleared",
                "shelved": "Shelved", "suppressed": "Suppressed (alarm flood)"}


def _reading(e: dict):
    """The explained signal's value, normal range and gap, one precision for all (as in the title)."""
    return fmt_reading(e.get("value"), e.get("normal_lo"), e.get("normal_hi"))


def _gap_words(e: dict) -> str:
    r, unit = _reading(e), e.get("unit") or ""
    if r.side is not None:
        return f"{r.gap} {unit} {r.side} normal".replace("  ", " ")
    if e.get("value") is None or e.get("normal_lo") is None or e.get("normal_hi") is None:
        return "outside its usual pattern"
    return "within its normal range, but unusual together with the others"


def _why_table(expl: list[dict]):
    rows = [html.Tr([html.Th("Signal"), html.Th("This part"), html.Th("Normal today"), html.Th("")])]
    for e in expl:
        r, unit = _reading(e), e.get("unit") or ""
        rows.append(html.Tr([
            html.Td(e.get("label") or e.get("signal")),
            html.Td("-" if e.get("value") is None else f"{r.value} {unit}".strip()),
            html.Td(fmt_range(r, unit) or "-"),
            html.Td(_gap_words(e), className="pq-gap"),
        ]))
    return html.Table(rows, className="pq-table pq-why", id="detail-why")


def _trend_figure(ctx, alert: dict, expl: list[dict], part: dict | None):
    """The explained signals over the previous parts of the line, the normal band for today's
    conditions shaded, and this part marked (x = parts before this one, 0 = this part)."""
    shown = [e for e in expl[:3] if e.get("signal")]
    if not shown:
        return None
    # Anchor on the part itself: its cycle_end is on the line's clock, raised_at on the edge's.
    until = (part or {}).get("cycle_end") or alert["raised_at"]
    trend = q.signal_trend(ctx.store, alert["line_id"], [e["signal"] for e in shown], until=until)
    serials = trend["serial"]
    if not serials:
        return None
    n = len(serials)
    flagged = alert["serial"] in serials
    k = serials.index(alert["serial"]) if flagged else n  # not stored: this part comes after the last shown
    x = [i - k for i in range(n)]
    mark_x = 0
    band_x = [min(x[0], mark_x) - 0.5, max(x[-1], mark_x) + 0.5]
    titles = []
    for e in shown:
        title = f"{e.get('label') or e['signal']} ({e.get('unit') or ''})"
        if all(v is None for v in trend[e["signal"]]):
            title += " - no stored values for the parts before"
        titles.append(title)
    fig = make_subplots(rows=len(shown), cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=titles)
    for i, e in enumerate(shown, start=1):
        values = trend[e["signal"]]
        lo, hi = e.get("normal_lo"), e.get("normal_hi")
        if lo is not None and hi is not None:  # the normal band for today's conditions, shaded
            fig.add_trace(go.Scatter(x=band_x, y=[lo, lo], mode="lines", line={"width": 0},
                                     hoverinfo="skip", showlegend=False), row=i, col=1)
            fig.add_trace(go.Scatter(x=band_x, y=[hi, hi], mode="lines", line={"width": 0}, fill="tonexty",
                                     fillcolor="rgba(46,125,50,0.22)", name="normal today", hoverinfo="skip",
                                     showlegend=False), row=i, col=1)
        fig.add_trace(go.Scatter(x=x, y=values, mode="lines+markers", name=e.get("label") or e["signal"],
                                 text=serials, hovertemplate="part %{text}<br>%{y}<extra></extra>",
                                 line={"color": "#1f4e79", "width": 3}), row=i, col=1)
        y = values[k] if flagged and values[k] is not None else e.get("value")  # else the explanation's value
        fig.add_trace(go.Scatter(x=[mark_x], y=[y], mode="markers", name="this part",
                                 marker={"color": "#c62828", "size": 18, "symbol": "x"}, showlegend=(i == 1)),
                      row=i, col=1)
    fig.update_layout(height=220 * len(shown) + 60, margin={"l": 60, "r": 20, "t": 40, "b": 40},
                      font={"size": 16}, showlegend=False, plot_bgcolor="white")
    fig.update_xaxes(title_text="parts before this one", row=len(shown), col=1)
    return fig


def _context_box(alert: dict, part: dict | None):
    ctx_json = (part or {}).get("context") or {}
    items = [("Product", alert.get("product") or (part or {}).get("product")),
             ("Material lot", alert.get("material_lot") or (part or {}).get("material_lot")),
             ("Shift", alert.get("shift") or (part or {}).get("shift")),
             ("Made at", clock((part or {}).get("cycle_end")))]
    for key, label, unit in _CONTEXT_WORDS:
        if key in ctx_json:
            items.append((label, number(ctx_json[key], unit) if unit else str(ctx_json[key])))
    return html.Dl([c for k, v in items for c in (html.Dt(k), html.Dd(v if v not in (None, "") else "-"))],
                   className="pq-facts", id="detail-context")


def _similar_box(rows: list[dict]):
    if not rows:
        return html.P("No earlier alert of this kind on this line in the last 90 days.")
    body = [html.Tr([html.Th("When"), html.Th("Part"), html.Th("What was found"), html.Th("Comment")])]
    for r in rows:
        found = VERDICT_WORDS.get(r["feedback"], "No feedback") if r["feedback"] else (
            f"Acknowledged by {r['acked_by']}" if r["acked_by"] else "Not acknowledged")
        body.append(html.Tr([html.Td(clock(r["raised_at"])), html.Td(r["serial"] or "-"), html.Td(found),
                             html.Td(r["feedback_comment"] or "")]))  # user text: rendered as text
    return html.Table(body, className="pq-table", id="detail-similar")


def _feedback_status(alert: dict):
    if not alert.get("feedback"):
        return "No feedback yet."
    text = f"{VERDICT_WORDS[alert['feedback']]} - by {alert['feedback_by']}, {ago(alert['feedback_at'])}"
    return [text] + ([html.Br(), html.Q(alert["feedback_comment"])] if alert.get("feedback_comment") else [])


def layout(ctx, alert_id: str = "", query=None, **_):
    alert = q.get_alert(ctx.store, alert_id)
    if alert is None:
        return html.Div(className="pq-page", children=[html.H1("Alert not found"),
                                                        dcc.Link("Back to alerts", href="/alerts", className="pq-btn")])
    now = datetime.now(timezone.utc)
    expl = [e for e in (alert.get("explanation") or []) if isinstance(e, dict)]
    part = q.part_context(ctx.store, alert["line_id"], alert["serial"])
    fig = _trend_figure(ctx, alert, expl, part)
    return html.Div(className="pq-page pq-detail", children=[
        dcc.Store(id="detail-alert-id", data=alert["id"]),
        dcc.Link("< Back to alerts", href="/alerts", className="pq-btn pq-btn-quiet"),
        html.Div(className="pq-card-head", children=[
            html.Span(SEVERITY_WORDS.get(alert["severity"], alert["severity"]),
                      className=f"pq-sev pq-sev-{alert['severity']}"),
            html.Span(f"{alert['line_id']}" + (f" · {alert['station']}" if alert["station"] else "")),
            html.Span(f"Part {alert['serial']}" if alert["serial"] else ""),
            html.Span(ago(alert["raised_at"], now), title=clock(alert["raised_at"])),
            html.Span(_STATE_WORDS.get(alert["state"], alert["state"]), id="detail-state", className="pq-state"),
        ]),
        html.H1(alert["title"], id="detail-title"),
        html.Div(className="pq-action-box", children=[html.H2("What to do"), html.P(alert["action"] or "-")]),
        html.Div(className="pq-card-buttons", children=[
            html.Button("Acknowledge", id="detail-ack", className="pq-btn pq-btn-primary",
                        disabled=alert["acked_at"] is not None),
        ]),
        html.Div(id="detail-message", className="pq-message", role="status"),
        html.Section(className="pq-section", children=[html.H2("Why this part"), _why_table(expl) if expl
                                                       else html.P("No explanation was stored with this alert.")]),
        html.Section(className="pq-section", children=[
            html.H2("Trend over the last parts"),
            dcc.Graph(id="detail-trend", figure=fig, config={"displayModeBar": False}) if fig
            else html.P("No stored signal values for the parts before this one."),
        ]),
        html.Section(className="pq-section", children=[html.H2("This part"), _context_box(alert, part)]),
        html.Section(className="pq-section", id="detail-feedback-section", children=[
            html.H2("What did you find?"),
            html.P(_feedback_status(alert), id="detail-feedback-status"),
            dcc.RadioItems(id="detail-verdict", value=alert.get("feedback"), className="pq-radio pq-radio-row pq-verdicts",
                           options=[{"label": VERDICT_WORDS[v], "value": v} for v in actions.VERDICTS]),
            dcc.Textarea(id="detail-comment", value=alert.get("feedback_comment") or "", maxLength=actions.COMMENT_MAX_CHARS,
                         placeholder="Comment (optional): what you saw on the part", className="pq-textarea"),
            html.Button("Save feedback", id="detail-save-feedback", className="pq-btn pq-btn-primary"),
        ]),
        html.Section(className="pq-section", children=[html.H2("Similar alerts before"),
                                                       _similar_box(q.similar(ctx.store, alert))]),
        html.Section(className="pq-section", children=[html.H2("History"), html.Ul([
            html.Li(f"{clock(e['at'])}: {e['event']} by {e['username'] or '-'}") for e in q.events(ctx.store, alert["id"])
        ], id="detail-history")]),
    ])


def register(app, ctx):
    @secured_callback(app, "operator", Output("detail-message", "children", allow_duplicate=True),
                      Output("detail-state", "children", allow_duplicate=True), Output("detail-ack", "disabled"),
                      Input("detail-ack", "n_clicks"), State("detail-alert-id", "data"), prevent_initial_call=True)
    def acknowledge(n, alert_id):
        if not n:
            return no_update, no_update, no_update
        try:
            res = actions.acknowledge(ctx.store, alert_id, actor=current_actor())
        except AuthError as exc:
            return html.Span(str(exc), className="pq-error"), no_update, no_update
        return html.Span(res.message.capitalize() + ".", className="pq-ok"), _STATE_WORDS.get(res.state, res.state), True

    @secured_callback(app, "operator", Output("detail-message", "children", allow_duplicate=True),
                      Output("detail-state", "children", allow_duplicate=True),
                      Output("detail-feedback-status", "children"),
                      Input("detail-save-feedback", "n_clicks"), State("detail-alert-id", "data"),
                      State("detail-verdict", "value"), State("detail-comment", "value"), prevent_initial_call=True)
    def save_feedback(n, alert_id, verdict, comment):
        if not n:
            return no_update, no_update, no_update
        if not verdict:
            return html.Span("Choose what you found first.", className="pq-error"), no_update, no_update
        try:
            res = actions.give_feedback(ctx.store, alert_id, actor=current_actor(), verdict=verdict, comment=comment)
        except AuthError as exc:
            return html.Span(str(exc), className="pq-error"), no_update, no_update
        alert = q.get_alert(ctx.store, alert_id)
        return (html.Span(res.message.capitalize() + ".", className="pq-ok"),
                _STATE_WORDS.get(res.state, res.state), _feedback_status(alert))


PAGE = Page(path="/alerts/<alert_id>", title="Alert", role="operator", layout=layout, register=register, nav=False)
