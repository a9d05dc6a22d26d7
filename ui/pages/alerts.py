"""Alert queue: what needs the operator now, most urgent first, with big Acknowledge and Shelve.

Each card says in one glance which part, what is wrong (one sentence), what to do and how long
ago. Acknowledged alerts stay until the operator says what they found (three big buttons), then
leave the queue. Shelving needs a reason and a duration. Every action runs on the server through
:mod:`pq.alerts.actions` (role checked, audited); the list refreshes live without losing the
operator's place (it is re-rendered only when its content changed).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from dash import ALL, Input, Output, State, ctx as dash_ctx, dcc, html, no_update

from pq.alerts import actions
from pq.alerts.roster import ROLE_WORDS
from pq.errors import AuthError
from ui.format import SEVERITY_WORDS, VERDICT_WORDS, ago, clock
from ui.pages import Page
from ui.queries import alerts as q
from ui.queries.lines import line_statuses
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]

SHELVE_REASONS = (
    "Sensor fault, repair requested",
    "Planned trial or recipe change",
    "Maintenance in progress",
    "Already handled with the shift lead",
    "Other (write below)",
)
SHELVE_DURATIONS = ((15 * 60, "15 min"), (3600, "1 hour"), (4 * 3600, "4 hours"), (8 * 3600, "8 hours"))


def _owner(a: dict, now: datetime) -> str:
    """"Assigned to ann · escalated to the shift lead (bob) 2 min ago" (owners: pq/edge/duty.py)."""
    words = [f"Assigned to {a['assigned_to']}"] if a.get("assigned_to") else []
    if a.get("escalation_level"):
        role = ROLE_WORDS.get(a.get("escalated_role"), a.get("escalated_role") or "next in line")
        who = f" ({a['escalated_to']})" if a.get("escalated_to") else " (nobody on duty)"
        words.append(f"escalated to the {role}{who} {ago(a.get('escalated_at'), now)}")
    text = " · ".join(words)
    return text[:1].upper() + text[1:]


def _card(a: dict, now: datetime):
    acked = a["acked_at"] is not None
    episode = a.get("kind") == "episode"  # an operator alarm for several parts with one cause
    expired_shelf = a["state"] == "shelved"
    head = [html.Span(SEVERITY_WORDS.get(a["severity"], a["severity"]), className=f"pq-sev pq-sev-{a['severity']}"),
            html.Span(f"{a['line_id']}" + (f" · {a['station']}" if a["station"] else ""), className="pq-card-where"),
            html.Span((f"Latest part {a['serial']}" if episode else f"Part {a['serial']}") if a["serial"] else "",
                      className="pq-card-part"),
            html.Span(ago(a["raised_at"], now), className="pq-card-age", title=clock(a["raised_at"]))]
    if a["repeat_count"] and a["repeat_count"] > 1:
        # an episode alarm opened with k parts at risk; its count goes up with each one after
        head.append(html.Span(f"{a['repeat_count'] - 1} more parts at risk since" if episode
                              else f"{a['repeat_count']} parts", className="pq-card-repeat"))
    buttons = []
    if not acked:
        buttons.append(html.Button("Acknowledge", id={"type": "alerts-ack", "index": a["id"]},
                                   className="pq-btn pq-btn-primary"))
    else:
        buttons += [html.Span(f"Acknowledged by {a['acked_by']} - what did you find?", className="pq-card-ask")]
        buttons += [html.Button(VERDICT_WORDS[v], id={"type": f"alerts-fb-{v}", "index": a["id"]},
                                className=f"pq-btn pq-btn-verdict pq-verdict-{v}") for v in actions.VERDICTS]
    buttons.append(html.Button("Shelve", id={"type": "alerts-shelve", "index": a["id"]}, className="pq-btn"))
    buttons.append(dcc.Link("Details", href=f"/alerts/{a['id']}", className="pq-btn pq-btn-quiet",
                            id={"type": "alerts-details", "index": a["id"]}))
    return html.Article(className=f"pq-card pq-card-{a['severity']}" + (" pq-card-acked" if acked else ""),
                        id={"type": "alerts-card", "index": a["id"]}, children=[
        html.Div(head, className="pq-card-head"),
        html.P(a["title"], className="pq-card-title"),
        html.P(["What to do: ", html.Strong(a["action"] or "Set the part aside and tell the shift lead.")],
               className="pq-card-action"),
        html.P("The parts at risk are already diverted for inspection." if episode else "", className="pq-card-note"),
        html.P("Shelf time is over: this alert is back." if expired_shelf else "", className="pq-card-note"),
        html.P(_owner(a, now), className="pq-card-owner", id={"type": "alerts-owner", "index": a["id"]}),
        html.Div(buttons, className="pq-card-buttons"),
    ])


def _render(ctx, line_id: str | None, previous: str | None = None):
    """(cards, shelved box, signature); cards and box are None when the signature equals ``previous``."""
    now = datetime.now(timezone.utc)
    items = q.queue(ctx.store, line_id=line_id or None, now=now)
    shelf = q.shelved(ctx.store, line_id=line_id or None, now=now)
    sig = hashlib.sha1(json.dumps(
        [[a["id"], a["state"], a["acked_at"] is not None, a["repeat_count"], a["assigned_to"], a["escalation_level"]]
         for a in items]
        + [[s["id"], str(s["shelved_until"])] for s in shelf] + [line_id, now.minute], default=str).encode()).hexdigest()
    if sig == previous:  # the usual tick: build nothing, send nothing
        return None, None, sig
    cards = [_card(a, now) for a in items] or [html.P("No alerts. The lines are running normally.",
                                                      className="pq-empty", id="alerts-empty")]
    shelf_rows = [html.Li(className="pq-shelf-row", children=[
        html.Span(s["title"]), html.Span(f" - until {s['shelved_until']:%H:%M} UTC: "),
        html.Span(s["shelve_reason"] or ""),
        html.Button("Unshelve", id={"type": "alerts-unshelve", "index": s["id"]}, className="pq-btn pq-btn-quiet"),
    ]) for s in shelf]
    shelved_box = html.Details([html.Summary(f"Shelved ({len(shelf)})"), html.Ul(shelf_rows)]) if shelf else None
    return cards, shelved_box, sig


def layout(ctx, query=None, **_):
    line = (query or {}).get("line")
    lines = [{"label": "All lines", "value": ""}] + [
        {"label": s.name, "value": s.line_id} for s in line_statuses(ctx.store)]
    cards, shelved_box, sig = _render(ctx, line)
    return html.Div(className="pq-page", children=[
        html.H1("Alerts"),
        html.Div(className="pq-toolbar", children=[
            html.Label("Line", htmlFor="alerts-line"),
            dcc.Dropdown(id="alerts-line", options=lines, value=line or "", clearable=False, searchable=False,
                         className="pq-dropdown"),
        ]),
        html.Div(id="alerts-message", className="pq-message", role="status", **{"aria-live": "polite"}),
        dcc.Interval(id="alerts-interval", interval=int(ctx.settings.ui_refresh_s * 1000)),
        dcc.Store(id="alerts-signature", data=sig),
        dcc.Store(id="alerts-changed", data=0),
        html.Div(cards, id="alerts-list", className="pq-cards"),
        html.Div(shelved_box, id="alerts-shelved"),
        html.Div(id="alerts-shelve-dialog", className="pq-dialog", hidden=True, children=[
            html.Div(className="pq-dialog-box", children=[
                html.H2("Shelve this alert"),
                html.P(id="alerts-shelve-title"),
                dcc.Store(id="alerts-shelve-target"),
                html.Label("Why?"),
                dcc.RadioItems(id="alerts-shelve-reason", options=list(SHELVE_REASONS), className="pq-radio"),
                dcc.Input(id="alerts-shelve-text", placeholder="Details (optional)", maxLength=actions.REASON_MAX_CHARS,
                          className="pq-input", debounce=False),
                html.Label("For how long?"),
                dcc.RadioItems(id="alerts-shelve-duration", value=3600,
                               options=[{"label": t, "value": s} for s, t in SHELVE_DURATIONS if
                                        s <= ctx.settings.ui_shelve_max_h * 3600], className="pq-radio pq-radio-row"),
                html.Div(className="pq-card-buttons", children=[
                    html.Button("Shelve", id="alerts-shelve-confirm", className="pq-btn pq-btn-primary"),
                    html.Button("Cancel", id="alerts-shelve-cancel", className="pq-btn pq-btn-quiet"),
                ]),
            ]),
        ]),
    ])


def _clicked(value) -> bool:
    # Re-rendered buttons fire with n_clicks None: only a real click counts.
    return bool(value)


def _run(fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except AuthError as exc:
        return html.Span(str(exc), className="pq-error")
    return html.Span(result.message.capitalize() + ".", className="pq-ok")


def _register_list(app, ctx):
    """The alert list and its live refresh."""

    @secured_callback(app, "operator", Output("alerts-list", "children"), Output("alerts-shelved", "children"),
                      Output("alerts-signature", "data"),
                      Input("alerts-interval", "n_intervals"), Input("alerts-line", "value"),
                      Input("alerts-changed", "data"), State("alerts-signature", "data"), prevent_initial_call=True)
    def refresh(_n, line, _changed, previous):
        cards, shelved_box, sig = _render(ctx, line, previous)
        if sig == previous:
            return no_update, no_update, no_update
        return cards, shelved_box, sig


def _register_acknowledge_and_feedback(app, ctx):
    """Acknowledge and one-tap feedback (confirmed defect / false alarm)."""

    @secured_callback(app, "operator", Output("alerts-message", "children", allow_duplicate=True),
                      Output("alerts-changed", "data", allow_duplicate=True),
                      Input({"type": "alerts-ack", "index": ALL}, "n_clicks"),
                      State("alerts-changed", "data"), prevent_initial_call=True)
    def acknowledge(clicks, changed):
        if not dash_ctx.triggered_id or not any(_clicked(c) for c in clicks):
            return no_update, no_update
        if not _clicked(dash_ctx.triggered[0]["value"]):
            return no_update, no_update
        msg = _run(actions.acknowledge, ctx.store, dash_ctx.triggered_id["index"], actor=current_actor())
        return msg, (changed or 0) + 1

    verdict_inputs = [Input({"type": f"alerts-fb-{v}", "index": ALL}, "n_clicks") for v in actions.VERDICTS]

    @secured_callback(app, "operator", Output("alerts-message", "children", allow_duplicate=True),
                      Output("alerts-changed", "data", allow_duplicate=True),
                      *verdict_inputs, State("alerts-changed", "data"), prevent_initial_call=True)
    def quick_feedback(*args):
        changed = args[-1]
        trig = dash_ctx.triggered_id
        if not trig or not _clicked(dash_ctx.triggered[0]["value"]):
            return no_update, no_update
        verdict = trig["type"].removeprefix("alerts-fb-")
        msg = _run(actions.give_feedback, ctx.store, trig["index"], actor=current_actor(), verdict=verdict)
        return msg, (changed or 0) + 1


def _register_shelving(app, ctx):
    """Shelve with a reason and an expiry, and unshelve."""

    @secured_callback(app, "operator", Output("alerts-shelve-dialog", "hidden", allow_duplicate=True),
                      Output("alerts-shelve-target", "data"), Output("alerts-shelve-title", "children"),
                      Output("alerts-shelve-reason", "value"), Output("alerts-shelve-text", "value"),
                      Input({"type": "alerts-shelve", "index": ALL}, "n_clicks"), prevent_initial_call=True)
    def open_shelve(clicks):
        trig = dash_ctx.triggered_id
        if not trig or not _clicked(dash_ctx.triggered[0]["value"]):
            return no_update, no_update, no_update, no_update, no_update
        alert = q.get_alert(ctx.store, trig["index"])
        if alert is None:
            return True, None, "", None, ""
        return False, alert["id"], alert["title"], None, ""

    @secured_callback(app, "operator", Output("alerts-shelve-dialog", "hidden", allow_duplicate=True),
                      Input("alerts-shelve-cancel", "n_clicks"), prevent_initial_call=True)
    def cancel_shelve(_n):
        return True

    @secured_callback(app, "operator", Output("alerts-message", "children", allow_duplicate=True),
                      Output("alerts-changed", "data", allow_duplicate=True),
                      Output("alerts-shelve-dialog", "hidden", allow_duplicate=True),
                      Input("alerts-shelve-confirm", "n_clicks"), State("alerts-shelve-target", "data"),
                      State("alerts-shelve-reason", "value"), State("alerts-shelve-text", "value"),
                      State("alerts-shelve-duration", "value"), State("alerts-changed", "data"),
                      prevent_initial_call=True)
    def confirm_shelve(n, alert_id, reason, text, duration_s, changed):
        if not _clicked(n) or not alert_id:
            return no_update, no_update, no_update
        if not reason:
            return html.Span("Choose why you shelve it.", className="pq-error"), no_update, False
        full = reason if not (text or "").strip() else f"{reason}: {text.strip()}"
        if reason.startswith("Other") and not (text or "").strip():
            return html.Span("Write why you shelve it.", className="pq-error"), no_update, False
        msg = _run(actions.shelve, ctx.store, alert_id, actor=current_actor(), reason=full, duration_s=duration_s)
        return msg, (changed or 0) + 1, True

    @secured_callback(app, "operator", Output("alerts-message", "children", allow_duplicate=True),
                      Output("alerts-changed", "data", allow_duplicate=True),
                      Input({"type": "alerts-unshelve", "index": ALL}, "n_clicks"),
                      State("alerts-changed", "data"), prevent_initial_call=True)
    def unshelve(clicks, changed):
        trig = dash_ctx.triggered_id
        if not trig or not _clicked(dash_ctx.triggered[0]["value"]):
            return no_update, no_update
        msg = _run(actions.unshelve, ctx.store, trig["index"], actor=current_actor())
        return msg, (changed or 0) + 1

def register(app, ctx):
    _register_list(app, ctx)
    _register_acknowledge_and_feedback(app, ctx)
    _register_shelving(app, ctx)


PAGE = Page(path="/alerts", title="Alerts", role="operator", layout=layout, register=register)
