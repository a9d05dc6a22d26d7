"""The robustness report: per environmental regime, side by side, as HTML (plotly) and JSON.

Owns rendering only: it takes the result dictionary of :func:`models.experiment.run_experiment`
(or :func:`robustness_from_store` for registered versions) and writes ``robustness.html`` (self-
contained: plotly's JavaScript is embedded, so it opens on a plant PC without internet) and
``robustness.json``. Imports pq and models only.

Example::

    html_path, json_path = write_report(result, Path("var/reports"), title="Robustness: heatwave, humid, new supplier")
"""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from models.estimator import json_safe

__all__ = ["write_report", "robustness_from_store", "summary_table"]

logger = logging.getLogger(__name__)

_METRICS = (("far", "False-alarm rate (good parts)"), ("recall", "Recall"), ("precision", "Precision"),
            ("alerts_per_h", "Alerts / h / line"), ("ece", "Calibration error (ECE)"), ("auc", "AUC"))
_COLORS = {"environment-aware": "#1b7837", "naive": "#b2182b"}


def _models_of(result: dict) -> list[str]:
    for s in result["scenarios"].values():
        return [k for k, v in s.items() if isinstance(v, dict) and "overall" in v]
    return []


def summary_table(result: dict) -> list[dict]:
    """Rows (scenario, model, far, recall, precision, alerts_per_h, ece) for READMEs and terminals."""
    rows = []
    for name, s in result["scenarios"].items():
        for m in _models_of(result):
            o = s[m]["overall"]
            rows.append({"scenario": name, "model": m, "parts": o["parts"], "defects": o["defects"],
                         **{k: o.get(k) for k, _ in _METRICS}})
    return rows


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _figures(result: dict) -> list:
    import plotly.graph_objects as go

    models = _models_of(result)
    scen = list(result["scenarios"])
    figs = []
    for key, title in _METRICS[:4]:
        fig = go.Figure()
        for m in models:
            fig.add_bar(name=m, x=scen, y=[result["scenarios"][s][m]["overall"].get(key) for s in scen],
                        marker_color=_COLORS.get(m))
        fig.update_layout(title=f"{title} per held-out scenario", barmode="group", height=360,
                          margin=dict(l=50, r=20, t=50, b=40))
        figs.append(fig)
    regimes = sorted({r for s in scen for m in models for r in result["scenarios"][s][m]["regimes"]}
                     - {"material_lot", "product"})
    for regime in regimes:
        fig = go.Figure()
        for m in models:
            xs, ys = [], []
            for s in scen:
                for band, met in sorted(result["scenarios"][s][m]["regimes"].get(regime, {}).items()):
                    xs.append(f"{s} · {band}")
                    ys.append(met.get("far"))
            fig.add_bar(name=m, x=xs, y=ys, marker_color=_COLORS.get(m))
        fig.update_layout(title=f"False-alarm rate by {regime}", barmode="group", height=380,
                          margin=dict(l=50, r=20, t=50, b=90))
        figs.append(fig)
    fig = go.Figure()
    for s in scen:
        for m in models:
            rel = result["scenarios"][s][m].get("reliability") or []
            fig.add_scatter(x=[r["mean_p"] for r in rel], y=[r["defect_rate"] for r in rel], mode="lines+markers",
                            name=f"{m} · {s}", line=dict(color=_COLORS.get(m), dash="solid" if m == models[0] else "dot"))
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line=dict(color="#999", dash="dash"))
    fig.update_layout(title="Calibration: predicted probability vs observed defect rate", height=420,
                      xaxis_title="mean predicted probability", yaxis_title="observed defect rate")
    figs.append(fig)
    return figs


def write_report(result: dict, out_dir: Path, title: str = "Robustness report") -> tuple[Path, Path]:
    """Write robustness.html and robustness.json into ``out_dir``; returns both paths."""
    import plotly.io as pio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = json_safe(result)
    result.setdefault("generated_at", datetime.now(timezone.utc).isoformat())
    json_path = out_dir / "robustness.json"
    json_path.write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    models = _models_of(result)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Generated {html.escape(result['generated_at'])}. Each model alerts at its own threshold, chosen by "
             "the same rule on its validation folds; rates are measured on held-out history it never saw.</p>"]
    if "train" in result:
        t = result["train"]
        parts.append(f"<p>Training history: {t.get('parts')} labelled parts, {t.get('defects')} defects, "
                     f"{_fmt(t.get('from'))} to {_fmt(t.get('to'))}, feature set {_fmt(t.get('feature_set_version'))}.</p>")
    goal = result.get("goal")
    if goal:
        verdict = "MET" if goal["met"] else "NOT MET"
        parts.append(f"<h2>Goal: {html.escape(goal['rule'])} — <span class='{'ok' if goal['met'] else 'bad'}'>"
                     f"{verdict}</span></h2>")
        parts.append(_table(["scenario", "FAR env-aware", "FAR naive", "naive/env", "recall env-aware", "recall naive", "met"],
                            [[k, r["far_env"], r["far_naive"], r["far_ratio_naive_over_env"], r["recall_env"],
                              r["recall_naive"], "yes" if r["met"] else "no"] for k, r in goal["scenarios"].items()]))
    parts.append("<h2>Per scenario</h2>")
    parts.append(_table(["scenario", "model", "parts", "defects"] + [t for _, t in _METRICS],
                        [[r["scenario"], r["model"], r["parts"], r["defects"]] + [r[k] for k, _ in _METRICS]
                         for r in summary_table(result)]))
    figs = _figures(result) if models else []
    for i, fig in enumerate(figs):
        parts.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False))
    parts.append("<h2>Per regime</h2>")
    rows = []
    for s, sd in result["scenarios"].items():
        for m in models:
            for regime, bands in sd[m]["regimes"].items():
                for band, met in sorted(bands.items()):
                    rows.append([s, m, regime, band, met["parts"], met["defects"], met["far"], met["recall"],
                                 met["precision"], met["alerts_per_h"], met["ece"]])
    parts.append(_table(["scenario", "model", "regime", "band", "parts", "defects", "FAR", "recall", "precision",
                         "alerts/h", "ECE"], rows))
    style = ("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}.ok{color:#1b7837}.bad{color:#b2182b}</style>")
    html_path = out_dir / "robustness.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{style}"
                         f"</head><body>{''.join(parts)}</body></html>", encoding="utf-8")
    logger.info("robustness report written: %s, %s", html_path, json_path)
    return html_path, json_path


def robustness_from_store(store, version_ids: list[int], evals: dict, regimes=None) -> dict:
    """The report's result dict for registered versions evaluated on labelled store datasets
    (``evals`` = {name: Dataset}); models are keyed by their kind when distinct, else by label."""
    from models.experiment import evaluate, goal_check
    from models.registry import get_version
    from models.scoring import Scorer

    scorers = {}
    for vid in version_ids:
        v = get_version(store, vid)
        key = v.kind if v.kind not in scorers else v.label
        scorers[key] = Scorer.from_version(store, vid)
    scenarios = {}
    for name, ds in evals.items():
        scenarios[name] = {k: evaluate(s, ds, regimes) for k, s in scorers.items()}
        scenarios[name]["parts"] = len(ds)
        scenarios[name]["defects"] = int(ds.y.sum())
    result = {"models": {k: {"version_id": s.version_id, "threshold": s.threshold, "card": s.card}
                         for k, s in scorers.items()}, "scenarios": scenarios}
    if {"environment-aware", "naive"} <= set(scorers):
        result["goal"] = goal_check(scenarios)
    return result
