"""Line conditions (engineers): the plant environment the models face, and what a naive model would do.

For the parts the edge scored recently, the page sets the production (environment-aware) model's two
decisions beside those a naive model — trained the way pilots usually are, on process signals only —
would have made on the *same served feature vectors*:

- parts diverted for inspection (production: its stored ``at_risk`` predictions; naive: its score at
  or above its own diversion threshold);
- operator alarms (production: the ``episode``/``part`` alerts the edge raised; naive: the episodes
  the same rule, k of the last n parts at risk with one cause, opens over its diverted parts),

as cumulative counts over time with the alarm budget (production's validation alarm rate and the
ISA-18.2 ceiling), the hall temperature underneath, and one sentence that says it in plain words.
When the conditions change (a hot day, humid air, a new material supplier) the naive model's
diversions and alarms pile up here, while production stays near its budget.

Where a simulator stands in for the plant (``pq demo``), the page can also switch its scenario: the
request is stored (``component_health`` row ``simulator``) and audited; the demo forwards it to the
simulator over OPC UA. The UI itself never talks OPC UA.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import ALL, Input, Output, ctx as dash_ctx, dcc, html, no_update
from plotly.subplots import make_subplots
from sqlalchemy import and_, select

from pq.auth import audit
from pq.errors import PQError
from pq.storage import schema
from ui.format import ago, duration
from ui.pages import Page
from ui.security import current_actor, secured_callback

__all__ = ["PAGE", "offered_scenarios", "recent_scored_parts", "naive_comparison", "production_alarms",
           "two_decisions", "summary_sentence"]

_RECENT_PARTS = 300
_PROD, _NAIVE = "#1b7f3b", "#c0392b"
# Kinds of alert that call an operator about parts (a flood alert summarises others, a system alert
# is about pq itself): what the naive model's episodes are compared with.
_OPERATOR_ALARM_KINDS = ("episode", "part")


def offered_scenarios(row: dict | None) -> dict[str, str]:
    """{name: description} of the scenarios the attached simulator reported (its health row), in its order."""
    return {s["name"]: s.get("description", "") for s in ((row or {}).get("detail") or {}).get("scenarios") or ()}


def _label(name: str) -> str:
    return name.replace("-", " ").capitalize()


def _simulator_row(store) -> dict | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.component_health).where(
            schema.component_health.c.component == "simulator")).first()
    return dict(row._mapping) if row else None


def recent_scored_parts(store, feature_set_version: str, limit: int = _RECENT_PARTS) -> pd.DataFrame:
    """The last ``limit`` parts the edge served features for, with production's decision, oldest first."""
    p, f, pr = schema.parts, schema.part_features, schema.predictions
    q = (select(p.c.line_id, p.c.serial, p.c.cycle_end, p.c.context, f.c.features, pr.c.score, pr.c.threshold,
                pr.c.decision, pr.c.decided_at, pr.c.model_version_id)
         .join(f, and_(f.c.part_id == p.c.id, f.c.feature_set_version == feature_set_version))
         .join(pr, and_(pr.c.line_id == p.c.line_id, pr.c.serial == p.c.serial))
         .where(pr.c.decision != "not_scored")
         .order_by(p.c.cycle_end.desc()).limit(limit))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return pd.DataFrame(rows).iloc[::-1].reset_index(drop=True) if rows else pd.DataFrame()


def _naive_version(store):
    from models import registry

    return next((v for v in registry.list_versions(store) if v.kind == "naive"), None)


# Registry versions never change, so a loaded scorer stays valid; loading one (artifact from the
# store, LightGBM booster) would otherwise be repeated on every refresh of every open page.
_SCORERS: dict[tuple[str, int], object] = {}
_SCORERS_LOCK = threading.Lock()


def _scorer(store, version_id: int):
    from models.scoring import Scorer

    key = (store.engine.url.render_as_string(hide_password=True), version_id)
    with _SCORERS_LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = Scorer.from_version(store, version_id)
        return _SCORERS[key]


def naive_comparison(store) -> tuple[pd.DataFrame, object | None, str | None]:
    """Recent parts with production's decision and the naive model's two decisions on the same vectors.

    Adds ``naive_score``, ``naive_at_risk`` (diverted: at or above the naive model's diversion
    threshold, or its single alert threshold for an artifact older than the two decisions),
    ``naive_cause`` (top TreeSHAP signal of a diverted part) and ``naive_alarm`` (the part opened a
    naive operator alarm: k of the last n parts at risk with one cause, line by line)."""
    from models.decisions import alarm_episodes, causes_of

    version = _naive_version(store)
    if version is None:
        return pd.DataFrame(), None, "No naive model in the registry: train one with `pq train --kind naive`."
    parts = recent_scored_parts(store, version.feature_set_version)
    if parts.empty:
        return parts, version, "No scored parts with served features yet."
    X = pd.DataFrame.from_records([{k: (np.nan if v is None else v) for k, v in (feat or {}).items()}
                                   for feat in parts["features"]])
    scorer = _scorer(store, version.id)
    X = X.reindex(columns=scorer.feature_names)
    threshold = scorer.diversion_threshold if scorer.diversion_threshold is not None else scorer.threshold
    parts["naive_score"] = scorer.score_frame(X)
    parts["naive_threshold"] = threshold
    at_risk = (parts["naive_score"] >= threshold).to_numpy()
    parts["naive_at_risk"] = at_risk
    causes = causes_of(scorer, X, at_risk)
    parts["naive_cause"] = causes
    opened = np.zeros(len(parts), bool)
    opened[alarm_episodes(parts[["cycle_end", "line_id"]], at_risk, causes, scorer.episode_rule)] = True
    parts["naive_alarm"] = opened
    parts["ambient_temp_c"] = [(c or {}).get("ambient_temp_c") for c in parts["context"]]
    return parts, version, None


def production_alarms(store, line_ids, since: datetime) -> pd.DataFrame:
    """Operator alarms (alert kinds ``episode`` and ``part``) the edge raised on ``line_ids`` since ``since``."""
    a = schema.alerts
    q = (select(a.c.line_id, a.c.kind, a.c.cause, a.c.raised_at)
         .where(a.c.kind.in_(_OPERATOR_ALARM_KINDS), a.c.line_id.in_(list(line_ids)), a.c.raised_at >= since)
         .order_by(a.c.raised_at))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return pd.DataFrame(rows, columns=["line_id", "kind", "cause", "raised_at"])


def two_decisions(parts: pd.DataFrame, alarms: pd.DataFrame, since: datetime | None = None) -> dict:
    """Diverted parts and operator alarms of both models over ``parts`` (from ``since`` when given)."""
    if since is not None:
        parts = parts[parts["decided_at"] >= since]
        alarms = alarms[alarms["raised_at"] >= since]
    return {"parts": len(parts), "prod_diverted": int((parts["decision"] == "at_risk").sum()),
            "naive_diverted": int(parts["naive_at_risk"].sum()), "prod_alarms": len(alarms),
            "naive_alarms": int(parts["naive_alarm"].sum())}


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _parts(n: int) -> str:
    return "1 part" if n == 1 else f"{n} parts"


def summary_sentence(counts: dict, *, scenario: str | None = None, since: datetime | None = None,
                     now: datetime | None = None) -> str:
    """The comparison in one sentence an engineer can repeat to the shift leader. Example::

        summary_sentence({"parts": 40, "prod_diverted": 4, "naive_diverted": 38, "prod_alarms": 1,
                          "naive_alarms": 6}, scenario="heatwave", since=now - timedelta(minutes=14))
        # 'Since the switch to Heatwave 14 min ago (40 parts): the naive model would have diverted
        #  38 parts and called the operator 6 times; production diverted 4 and called the operator once.'
    """
    if scenario and since is not None:
        head = f"Since the switch to {_label(scenario)} {ago(since, now)} ({counts['parts']} parts)"
    elif since is not None:
        head = f"In the last {duration(((now or datetime.now(timezone.utc)) - since).total_seconds())} " \
               f"({counts['parts']} parts)"
    else:
        head = f"In the last {counts['parts']} parts"
    naive_calls = (f"called the operator {_times(counts['naive_alarms'])}" if counts["naive_alarms"]
                   else "not called the operator")
    prod_calls = (f"called the operator {_times(counts['prod_alarms'])}" if counts["prod_alarms"]
                  else "did not call the operator")
    return (f"{head}: the naive model would have diverted {_parts(counts['naive_diverted'])} and {naive_calls}; "
            f"production diverted {counts['prod_diverted']} and {prod_calls}.")


def _switch(store, parts: pd.DataFrame) -> tuple[str | None, datetime | None]:
    """The scenario the simulator switched to within the plotted window, and when (the demo records it)."""
    detail = (_simulator_row(store) or {}).get("detail") or {}
    since = detail.get("since")
    if not since or parts.empty:
        return None, None
    at = pd.Timestamp(since).to_pydatetime()
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return (detail.get("scenario"), at) if at >= parts["decided_at"].iloc[0] else (None, None)


def _cumulative(times: pd.Series, start: datetime, end: datetime) -> tuple[list, list]:
    """Step points of a running count of events at ``times``, from 0 at ``start`` to its total at ``end``."""
    ts = sorted(times)
    xs, ys = [start], [0]
    for i, t in enumerate(ts, 1):
        xs += [t, t]
        ys += [i - 1, i]
    return xs + [end], ys + [len(ts)]


def _decisions_figure(parts: pd.DataFrame, alarms: pd.DataFrame, version, prod_card: dict,
                      switch: tuple[str | None, datetime | None], now: datetime) -> go.Figure:
    from models.decisions import ALARM_CEILING_PER_H

    start, end = parts["decided_at"].iloc[0], max(now, parts["decided_at"].iloc[-1])
    # the hall temperature under each panel, on the same time axis, so a step in either count can be
    # read against the conditions that came with it
    fig = make_subplots(rows=2, cols=2, shared_xaxes="columns", row_heights=[0.74, 0.26], vertical_spacing=0.06,
                        horizontal_spacing=0.08, subplot_titles=("Parts diverted for inspection", "Operator alarms"))
    t = parts["decided_at"]
    for col, prod_times, naive_times in (
            (1, t[parts["decision"] == "at_risk"], t[parts["naive_at_risk"]]),
            (2, alarms["raised_at"], t[parts["naive_alarm"]])):
        x, y = _cumulative(naive_times, start, end)
        fig.add_scatter(x=x, y=y, mode="lines", name=f"Naive ({version.label})", line={"color": _NAIVE, "width": 3},
                        legendgroup="naive", showlegend=col == 1, row=1, col=col)
        x, y = _cumulative(prod_times, start, end)
        fig.add_scatter(x=x, y=y, mode="lines", name="Production (environment-aware)",
                        line={"color": _PROD, "width": 3}, legendgroup="prod", showlegend=col == 1, row=1, col=col)
    decisions = (prod_card or {}).get("decisions") or {}
    share = decisions.get("diverted_share")
    if share is not None:  # the inspection station's budget: production's validation share of parts
        fig.add_scatter(x=t, y=np.arange(1, len(t) + 1) * float(share), mode="lines", name=f"Budget: {share:.0%} of parts",
                        line={"color": "#555", "dash": "dot"}, row=1, col=1)
    hours = (end - start).total_seconds() / 3600.0
    budgets = [(ALARM_CEILING_PER_H, f"ISA-18.2 ceiling: {ALARM_CEILING_PER_H:g} alarms/h", "dash")]
    if decisions.get("alarms_per_h") is not None:
        budgets.insert(0, (float(decisions["alarms_per_h"]),
                           f"Production on validation: {float(decisions['alarms_per_h']):.2g} alarms/h", "dot"))
    for rate, name, dash in budgets:
        fig.add_scatter(x=[start, end], y=[0, rate * hours], mode="lines", name=name,
                        line={"color": "#555", "dash": dash}, row=1, col=2)
    for col in (1, 2):
        fig.add_scatter(x=t, y=parts["ambient_temp_c"], mode="lines", name="Hall °C", line={"color": "#888"},
                        legendgroup="hall", showlegend=col == 1, row=2, col=col)
    scenario, at = switch
    if at is not None:
        for col in (1, 2):
            fig.add_vline(x=at, line_dash="dash", line_color="#e67e22", row=1, col=col)
        fig.add_annotation(x=at, y=1, yref="y domain", text=f"switch to {_label(scenario)}", showarrow=False,
                           xanchor="left", font={"color": "#e67e22"}, row=1, col=1)
    fig.update_yaxes(title_text="parts", rangemode="tozero", row=1, col=1)
    # whole alarms: a count of 1 must not read as "0.2, 0.4, ..." on its axis
    fig.update_yaxes(title_text="alarms", rangemode="tozero", tick0=0, dtick=1 if len(alarms) <= 8
                     and int(parts["naive_alarm"].sum()) <= 8 else None, row=1, col=2)
    fig.update_yaxes(title_text="hall °C", row=2, col=1)
    fig.update_xaxes(range=[start, end])
    fig.update_layout(height=520, margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.12})
    return fig


def _risk_figure(parts: pd.DataFrame, version) -> go.Figure:
    """Part by part: both models' risk and their diversion thresholds (for engineers who want the scores)."""
    fig = go.Figure()
    fig.add_scatter(x=parts["decided_at"], y=parts["score"], mode="markers", name="Production (environment-aware)",
                    marker={"color": _PROD, "size": 7})
    fig.add_scatter(x=parts["decided_at"], y=parts["naive_score"], mode="markers", name=f"Naive ({version.label})",
                    marker={"color": _NAIVE, "size": 7, "symbol": "x"})
    if parts["threshold"].notna().any():
        fig.add_hline(y=float(parts["threshold"].dropna().iloc[-1]), line_dash="dash", line_color=_PROD,
                      annotation_text="production diverts above")
    fig.add_hline(y=float(parts["naive_threshold"].iloc[0]), line_dash="dot", line_color=_NAIVE,
                  annotation_text="naive would divert above")
    fig.update_layout(height=360, margin={"l": 50, "r": 20, "t": 30, "b": 40}, legend={"orientation": "h"},
                      yaxis={"title": "Defect risk", "range": [0, 1]})
    return fig


def _comparison_view(store):
    from models import registry

    try:
        parts, version, message = naive_comparison(store)
        if message:
            return html.P(message)
        now = datetime.now(timezone.utc)
        start = parts["decided_at"].iloc[0]
        alarms = production_alarms(store, parts["line_id"].unique(), start)
        prod_version = registry.get_version(store, int(parts["model_version_id"].dropna().iloc[-1])) \
            if parts["model_version_id"].notna().any() else None
        switch = _switch(store, parts)
    except (ImportError, PQError) as exc:
        return html.P(f"Comparison not available: {exc}", className="pq-error")
    scenario, at = switch
    counts = two_decisions(parts, alarms, at)
    text = summary_sentence(counts, scenario=scenario, since=at if at is not None else start, now=now)
    return html.Div([
        html.P(text, className="pq-big", id="conditions-summary"),
        dcc.Graph(figure=_decisions_figure(parts, alarms, version, prod_version.card if prod_version else {},
                                           switch, now),
                  config={"displayModeBar": False}, id="conditions-decisions-graph"),
        html.Details([html.Summary("Risk part by part"),
                      dcc.Graph(figure=_risk_figure(parts, version), config={"displayModeBar": False})]),
    ])


def _scenario_view(store):
    row = _simulator_row(store)
    if row is None:
        return html.P("No simulator is attached: these are the plant's real conditions.")
    detail = row.get("detail") or {}
    current = detail.get("scenario", row.get("state"))
    requested = detail.get("requested_scenario")
    text = f"Simulator scenario: {_label(current)} (reported {ago(row.get('updated_at'))})."
    if requested and requested != current:
        text += f" Switching to {_label(requested)} ..."
    return html.P(text, className="pq-big", id="conditions-scenario-text")


def layout(ctx, query=None, **_):
    offered = offered_scenarios(_simulator_row(ctx.store))
    return html.Div(className="pq-page", children=[
        html.H1("Line conditions"),
        html.Section(className="pq-section", children=[
            html.H2("Conditions"),
            html.Div(_scenario_view(ctx.store), id="conditions-scenario"),
            html.Div(className="pq-toolbar", id="conditions-scenario-buttons", children=[
                html.Button(_label(name), id={"type": "conditions-scenario-btn", "scenario": name}, title=description,
                            className="pq-button")
                for name, description in offered.items()
            ]),
            html.Div(id="conditions-feedback", role="status"),
        ]),
        html.Section(className="pq-section", children=[
            html.H2("Environment-aware model vs a naive model on the same parts"),
            html.Div(_comparison_view(ctx.store), id="conditions-comparison"),
        ]),
        dcc.Interval(id="conditions-interval", interval=5000),
    ])


def register(app, ctx):
    @secured_callback(app, "engineer", Output("conditions-feedback", "children"),
                      Input({"type": "conditions-scenario-btn", "scenario": ALL}, "n_clicks"),
                      prevent_initial_call=True)
    def request_scenario(_clicks):
        trigger = dash_ctx.triggered_id
        if not trigger or not any(_clicks or []):
            return no_update
        scenario = trigger["scenario"]
        row = _simulator_row(ctx.store)
        if row is None:
            return html.P("No simulator is attached to this installation.", className="pq-error")
        if scenario not in offered_scenarios(row):
            return html.P(f"The simulator does not offer a scenario {scenario!r}.", className="pq-error")
        actor = current_actor()
        now = datetime.now(timezone.utc)
        detail = dict(row.get("detail") or {}, requested_scenario=scenario)
        with ctx.store.engine.begin() as conn:
            conn.execute(schema.component_health.update()
                         .where(schema.component_health.c.component == "simulator").values(detail=detail))
            audit.record(conn, username=actor.username, action="simulator.scenario", target="simulator",
                         detail={"scenario": scenario}, client=actor.client, at=now)
        return html.P(f"Requested: {_label(scenario)}.")

    @secured_callback(app, "engineer", Output("conditions-scenario", "children"),
                      Output("conditions-comparison", "children"),
                      Input("conditions-interval", "n_intervals"), prevent_initial_call=True)
    def live(_n):
        return _scenario_view(ctx.store), _comparison_view(ctx.store)


PAGE = Page(path="/conditions", title="Conditions", role="engineer", layout=layout, register=register)
