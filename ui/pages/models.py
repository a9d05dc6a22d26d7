"""Models (engineers): versions and their metrics overall and per environmental regime, retrain
in the background with a progress bar, compare a candidate with production, promote and roll back
with a required reason (audited with the approver's name by models.registry); scheduled retraining
and its proposals (ui/pages/models_schedules.py). Shadow runs and their comparison live on their own
page (ui/pages/shadow.py), linked from here.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone

from dash import Input, Output, State, dcc, html, no_update

from pq.errors import AuthError
from pq.errors import PQError
from ui.format import clock, number
from ui.jobs import TrainingRunner, recent_jobs
from ui.pages import Page
from ui.pages import models_schedules
from ui.security import current_actor, secured_callback

__all__ = ["PAGE"]

_METRICS = (("far", "False alarm rate"), ("recall", "Recall"), ("precision", "Precision"),
            ("alerts_per_h", "Alerts per hour"), ("auc", "AUC"), ("ece", "Calibration error"))


def _registry():
    from models import registry

    return registry


def _versions(ctx):
    reg = _registry()
    versions = reg.list_versions(ctx.store)
    prod = reg.production_map(ctx.store)  # scope -> version id
    return versions, prod


def _regime_table(v):
    rm = v.regime_metrics or {}
    if not rm:
        return html.P("No per-regime metrics stored.")
    rows = [html.Tr([html.Th("Condition"), html.Th("Band"), html.Th("Parts"), html.Th("Defects"),
                     html.Th("False alarm rate"), html.Th("Recall")])]
    for regime in sorted(rm):
        for band in sorted(rm[regime]):
            m = rm[regime][band] or {}
            rows.append(html.Tr([html.Td(regime), html.Td(band), html.Td(m.get("parts", "-")), html.Td(m.get("defects", "-")),
                                 html.Td(number(m.get("far"))), html.Td(number(m.get("recall")))]))
    return html.Table(rows, className="pq-table")


def _versions_box(ctx):
    try:
        versions, prod = _versions(ctx)
    except (ImportError, PQError) as exc:
        return html.P(f"The model registry is not available: {exc}", className="pq-error")
    if not versions:
        return html.P("No model versions yet: start a retraining below.")
    in_prod = {vid: scope for scope, vid in prod.items()}
    head = html.Tr([html.Th("Version"), html.Th("Kind"), html.Th("Serves"), html.Th("Data window"), html.Th("Trained by")]
                   + [html.Th(label) for _, label in _METRICS[:4]]
                   + [html.Th("Diverted (validation)"), html.Th("Operator alarms / h")])
    rows = [head]
    details = []
    for v in versions:
        m = v.metrics or {}
        serving = in_prod.get(v.id)
        rows.append(html.Tr(className="pq-prod" if serving else "", children=[
            html.Td([v.label] + ([html.Strong(f" - in production ({serving})", className="pq-good")] if serving else [])),
            html.Td(v.kind), html.Td(v.scope),
            html.Td(f"{clock(v.train_start)[:10]} to {clock(v.train_end)[:10]}"), html.Td(v.trained_by or "-")]
            + [html.Td(number(m.get(k))) for k, _ in _METRICS[:4]]
            + _decision_cells(v)))
        card = v.card or {}
        robust = card.get("robustness") or card.get("robustness_report")
        dec = card.get("decisions")
        details.append(html.Details([html.Summary(f"{v.label}: per condition (robustness)"),
                                     html.P(dec["meaning"] if dec else "Trained before the two decisions: the edge "
                                            "serves it with one alert threshold.", className="pq-card-note"),
                                     _regime_table(v)]
                                    + ([html.Pre(str(robust), className="pq-mono")] if robust else [])))
    return html.Div([html.Table(rows, className="pq-table", id="models-versions-table"), *details])


_DECISION_WORDS = {"alarms_per_h": "Operator alarms / h", "diverted_recall": "Defects among diverted parts (recall)"}


def _decision_cells(v) -> list:
    """Diverted share and operator alarms/h on validation, from the card (blank for older versions)."""
    dec = (v.card or {}).get("decisions") or {}
    share = dec.get("diverted_share")
    return [html.Td(f"{share * 100:.1f} % (recall {number(dec.get('recall'))})" if share is not None else "-"),
            html.Td(number(dec.get("alarms_per_h")))]


def _options(ctx):
    try:
        versions, prod = _versions(ctx)
    except (ImportError, PQError):
        return [], [], []
    opts = [{"label": v.label + f" [{v.scope}]", "value": v.id} for v in versions]
    scopes = sorted({v.scope for v in versions} | set(prod))
    prod_opts = [{"label": f"{scope}: #{vid}", "value": vid} for scope, vid in sorted(prod.items())]
    return opts, [{"label": s, "value": s} for s in scopes], prod_opts


def _feature_sets(ctx):
    try:
        from models.dataset import available_feature_sets

        sets = available_feature_sets(ctx.store)
    except (ImportError, PQError):
        sets = []
    return [{"label": f"{name} ({n} parts)", "value": name} for name, n in sets]


def _default_feature_set(ctx, options) -> str | None:
    """The production model's feature set (what the edge computes), else the configured one, else the largest."""
    names = [o["value"] for o in options]
    try:
        prod = _registry().production_map(ctx.store)
        if prod:
            fsv = _registry().get_version(ctx.store, max(prod.values())).feature_set_version
            if fsv in names:
                return fsv
    except (ImportError, PQError):
        pass
    configured = getattr(ctx.settings, "model_feature_set", None)
    return configured if configured in names else (names[0] if names else None)


def _jobs_box(ctx):
    jobs = recent_jobs(ctx.store, 5)
    if not jobs:
        return html.P("No retraining yet.")
    items = []
    for j in jobs:
        pct = int(round(100 * (j["progress"] or 0)))
        colour = {"failed": "pq-bad", "done": "pq-good"}.get(j["status"], "")
        items.append(html.Div(className="pq-job", id=f"models-job-{j['id']}", children=[
            html.Div([html.Strong(f"Job {j['id']}: {j['status']}", className=colour),
                      f" - requested by {j['requested_by'] or '-'} at {clock(j['started_at'])}"]),
            html.Div(className="pq-progress", children=[
                html.Div(f"{pct} %", className="pq-progress-bar", style={"width": f"{max(pct, 4)}%"})]),
            html.Div(j["error"] or j["message"] or "", className="pq-error" if j["error"] else ""),
        ]))
    return items


def layout(ctx, query=None, **_):
    opts, scopes, prod_opts = _options(ctx)
    fs = _feature_sets(ctx)
    default_fs = _default_feature_set(ctx, fs)
    return html.Div(className="pq-page", children=[
        html.H1("Models"),
        dcc.Link("Shadow: run a version beside production and compare", href="/models/shadow",
                 id="models-shadow-link", className="pq-btn"),
        dcc.Store(id="models-changed", data=0),
        dcc.Interval(id="models-interval", interval=1000),
        html.Section(className="pq-section", children=[html.H2("Versions"),
                                                       html.Div(_versions_box(ctx), id="models-versions")]),
        models_schedules.section(ctx),
        html.Section(className="pq-section", children=[
            html.H2("Retrain"),
            html.Div(className="pq-toolbar", children=[
                html.Label("Data from / to"),
                dcc.DatePickerRange(id="models-window", display_format="YYYY-MM-DD"),
                html.Label("Feature set"),
                dcc.Dropdown(id="models-feature-set", options=fs, value=default_fs, clearable=False, className="pq-dropdown"),
                html.Label("Kind"),
                dcc.Dropdown(id="models-kind", options=["environment-aware", "naive"], value="environment-aware",
                             clearable=False, className="pq-dropdown"),
                html.Label("Alarm budget per hour"),
                dcc.Input(id="models-budget", type="number", value=2.0, min=0.05, step=0.05, className="pq-input",
                          style={"width": "120px"}),
                html.Label("Parts diverted at most (%)", htmlFor="models-diversion"),
                dcc.Input(id="models-diversion", type="number", value=3.0, min=0.1, max=50, step=0.1,
                          className="pq-input", style={"width": "100px"}),
            ]),
            html.Button("Start retraining", id="models-retrain", className="pq-btn pq-btn-primary"),
            html.Div(id="models-retrain-message", className="pq-message"),
            html.Div(_jobs_box(ctx), id="models-jobs"),
        ]),
        html.Section(className="pq-section", children=[
            html.H2("Compare a candidate with production"),
            html.Div(className="pq-toolbar", children=[
                html.Label("Candidate"), dcc.Dropdown(id="models-compare-candidate", options=opts, className="pq-dropdown"),
                html.Label("Production"), dcc.Dropdown(id="models-compare-production", options=prod_opts or opts,
                                                        className="pq-dropdown"),
                html.Button("Compare", id="models-compare", className="pq-btn"),
            ]),
            html.Div(id="models-compare-result"),
        ]),
        html.Section(className="pq-section", children=[
            html.H2("Promote or roll back"),
            html.Div(className="pq-toolbar", children=[
                html.Label("Version"), dcc.Dropdown(id="models-candidate", options=opts, className="pq-dropdown"),
                dcc.Checklist(id="models-override", options=[{"label": " override a worse regime (say why)", "value": "yes"}],
                              className="pq-radio"),
            ]),
            dcc.Textarea(id="models-reason", placeholder="Reason (required): what was checked, why this version",
                         className="pq-textarea", maxLength=1000),
            html.Button("Promote", id="models-promote", className="pq-btn pq-btn-primary"),
            html.Div(id="models-promote-message", className="pq-message"),
            html.Div(className="pq-toolbar", children=[
                html.Label("Scope"), dcc.Dropdown(id="models-rollback-scope", options=scopes, className="pq-dropdown"),
                html.Button("Roll back", id="models-rollback", className="pq-btn pq-btn-danger"),
            ]),
            html.Div(id="models-rollback-message", className="pq-message"),
        ]),
    ])


def _compare_view(ctx, cand: int, prod: int):
    from ui.queries.labelled import labelled_alert_check

    result = _registry().compare(ctx.store, cand, prod)
    rows = [html.Tr([html.Th("Metric"), html.Th(result["candidate"]), html.Th(result["production"] or "-")])]
    for metric, label in _METRICS:
        v = result["overall"].get(metric) or {}
        rows.append(html.Tr([html.Td(label), html.Td(number(v.get("candidate"))), html.Td(number(v.get("production")))]))
    reg_rows = [html.Tr([html.Th("Condition"), html.Th("Band"), html.Th("Metric"), html.Th("Candidate"),
                         html.Th("Production"), html.Th("")])]
    for r in result["decisions"]:
        reg_rows.append(html.Tr([html.Td("Two decisions"), html.Td("validation"), html.Td(_DECISION_WORDS[r["metric"]]),
                                 html.Td(number(r["candidate"])), html.Td(number(r.get("production"))),
                                 html.Td("worse" if r["worse"] else "ok", className="pq-bad" if r["worse"] else "")]))
    for r in result["regimes"]:
        reg_rows.append(html.Tr([html.Td(r["regime"]), html.Td(r["band"]), html.Td(r["metric"]),
                                 html.Td(number(r["candidate"])), html.Td(number(r["production"])),
                                 html.Td("worse" if r["worse"] else ("too little data" if not r["enough_data"] else "ok"),
                                         className="pq-bad" if r["worse"] else "")]))
    try:
        lab = labelled_alert_check(ctx.store, [cand, prod])
    except (PQError, ValueError, KeyError) as exc:
        lab = {"error": str(exc)}
    if "error" in lab:
        lab_view = html.P(f"Could not re-score the labelled alerts: {lab['error']}")
    elif not lab.get("labelled"):
        lab_view = html.P("No operator-labelled alerts yet (confirmed defect / false alarm).")
    else:
        def col(vid):
            d = lab.get(vid) or {}
            return [d.get(k, "-") for k in ("parts", "confirmed_caught", "confirmed_missed", "false_alarms_kept",
                                            "false_alarms_avoided")]
        names = ("Parts with stored features", "Confirmed defects caught", "Confirmed defects missed",
                 "False alarms raised again", "False alarms avoided")
        lab_view = html.Table([html.Tr([html.Th(f"On {lab['labelled']} operator-labelled alerts"), html.Th("Candidate"),
                                        html.Th("Production")])]
                              + [html.Tr([html.Td(n), html.Td(c), html.Td(p)]) for n, c, p in zip(names, col(cand), col(prod))],
                              className="pq-table", id="models-compare-labelled")
    verdict = (html.P(f"Worse than production in {len(result['worse'])} check(s) (regime bands, operator alarms, "
                      "diverted parts).", className="pq-bad")
               if result["worse"] else html.P("Not worse than production in any regime band with enough data, "
                                              "nor in operator alarms or diverted parts.", className="pq-good"))
    return html.Div(id="models-compare-table", children=[
        verdict, html.Div(className="pq-grid2", children=[html.Table(rows, className="pq-table"), lab_view]),
        html.Details([html.Summary("Per condition, side by side"), html.Table(reg_rows, className="pq-table")], open=True)])


def _register_lists(app, ctx):
    """The job list and the version table, refreshed as jobs finish."""

    @secured_callback(app, "engineer", Output("models-jobs", "children"), Input("models-interval", "n_intervals"),
                      prevent_initial_call=True)
    def poll_jobs(_n):
        return _jobs_box(ctx)

    @secured_callback(app, "engineer", Output("models-versions", "children"), Output("models-candidate", "options"),
                      Output("models-compare-candidate", "options"), Output("models-compare-production", "options"),
                      Output("models-rollback-scope", "options"),
                      Input("models-changed", "data"), prevent_initial_call=True)
    def refresh_versions(_changed):
        opts, scopes, prod_opts = _options(ctx)
        return _versions_box(ctx), opts, opts, prod_opts or opts, scopes

    @secured_callback(app, "engineer", Output("models-changed", "data", allow_duplicate=True),
                      Input("models-jobs", "children"), State("models-changed", "data"), prevent_initial_call=True)
    def versions_after_job(_jobs, changed):
        # A finished job registers a version: refresh the lists once when the newest job is done.
        jobs = recent_jobs(ctx.store, 1)
        if jobs and jobs[0]["status"] == "done" and ctx.extras.get("last_done_job") != jobs[0]["id"]:
            ctx.extras["last_done_job"] = jobs[0]["id"]
            return (changed or 0) + 1
        return no_update


def _register_retrain(app, ctx, runner):
    """Retraining from the page: a background job with progress."""

    @secured_callback(app, "engineer", Output("models-retrain-message", "children"),
                      Output("models-changed", "data", allow_duplicate=True),
                      Input("models-retrain", "n_clicks"), State("models-window", "start_date"),
                      State("models-window", "end_date"), State("models-feature-set", "value"),
                      State("models-kind", "value"), State("models-budget", "value"),
                      State("models-diversion", "value"), State("models-changed", "data"),
                      prevent_initial_call=True)
    def retrain(n, start, end, feature_set, kind, budget, diversion_pct, changed):
        if not n:
            return no_update, no_update
        from models.training import TrainConfig

        if not feature_set:
            return html.Span("No feature vectors in the store yet: nothing to train on.", className="pq-error"), no_update
        try:
            start_dt = datetime.combine(date.fromisoformat(start), time.min, timezone.utc) if start else None
            end_dt = datetime.combine(date.fromisoformat(end), time.max, timezone.utc) if end else None
            s = ctx.settings
            config = TrainConfig(feature_set_version=feature_set, kind=kind or "environment-aware",
                                 alarm_budget_per_h=float(budget) if budget else s.model_alarm_budget_per_h,
                                 start=start_dt, end=end_dt, folds=s.model_cv_folds, seed=s.model_seed,
                                 n_threads=s.model_threads, label_precedence=s.model_label_precedence,
                                 min_labelled=s.model_min_labelled_parts, min_defects=s.model_min_defects,
                                 diversion_share=float(diversion_pct) / 100 if diversion_pct else 0.03)
            params = {"feature_set_version": feature_set, "kind": config.kind, "start": start, "end": end,
                      "alarm_budget_per_h": config.alarm_budget_per_h, "diversion_share": config.diversion_share}
            job_id = runner.start(current_actor(), config, params)
        except (AuthError, PQError, ValueError) as exc:
            return html.Span(str(exc), className="pq-error"), no_update
        return html.Span(f"Retraining started (job {job_id}). You may leave this page.", className="pq-ok"), (changed or 0) + 1


def _register_compare(app, ctx):
    """Candidate against production, per regime."""

    @secured_callback(app, "engineer", Output("models-compare-result", "children"), Input("models-compare", "n_clicks"),
                      State("models-compare-candidate", "value"), State("models-compare-production", "value"),
                      prevent_initial_call=True)
    def compare(n, cand, prod):
        if not n:
            return no_update
        if not cand:
            return html.P("Choose a candidate version.", className="pq-error")
        try:
            return _compare_view(ctx, int(cand), int(prod) if prod else None)
        except PQError as exc:
            return html.P(str(exc), className="pq-error")


def _register_promotion(app, ctx):
    """Promotion and rollback: named approver, reason, audited."""

    @secured_callback(app, "engineer", Output("models-promote-message", "children"),
                      Output("models-changed", "data", allow_duplicate=True),
                      Input("models-promote", "n_clicks"), State("models-candidate", "value"),
                      State("models-reason", "value"), State("models-override", "value"), State("models-changed", "data"),
                      prevent_initial_call=True)
    def promote(n, version_id, reason, override, changed):
        if not n:
            return no_update, no_update
        if not version_id:
            return html.Span("Choose the version to promote.", className="pq-error"), no_update
        if not (reason or "").strip() or len(reason.strip()) < 5:
            return html.Span("A reason is required (what was checked, why this version).", className="pq-error"), no_update
        actor = current_actor()
        try:
            dep = _registry().promote(ctx.store, int(version_id), approved_by=actor.username, reason=reason.strip(),
                                      override=bool(override), client=actor.client, require_known_user=True)
        except PQError as exc:
            return html.Span(str(exc), className="pq-error"), no_update
        return (html.Span(f"Version #{dep.model_version_id} is now in production for {dep.scope} "
                          f"(approved by {dep.approved_by}).", className="pq-ok"), (changed or 0) + 1)

    @secured_callback(app, "engineer", Output("models-rollback-message", "children"),
                      Output("models-changed", "data", allow_duplicate=True),
                      Input("models-rollback", "n_clicks"), State("models-rollback-scope", "value"),
                      State("models-reason", "value"), State("models-changed", "data"), prevent_initial_call=True)
    def rollback(n, scope, reason, changed):
        if not n:
            return no_update, no_update
        if not scope:
            return html.Span("Choose the scope to roll back.", className="pq-error"), no_update
        if not (reason or "").strip() or len(reason.strip()) < 5:
            return html.Span("A reason is required for a roll back.", className="pq-error"), no_update
        actor = current_actor()
        try:
            dep = _registry().rollback(ctx.store, scope, approved_by=actor.username, reason=reason.strip(),
                                       client=actor.client, require_known_user=True)
        except PQError as exc:
            return html.Span(str(exc), className="pq-error"), no_update
        return (html.Span(f"Rolled back {dep.scope} to version #{dep.model_version_id}.", className="pq-ok"),
                (changed or 0) + 1)

def register(app, ctx):
    runner = ctx.extras.setdefault("training_runner", TrainingRunner(ctx.store))
    _register_lists(app, ctx)
    _register_retrain(app, ctx, runner)
    _register_compare(app, ctx)
    _register_promotion(app, ctx)
    models_schedules.register(app, ctx)


PAGE = Page(path="/models", title="Models", role="engineer", layout=layout, register=register)
