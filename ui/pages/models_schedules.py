"""The Models page's "Scheduled retraining" section: schedules (triggers, next due, last run and its
result) and the proposals they made, with Approve / Reject for engineers.

A part of ui/pages/models.py (which includes :func:`section` in its layout and calls
:func:`register`), kept apart so the page's other sections change independently. Approve calls
:func:`models.proposals.approve` (the registry's gate runs again; the audit record names the
signed-in engineer and the reason); Reject closes the proposal. Both are engineer callbacks
(refused on the server to anyone else) and need a reason.
"""

from __future__ import annotations

from dash import Input, Output, State, ctx as dash_ctx, dcc, html, no_update

from pq.errors import PQError
from ui.format import ago, clock, number
from ui.security import current_actor, secured_callback

__all__ = ["section", "register"]

_FIGURES = (("far", "False alarm rate"), ("recall", "Recall"), ("alerts_per_h", "Alerts per hour"))
_DECISIONS = (("diverted_share", "Parts diverted"), ("recall", "Defects among diverted"),
              ("alarms_per_h", "Operator alarms / h"))
_STATUS_CLASS = {"proposed": "pq-good", "failed": "pq-bad", "approved": "pq-good", "rejected": ""}


def _schedules_table(store):
    from models.scheduler import list_schedules

    rows = list_schedules(store)
    if not rows:
        return html.P("No training schedules. An engineer adds one with: pq models schedule add SCOPE --approver NAME")
    head = html.Tr([html.Th(h) for h in ("Schedule", "Serves", "Runs on", "Training window", "Approver", "Next due",
                                         "Last run", "Result")])
    return html.Table([head] + [html.Tr([
        html.Td(f"#{s.id}" + ("" if s.enabled else " (off)")), html.Td(s.scope), html.Td(s.triggers()),
        html.Td(f"last {s.window_days:g} days"), html.Td(s.approver), html.Td(clock(s.next_due_at)),
        html.Td(ago(s.last_run_at)), html.Td(s.last_result or "-")]) for s in rows],
        className="pq-table", id="models-schedules-table")


def _same_window(report: dict):
    sw = report.get("same_window") or {}
    cand, prod = sw.get("candidate") or {}, sw.get("production") or {}
    if not cand:
        return html.P(report.get("verdict") or report.get("error") or "No report.")
    rows = [html.Tr([html.Th(f"On the same {sw.get('parts')} labelled parts ({sw.get('defects')} defects)"),
                     html.Th("Candidate (out-of-fold)"), html.Th("Production")])]
    for block, names in (("overall", _FIGURES), ("decisions", _DECISIONS)):
        for key, label in names:
            rows.append(html.Tr([html.Td(label), html.Td(number((cand.get(block) or {}).get(key))),
                                 html.Td(number((prod.get(block) or {}).get(key)))]))
    notes = []
    if prod.get("error"):
        notes.append(html.P(prod["error"], className="pq-error"))
    if prod.get("trained_on_share_of_window"):
        notes.append(html.P(f"Production was trained on {prod['trained_on_share_of_window'] * 100:.0f} % of these parts: "
                            "its figures here are flattered; the verdict uses each model's validation folds.",
                            className="pq-card-note"))
    return html.Div([html.P(report.get("verdict") or ""), html.Table(rows, className="pq-table"), *notes])


def _proposals_box(store):
    from models.proposals import list_proposals

    rows = list_proposals(store, limit=20)
    if not rows:
        return html.P("No proposals yet: a schedule's run proposes a candidate here.")
    head = html.Tr([html.Th(h) for h in ("Proposal", "Serves", "When", "Why it ran", "Candidate", "Production",
                                         "Status", "Shadow", "Decided")])
    table, details = [head], []
    for p in rows:
        table.append(html.Tr(id=f"models-proposal-row-{p.id}", children=[
            html.Td(f"#{p.id}"), html.Td(p.scope), html.Td(clock(p.created_at)), html.Td(p.trigger),
            html.Td(f"#{p.candidate_version_id}" if p.candidate_version_id else "none"),
            html.Td(f"#{p.production_version_id}" if p.production_version_id else "none"),
            html.Td("waits for approval" if p.status == "proposed" else p.status,
                    className=_STATUS_CLASS.get(p.status, "")),
            html.Td(p.shadow or "-"),
            html.Td(f"{p.decided_by}: {p.reason}" if p.decided_by else "-")]))
        details.append(html.Details([html.Summary(f"Proposal #{p.id}: report"), _same_window(p.report or {})],
                                    open=p.status == "proposed"))
    return html.Div([html.Table(table, className="pq-table", id="models-proposals-table"), *details])


def _open_options(store) -> list[dict]:
    from models.proposals import open_proposals

    return [{"label": f"#{p.id} {p.scope}: candidate #{p.candidate_version_id}", "value": p.id}
            for p in open_proposals(store)]


def _scheduler_status(store):
    """Whether the scheduler process runs: schedules only run while it does."""
    from models.scheduler import HEALTH_COMPONENT
    from pq.health import read_health

    row = next((r for r in read_health(store, HEALTH_COMPONENT) if r["component"] == HEALTH_COMPONENT), None)
    if row is None:
        return html.P("The scheduler process has not reported yet: schedules run only while "
                      "\"pq models scheduler\" runs (the scheduler service in docker compose).",
                      className="pq-error", id="models-scheduler-status")
    detail = row.get("detail") or {}
    # a training may take long between two reports; between polls the row is rewritten every poll_s
    stale = row["state"] in ("idle", "running") and row["age_s"] > 3 * float(detail.get("poll_s") or 60) + 60
    words = (f"Scheduler {row['state']}, last seen {ago(row['updated_at'])}: {detail.get('message', '')}"
             + (" - not heard from for a while: is it running?" if stale else ""))
    return html.P(words, className="pq-error" if stale or row["state"] == "stopped" else "pq-card-note",
                  id="models-scheduler-status")


def _lists(store):
    try:
        return (html.Div([_scheduler_status(store), _schedules_table(store), html.H3("Proposals"), _proposals_box(store)]),
                _open_options(store))
    except (ImportError, PQError) as exc:
        return html.P(f"Scheduled retraining is not available: {exc}", className="pq-error"), []


def section(ctx):
    box, options = _lists(ctx.store)
    return html.Section(className="pq-section", children=[
        html.H2("Scheduled retraining"),
        html.P("Schedules train a candidate on the latest data and propose it; an engineer approves it (promotion "
               "through the same checks, with a reason) or rejects it.", className="pq-card-note"),
        dcc.Interval(id="models-schedules-interval", interval=15_000),
        html.Div(box, id="models-schedules"),
        html.Div(className="pq-toolbar", children=[
            html.Label("Open proposal"),
            dcc.Dropdown(id="models-proposal", options=options, className="pq-dropdown"),
        ]),
        dcc.Textarea(id="models-proposal-reason", className="pq-textarea", maxLength=1000,
                     placeholder="Reason (required): what was checked, why approve or reject"),
        html.Button("Approve", id="models-proposal-approve", className="pq-btn pq-btn-primary"),
        html.Button("Reject", id="models-proposal-reject", className="pq-btn pq-btn-danger"),
        html.Div(id="models-proposal-message", className="pq-message"),
    ])


def register(app, ctx):
    @secured_callback(app, "engineer", Output("models-schedules", "children"), Output("models-proposal", "options"),
                      Input("models-schedules-interval", "n_intervals"), Input("models-changed", "data"),
                      prevent_initial_call=True)
    def refresh(_n, _changed):
        return _lists(ctx.store)

    @secured_callback(app, "engineer", Output("models-proposal-message", "children"),
                      Output("models-changed", "data", allow_duplicate=True),
                      Input("models-proposal-approve", "n_clicks"), Input("models-proposal-reject", "n_clicks"),
                      State("models-proposal", "value"), State("models-proposal-reason", "value"),
                      State("models-changed", "data"), prevent_initial_call=True)
    def decide(approve_clicks, reject_clicks, proposal_id, reason, changed):
        from models import proposals

        if not (approve_clicks or reject_clicks):
            return no_update, no_update
        if not proposal_id:
            return html.Span("Choose an open proposal.", className="pq-error"), no_update
        actor = current_actor()
        approving = dash_ctx.triggered_id == "models-proposal-approve"
        try:
            if approving:
                dep = proposals.approve(ctx.store, int(proposal_id), username=actor.username, reason=reason or "",
                                        client=actor.client, margin=getattr(ctx.settings, "model_promotion_margin", None))
                words = (f"Proposal #{proposal_id} approved: version #{dep.model_version_id} is now in production "
                         f"for {dep.scope} (approved by {dep.approved_by}).")
            else:
                proposals.reject(ctx.store, int(proposal_id), username=actor.username, reason=reason or "",
                                 client=actor.client)
                words = f"Proposal #{proposal_id} rejected; its candidate stays registered."
        except PQError as exc:
            return html.Span(str(exc), className="pq-error"), no_update
        return html.Span(words, className="pq-ok"), (changed or 0) + 1
