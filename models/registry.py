"""The model registry: immutable versions in the database, one production version per scope.

Owns ``model_versions`` (every trained model, artifact bytes + sha256, card, metrics overall and per
regime, who trained it) and ``model_deployments`` (promotion history; the latest row of a scope is
its production version), and writes an ``audit_log`` row for every register, promote and rollback.
Imports pq and models only; the edge and the UI on other machines share models through the store.

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
           "scope_of", "parse_scope", "DEFAULT_MARGIN"]

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
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        did = conn.execute(insert(d).values(scope=scope, model_version_id=v.id, action="promote",
                                            approved_by=approved_by, reason=reason, override=bool(override and checks["worse"]),
                                            at=now)).inserted_primary_key[0]
        _audit(conn, approved_by, "model.promote", f"model_version:{v.id}",
               {"scope": scope, "previous": current, "reason": reason, "override": bool(override),
                "worse_regimes": checks["worse"], "feature_set_version": v.feature_set_version,
                "edge_feature_sets": edge_sets or "unknown (no edge has reported one)"}, client)
    if override and checks["worse"]:
        logger.warning("model %s promoted to %s by %s OVERRIDING %d worse regime band(s): %s",
                       v.label, scope, approved_by, len(checks["worse"]), reason)
    else:
        logger.info("model %s promoted to %s by %s (previous #%s)", v.label, scope, approved_by, current)
    return Deployment(did, scope, v.id, "promote", approved_by, reason, bool(override and checks["worse"]), now)


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
