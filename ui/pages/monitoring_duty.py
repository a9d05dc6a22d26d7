"""Monitoring, alarm load per operator and per shift: a section of the Monitoring page.

Shows :func:`pq.monitoring.duty_kpis.duty_kpis` (alarms per 10 minutes on duty, time to acknowledge,
share escalated, share shelved) for the last 24 h; included from ``ui/pages/monitoring.py`` with
:func:`section`, refreshed by its own interval. Engineers and above.
"""

from __future__ import annotations

from dash import Input, Output, dcc, html

from pq.monitoring.duty_kpis import duty_kpis
from ui.format import duration, number
from ui.security import secured_callback

__all__ = ["section", "register"]

_HOURS = 24.0


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _table(title: str, groups: dict, table_id: str):
    rows = [html.Tr([html.Th(title), html.Th("Alarms"), html.Th("Per 10 min on duty (avg)"), html.Th("Peak in 10 min"),
                     html.Th("Time to acknowledge (median)"), html.Th("Escalated"), html.Th("Shelved")])]
    for name, v in groups.items():
        rows.append(html.Tr([html.Td(name), html.Td(v["alarms"]), html.Td(number(v["per_10min_avg"])),
                             html.Td(v["per_10min_peak"]),
                             html.Td(duration(v["ack_median_s"]) if v["ack_median_s"] is not None else "-"),
                             html.Td(_pct(v["escalated_share"])), html.Td(_pct(v["shelved_share"]))]))
    return html.Table(rows, className="pq-table", id=table_id)


def view(ctx):
    k = duty_kpis(ctx.store, hours=_HOURS)
    if not k["operators"]:
        return html.P(f"No operator alarms in the last {_HOURS:.0f} h.")
    return html.Div([_table("Operator", k["operators"], "monitoring-duty-operators"),
                     _table("Shift", k["shifts"], "monitoring-duty-shifts"),
                     html.P("Time on duty: a shift's share of the parts made in the period. An escalated alarm went "
                            "unacknowledged past its first escalation step (Roster page, escalation rules).")])


def section(ctx):
    return html.Section(className="pq-section", children=[
        html.H2(f"Alarm load per operator and shift (last {_HOURS:.0f} h)"),
        dcc.Interval(id="monitoring-duty-interval", interval=10_000),
        html.Div(view(ctx), id="monitoring-duty"),
    ])


def register(app, ctx):
    @secured_callback(app, "engineer", Output("monitoring-duty", "children"),
                      Input("monitoring-duty-interval", "n_intervals"), prevent_initial_call=True)
    def live(_n):
        return view(ctx)
