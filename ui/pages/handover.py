"""Shift handover (operators): per line and shift, what happened and what the next shift must watch.

One page that can be printed (the Print button; navigation is left off the paper) and that takes the
outgoing operator's notes. The counts come from :func:`pq.monitoring.handover.handover_summary`, the
same function ``pq handover send`` uses, so the page, the paper and the message agree.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dash import Input, Output, State, dcc, html, no_update

from pq.errors import AuthError
from pq.monitoring.handover import NOTE_MAX_CHARS, HandoverSummary, add_note, handover_summary
from pq.shifts import Shift, ShiftClock
from pq.storage.catalog import line_ids
from ui.pages import Page
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]

_SHIFTS_OFFERED = 6


def _lines(ctx) -> list[str]:
    return line_ids(ctx.store)


def _shifts(ctx, now: datetime) -> list[Shift]:
    return ShiftClock.from_settings(ctx.settings).recent(now, _SHIFTS_OFFERED)


def _hm(t: datetime) -> str:
    return f"{t:%H:%M}"


def _shift_label(s: Shift, i: int) -> str:
    when = f"{s.start:%a %d %b %H:%M}–{s.end:%H:%M} UTC"
    return f"Shift {s.name}, {when}" + (" (running)" if i == 0 else " (just ended)" if i == 1 else "")


def _find_shift(ctx, key: str | None) -> Shift:
    shifts = _shifts(ctx, datetime.now(timezone.utc))
    return next((s for s in shifts if s.key == key), shifts[1])


def _count(label: str, value: int, id_: str, bad: bool = False):
    return html.Div(className="pq-count" + (" pq-bad" if bad and value else ""), children=[
        html.Div(str(value), className="pq-count-value", id=id_), html.Div(label, className="pq-count-label")])


def _summary_view(s: HandoverSummary):
    a, p, dv = s.alarms, s.parts, s.diverted
    degraded = [html.Li(f"{_hm(d['started_at'])}–{_hm(d['ended_at']) if d['ended_at'] else 'now'} UTC "
                        f"({d['source']}): {d['reason'] or d['kind'].replace('_', ' ')}") for d in s.degraded]
    return html.Div(children=[
        html.P(s.headline, className="pq-lead", id="handover-headline"),
        html.H2("Alarms"),
        html.Div(className="pq-counts", children=[
            _count("raised", a["raised"], "handover-raised"),
            _count("acknowledged", a["acknowledged"], "handover-acknowledged"),
            _count("escalated", a["escalated"], "handover-escalated", bad=True),
            _count("shelved", a["shelved"], "handover-shelved"),
            _count("still open", a["still_open"], "handover-open", bad=True),
            _count("held back in a flood", a["held_in_flood"], "handover-held"),
        ]),
        html.H2("Parts"),
        html.Div(className="pq-counts", children=[
            _count("made", p["made"], "handover-made"),
            _count("diverted for inspection", p["diverted"], "handover-diverted"),
            _count("found defective", dv["defect"], "handover-defect"),
            _count("found good", dv["ok"], "handover-good"),
            _count("waiting for inspection", dv["waiting"], "handover-waiting", bad=True),
            _count("not scored", p["not_scored"], "handover-not-scored"),
        ]),
        html.H2("Watch next shift"),
        html.Ul([html.Li(w) for w in s.watch], id="handover-watch") if s.watch else
        html.P("Nothing open: no alarm, no waiting part, pq ran normally.", id="handover-watch"),
        html.H2("When pq itself was degraded"),
        html.Ul(degraded) if degraded else html.P("Never during this shift."),
        html.H2("Notes for the next shift"),
        html.Ul([html.Li(f"{n['author']} at {_hm(n['created_at'])}: {n['note']}") for n in s.notes],
                id="handover-notes") if s.notes else html.P("No notes yet.", id="handover-notes"),
    ])


def _render(ctx, line_id: str | None, key: str | None):
    if not line_id:
        return html.P("No lines yet: the connector creates them when it first reads a line.")
    return _summary_view(handover_summary(ctx.store, line_id, _find_shift(ctx, key)))


def layout(ctx, query=None, **_):
    now = datetime.now(timezone.utc)
    lines = _lines(ctx)
    wanted = (query or {}).get("line")
    line = wanted if wanted in lines else (lines[0] if lines else None)
    shifts = _shifts(ctx, now)
    key = next((s.key for s in shifts if s.key == (query or {}).get("shift")), shifts[1].key)  # ?shift=<key>
    return html.Div(className="pq-page", children=[
        html.H1("Shift handover"),
        html.Div(className="pq-toolbar pq-noprint", children=[
            html.Label("Line"),
            dcc.Dropdown(id="handover-line", options=lines, value=line, clearable=False, className="pq-dropdown"),
            html.Label("Shift"),
            dcc.Dropdown(id="handover-shift", options=[{"label": _shift_label(s, i), "value": s.key}
                                                       for i, s in enumerate(shifts)],
                         value=key, clearable=False, className="pq-dropdown pq-dropdown-wide"),
            html.Button("Print", id="handover-print", className="pq-btn"),
            html.Span(id="handover-print-done", hidden=True),
        ]),
        html.Div(_render(ctx, line, key), id="handover-summary"),
        html.Section(className="pq-section pq-noprint", children=[
            html.H2("Add a note for the next shift"),
            dcc.Textarea(id="handover-note", maxLength=NOTE_MAX_CHARS, className="pq-textarea",
                         placeholder="What the next shift should know: a sensor being replaced, a lot to watch ..."),
            html.Button("Add note", id="handover-add-note", className="pq-btn pq-btn-primary"),
            html.Div(id="handover-message"),
        ]),
    ])


def register(app, ctx):
    @secured_callback(app, "operator", Output("handover-summary", "children"),
                      Input("handover-line", "value"), Input("handover-shift", "value"), prevent_initial_call=True)
    def choose(line_id, key):
        return _render(ctx, line_id, key)

    @secured_callback(app, "operator", Output("handover-message", "children"),
                      Output("handover-summary", "children", allow_duplicate=True), Output("handover-note", "value"),
                      Input("handover-add-note", "n_clicks"), State("handover-line", "value"),
                      State("handover-shift", "value"), State("handover-note", "value"), prevent_initial_call=True)
    def note(n, line_id, key, text):
        if not n:
            return no_update, no_update, no_update
        if not line_id:
            return html.Span("Choose a line first.", className="pq-error"), no_update, no_update
        try:
            add_note(ctx.store, line_id, _find_shift(ctx, key), actor=current_actor(), note=text)
        except AuthError as exc:
            return html.Span(str(exc), className="pq-error"), no_update, no_update
        return html.Span("Note added.", className="pq-ok"), _render(ctx, line_id, key), ""

    # Printing happens in the browser; nothing is sent to the server.
    app.clientside_callback("function(n) { if (n) { window.print(); } return ''; }",
                            Output("handover-print-done", "children"), Input("handover-print", "n_clicks"),
                            prevent_initial_call=True)


PAGE = Page(path="/handover", title="Handover", role="operator", layout=layout, register=register)
