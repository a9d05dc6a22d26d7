"""``pq train``, ``pq models ...``, ``pq report robustness``, ``pq import``: the commands over models/.

Thin wrappers: parse options, call models' Python API (imported inside the commands), print. Every
PQError becomes one line on stderr in pq's root group.

Why one file of ~450 lines: the command group over models/ (train, models, report, import); each
command is a thin wrapper and the robustness command's three modes are functions of their own.
"""

from __future__ import annotations

import getpass
import json
import logging
import sys
from pathlib import Path

import click

from pq.cli import iso_time

__all__ = ["train", "models", "report", "import_history"]

logger = logging.getLogger(__name__)


def _ctx():
    from pq.cli import get_settings, open_store

    return get_settings(), open_store()


def _user(user: str | None) -> str:
    return user or getpass.getuser()


def _progress_printer():
    """Progress lines on stderr: one per message change, with the percentage."""
    last = [None]

    def cb(fraction: float, message: str) -> None:
        if message != last[0]:
            last[0] = message
            click.echo(f"[{fraction:4.0%}] {message}", err=True)

    return cb


def _regimes(specs: tuple[str, ...]):
    from models.regimes import DEFAULT_REGIMES, parse_regime

    return DEFAULT_REGIMES + tuple(parse_regime(s) for s in specs)


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _episode_rule(_ctx, param, value: str):
    """--episode K/N as an EpisodeRule, or a usage error that says what is wrong."""
    from pq.alerts.episodes import EpisodeRule

    k, _, n = str(value).partition("/")
    try:
        return EpisodeRule(int(k), int(n))
    except ValueError as exc:
        raise click.BadParameter(f"expected K/N with 1 <= K <= N, got {value!r} ({exc})", param=param) from None


# -- pq train ----------------------------------------------------------------------------------------

@click.command()
@click.option("--feature-set", help="Feature-set version of the stored vectors (default PQ_MODEL_FEATURE_SET).")
@click.option("--line", "line_id", help="Train for one line (default: all lines).")
@click.option("--product", help="Train for one product (default: all products).")
@click.option("--kind", type=click.Choice(["environment-aware", "naive"]), default="environment-aware", show_default=True)
@click.option("--name", default="defect", show_default=True, help="Model name in the registry.")
@click.option("--budget", "alarm_budget", type=float, help="Alarm budget: alerts per hour per line (PQ_MODEL_ALARM_BUDGET_PER_H).")
@click.option("--target-recall", type=float, help="Target recall instead of (or capped by) the budget.")
@click.option("--per-defect-code", is_flag=True, help="Also train one model per defect code.")
@click.option("--reweight-regimes", is_flag=True, help="Weigh rare conditions (hot days, new supplier) up.")
@click.option("--folds", type=int, help="Validation folds (PQ_MODEL_CV_FOLDS).")
@click.option("--seed", type=int, help="Random seed (PQ_MODEL_SEED).")
@click.option("--since", help="First cycle_end (ISO) of the training window.")
@click.option("--until", help="End (exclusive) of the training window.")
@click.option("--label-precedence", type=click.Choice(["inspection", "feedback"]), help="Which label wins (PQ_MODEL_LABEL_PRECEDENCE).")
@click.option("--exclude-feature", multiple=True, help="Regular expression of features to leave out (repeatable).")
@click.option("--drop-empty-features", is_flag=True, help="Leave out features that have no value for any part.")
@click.option("--regime", "regime_specs", multiple=True, help="Extra regime NAME:COLUMN[:EDGES[:UNIT]], e.g. air:ambient_temp_k:299,301:K")
@click.option("--cv", type=click.Choice(["time", "stratified"]), default="time", show_default=True,
              help="Validation folds: purged time folds of day+lot groups, or stratified random folds, which are "
                   "valid ONLY for independent parts without drift, lots or days (a benchmark like AI4I 2020).")
@click.option("--threshold-rule", type=click.Choice(["budget", "f1"]), default="budget", show_default=True,
              help="budget: alarm budget / target recall; f1: the threshold with the best out-of-fold F1, "
                   "whatever alarm rate that means.")
@click.option("--compare-plain", is_flag=True,
              help="Also score plain LightGBM (defaults) on the same folds with the same threshold rule; "
                   "printed and stored in the card.")
@click.option("--diversion-share", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Part decision: divert at most this share of parts for inspection (default 0.03).")
@click.option("--diversion-recall", type=click.FloatRange(min=0, max=1, min_open=True),
              help="Part decision: divert enough parts to reach this recall on validation (capped by "
                   "--diversion-share when both are given).")
@click.option("--episode", default="3/10", show_default=True, metavar="K/N", callback=_episode_rule,
              help="Operator alarm: K of the last N parts at risk with the same cause.")
@click.option("--user", help="Who trains (default: the OS user).")
def train(feature_set, line_id, product, kind, name, alarm_budget, target_recall, per_defect_code, reweight_regimes,
          folds, seed, since, until, label_precedence, exclude_feature, drop_empty_features, regime_specs, cv,
          threshold_rule, compare_plain, diversion_share, diversion_recall, episode, user):
    """Train a defect model on the store's labelled history and register it as a new version.

    Two decisions are chosen on validation folds grouped by day and material lot: the diversion
    threshold (parts set aside for inspection, within a share of parts or for a recall) and the
    operator alarm rule (an episode of parts at risk with one cause); the alert threshold for the
    alarm budget (or target recall) serves the single-threshold mode. The model card states each
    rule and what it achieved.
    """
    from models.dataset import load_dataset
    from models.thresholds import DEFAULT_DIVERSION_SHARE
    from models.training import TrainConfig, train as run_train

    settings, store = _ctx()
    budget = alarm_budget if alarm_budget is not None else (None if target_recall else settings.model_alarm_budget_per_h)
    cfg = TrainConfig(
        feature_set_version=feature_set or settings.model_feature_set, name=name, line_id=line_id, product=product,
        kind=kind, alarm_budget_per_h=budget, target_recall=target_recall or settings.model_target_recall,
        reweight_regimes=reweight_regimes, folds=folds or settings.model_cv_folds,
        seed=settings.model_seed if seed is None else seed, n_threads=settings.model_threads,
        start=iso_time(since), end=iso_time(until), label_precedence=label_precedence or settings.model_label_precedence,
        min_labelled=settings.model_min_labelled_parts, min_defects=settings.model_min_defects,
        drop_empty_features=drop_empty_features, exclude_features=tuple(exclude_feature),
        regimes=_regimes(regime_specs), cv=cv, threshold_rule=threshold_rule, compare_plain=compare_plain,
        # a recall alone sets the threshold; a share, given or the default, caps it
        diversion_share=diversion_share or (None if diversion_recall else DEFAULT_DIVERSION_SHARE),
        diversion_recall=diversion_recall, episode_k=episode.k, episode_n=episode.n)
    who = _user(user)
    progress = _progress_printer()
    ds = load_dataset(store, cfg.feature_set_version, line_id=line_id, product=product, start=cfg.start, end=cfg.end,
                      label_precedence=cfg.label_precedence)
    configs = [cfg]
    if per_defect_code:
        from dataclasses import replace

        codes = ds.meta.loc[ds.y == 1, "defect_code"].dropna().astype(str)
        codes = sorted(c for c in codes.unique() if c)
        configs += [replace(cfg, defect_code=c) for c in codes]
    for c in configs:
        click.echo(f"training {c.kind} model {c.name}{'/' + c.defect_code if c.defect_code else ''} "
                   f"on feature set {c.feature_set_version}", err=True)
        result = run_train(store, c, trained_by=who, progress=progress, dataset=ds)
        v, m = result.version, result.outcome.metrics
        click.echo(f"registered {v.label}: threshold {v.threshold:.4f} ({result.outcome.threshold_rule['rule']}); "
                   f"validation ({c.cv} folds) F1 {_fmt(m['f1'])}, precision {_fmt(m['precision'])}, "
                   f"recall {_fmt(m['recall'])}, false-alarm rate {_fmt(m['far'])}, "
                   f"{_fmt(m['alerts_per_h'], 2)} alerts/h, AUC {_fmt(m['auc'])}, ECE {_fmt(m['ece'])}")
        d = result.outcome.decisions
        click.echo(f"  two decisions: diverts parts at or above {d['threshold']:.4f} ({_fmt(d['diverted_share'])} of "
                   f"validation parts, recall {_fmt(d['recall'])}); operator alarms {_fmt(d['alarms_per_h'], 2)}/h "
                   f"({episode.k} of {episode.n} parts at risk with one cause)")
        for plain, pm in (result.outcome.comparison or {}).items():
            click.echo(f"  same folds, {plain} ({pm['features']} features): F1 {_fmt(pm['f1'])}, precision "
                       f"{_fmt(pm['precision'])}, recall {_fmt(pm['recall'])}, {_fmt(pm['alerts_per_h'], 2)} alerts/h, "
                       f"AUC {_fmt(pm['auc'])}")
    click.echo("promote with: pq models promote ID --reason '...'", err=True)


# -- pq models -----------------------------------------------------------------------------------------

@click.group()
def models():
    """Model registry: list, show, compare, shadow, promote, roll back; scheduled retraining and its proposals."""


@models.command("list")
@click.option("--name")
@click.option("--line", "line_id")
@click.option("--limit", type=int, default=50, show_default=True)
def list_cmd(name, line_id, limit):
    """Versions, newest first; * marks production versions, ~ versions running in shadow."""
    from models.registry import list_versions, production_map, shadows

    _, store = _ctx()
    prod = {}
    for scope, vid in production_map(store).items():
        prod.setdefault(vid, []).append(scope)
    shadow = {}
    for scope, sh in shadows(store).items():
        shadow.setdefault(sh.model_version_id, []).append(scope)
    click.echo(f"{'id':>4} {'name':<18} {'ver':>3} {'kind':<17} {'scope':<14} {'feature set':<18} {'thr':>7} "
               f"{'recall':>7} {'FAR':>7} {'by':<10} {'created':<16} production")
    for v in list_versions(store, name=name, line_id=line_id, limit=limit):
        m = v.metrics or {}
        click.echo(f"{v.id:>4} {v.name:<18} {v.version:>3} {v.kind:<17} {v.scope:<14} {v.feature_set_version:<18} "
                   f"{v.threshold:>7.4f} {_fmt(m.get('recall')):>7} {_fmt(m.get('far')):>7} {(v.trained_by or ''):<10} "
                   f"{v.created_at:%Y-%m-%d %H:%M} {'* ' + ', '.join(prod[v.id]) if v.id in prod else ''}"
                   f"{'~ shadow ' + ', '.join(shadow[v.id]) if v.id in shadow else ''}")


@models.command()
@click.argument("version_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The whole card, metrics and per-regime metrics as JSON.")
def show(version_id, as_json):
    """A version's card, metrics overall and per regime, and its deployments."""
    from dataclasses import asdict

    from models.estimator import json_safe
    from models.registry import deployments, get_version

    _, store = _ctx()
    v = get_version(store, version_id)
    deps = [d for d in deployments(store) if d.model_version_id == v.id]
    if as_json:
        click.echo(json.dumps(json_safe(asdict(v) | {"deployments": [asdict(d) for d in deps]}), indent=1))
        return
    card = v.card or {}
    click.echo(f"{v.label}  kind {v.kind}  scope {v.scope}  feature set {v.feature_set_version}")
    click.echo(f"trained by {v.trained_by} at {v.created_at:%Y-%m-%d %H:%M} UTC on {v.train_start} .. {v.train_end}")
    click.echo(f"artifact sha256 {v.artifact_sha256}")
    th = card.get("threshold", {})
    click.echo(f"alert threshold {v.threshold:.4f} (single-threshold mode): {th.get('rule')} — {th.get('meaning', '')}")
    dec = card.get("decisions")
    click.echo(f"two decisions: {dec['meaning']}" if dec else
               "two decisions: none (trained before them); the edge serves this version with its alert threshold")
    data = card.get("data", {})
    click.echo(f"data: {data.get('parts')} parts, {data.get('defects')} defects, {data.get('unlabelled_left_out')} "
               f"awaiting labels left out; labels {data.get('label_sources')}")
    m = v.metrics or {}
    click.echo("validation: " + ", ".join(f"{k} {_fmt(m.get(k))}" for k in
                                          ("recall", "far", "precision", "alerts_per_h", "auc", "pr_auc", "ece")))
    for regime, bands in (v.regime_metrics or {}).items():
        click.echo(f"  {regime}:")
        for band, bm in sorted(bands.items()):
            click.echo(f"    {band:<22} parts {bm['parts']:>6} defects {bm['defects']:>4}  FAR {_fmt(bm['far'])}  "
                       f"recall {_fmt(bm['recall'])}  alerts/h {_fmt(bm['alerts_per_h'], 2)}  ECE {_fmt(bm['ece'])}")
    for d in deps:
        click.echo(f"{d.at:%Y-%m-%d %H:%M} {d.action} {d.scope} by {d.approved_by}{' (OVERRIDE)' if d.override else ''}: {d.reason}")


@models.command()
@click.argument("candidate_id", type=int)
@click.argument("production_id", type=int, required=False)
@click.option("--margin", type=float, help="Tolerance (PQ_MODEL_PROMOTION_MARGIN).")
@click.option("--live", is_flag=True, help="On live parts: what the candidate decided in shadow beside production.")
@click.option("--replay", is_flag=True, help="On a stored window of served vectors (--line, --since, --until).")
@click.option("--line", "line_id", help="With --live / --replay: one line (required with --replay).")
@click.option("--since", help="With --live / --replay: first cycle end (ISO).")
@click.option("--until", help="With --live / --replay: end (exclusive, ISO).")
@click.option("--json", "as_json", is_flag=True, help="With --live / --replay: the whole comparison as JSON.")
def compare(candidate_id, production_id, margin, live, replay, line_id, since, until, as_json):
    """Per-regime false-alarm rate and recall of a candidate against production (or another version).

    Without --live / --replay: the two versions' validation metrics. --live: per regime band, both
    models' alarms/h, diverted share, agreement and, where labelled, FAR and recall over the parts the
    candidate scored in shadow; --replay: the same over stored served vectors of --line.
    """
    from models.registry import compare as do_compare, get_version, production_version

    settings, store = _ctx()
    if live or replay:
        _compare_shadow(store, settings, candidate_id, replay, line_id, since, until, as_json)
        return
    if production_id is None:
        c = get_version(store, candidate_id)
        p = production_version(store, c.line_id, c.product)
        if p is None:
            raise click.ClickException(f"no production version for {c.scope}; give a version to compare with")
        production_id = p.id
    res = do_compare(store, candidate_id, production_id, settings.model_promotion_margin if margin is None else margin)
    click.echo(f"candidate {res['candidate']} vs {res['production']} (margin {res['margin']})")
    for k, row in res["overall"].items():
        click.echo(f"  {k:<14} {_fmt(row['candidate']):>8} vs {_fmt(row['production']):>8}")
    for r in res["regimes"] + res["decisions"]:
        click.echo(f"  {r['regime']}={r['band']:<18} {r['metric']:<7} {_fmt(r['candidate']):>8} vs "
                   f"{_fmt(r['production']):>8}  {'WORSE' if r['worse'] else ''}")


def _compare_shadow(store, settings, candidate_id, replay, line_id, since, until, as_json) -> None:
    """``compare --live`` / ``--replay``: one line overall, one per regime band."""
    from models.shadow import compare_live, compare_replay

    if replay:
        if not line_id:
            raise click.UsageError("--replay needs --line (the served vectors of one line)")
        res = compare_replay(store, candidate_id, line_id=line_id, since=iso_time(since), until=iso_time(until),
                             two=settings.edge_decisions == "two")
    else:
        res = compare_live(store, candidate_id, line_id=line_id, since=iso_time(since), until=iso_time(until))
    if as_json:
        click.echo(json.dumps(res, default=str))
        return
    o = res["overall"]
    if not o["parts"]:
        click.echo(f"no parts: #{candidate_id} " + ("has no stored served vectors with production decisions in that "
                                                     "window" if replay else "has not scored any part in shadow yet"))
        return
    click.echo(f"{res['mode']}: #{candidate_id} vs production {res['versions']['production']} on {o['parts']} parts, "
               f"{o['hours']:.2f} h ({res['period'][0]} .. {res['period'][1]}); {o['labelled']} labelled, "
               f"{o['defects']} defects")
    click.echo(f"{'regime':<14} {'band':<18} {'parts':>6} {'agree':>6}  {'alarms/h prod':>13} {'cand':>6}  "
               f"{'diverted prod':>13} {'cand':>6}  {'FAR prod':>8} {'cand':>6}  {'recall prod':>11} {'cand':>6}")
    for r in [{"regime": "overall", "band": "", **o}] + res["bands"]:
        p, c = r["production"], r["challenger"]
        click.echo(f"{r['regime']:<14} {str(r['band']):<18} {r['parts']:>6} {_fmt(r['agreement'], 3):>6}  "
                   f"{_fmt(p['alarms_per_h'], 2):>13} {_fmt(c['alarms_per_h'], 2):>6}  "
                   f"{_fmt(p['diverted_share'], 3):>13} {_fmt(c['diverted_share'], 3):>6}  "
                   f"{_fmt(p['far'], 3):>8} {_fmt(c['far'], 3):>6}  {_fmt(p['recall'], 3):>11} {_fmt(c['recall'], 3):>6}")


@models.command()
@click.argument("version_id", type=int, required=False)
@click.option("--line", "line_id", required=True, help="The line whose edge scores the challenger.")
@click.option("--product", help="Only this product's parts (default: all products of the line).")
@click.option("--stop", is_flag=True, help="End the shadow running for --line (and --product).")
@click.option("--reason", help="Why: what the challenger should show (recorded).")
@click.option("--user", help="Engineer responsible (default: the OS user).")
def shadow(version_id, line_id, product, stop, reason, user):
    """Run a version in shadow beside production on a line (champion / challenger), or --stop it.

    The edge scores every part with production and the challenger on the same served vector, acts
    only on production's decision and records both; compare with `pq models compare ID --live`.
    """
    from models.registry import start_shadow, stop_shadow

    _, store = _ctx()
    if stop:
        if version_id is not None:
            raise click.UsageError("--stop takes no version: it ends whatever runs in shadow for --line")
        sh = stop_shadow(store, line_id=line_id, product=product, by=_user(user), reason=reason or "shadow stopped")
        click.echo(f"shadow of #{sh.model_version_id} for {sh.scope} stopped")
        return
    if version_id is None:
        raise click.UsageError("give the VERSION_ID to run in shadow, or --stop")
    sh = start_shadow(store, version_id, line_id=line_id, product=product, by=_user(user), reason=reason)
    click.echo(f"#{sh.model_version_id} runs in shadow for {sh.scope}; edges pick it up at their next model poll")


@models.command()
@click.argument("version_id", type=int)
@click.option("--scope", help="LINE/PRODUCT with * for all (default: the version's own scope).")
@click.option("--reason", required=True, help="Why this version (recorded).")
@click.option("--user", help="Approver (default: the OS user).")
@click.option("--override", is_flag=True, help="Promote although some regime is worse than production (audited).")
@click.option("--margin", type=float, help="Tolerance (PQ_MODEL_PROMOTION_MARGIN).")
@click.option("--edge-feature-set", help="Feature-set version the edge computes (default: what edges report).")
def promote(version_id, scope, reason, user, override, margin, edge_feature_set):
    """Make a version the production model of its line/product scope."""
    from models.registry import promote as do_promote

    settings, store = _ctx()
    dep = do_promote(store, version_id, scope=scope, approved_by=_user(user), reason=reason, override=override,
                     edge_feature_set_version=edge_feature_set,
                     margin=settings.model_promotion_margin if margin is None else margin, client="cli")
    click.echo(f"#{dep.model_version_id} is now in production for {dep.scope}{' (override recorded)' if dep.override else ''}")


@models.command()
@click.argument("scope")
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--user", help="Approver (default: the OS user).")
def rollback(scope, reason, user):
    """Put back the version that served SCOPE (e.g. '*/*' or line-1/*) before the current one."""
    from models.registry import rollback as do_rollback

    _, store = _ctx()
    dep = do_rollback(store, scope, approved_by=_user(user), reason=reason, client="cli")
    click.echo(f"{dep.scope} rolled back to #{dep.model_version_id}")


# -- pq models schedule / proposals / scheduler: retraining that proposes, never promotes ---------------

def _train_defaults(settings) -> dict:
    """The TrainConfig fields a schedule does not set, from the settings (as `pq train` uses them)."""
    return {"feature_set_version": settings.model_feature_set,
            "alarm_budget_per_h": None if settings.model_target_recall else settings.model_alarm_budget_per_h,
            "target_recall": settings.model_target_recall, "folds": settings.model_cv_folds,
            "seed": settings.model_seed, "n_threads": settings.model_threads,
            "label_precedence": settings.model_label_precedence, "min_labelled": settings.model_min_labelled_parts,
            "min_defects": settings.model_min_defects}


def _shadow(store, version_id: int, line_id: str | None, actor: str) -> str:
    """The scheduler's hand-over: a passing candidate goes into shadow beside production on its line."""
    from models.shadow import put_in_shadow

    return put_in_shadow(store, version_id, line_id, actor)


def _scheduler(settings, store=None, **kw):
    from models.scheduler import Scheduler
    from pq.storage import Store, migrate

    def open_checked():
        opened = Store.open(settings, wait=False)  # the scheduler's own loop retries, reporting once
        migrate.check(opened)
        return opened

    sched = Scheduler((lambda: store) if store is not None else open_checked, defaults=_train_defaults(settings),
                      shadow=_shadow, margin=settings.model_promotion_margin, **kw)
    sched.store = store
    return sched


@models.group()
def schedule():
    """Scheduled retraining per scope: add, list, pause, resume, remove, run now."""


@schedule.command("add")
@click.argument("scope")
@click.option("--approver", required=True, help="Engineer or admin notified of each proposal.")
@click.option("--every-days", type=click.FloatRange(min=0, min_open=True),
              help="Run every N days (default 7 when no other trigger is given).")
@click.option("--labels", "min_new_labels", type=click.IntRange(min=1),
              help="Run when N new labels (inspections + operator feedback) arrived since the last run.")
@click.option("--on-drift", is_flag=True, help="Run when a drift alarm (a drift line event) arrives for the line.")
@click.option("--window-days", type=click.FloatRange(min=0, min_open=True), default=28.0, show_default=True,
              help="Train on the last N days.")
@click.option("--feature-set", help="Feature set (default: production's, else PQ_MODEL_FEATURE_SET).")
@click.option("--kind", type=click.Choice(["environment-aware", "naive"]))
@click.option("--name", help="Model name in the registry (default defect).")
@click.option("--budget", "alarm_budget", type=float, help="Alarm budget: alerts per hour per line.")
@click.option("--target-recall", type=float)
@click.option("--diversion-share", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Part decision: divert at most this share of parts (default 0.03).")
@click.option("--user", help="Who adds it: a pq engineer or admin (default: the OS user).")
def schedule_add(scope, approver, every_days, min_new_labels, on_drift, window_days, feature_set, kind, name,
                 alarm_budget, target_recall, diversion_share, user):
    """Add a schedule for SCOPE (LINE/PRODUCT, * for all): train a candidate and propose it."""
    from models.scheduler import DEFAULT_EVERY_DAYS, add_schedule

    _, store = _ctx()
    if every_days is None and not min_new_labels and not on_drift:
        every_days = DEFAULT_EVERY_DAYS
    config = {"feature_set_version": feature_set, "kind": kind, "name": name, "alarm_budget_per_h": alarm_budget,
              "target_recall": target_recall, "diversion_share": diversion_share}
    s = add_schedule(store, scope, approver=approver, actor=_user(user), every_days=every_days,
                     min_new_labels=min_new_labels, on_drift=on_drift, window_days=window_days, config=config)
    click.echo(f"schedule #{s.id} for {s.scope}: {s.triggers()}, last {s.window_days:g} days, approver {s.approver}"
               + (f"; next due {s.next_due_at:%Y-%m-%d %H:%M} UTC" if s.next_due_at else ""))


@schedule.command("list")
def schedule_list():
    """Schedules with their triggers, next due time and last result."""
    from models.scheduler import list_schedules

    _, store = _ctx()
    rows = list_schedules(store)
    if not rows:
        click.echo("no training schedules (add one: pq models schedule add SCOPE --approver USER)")
    for s in rows:
        click.echo(f"#{s.id:<3} {s.scope:<14} {'enabled' if s.enabled else 'disabled':<8} {s.triggers():<40} "
                   f"window {s.window_days:g} d  approver {s.approver:<10} "
                   f"next due {f'{s.next_due_at:%Y-%m-%d %H:%M}' if s.next_due_at else '-':<16} "
                   f"last run {f'{s.last_run_at:%Y-%m-%d %H:%M}' if s.last_run_at else 'never':<16} {s.last_result or ''}")


@schedule.command("remove")
@click.argument("schedule_id", type=int)
@click.option("--user", help="A pq engineer or admin (default: the OS user).")
def schedule_remove(schedule_id, user):
    """Delete a schedule (its proposals and candidates stay)."""
    from models.scheduler import remove_schedule

    _, store = _ctx()
    remove_schedule(store, schedule_id, actor=_user(user))
    click.echo(f"schedule #{schedule_id} removed")


@schedule.command("pause")
@click.argument("schedule_id", type=int)
@click.option("--user", help="A pq engineer or admin (default: the OS user).")
def schedule_pause(schedule_id, user):
    """Stop a schedule from running until it is resumed."""
    from models.scheduler import set_enabled

    _, store = _ctx()
    set_enabled(store, schedule_id, False, actor=_user(user))
    click.echo(f"schedule #{schedule_id} paused")


@schedule.command("resume")
@click.argument("schedule_id", type=int)
@click.option("--user", help="A pq engineer or admin (default: the OS user).")
def schedule_resume(schedule_id, user):
    """Let a paused schedule run again (once at the next poll if it fell due meanwhile)."""
    from models.scheduler import set_enabled

    _, store = _ctx()
    set_enabled(store, schedule_id, True, actor=_user(user))
    click.echo(f"schedule #{schedule_id} resumed")


@schedule.command("run-now")
@click.argument("schedule_id", type=int)
@click.option("--reason", default="asked for", show_default=True,
              help="Why, recorded as the trigger (e.g. drift: feeds the drift trigger by hand).")
@click.option("--user", help="A pq engineer or admin (default: the OS user).")
def schedule_run_now(schedule_id, reason, user):
    """Run a schedule now, in this process: train, judge, propose (never promote)."""
    from models.proposals import require_engineer
    from models.scheduler import get_schedule

    settings, store = _ctx()
    who = require_engineer(store, _user(user), "run a training schedule")
    s = get_schedule(store, schedule_id)
    p = _scheduler(settings, store).run_one(s, f"run-now by {who.username}: {reason}")
    if p is not None:
        _echo_proposal(p)


def _echo_proposal(p) -> None:
    click.echo(f"proposal #{p.id} [{p.status}] {p.scope}: candidate "
               f"{'#' + str(p.candidate_version_id) if p.candidate_version_id else 'none'} vs production "
               f"{'#' + str(p.production_version_id) if p.production_version_id else 'none'}; "
               f"{p.report.get('verdict', '')}" + (f"; {p.shadow}" if p.shadow else "")
               + (f"; {p.decided_by}: {p.reason}" if p.decided_by else ""))


@models.group()
def proposals():
    """Candidates proposed by scheduled retraining: list, show, approve, reject."""


@proposals.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also failed, approved and rejected ones.")
def proposals_list(show_all):
    """Open proposals (waiting for an engineer), newest first."""
    from models.proposals import list_proposals, open_proposals

    _, store = _ctx()
    rows = list_proposals(store) if show_all else open_proposals(store)
    if not rows:
        click.echo("no open proposals" if not show_all else "no proposals")
    for p in rows:
        _echo_proposal(p)


@proposals.command("show")
@click.argument("proposal_id", type=int)
def proposals_show(proposal_id):
    """A proposal with its whole report (gate, same-window figures) as JSON."""
    from dataclasses import asdict

    from models.estimator import json_safe
    from models.proposals import get_proposal

    _, store = _ctx()
    click.echo(json.dumps(json_safe(asdict(get_proposal(store, proposal_id))), indent=1))


@proposals.command("approve")
@click.argument("proposal_id", type=int)
@click.option("--reason", required=True, help="Why this candidate (recorded with the promotion).")
@click.option("--user", help="Approver: a pq engineer or admin (default: the OS user).")
def proposals_approve(proposal_id, reason, user):
    """Promote a proposal's candidate through the registry's gate (audited with the reason)."""
    from models.proposals import approve

    settings, store = _ctx()
    dep = approve(store, proposal_id, username=_user(user), reason=reason, client="cli",
                  margin=settings.model_promotion_margin)
    click.echo(f"proposal #{proposal_id} approved: #{dep.model_version_id} is now in production for {dep.scope}")


@proposals.command("reject")
@click.argument("proposal_id", type=int)
@click.option("--reason", required=True, help="Why not (recorded).")
@click.option("--user", help="A pq engineer or admin (default: the OS user).")
def proposals_reject(proposal_id, reason, user):
    """Close a proposal without promoting; the candidate stays registered."""
    from models.proposals import reject

    _, store = _ctx()
    reject(store, proposal_id, username=_user(user), reason=reason, client="cli")
    click.echo(f"proposal #{proposal_id} rejected")


@models.command("scheduler")
@click.option("--poll-s", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds between looks for due schedules.")
@click.option("--once", is_flag=True, help="Run what is due now, then exit (for cron or a test).")
@click.option("--retry-s", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds between attempts while the store is unreachable.")
@click.option("--store-wait-s", type=click.FloatRange(min=0), default=None,
              help="Give up when the store stays unreachable this long at start (default: wait for ever).")
def scheduler_cmd(poll_s, once, retry_s, store_wait_s):
    """Run due training schedules until SIGTERM / Ctrl-C; proposals wait for an engineer's approval."""
    import signal
    import threading

    settings = _ctx_settings()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"scheduler: polling every {poll_s:g} s; SIGTERM / Ctrl-C stops (a training under way is abandoned, "
               "nothing registered, and runs again on start)", err=True)
    n = _scheduler(settings, poll_s=poll_s, retry_s=retry_s, store_wait_s=store_wait_s, stop=stop).run(once=once)
    click.echo(f"scheduler stopped: {n} proposal(s) recorded", err=True)


def _ctx_settings():
    from pq.cli import get_settings

    return get_settings()


# -- pq report -----------------------------------------------------------------------------------------

@click.group()
def report():
    """Reports: robustness per environmental regime."""


@report.command()
@click.option("--train-history", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="History dir (pq simulate history --out) to train both models on (normal conditions).")
@click.option("--eval-history", multiple=True, metavar="NAME=DIR",
              help="Held-out history to evaluate on, e.g. heatwave=var/hist/heatwave (repeatable).")
@click.option("--model", "model_ids", type=int, multiple=True,
              help="Registered version(s) to evaluate on the store instead (e.g. env-aware and naive ids).")
@click.option("--eval-window", multiple=True, metavar="NAME=FROM..TO",
              help="With --model: a labelled window of the store to evaluate on (repeatable).")
@click.option("--seed-sets", type=click.IntRange(min=1),
              help="Run the fixed protocol instead: N seed sets of simulated training + held-out histories.")
@click.option("--seed-base", type=int, default=1000, show_default=True, help="With --seed-sets: seed of the first set.")
@click.option("--train-days", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="With --seed-sets: days of normal training history per set (1 Hz).")
@click.option("--eval-days", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="With --seed-sets: days per held-out scenario.")
@click.option("--diversion-share", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Share of parts diverted, as a quantile of validation probabilities (default 0.03).")
@click.option("--episode", default="3/10", show_default=True, metavar="K/N", callback=_episode_rule,
              help="Operator alarm: K of the last N parts at risk with the same cause.")
@click.option("--feature-set", help="Feature set (default PQ_MODEL_FEATURE_SET or the shipped spec).")
@click.option("--budget", "alarm_budget", type=float, help="Alarm budget for both models (alerts/h/line).")
@click.option("--target-recall", type=float)
@click.option("--regime", "regime_specs", multiple=True, help="Extra regime NAME:COLUMN[:EDGES[:UNIT]].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output dir (default PQ_DATA_DIR/reports).")
@click.option("--seed", type=int)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line: the verdict (with --seed-sets) or the goal.")
def robustness(train_history, eval_history, model_ids, eval_window, seed_sets, seed_base, train_days, eval_days,
               diversion_share, episode, feature_set, alarm_budget, target_recall, regime_specs, out_dir, seed, as_json):
    """False-alarm rate, recall, alarms/h and diversion per regime, beside the oracle: environment-aware vs naive.

    Trains both kinds on --train-history and evaluates them on each --eval-history; or evaluates
    registered --model versions on --eval-window slices of the store; or, with --seed-sets N, runs
    the fixed protocol (docs/models.md) on N independent simulated seed sets.
    """
    from pq.cli import get_settings
    from models.thresholds import DEFAULT_DIVERSION_SHARE

    settings = get_settings()
    out_dir = out_dir or Path(settings.data_dir) / "reports"
    regimes = _regimes(regime_specs)
    rule = episode
    share = diversion_share or DEFAULT_DIVERSION_SHARE
    budget = alarm_budget if alarm_budget is not None else (None if target_recall else settings.model_alarm_budget_per_h)

    def config(fs_version):
        from models.training import TrainConfig

        return TrainConfig(feature_set_version=fs_version, alarm_budget_per_h=budget, target_recall=target_recall,
                           seed=settings.model_seed if seed is None else seed, n_threads=settings.model_threads,
                           folds=settings.model_cv_folds, regimes=regimes,
                           min_labelled=settings.model_min_labelled_parts, min_defects=settings.model_min_defects)

    if seed_sets:
        _robustness_protocol(seed_sets, seed_base, train_days, eval_days, config, share, rule, out_dir, as_json)
        return
    if train_history:
        result = _robustness_experiment(train_history, eval_history, config, share, rule)
    elif model_ids:
        result = _robustness_of_versions(model_ids, eval_window, regimes)
    else:
        raise click.UsageError("give --train-history with --eval-history, --model with --eval-window, or --seed-sets N")
    _echo_robustness(result, out_dir, as_json)


def _robustness_protocol(seed_sets, seed_base, train_days, eval_days, config, share, rule, out_dir, as_json) -> None:
    """``--seed-sets``: the fixed protocol on simulated histories, one line per set and scenario."""
    from models.protocol import run_protocol, summary_rows
    from models.report import write_protocol_report
    from pq.cli import simulator_history
    from pq.features.spec import load_feature_set

    fs = load_feature_set()
    click.echo(f"protocol: {seed_sets} seed set(s) from seed {seed_base}, {train_days:g} training days + "
               f"{eval_days:g} days per held-out scenario at 1 Hz", err=True)
    result = run_protocol(simulator_history(), out_dir / "protocol-histories", seed_sets=seed_sets,
                          seed_base=seed_base, config=config(fs.version), feature_set=fs, train_days=train_days,
                          eval_days=eval_days, diversion_share=share, episode_rule=rule,
                          progress=_progress_printer())
    html_path, json_path = write_protocol_report(result, out_dir)
    for r in summary_rows(result["seed_sets"]):
        click.echo(f"set {r['seed_set']} {r['scenario']:<22} alarms/h env {_fmt(r['alarms_per_h_env'], 2)} "
                   f"(x{_fmt(r['alarm_ratio_env'], 2)} of validation, open x{_fmt(r.get('open_ratio_env'), 2)}) naive "
                   f"{_fmt(r['alarms_per_h_naive'], 2)} (x{_fmt(r['alarm_ratio_naive'], 2)}, open "
                   f"x{_fmt(r.get('open_ratio_naive'), 2)})  FAR@recall {_fmt(r['matched_recall'], 2)}: "
                   f"{_fmt(r['far_at_matched_recall_env'])} vs {_fmt(r['far_at_matched_recall_naive'])}  "
                   f"oracle ratio {_fmt(r['oracle_ratio_env'], 2)}  {'met' if r['met'] else 'NOT met'}"
                   + (f" (real trouble x{_fmt(r['warranted_alarm_ratio'], 2)} alarms, x{_fmt(r['warranted_open_ratio'], 2)} "
                      f"open: {'met' if r['met_given_trouble'] else 'NOT met'} given it)" if "met_given_trouble" in r else ""))
    click.echo(f"wrote {html_path} and {json_path}")
    if as_json:
        click.echo(json.dumps(result["summary"]))


def _robustness_experiment(train_history, eval_history, config, share, rule) -> dict:
    """``--train-history``: train both kinds on one simulated history, evaluate on each held-out one."""
    from models.experiment import run_experiment
    from models.history import dataset_from_history_dir
    from pq.storage.history import read_table
    from models.oracle import ground_truth_for
    from pq.features.spec import load_feature_set

    if not eval_history:
        raise click.UsageError("--train-history needs at least one --eval-history NAME=DIR")
    fs = load_feature_set()
    click.echo(f"computing features ({fs.version}) for {train_history}", err=True)
    train_ds = dataset_from_history_dir(train_history, fs)
    evals, truths = {}, {}
    for item in eval_history:
        name, _, path = item.partition("=")
        if not path:
            raise click.BadParameter(f"expected NAME=DIR, got {item!r}", param_hint="--eval-history")
        click.echo(f"computing features for {name} ({path})", err=True)
        evals[name] = dataset_from_history_dir(Path(path), fs)
        truths[name] = ground_truth_for(evals[name].meta, read_table(Path(path), "ground_truth", required=False))
    return run_experiment(train_ds, evals, config(fs.version), _progress_printer(), truths=truths,
                          diversion_share=share, episode_rule=rule)


def _robustness_of_versions(model_ids, eval_window, regimes) -> dict:
    """``--model``: registered versions evaluated on labelled windows of the store (all of it by default)."""
    from models.dataset import load_dataset
    from models.registry import get_version
    from models.report import robustness_from_store

    from pq.cli import open_store

    store = open_store()
    fsv = get_version(store, model_ids[0]).feature_set_version
    evals = {}
    for item in eval_window or ("all=..",):
        name, _, span = item.partition("=")
        a, _, b = span.partition("..")
        evals[name] = load_dataset(store, fsv, start=iso_time(a or None), end=iso_time(b or None))
    return robustness_from_store(store, list(model_ids), evals, regimes)


def _echo_robustness(result: dict, out_dir: Path, as_json: bool) -> None:
    """Write the report, then one line per scenario and model, and the goals."""
    from models.report import summary_table, write_report

    html_path, json_path = write_report(result, out_dir)
    for r in summary_table(result):
        click.echo(f"{r['scenario']:<14} {r['model']:<18} FAR {_fmt(r['far'])}  recall {_fmt(r['recall'])}  "
                   f"oracle recall {_fmt(r['oracle_recall'])}  precision {_fmt(r['precision'])}  "
                   f"alerts/h {_fmt(r['alerts_per_h'], 2)}  ECE {_fmt(r['ece'])}")
    for key in ("goal", "decision_goal"):
        if key in result:
            click.echo(f"{key} ({result[key]['rule']}): {'MET' if result[key]['met'] else 'NOT MET'}")
    click.echo(f"wrote {html_path} and {json_path}")
    if as_json:
        click.echo(json.dumps({k: result[k]["met"] for k in ("goal", "decision_goal") if k in result}))


# -- pq import -----------------------------------------------------------------------------------------

@click.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "mapping_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Mapping TOML: serial, time, label, signals, context, drop (see docs/models.md).")
@click.option("--dry-run", is_flag=True, help="Check the file against the mapping and count, write nothing.")
def import_history(path, mapping_path, dry_run):
    """Import a part-level history (CSV/Parquet, one row per part) as parts, labels and feature vectors."""
    from models.importer import import_history as do_import, load_mapping

    mapping = load_mapping(mapping_path)
    _, store = _ctx()
    with click.progressbar(length=1000, label="importing", file=sys.stderr) as bar:
        done = [0]

        def cb(fraction, _msg):
            step = int(fraction * 1000) - done[0]
            if step > 0:
                bar.update(step)
                done[0] += step

        res = do_import(store, path, mapping, dry_run=dry_run, progress=cb)
    click.echo(f"{'would import' if dry_run else 'imported'} {res.parts} parts, {res.inspections} labels, "
               f"{res.features} vectors as feature set {res.feature_set_version} ({res.rows} rows read; "
               f"rejected: {res.rejected or 'none'}; non-numeric values: {res.non_numeric_values})")
    if not dry_run:
        click.echo(f"train with: pq train --feature-set {res.feature_set_version} --line {mapping.line_id}", err=True)
