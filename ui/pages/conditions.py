"""Line conditions (engineers): the plant environment the models face, and what a naive model would do.

Shows, for the parts the edge scored recently, the production (environment-aware) model's score
next to the score a naive model — trained the way pilots usually are, on process signals only —
gives the *same served feature vectors*, with the ambient temperature underneath. When the
conditions change (a hot day, humid air, a new material supplier) the naive model's false alarms
become visible here, while production stays quiet.

Where a simulator stands in for the plant (``pq demo``), the page can also switch its scenario: the
request is stored (``component_health`` row ``simulator``) and audited; the demo forwards it to the
simulator over OPC UA. The UI itself never talks OPC UA.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import ALL, Input, Output, ctx as dash_ctx, dcc, html, no_update
from sqlalchemy import and_, select

from pq.auth import audit
from pq.errors import PQError
from pq.storage import schema
from ui.format import ago
from ui.pages import Page
from ui.security import current_actor, secured_callback

__all__ = ["PAGE", "offered_scenarios", "recent_scored_parts", "naive_comparison"]

_RECENT_PARTS = 300


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
    """The last ``limit`` parts the edge served features for, with production's decision."""
    p, f, pr = schema.parts, schema.part_features, schema.predictions
    q = (select(p.c.line_id, p.c.serial, p.c.cycle_end, p.c.context, f.c.features, pr.c.score, pr.c.threshold,
                pr.c.decision)
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


def naive_comparison(store) -> tuple[pd.DataFrame, object | None, str | None]:
    """Recent parts with production's score and the naive model's score on the same vectors."""
    from models.scoring import Scorer

    version = _naive_version(store)
    if version is None:
        return pd.DataFrame(), None, "No naive model in the registry: train one with `pq train --kind naive`."
    parts = recent_scored_parts(store, version.feature_set_version)
    if parts.empty:
        return parts, version, "No scored parts with served features yet."
    X = pd.DataFrame.from_records([{k: (np.nan if v is None else v) for k, v in (feat or {}).items()}
                                   for feat in parts["features"]])
    scorer = Scorer.from_version(store, version.id)
    parts["naive_score"] = scorer.score_frame(X.reindex(columns=scorer.feature_names))
    parts["naive_at_risk"] = parts["naive_score"] >= scorer.threshold
    parts["ambient_temp_c"] = [(c or {}).get("ambient_temp_c") for c in parts["context"]]
    return parts, version, None


def _comparison_view(store):
    try:
        parts, version, message = naive_comparison(store)
    except (ImportError, PQError) as exc:
        return html.P(f"Comparison not available: {exc}", className="pq-error")
    if message:
        return html.P(message)
    prod_alarms = int((parts["decision"] == "at_risk").sum())
    naive_alarms = int(parts["naive_at_risk"].sum())
    fig = go.Figure()
    fig.add_scatter(x=parts["cycle_end"], y=parts["score"], mode="markers", name="Production (environment-aware)",
                    marker={"color": "#1b7f3b", "size": 7})
    fig.add_scatter(x=parts["cycle_end"], y=parts["naive_score"], mode="markers", name=f"Naive ({version.label})",
                    marker={"color": "#c0392b", "size": 7, "symbol": "x"})
    fig.add_hline(y=float(parts["threshold"].dropna().iloc[-1]) if parts["threshold"].notna().any() else 0.5,
                  line_dash="dash", line_color="#1b7f3b", annotation_text="production alert threshold")
    fig.add_hline(y=version.threshold, line_dash="dot", line_color="#c0392b", annotation_text="naive threshold")
    fig.add_scatter(x=parts["cycle_end"], y=parts["ambient_temp_c"], name="Ambient °C", yaxis="y2",
                    line={"color": "#888"})
    fig.update_layout(height=420, margin={"l": 50, "r": 50, "t": 30, "b": 40}, legend={"orientation": "h"},
                      yaxis={"title": "Defect risk", "range": [0, 1]},
                      yaxis2={"title": "Ambient °C", "overlaying": "y", "side": "right"})
    return html.Div([
        html.P(f"Last {len(parts)} scored parts: production raised {prod_alarms} alert(s); the naive model "
               f"would have raised {naive_alarms}.", className="pq-big", id="conditions-summary"),
        dcc.Graph(figure=fig, config={"displayModeBar": False}),
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
