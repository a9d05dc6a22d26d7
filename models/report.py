"""The robustness report: per environmental regime, side by side, as HTML (plotly) and JSON.

Owns rendering only: it takes the result dictionary of :func:`models.experiment.run_experiment`
(or :func:`robustness_from_store` for registered versions, or :func:`models.protocol.run_protocol`
for the multi-seed protocol: :func:`write_protocol_report`) and writes ``robustness.html`` (self-
contained: plotly's JavaScript is embedded, so it opens on a plant PC without internet) and
``robustness.json``. Beside every model's recall stands the oracle's at the same alert count
(simulator ground truth; "no ground truth" for imported or plant history), and the precision-recall
and FAR-recall curves show both models and the oracle. Imports pq and models only.

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
from models.oracle import NO_GROUND_TRUTH

__all__ = ["write_report", "write_protocol_report", "robustness_from_store", "summary_table"]

logger = logging.getLogger(__name__)

_METRICS = (("far", "False-alarm rate (good parts)"), ("recall", "Recall"), ("precision", "Precision"),
            ("alerts_per_h", "Alerts / h / line"), ("ece", "Calibration error (ECE)"), ("auc", "AUC"))
_ORACLE = (("oracle_recall", "Oracle recall at the same alert count"), ("oracle_ratio", "Recall / oracle recall"),
           ("oracle_auc", "Oracle AUC"))
_COLORS = {"environment-aware": "#1b7837", "naive": "#b2182b", "oracle": "#555555"}


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
                         **{k: o.get(k) for k, _ in _METRICS},
                         **{k: o.get(k, NO_GROUND_TRUTH) for k, _ in _ORACLE}})
    return rows


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
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


def _curve_figures(curves_by_scenario: dict[str, list[dict]]) -> list:
    """Precision-recall and FAR-recall curves of both models and the oracle, one pair per scenario;
    each scenario may carry several seed sets' curves (drawn thin, one legend entry per model)."""
    import plotly.graph_objects as go

    figs = []
    for scen, runs in curves_by_scenario.items():
        for y_key, title, log in (("precision", "Precision vs recall", False),
                                  ("far", "False-alarm rate vs recall (lower is better)", True)):
            fig = go.Figure()
            seen = set()
            for run in runs:
                for name, c in run.items():
                    fig.add_scatter(x=c["recall"], y=c[y_key], mode="lines", name=name, legendgroup=name,
                                    showlegend=name not in seen, line=dict(color=_COLORS.get(name), width=1.5,
                                                                           dash="dash" if name == "oracle" else "solid"))
                    seen.add(name)
            fig.update_layout(title=f"{title}: {scen}", height=380, xaxis_title="recall",
                              yaxis_title=y_key, yaxis_type="log" if log else "linear",
                              margin=dict(l=60, r=20, t=50, b=40))
            figs.append(fig)
    return figs


def _decision_tables(result: dict) -> list[str]:
    """Diversion decision and operator alarms per scenario and per regime band, oracle beside the model."""
    models = _models_of(result)
    out = []
    val = {m: result.get("models", {}).get(m, {}).get("validation_diversion") for m in models}
    if any(val.values()):
        out.append("<h2>Diversion and operator alarms on validation</h2>")
        out.append(_table(["model", "threshold", "diverted share", "FAR", "recall", "alarms/h", "episode rule"],
                          [[m, v["threshold"], v["diverted_share"], v["far"], v["recall"], v["alarms_per_h"],
                            f"{v['episode_rule']['k']} of {v['episode_rule']['n']}"] for m, v in val.items() if v]))
    rows, band_rows = [], []
    for s, sd in result["scenarios"].items():
        for m in models:
            d = sd[m].get("diversion")
            if not d:
                continue
            rows.append([s, m, d["diverted_share"], d["far"], d["recall"], d["alarms_per_h"], d["oracle_recall"],
                         d["oracle_ratio"], d["auc"], d["oracle_auc"]])
            for regime, bands in d["regimes"].items():
                for band, b in sorted(bands.items()):
                    band_rows.append([s, m, regime, band, b["parts"], b["defects"], b["diverted_share"], b["far"],
                                      b["recall"], b["alarms_per_h"], b["oracle_recall"], b["oracle_ratio"], b["auc"],
                                      b["oracle_auc"]])
    if rows:
        head = ["diverted share", "FAR", "recall", "alarms/h", "oracle recall", "recall / oracle", "AUC", "oracle AUC"]
        out.append("<h2>Diversion at the validation quantile, operator alarms, and the oracle</h2>")
        out.append("<p>The oracle ranks the same parts by their true defect probability (simulator ground truth) and "
                   "diverts as many as the model did.</p>")
        out.append(_table(["scenario", "model"] + head, rows))
        out.append("<h3>Per regime band</h3>")
        out.append(_table(["scenario", "model", "regime", "band", "parts", "defects"] + head, band_rows))
    goal = result.get("decision_goal")
    if goal:
        out.append(f"<h2>Goal: {html.escape(goal['rule'])} — <span class='{'ok' if goal['met'] else 'bad'}'>"
                   f"{'MET' if goal['met'] else 'NOT MET'}</span></h2>")
        out.append(_table(["scenario", "alarms/h env (x validation)", "alarm-open share env (x validation)",
                           "alarms/h naive (x validation)", "alarm-open share naive (x validation)", "matched recall",
                           "FAR env", "FAR naive", "FAR ratio", "oracle ratio env", "met"],
                          [[k, f"{_fmt(r['alarms_per_h_env'])} (x{_fmt(r['alarm_ratio_env'])})",
                            f"{_fmt(r.get('alarm_open_share_env'))} (x{_fmt(r.get('open_ratio_env'))})",
                            f"{_fmt(r['alarms_per_h_naive'])} (x{_fmt(r['alarm_ratio_naive'])})",
                            f"{_fmt(r.get('alarm_open_share_naive'))} (x{_fmt(r.get('open_ratio_naive'))})",
                            r["matched_recall"],
                            r["far_at_matched_recall_env"], r["far_at_matched_recall_naive"],
                            r["far_ratio_at_matched_recall"], r["oracle_ratio_env"], r["met"]]
                           for k, r in goal["scenarios"].items()]))
    return out


_STYLE = ("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
          "margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "th{background:#f3f3f3}.ok{color:#1b7837}.bad{color:#b2182b}</style>")


def _write(out_dir: Path, title: str, parts: list[str], result: dict) -> tuple[Path, Path]:
    json_path = out_dir / "robustness.json"
    json_path.write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    html_path = out_dir / "robustness.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}"
                         f"</head><body>{''.join(parts)}</body></html>", encoding="utf-8")
    logger.info("robustness report written: %s, %s", html_path, json_path)
    return html_path, json_path


def write_protocol_report(result: dict, out_dir: Path, title: str = "Robustness across seed sets") -> tuple[Path, Path]:
    """Write robustness.html / robustness.json for :func:`models.protocol.run_protocol`'s result: the
    verdict, one row per seed set and scenario, and every seed set's curves."""
    import plotly.io as pio

    from models.protocol import summary_rows

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = json_safe(result)
    result.setdefault("generated_at", datetime.now(timezone.utc).isoformat())
    sm, pr = result["summary"], result["protocol"]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Generated {html.escape(result['generated_at'])}. {sm['seed_sets']} seed sets from seed "
             f"{pr['seed_base']}: {pr['train']['days']:g} days of normal training history, {pr['held_out'][0]['days']:g} "
             f"days per held-out scenario ({', '.join(h['name'] for h in pr['held_out'])}) at {pr['sample_hz']:g} Hz. "
             f"Diversion: {pr['diversion_share']:.0%} of validation parts; operator alarm: {pr['episode_rule']['k']} of "
             f"the last {pr['episode_rule']['n']} parts at risk with the same cause.</p>",
             f"<h2>Verdict: <span class='{'ok' if sm['met_all'] else 'bad'}'>{'MET' if sm['met_all'] else 'NOT MET'}"
             f"</span> in {sm['met']} of {sm['scenarios']} seed-set scenarios</h2>",
             _table(list(sm), [list(sm.values())])]
    keys = ("seed_set", "seed", "scenario", "val_alarms_per_h_env", "alarms_per_h_env", "alarm_ratio_env",
            "alarm_open_share_env", "open_ratio_env", "val_alarms_per_h_naive", "alarms_per_h_naive",
            "alarm_ratio_naive", "alarm_open_share_naive", "open_ratio_naive", "diverted_share_env",
            "diverted_share_naive", "far_env", "recall_env", "far_naive", "recall_naive", "matched_recall",
            "far_at_matched_recall_env", "far_at_matched_recall_naive", "far_ratio_at_matched_recall",
            "oracle_recall_env", "oracle_ratio_env", "oracle_ratio_naive", "met", "oracle_alarms_per_h_train",
            "oracle_alarms_per_h", "warranted_alarm_ratio", "warranted_open_ratio", "met_given_trouble")
    parts.append(_table(list(keys), [[r.get(k) for k in keys] for r in summary_rows(result["seed_sets"])]))
    by_scen: dict[str, list] = {}
    for res in result["seed_sets"]:
        for scen, sd in res["scenarios"].items():
            if sd.get("curves"):
                by_scen.setdefault(scen, []).append(sd["curves"])
    for i, fig in enumerate(_curve_figures(by_scen)):
        parts.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False))
    for res in result["seed_sets"]:
        parts.append(f"<h2>Seed set {res['seed_set']} (seeds {html.escape(json.dumps(res['seeds']))})</h2>")
        parts += _decision_tables(res)
    return _write(out_dir, title, parts, result)


def write_report(result: dict, out_dir: Path, title: str = "Robustness report") -> tuple[Path, Path]:
    """Write robustness.html and robustness.json into ``out_dir``; returns both paths."""
    import plotly.io as pio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = json_safe(result)
    result.setdefault("generated_at", datetime.now(timezone.utc).isoformat())
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
        parts.append(f"<h2>Single-threshold comparison (today's table): {html.escape(goal['rule'])} — "
                     f"<span class='{'ok' if goal['met'] else 'bad'}'>{verdict}</span></h2>")
        parts.append(_table(["scenario", "FAR env-aware", "FAR naive", "naive/env", "recall env-aware", "recall naive", "met"],
                            [[k, r["far_env"], r["far_naive"], r["far_ratio_naive_over_env"], r["recall_env"],
                              r["recall_naive"], "yes" if r["met"] else "no"] for k, r in goal["scenarios"].items()]))
    parts.append("<h2>Per scenario, at the alarm-budget threshold</h2>")
    parts.append(_table(["scenario", "model", "parts", "defects"] + [t for _, t in _METRICS] + [t for _, t in _ORACLE],
                        [[r["scenario"], r["model"], r["parts"], r["defects"]] + [r[k] for k, _ in _METRICS]
                         + [r[k] for k, _ in _ORACLE] for r in summary_table(result)]))
    parts += _decision_tables(result)
    figs = _figures(result) if models else []
    figs += _curve_figures({s: [sd["curves"]] for s, sd in result["scenarios"].items() if sd.get("curves")})
    for i, fig in enumerate(figs):
        parts.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False))
    parts.append("<h2>Per regime, at the alarm-budget threshold</h2>")
    rows = []
    for s, sd in result["scenarios"].items():
        for m in models:
            for regime, bands in sd[m]["regimes"].items():
                for band, met in sorted(bands.items()):
                    rows.append([s, m, regime, band, met["parts"], met["defects"], met["far"], met["recall"],
                                 met.get("oracle_recall", NO_GROUND_TRUTH), met.get("oracle_ratio", NO_GROUND_TRUTH),
                                 met["auc"], met.get("oracle_auc", NO_GROUND_TRUTH), met["precision"],
                                 met["alerts_per_h"], met["ece"]])
    parts.append(_table(["scenario", "model", "regime", "band", "parts", "defects", "FAR", "recall", "oracle recall",
                         "recall / oracle", "AUC", "oracle AUC", "precision", "alerts/h", "ECE"], rows))
    return _write(out_dir, title, parts, result)


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
        # the two decisions as the version ships them (none for versions trained before them)
        scenarios[name] = {k: evaluate(s, ds, regimes, diversion_threshold=s.diversion_threshold,
                                       episode_rule=s.episode_rule) for k, s in scorers.items()}
        scenarios[name]["parts"] = len(ds)
        scenarios[name]["defects"] = int(ds.y.sum())
    result = {"models": {k: {"version_id": s.version_id, "threshold": s.threshold, "card": s.card}
                         for k, s in scorers.items()}, "scenarios": scenarios}
    if {"environment-aware", "naive"} <= set(scorers):
        result["goal"] = goal_check(scenarios)
    return result
