"""The model registry: immutable versions in the database, one production version per scope.

Owns ``model_versions`` (every trained model, artifact bytes + sha256, card, metrics overall and per
regime, who trained it) and ``model_deployments`` (promotion history; the latest row of a scope is
its production version), and writes an ``audit_log`` row for every register, promote and rollback.
Imports pq and models only; the edge and the UI on other machines share models through the store.

Shadow (champion / challenger): ``model_shadows`` says which version runs in shadow per scope
(``start_shadow`` / ``stop_shadow``, audited, engineers and admins only). A challenger must use
production's feature-set version (the edge scores both on the same served vector) and must not be
production itself. Promoting a version that ran in shadow records its shadow evidence (period,
parts, agreement, alarms/h of both, FAR/recall where labelled; ``models/shadow.py``) in the audit
row and ends its shadow.

A scope is ``LINE/PRODUCT`` with ``*`` for "all": ``line-1/*``, ``*/*``, ``line-2/housing-a``.
The edge asks for the most specific scope that has a production version.

Promotion refuses, with a message that says why:
- a feature-set version different from the one the line's edge computes (never overridable: the
  edge could not score the model at all);
- a candidate whose per-regime false-alarm rate or recall is worse than production's by more than
  the margin, whose operator alarms on validation exceed the ISA-18.2 ceiling (6/h) or rise well
  above production's, or whose diverted parts catch fewer defects than production's (overridable
  with ``override=True`` and a reason; the override is recorded);
- an approver who is an operator or inactive in ``users`` (engineers and admins promote).

Example::

    v = register(store, name="defect", kind="environment-aware", ..., artifact=blob, trained_by="alice")
    promote(store, v.id, approved_by="bob", reason="better FAR in heatwave")
    production_version(store, "line-1", "housing-a")      # -> ModelVersion | None
    rollback(store, "*/*", approved_by="bob", reason="operators report false alarms")
    start_shadow(store, 8, line_id="line-1", by="bob", reason="retrained on the new supplier")
    shadow_version(store, "line-1", "housing-a")          # -> ModelVersion | None (version 8)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from models.estimator import json_safe
from models.thresholds import ALARM_CEILING_PER_H
from pq.errors import FeatureMismatch, ModelError
from pq.storage import schema

__all__ = ["ModelVersion", "Deployment", "register", "list_versions", "get_version", "load_artifact",
           "promote", "rollback", "production_version", "production_map", "deployments", "compare",
           "scope_of", "parse_scope", "DEFAULT_MARGIN", "Shadow", "start_shadow", "stop_shadow", "shadow_version",
           "shadows", "shadow_periods"]

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.02
APPROVER_ROLES = ("engineer", "admin")
# A regime band needs this much validation data before its metrics can block a promotion.
MIN_GOOD_FOR_FAR = 50
MIN_DEFECTS_FOR_RECALL = 5


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    version: int
    line_id: str | None
    product: str | None
    kind: str
    feature_set_version: str
    feature_names: list
    train_start: datetime | None
    train_end: datetime | None
    params: dict | None
    metrics: dict | None
    regime_metrics: dict | None
    threshold: float
    card: dict | None
    artifact_sha256: str
    trained_by: str | None
    created_at: datetime
    artifact: bytes | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} (#{self.id})"

    @property
    def scope(self) -> str:
        return scope_of(self.line_id, self.product)


@dataclass(frozen=True)
class Deployment:
    id: int
    scope: str
    model_version_id: int
    action: str
    approved_by: str
    reason: str
    override: bool
    at: datetime


@dataclass(frozen=True)
class Shadow:
    """A challenger running (or that ran) in shadow for a scope since ``since`` (until ``until``)."""

    scope: str
    model_version_id: int
    since: datetime
    until: datetime | None
    by: str
    reason: str


_MV_COLS = [f.name for f in fields(ModelVersion) if f.name != "artifact"]


def scope_of(line_id: str | None, product: str | None) -> str:
    return f"{line_id or '*'}/{product or '*'}"


def parse_scope(scope: str) -> tuple[str | None, str | None]:
    """``"line-1/*"`` -> ("line-1", None). ModelError for anything else than LINE/PRODUCT."""
    parts = scope.split("/") if isinstance(scope, str) else []
    if len(parts) != 2 or not all(parts):
        raise ModelError(f"scope must be LINE/PRODUCT with * for all (e.g. line-1/* or */*), got {scope!r}")
    return tuple(None if p == "*" else p for p in parts)  # type: ignore[return-value]


def _row_to_version(row, with_artifact: bool = False) -> ModelVersion:
    m = row._mapping
    return ModelVersion(**{c: m[c] for c in _MV_COLS}, artifact=m["artifact"] if with_artifact else None)


def _audit(conn, username: str, action: str, target: str, detail: dict, client: str) -> None:
    conn.execute(insert(schema.audit_log).values(
        at=datetime.now(timezone.utc), username=username, action=action, target=target,
        detail=json_safe(detail), client=client))


def _check_user(conn, username: str, *, require_known: bool, what: str) -> None:
    if not username or not username.strip():
        raise ModelError(f"{what}: a user name is required (who is responsible)")
    u = schema.users
    row = conn.execute(select(u.c.role, u.c.active).where(u.c.username == username)).first()
    if row is None:
        if require_known:
            raise ModelError(f"{what}: user {username!r} is not a pq user; sign in as an engineer")
        return
    if not row.active:
        raise ModelError(f"{what}: user {username!r} is deactivated")
    if row.role not in APPROVER_ROLES:
        raise ModelError(f"{what}: user {username!r} has role {row.role!r}; only {' or '.join(APPROVER_ROLES)} may do this")


# -- register and read ---------------------------------------------------------------------------------

def register(store, *, name: str, kind: str, line_id: str | None, product: str | None, feature_set_version: str,
             feature_names: list[str], train_start, train_end, params: dict | None, metrics: dict | None,
             regime_metrics: dict | None, threshold: float, card: dict | None, artifact: bytes,
             trained_by: str, client: str = "cli") -> ModelVersion:
    """Store a new immutable version (next version number of ``name``) and audit it."""
    from models.estimator import DefectModel

    DefectModel.from_bytes(artifact, what=f"new artifact of {name}")  # never register what cannot be loaded
    sha = hashlib.sha256(artifact).hexdigest()
    mv = schema.model_versions
    now = datetime.now(timezone.utc)
    for attempt in range(3):  # two trainings finishing at once may race for the number
        try:
            with store.engine.begin() as conn:
                number = (conn.execute(select(func.max(mv.c.version)).where(mv.c.name == name)).scalar() or 0) + 1
                vid = conn.execute(insert(mv).values(
                    name=name, version=number, line_id=line_id, product=product, kind=kind,
                    feature_set_version=feature_set_version, feature_names=list(feature_names),
                    train_start=train_start, train_end=train_end, params=json_safe(params),
                    metrics=json_safe(metrics), regime_metrics=json_safe(regime_metrics), threshold=float(threshold),
                    card=json_safe(card), artifact=artifact, artifact_sha256=sha, trained_by=trained_by,
                    created_at=now)).inserted_primary_key[0]
                _audit(conn, trained_by, "model.register", f"model_version:{vid}",
                       {"name": name, "version": number, "kind": kind, "scope": scope_of(line_id, product),
                        "feature_set_version": feature_set_version, "sha256": sha, "threshold": threshold}, client)
            break
        except IntegrityError:
            if attempt == 2:
                raise ModelError(f"could not allocate a version number for {name!r} (concurrent registrations)") from None
    logger.info("registered model %s v%d (#%d, %s, %d bytes) by %s", name, number, vid, kind, len(artifact), trained_by)
    return get_version(store, vid)


def get_version(store, version_id: int, with_artifact: bool = False) -> ModelVersion:
    mv = schema.model_versions
    cols = [mv.c[c] for c in _MV_COLS] + ([mv.c.artifact] if with_artifact else [])
    with store.engine.connect() as conn:
        row = conn.execute(select(*cols).where(mv.c.id == int(version_id))).first()
    if row is None:
        raise ModelError(f"model version #{version_id} does not exist (see `pq models list`)")
    return _row_to_version(row, with_artifact)


def load_artifact(store, version_id: int) -> tuple[ModelVersion, bytes]:
    """The version and its artifact, sha256-verified (a corrupted artifact is a clear ModelError)."""
    v = get_version(store, version_id, with_artifact=True)
    blob = bytes(v.artifact or b"")
    if hashlib.sha256(blob).hexdigest() != v.artifact_sha256:
        raise ModelError(f"artifact of {v.label} is corrupted (sha256 mismatch: stored {v.artifact_sha256[:12]}..., "
                         f"computed {hashlib.sha256(blob).hexdigest()[:12]}...); promote another version or retrain")
    return v, blob


def list_versions(store, name: str | None = None, line_id: str | None = None, product: str | None = None,
                  limit: int | None = None) -> list[ModelVersion]:
    """Versions newest first (without artifacts)."""
    mv = schema.model_versions
    q = select(*[mv.c[c] for c in _MV_COLS]).order_by(mv.c.id.desc())
    if name:
        q = q.where(mv.c.name == name)
    if line_id:
        q = q.where(mv.c.line_id == line_id)
    if product:
        q = q.where(mv.c.product == product)
    if limit:
        q = q.limit(limit)
    with store.engine.connect() as conn:
        return [_row_to_version(r) for r in conn.execute(q)]


def deployments(store, scope: str | None = None) -> list[Deployment]:
    """Promotion history, newest first."""
    d = schema.model_deployments
    q = select(d).order_by(d.c.at.desc(), d.c.id.desc())
    if scope:
        q = q.where(d.c.scope == scope)
    with store.engine.connect() as conn:
        return [Deployment(**{f.name: r._mapping[f.name] for f in fields(Deployment)}) for r in conn.execute(q)]


def production_map(store) -> dict[str, int]:
    """{scope: production version id} for every scope that has one."""
    out: dict[str, int] = {}
    for dep in reversed(deployments(store)):
        out[dep.scope] = dep.model_version_id
    return out


def production_version(store, line_id: str | None, product: str | None) -> ModelVersion | None:
    """The version serving (line, product): the most specific scope with a deployment wins.
    One indexed query plus one row read; cheap enough to poll every few seconds."""
    scopes = [scope_of(line_id, product), scope_of(line_id, None), scope_of(None, product), "*/*"]
    scopes = list(dict.fromkeys(scopes))
    d = schema.model_deployments
    with store.engine.connect() as conn:
        rows = conn.execute(select(d.c.scope, d.c.model_version_id).where(d.c.scope.in_(scopes))
                            .order_by(d.c.at.desc(), d.c.id.desc())).all()
    latest: dict[str, int] = {}
    for r in rows:
        latest.setdefault(r.scope, r.model_version_id)
    for s in scopes:
        if s in latest:
            return get_version(store, latest[s])
    return None


# -- compare, promote, roll back ------------------------------------------------------------------------

def compare(store, candidate_id: int, production_id: int | None = None, margin: float = DEFAULT_MARGIN) -> dict:
    """Per-regime side by side of two versions' validation metrics, and where the candidate is worse.

    Returns {"candidate", "production", "overall": {...}, "regimes": [{regime, band, metric, candidate,
    production, delta, worse}], "worse": [...]}. Bands with too little data on either side are listed
    but cannot make the candidate "worse".
    """
    cand = get_version(store, candidate_id)
    prod = get_version(store, production_id) if production_id is not None else None
    out = {"candidate": cand.label, "production": prod.label if prod else None, "margin": margin,
           "overall": {}, "regimes": [], "decisions": [], "worse": []}
    _compare_decisions(out, cand, prod, margin)
    if prod is None:
        return out
    for metric in ("far", "recall", "precision", "alerts_per_h", "ece", "auc"):
        out["overall"][metric] = {"candidate": (cand.metrics or {}).get(metric),
                                  "production": (prod.metrics or {}).get(metric)}
    cr, pr = cand.regime_metrics or {}, prod.regime_metrics or {}
    for regime in sorted(set(cr) & set(pr)):
        for band in sorted(set(cr[regime]) & set(pr[regime])):
            c, p = cr[regime][band], pr[regime][band]
            for metric, higher_is_worse, enough in (
                ("far", True, min((c.get("parts") or 0) - (c.get("defects") or 0),
                                  (p.get("parts") or 0) - (p.get("defects") or 0)) >= MIN_GOOD_FOR_FAR),
                ("recall", False, min(c.get("defects") or 0, p.get("defects") or 0) >= MIN_DEFECTS_FOR_RECALL),
            ):
                cv, pv = c.get(metric), p.get(metric)
                if cv is None or pv is None:
                    continue
                delta = cv - pv
                worse = enough and ((delta > margin) if higher_is_worse else (delta < -margin))
                row = {"regime": regime, "band": band, "metric": metric, "candidate": cv, "production": pv,
                       "delta": round(delta, 4), "enough_data": enough, "worse": worse}
                out["regimes"].append(row)
                if worse:
                    out["worse"].append(row)
    return out


# A candidate calls the operator too often when its validation alarm rate is this many times
# production's (and at least ALARM_RISE_MIN_PER_H more): a doubled alarm load is what operators notice.
ALARM_RISE_RATIO = 1.5
ALARM_RISE_MIN_PER_H = 0.5


def _compare_decisions(out: dict, cand: ModelVersion, prod: ModelVersion | None, margin: float) -> None:
    """The two decisions on validation (card["decisions"]): the candidate's operator alarm rate against
    the ISA-18.2 ceiling and against production's, its diverted-part recall against production's.
    Versions trained before the two decisions have no block and are not judged on them."""
    c = (cand.card or {}).get("decisions") or {}
    p = ((prod.card or {}).get("decisions") or {}) if prod else {}
    rows = []
    if c.get("alarms_per_h") is not None:
        rows.append({"metric": "alarms_per_h", "candidate": c["alarms_per_h"], "limit": ALARM_CEILING_PER_H,
                     "production": p.get("alarms_per_h"),
                     "worse": c["alarms_per_h"] > ALARM_CEILING_PER_H or (
                         p.get("alarms_per_h") is not None and c["alarms_per_h"] > p["alarms_per_h"] * ALARM_RISE_RATIO
                         and c["alarms_per_h"] - p["alarms_per_h"] >= ALARM_RISE_MIN_PER_H)})
    if c.get("recall") is not None and p.get("recall") is not None:
        rows.append({"metric": "diverted_recall", "candidate": c["recall"], "production": p["recall"],
                     "worse": c["recall"] < p["recall"] - margin})
    for r in rows:
        r |= {"regime": "decisions", "band": "validation"}
        out["decisions"].append(r)
        if r["worse"]:
            out["worse"].append(r)


def _worse_words(w: dict) -> str:
    if w["metric"] == "alarms_per_h":
        return (f"operator alarms {w['candidate']}/h on validation (ceiling {w['limit']:g}/h"
                + (f", production {w['production']}/h)" if w.get("production") is not None else ")"))
    if w["metric"] == "diverted_recall":
        return f"diverted parts catch {w['candidate']} of defects vs production's {w['production']}"
    return f"{w['regime']}={w['band']}: {w['metric']} {w['candidate']} vs {w['production']}"


def _edge_feature_sets(conn, line_id: str | None) -> dict[str, str]:
    """{edge component: feature_set_version} as the edge runtimes report them in component_health."""
    ch = schema.component_health
    q = select(ch.c.component, ch.c.line_id, ch.c.detail).where(ch.c.component.like("edge:%"))
    if line_id:
        q = q.where(ch.c.line_id == line_id)
    out = {}
    for r in conn.execute(q):
        fsv = (r.detail or {}).get("feature_set_version") if isinstance(r.detail, dict) else None
        if fsv:
            out[r.component] = fsv
    return out


def _history_stack(deps_oldest_first: list[Deployment]) -> list[int]:
    """Replay promotions and rollbacks: the stack of versions, production on top."""
    stack: list[int] = []
    for d in deps_oldest_first:
        if d.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != d.model_version_id:
                stack.append(d.model_version_id)
        else:
            stack.append(d.model_version_id)
    return stack


def promote(store, version_id: int, *, scope: str | None = None, approved_by: str, reason: str,
            override: bool = False, edge_feature_set_version: str | None = None, margin: float | None = None,
            client: str = "cli", require_known_user: bool = False) -> Deployment:
    """Make ``version_id`` the production version of ``scope`` (default: the version's own scope)."""
    margin = DEFAULT_MARGIN if margin is None else margin
    v = get_version(store, version_id)
    scope = scope or v.scope
    s_line, s_product = parse_scope(scope)
    if (v.line_id and s_line != v.line_id) or (v.product and s_product != v.product):
        raise ModelError(f"{v.label} was trained for {v.scope} and cannot serve {scope}")
    if not reason or not reason.strip():
        raise ModelError("promotion needs a reason (what was checked, why this version)")
    d = schema.model_deployments
    with store.engine.begin() as conn:
        _check_user(conn, approved_by, require_known=require_known_user, what="promote")
        edge_sets = _edge_feature_sets(conn, s_line)
        expected = {"given": edge_feature_set_version} if edge_feature_set_version else edge_sets
        mismatched = {k: fsv for k, fsv in expected.items() if fsv != v.feature_set_version}
        if mismatched:
            raise FeatureMismatch(
                f"{v.label} uses feature set {v.feature_set_version!r} but the edge computes "
                f"{', '.join(f'{fsv!r} ({k})' for k, fsv in mismatched.items())}; deploy that feature set to the edge "
                "first or train on the edge's feature set (this check cannot be overridden)")
        current = conn.execute(select(d.c.model_version_id).where(d.c.scope == scope)
                               .order_by(d.c.at.desc(), d.c.id.desc()).limit(1)).scalar()
    if current == v.id:
        raise ModelError(f"{v.label} is already in production for {scope}")
    checks = compare(store, v.id, current, margin)
    if checks["worse"] and not override:
        lines = "; ".join(_worse_words(w) for w in checks["worse"][:6])
        raise ModelError(
            f"{v.label} is worse than production #{current} beyond the margin {margin} in "
            f"{len(checks['worse'])} regime band(s): {lines}; retrain, or promote with an explicit override "
            "and a reason (recorded in the audit log)")
    evidence = _shadow_evidence(store, v.id)
    now = datetime.now(timezone.utc)
    for period in (evidence or {}).get("periods", ()):
        period["until"] = period["until"] or now.isoformat()  # the promotion ends a running shadow
    with store.engine.begin() as conn:
        for running in [p for p in _periods(_shadow_rows(conn)) if p.until is None and p.model_version_id == v.id]:
            conn.execute(insert(schema.model_shadows).values(  # promoted: its shadow is over
                scope=running.scope, model_version_id=None, action="stop", by=approved_by,
                reason=f"promoted to production for {scope}", at=now))
        did = conn.execute(insert(d).values(scope=scope, model_version_id=v.id, action="promote",
                                            approved_by=approved_by, reason=reason, override=bool(override and checks["worse"]),
                                            at=now)).inserted_primary_key[0]
        _audit(conn, approved_by, "model.promote", f"model_version:{v.id}",
               {"scope": scope, "previous": current, "reason": reason, "override": bool(override),
                "worse_regimes": checks["worse"], "feature_set_version": v.feature_set_version,
                "edge_feature_sets": edge_sets or "unknown (no edge has reported one)",
                "shadow_evidence": evidence or "none: this version never ran in shadow"}, client)
    if override and checks["worse"]:
        logger.warning("model %s promoted to %s by %s OVERRIDING %d worse regime band(s): %s",
                       v.label, scope, approved_by, len(checks["worse"]), reason)
    else:
        logger.info("model %s promoted to %s by %s (previous #%s)", v.label, scope, approved_by, current)
    return Deployment(did, scope, v.id, "promote", approved_by, reason, bool(override and checks["worse"]), now)


def _shadow_evidence(store, version_id: int) -> dict | None:
    """What the version showed in shadow on live parts (models/shadow.py), or None if it never ran there."""
    from models.shadow import evidence

    return evidence(store, version_id)


def rollback(store, scope: str, *, approved_by: str, reason: str, client: str = "cli",
             require_known_user: bool = False) -> Deployment:
    """Put back the version that served ``scope`` before the current one."""
    parse_scope(scope)
    if not reason or not reason.strip():
        raise ModelError("rollback needs a reason")
    d = schema.model_deployments
    with store.engine.begin() as conn:
        _check_user(conn, approved_by, require_known=require_known_user, what="rollback")
        hist = [Deployment(**{f.name: r._mapping[f.name] for f in fields(Deployment)}) for r in conn.execute(
            select(d).where(d.c.scope == scope).order_by(d.c.at, d.c.id))]
        stack = _history_stack(hist)
        if len(stack) < 2:
            raise ModelError(f"nothing to roll back to for {scope}: "
                             f"{'no version was ever promoted' if not stack else 'only one version was ever in production'}")
        current, target = stack[-1], stack[-2]
        now = datetime.now(timezone.utc)
        did = conn.execute(insert(d).values(scope=scope, model_version_id=target, action="rollback",
                                            approved_by=approved_by, reason=reason, override=False, at=now)
                           ).inserted_primary_key[0]
        _audit(conn, approved_by, "model.rollback", f"model_version:{target}",
               {"scope": scope, "from": current, "to": target, "reason": reason}, client)
    logger.info("scope %s rolled back from #%d to #%d by %s", scope, current, target, approved_by)
    return Deployment(did, scope, target, "rollback", approved_by, reason, False, now)


# -- shadow (champion / challenger) ---------------------------------------------------------------------

def _shadow_rows(conn, scope: str | None = None, version_id: int | None = None) -> list:
    t = schema.model_shadows
    q = select(t).order_by(t.c.at, t.c.id)
    if scope is not None:
        q = q.where(t.c.scope == scope)
    return list(conn.execute(q))


def _periods(rows) -> list[Shadow]:
    """Start/stop rows (oldest first) as periods; a start while another runs ends the earlier one."""
    out: list[Shadow] = []
    running: dict[str, Shadow] = {}
    for r in rows:
        cur = running.pop(r.scope, None)
        if cur is not None:
            out.append(Shadow(cur.scope, cur.model_version_id, cur.since, r.at, cur.by, cur.reason))
        if r.action == "start":
            running[r.scope] = Shadow(r.scope, r.model_version_id, r.at, None, r.by, r.reason)
    return out + list(running.values())


def shadows(store) -> dict[str, Shadow]:
    """{scope: the running shadow} for every scope that has one."""
    with store.engine.connect() as conn:
        return {p.scope: p for p in _periods(_shadow_rows(conn)) if p.until is None}


def shadow_periods(store, version_id: int) -> list[Shadow]:
    """Every period ``version_id`` ran in shadow, oldest first (the last one may still run)."""
    with store.engine.connect() as conn:
        return [p for p in _periods(_shadow_rows(conn)) if p.model_version_id == int(version_id)]


def shadow_version(store, line_id: str | None, product: str | None) -> ModelVersion | None:
    """The version in shadow for (line, product): the most specific scope with a running shadow."""
    scopes = list(dict.fromkeys([scope_of(line_id, product), scope_of(line_id, None)]))
    t = schema.model_shadows
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.scope, t.c.model_version_id, t.c.action).where(t.c.scope.in_(scopes))
                            .order_by(t.c.at.desc(), t.c.id.desc())).all()
    latest: dict[str, tuple] = {}
    for r in rows:
        latest.setdefault(r.scope, (r.action, r.model_version_id))
    for s in scopes:
        if s in latest and latest[s][0] == "start":
            return get_version(store, latest[s][1])
    return None


def start_shadow(store, version_id: int, *, line_id: str, product: str | None = None, by: str, reason: str = "",
                 client: str = "cli", require_known_user: bool = False) -> Shadow:
    """Run ``version_id`` in shadow on ``line_id`` (optionally one product) beside production.

    Refused: a version trained for another line or product, no production version to compare with,
    the production version itself, or another feature-set version than production's (the edge scores
    the challenger on production's served vector). A challenger already in shadow there is replaced."""
    if not line_id:
        raise ModelError("shadow needs a line (--line): the challenger runs at that line's edge")
    v = get_version(store, version_id)
    scope = scope_of(line_id, product)
    if (v.line_id and v.line_id != line_id) or (v.product and product and v.product != product):
        raise ModelError(f"{v.label} was trained for {v.scope} and cannot shadow {scope}")
    prod = production_version(store, line_id, product)
    if prod is None:
        raise ModelError(f"no version is in production for {scope}: a challenger needs a production model "
                         "to run beside (promote one first)")
    if prod.id == v.id:
        raise ModelError(f"{v.label} is the production version of {scope}; choose another version for the shadow")
    if prod.feature_set_version != v.feature_set_version:
        raise FeatureMismatch(
            f"{v.label} uses feature set {v.feature_set_version!r} but production {prod.label} uses "
            f"{prod.feature_set_version!r}; a challenger is scored on the vector served to production, so it must "
            "be trained on the same feature set")
    reason = (reason or "").strip() or "(no reason given)"  # a shadow acts on nothing: the reason is optional
    t = schema.model_shadows
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        _check_user(conn, by, require_known=require_known_user, what="shadow")
        conn.execute(insert(t).values(scope=scope, model_version_id=v.id, action="start", by=by, reason=reason,
                                      at=now))
        _audit(conn, by, "model.shadow", f"model_version:{v.id}",
               {"scope": scope, "production": prod.id, "reason": reason,
                "feature_set_version": v.feature_set_version}, client)
    logger.info("model %s in shadow for %s beside production %s, by %s", v.label, scope, prod.label, by)
    return Shadow(scope, v.id, now, None, by, reason)


def stop_shadow(store, *, line_id: str, product: str | None = None, by: str, reason: str = "shadow stopped",
                client: str = "cli", require_known_user: bool = False) -> Shadow:
    """End the shadow running for (line, product); ModelError when none runs there."""
    scope = scope_of(line_id, product)
    t = schema.model_shadows
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        _check_user(conn, by, require_known=require_known_user, what="stop shadow")
        running = [p for p in _periods(_shadow_rows(conn, scope)) if p.until is None]
        if not running:
            raise ModelError(f"no version runs in shadow for {scope}")
        conn.execute(insert(t).values(scope=scope, model_version_id=None, action="stop", by=by,
                                      reason=reason or "shadow stopped", at=now))
        _audit(conn, by, "model.shadow_stop", f"model_version:{running[0].model_version_id}",
               {"scope": scope, "reason": reason}, client)
    logger.info("shadow of model #%d for %s stopped by %s", running[0].model_version_id, scope, by)
    p = running[0]
    return Shadow(p.scope, p.model_version_id, p.since, now, by, reason)
