"""Monitoring (engineers): feature drift per signal and day against the production model's training
reference, today's drift explained by context (expected for the conditions or not, and what changed),
the alarm precision estimated from the probabilities beside the measured one, alert precision from
operator feedback, alarm KPIs against the ISA-18.2 guideline, and ingest lag and spool depth per
connector.
"""

from __future__ import annotations

from datetime import datetime, timezone

import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from pq.errors import PQError
from pq.monitoring import alarm_kpis, precision_by_day
from pq.monitoring.drift import JS_DISTANCE_DRIFT, PSI_MODERATE, PSI_SIGNIFICANT, drift_by_day
from pq.monitoring.drift_context import drift_explained
from pq.monitoring.precision_estimate import precision_estimate
from pq.monitoring.ingest import ingest_health
from ui.format import duration, number
from ui.pages import Page, monitoring_duty
from ui.security import secured_callback

__all__ = ["PAGE"]


def _reference(ctx):
    """The production model (any scope, newest deployment) whose training window is the reference."""
    try:
        from models import registry

        prod = registry.production_map(ctx.store)
        if not prod:
            versions = registry.list_versions(ctx.store)
            return versions[0] if versions else None
        return registry.get_version(ctx.store, max(prod.values()))
    except (ImportError, PQError):
        return None


def _baseline(ctx, ref):
    """The context baseline shipped in the reference model's artifact (None when it has none)."""
    try:
        from models.scoring import Scorer

        return Scorer.from_version(ctx.store, ref.id).baseline
    except (ImportError, PQError):
        return None


_VERDICT_CLASS = {"unexpected": "pq-bad", "expected": "pq-good"}


def _explained_view(ctx, ref):
    """Last 24 h against the training window, per signal: drift, expected or unexpected, what changed."""
    report = drift_explained(ctx.store, ref.train_start, ref.train_end, feature_set_version=ref.feature_set_version,
                             hours=24.0, baseline=_baseline(ctx, ref))
    if report is None:
        return html.P("Too few parts in the last 24 h or in the training window to judge drift by context.",
                      id="monitoring-drift-verdict")
    drifting = [s for s in report.signals if s.status == "drifting"]
    unexpected = [s for s in drifting if s.verdict == "unexpected"]
    expected = [s for s in drifting if s.verdict == "expected"]
    summary = (f"Last 24 h ({report.n_recent} parts) against the training window ({report.n_reference} parts): "
               f"{len(drifting)} of {len(report.signals)} signals drift; {len(expected)} expected for today's "
               f"conditions, {len(unexpected)} unexpected" +
               (f" ({', '.join(s.signal for s in unexpected)})." if unexpected else "."))
    if not report.with_baseline:
        summary += " The model ships no context baseline: drift cannot be split into expected and unexpected."
    fig = go.Figure(go.Bar(
        x=[s.js for s in report.signals], y=[s.signal for s in report.signals], orientation="h",
        marker_color=[{"unexpected": "#b71c1c", "expected": "#2e7d32", "no baseline": "#ff9800"}.get(s.verdict, "#b0bec5")
                      for s in report.signals],
        hovertemplate="%{y}: JS distance %{x:.3f}<extra></extra>"))
    fig.add_vline(x=JS_DISTANCE_DRIFT, line_dash="dash", annotation_text="drift")
    fig.update_layout(height=100 + 28 * len(report.signals), margin={"l": 190, "r": 20, "t": 20, "b": 40},
                      font={"size": 14}, xaxis={"title": "Jensen-Shannon distance to training"},
                      yaxis={"autorange": "reversed"})
    rows = [html.Tr([html.Th("Signal"), html.Th("PSI"), html.Th("JS distance"), html.Th("Verdict"),
                     html.Th("In words")])]
    for s in report.signals:
        rows.append(html.Tr([html.Td(s.signal), html.Td(f"{s.psi:.2f}"), html.Td(f"{s.js:.2f}"),
                             html.Td(s.verdict, className=_VERDICT_CLASS.get(s.verdict, "")), html.Td(s.sentence)]))
    changed = [html.Li(ch.words) for ch in report.context] or [html.Li("No change in conditions.")]
    return html.Div([
        html.H3("Today against training: expected for the conditions or not"),
        html.P(summary, id="monitoring-drift-verdict"),
        html.P("What changed at the same time:"), html.Ul(changed, id="monitoring-drift-context"),
        dcc.Graph(figure=fig, id="monitoring-drift-signals-graph", config={"displayModeBar": False}),
        html.Table(rows, className="pq-table", id="monitoring-drift-table"),
        html.P(f"Drift: PSI >= {PSI_SIGNIFICANT} or Jensen-Shannon distance >= {JS_DISTANCE_DRIFT}. Expected: the "
               "deviation from the context baseline stays inside the middle 90 % of its training values.")])


def _estimate_view(ctx, days: int):
    """Precision of the diverted parts: estimated from the calibrated probabilities, measured from labels."""
    e = precision_estimate(ctx.store, days=days)
    if not e["diverted"]:
        return html.P(f"No part diverted in the last {days} days: no precision to estimate.",
                      id="monitoring-precision-estimate")
    measured = (f"measured {e['measured']:.0%} on the {e['labelled']} of them inspected so far"
                if e["measured"] is not None else "not measured yet (no inspection result for them)")
    feedback = (f"; operators confirmed {e['feedback_precision']:.0%} of {e['feedback_judged']} judged alerts"
                if e["feedback_precision"] is not None else "")
    return html.P(f"Precision of the {e['diverted']} diverted parts over {days} days: estimated "
                  f"{e['estimated']:.0%} from the model's probabilities, {measured}{feedback}.",
                  id="monitoring-precision-estimate")


def _drift_view(ctx, days: int):
    ref = _reference(ctx)
    if ref is None or ref.train_start is None:
        return html.P("No model with a training window yet: drift needs a training reference.")
    estimate = _estimate_view(ctx, days)
    explained = _explained_view(ctx, ref)
    rows = drift_by_day(ctx.store, ref.train_start, ref.train_end, feature_set_version=ref.feature_set_version, days=days)
    if not rows:
        return html.Div([estimate, explained, html.P(f"No served feature vectors in the last {days} days for {ref.label}.")])
    signals = sorted({r.signal for r in rows})
    day_list = sorted({r.day for r in rows})
    z = [[next((r.psi for r in rows if r.signal == s and r.day == d), None) for d in day_list] for s in signals]
    fig = go.Figure(go.Heatmap(z=z, x=day_list, y=signals, zmin=0, zmax=max(0.5, PSI_SIGNIFICANT * 2),
                               colorscale=[[0, "#e8f5e9"], [0.2, "#fff59d"], [0.5, "#ff9800"], [1, "#b71c1c"]],
                               colorbar={"title": "PSI"}, hovertemplate="%{y} on %{x}: PSI %{z:.3f}<extra></extra>"))
    fig.update_layout(height=120 + 34 * len(signals), margin={"l": 160, "r": 20, "t": 30, "b": 40}, font={"size": 15})
    latest = {r.signal: r for r in rows if r.day == day_list[-1]}
    worst = sorted(latest.values(), key=lambda r: -r.psi)[:5]
    words = [html.Li(f"{r.signal}: PSI {r.psi:.3f}, JS distance {r.js:.3f} "
                     f"({'act: retrain or check the sensor' if r.psi > PSI_SIGNIFICANT else 'watch' if r.psi > PSI_MODERATE else 'stable'})")
             for r in worst]
    return html.Div([estimate, explained,
                     html.H3("Per day"),
                     html.P(f"Reference: training window of {ref.label}. PSI < {PSI_MODERATE} stable, "
                            f"> {PSI_SIGNIFICANT} act."), dcc.Graph(figure=fig, id="monitoring-drift-graph",
                                                                    config={"displayModeBar": False}),
                     html.H3(f"Largest shifts on {day_list[-1]}"), html.Ul(words)])


def _precision_view(ctx, days: int):
    rows = precision_by_day(ctx.store, days=days)
    if not rows:
        return html.P("No alerts in this period.")
    fig = go.Figure()
    fig.add_bar(x=[r["day"] for r in rows], y=[r["confirmed"] for r in rows], name="confirmed defect", marker_color="#b71c1c")
    fig.add_bar(x=[r["day"] for r in rows], y=[r["false_alarm"] for r in rows], name="false alarm", marker_color="#2e7d32")
    fig.add_bar(x=[r["day"] for r in rows], y=[r["not_checked"] + r["no_feedback"] for r in rows], name="no verdict",
                marker_color="#b0bec5")
    fig.add_scatter(x=[r["day"] for r in rows], y=[r["precision"] for r in rows], name="precision", yaxis="y2",
                    mode="lines+markers", line={"color": "#0d47a1", "width": 3})
    fig.update_layout(barmode="stack", height=340, margin={"l": 50, "r": 50, "t": 20, "b": 40}, font={"size": 15},
                      yaxis={"title": "alerts"}, yaxis2={"title": "precision", "overlaying": "y", "side": "right",
                                                         "range": [0, 1]}, legend={"orientation": "h"})
    judged = sum(r["confirmed"] + r["false_alarm"] for r in rows)
    conf = sum(r["confirmed"] for r in rows)
    total = sum(r["alerts"] for r in rows)
    summary = (f"Precision over {days} days: {conf / judged:.0%} of {judged} judged alerts were real defects; "
               f"operators gave a verdict on {judged / total:.0%} of {total} alerts.") if judged else \
        "No operator verdicts yet in this period."
    return html.Div([html.P(summary, id="monitoring-precision-summary"),
                     dcc.Graph(figure=fig, config={"displayModeBar": False})])


def _kpi_view(ctx, hours: float):
    k = alarm_kpis(ctx.store, hours=hours)
    if not k["lines"]:
        return html.P(f"No alerts in the last {hours:.0f} h.")
    rows = [html.Tr([html.Th("Line"), html.Th("Alerts"), html.Th("Per 10 min (avg)"), html.Th("Peak in 10 min"),
                     html.Th("Floods"), html.Th("Time to acknowledge (median)"), html.Th("Top causes")])]
    for line, v in k["lines"].items():
        rows.append(html.Tr([html.Td(line), html.Td(v["alerts"]),
                             html.Td(number(v["per_10min_avg"]), className="pq-good" if v["within_guideline"] else "pq-bad"),
                             html.Td(v["per_10min_peak"]), html.Td(f"{v['flood_periods']} ({v['time_in_flood_pct']} % of time)"),
                             html.Td(duration(v["ack_median_s"]) if v["ack_median_s"] is not None else "-"),
                             html.Td(", ".join(f"{c} ({n})" for c, n in v["top_causes"]))]))
    s = ctx.settings
    return html.Div([html.P(f"ISA-18.2 guideline: about {k['guideline_per_10min']:.0f} alert per operator per 10 minutes. "
                            f"The edge declares a flood above {s.edge_flood_limit} alerts in "
                            f"{s.edge_flood_window_s / 60:.0f} minutes and holds back further alerts until it ends."),
                     html.Table(rows, className="pq-table", id="monitoring-kpi-table"),
                     html.P("Top causes overall: " + ", ".join(f"{c} ({n})" for c, n in k["top_causes"]))])


def _ingest_view(ctx):
    rows = ingest_health(ctx.store, datetime.now(timezone.utc))
    if not rows:
        return html.P("No connector has reported yet.")
    body = [html.Tr([html.Th("Connector"), html.Th("State"), html.Th("Samples/s"), html.Th("Lag"), html.Th("Spool depth"),
                     html.Th("Oldest in spool"), html.Th("Dropped"), html.Th("Last report")])]
    for r in rows:
        body.append(html.Tr([html.Td(r["component"]), html.Td(r["state"]), html.Td(number(r["samples_per_s"])),
                             html.Td(duration(r["lag_s"]) if r["lag_s"] is not None else "-"),
                             html.Td(r["spool_depth"] if r["spool_depth"] is not None else "-"),
                             html.Td(duration(r["spool_oldest_s"]) if r["spool_oldest_s"] is not None else "-"),
                             html.Td(r["dropped"] if r["dropped"] is not None else "-"),
                             html.Td(duration(r["reported_s_ago"]) + " ago")]))
    changes = [f"{r['component']}: {m}" for r in rows for m in r["source_changes"]]
    return html.Div([html.Table(body, className="pq-table", id="monitoring-ingest-table"),
                     html.Ul([html.Li(m) for m in changes], id="monitoring-source-changes") if changes else None])


def layout(ctx, query=None, **_):
    return html.Div(className="pq-page", children=[
        html.H1("Monitoring"),
        html.Div(className="pq-toolbar", children=[
            html.Label("Period"),
            dcc.Dropdown(id="monitoring-days", options=[{"label": f"{d} days", "value": d} for d in (7, 14, 30)], value=14,
                         clearable=False, className="pq-dropdown"),
        ]),
        html.Section(className="pq-section", children=[html.H2("Ingest: lag and spool per connector"),
                                                       html.Div(_ingest_view(ctx), id="monitoring-ingest")]),
        dcc.Interval(id="monitoring-interval", interval=5000),
        html.Section(className="pq-section", children=[html.H2("Alarm load (last 24 h)"),
                                                       html.Div(_kpi_view(ctx, 24.0), id="monitoring-kpis")]),
        monitoring_duty.section(ctx),
        html.Section(className="pq-section", children=[html.H2("Alert precision from operator feedback"),
                                                       html.Div(id="monitoring-precision")]),
        html.Section(className="pq-section", children=[html.H2("Feature drift against training, explained by context"),
                                                       dcc.Loading(html.Div(id="monitoring-drift"))]),
    ])


def register(app, ctx):
    monitoring_duty.register(app, ctx)
    @secured_callback(app, "engineer", Output("monitoring-precision", "children"), Output("monitoring-drift", "children"),
                      Input("monitoring-days", "value"))
    def period(days):
        days = int(days or 14)
        return _precision_view(ctx, days), _drift_view(ctx, days)

    @secured_callback(app, "engineer", Output("monitoring-ingest", "children"), Output("monitoring-kpis", "children"),
                      Input("monitoring-interval", "n_intervals"), prevent_initial_call=True)
    def live(_n):
        return _ingest_view(ctx), _kpi_view(ctx, 24.0)


PAGE = Page(path="/monitoring", title="Monitoring", role="engineer", layout=layout, register=register)
