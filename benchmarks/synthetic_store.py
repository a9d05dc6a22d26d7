"""Synthetic UI data for tests and ``pq bench ui``, written straight into the store.

Lines, parts with context, predictions, alerts in every state (with explanations in operator
words), alert feedback, component health and per-part features for the trend charts. PostgreSQL is
filled with ``COPY`` in batches (1M parts in well under a minute); SQLite with ``executemany``.

This is data for showing and measuring the UI, not a simulation of the process: the real line
comes from ``simulators/`` through the connector and the edge runtime.

Example::

    summary = seed(store, lines=2, parts_per_line=500, alerts=40)
    alert_id = add_live_alert(store, "line-01")
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import insert

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["SIGNALS", "SeedSummary", "seed", "add_live_alert", "upsert_health", "seed_training_history"]

logger = logging.getLogger(__name__)

# signal, label, unit, normal low, normal high (the plant's usual band), noise
SIGNALS = (
    ("melt_temp_c", "Melt temperature", "°C", 225.0, 235.0, 2.0),
    ("mould_temp_c", "Mould temperature", "°C", 45.0, 55.0, 1.5),
    ("hold_pressure_bar", "Hold pressure", "bar", 600.0, 700.0, 15.0),
    ("injection_time_s", "Injection time", "s", 1.8, 2.2, 0.05),
    ("cushion_mm", "Cushion", "mm", 4.0, 8.0, 0.6),
)
_SIG = {s[0]: s for s in SIGNALS}
_ACTIONS = {
    ("melt_temp_c", "low"): "Check the heater bands and the melt thermocouple; the material may be cold or wet.",
    ("melt_temp_c", "high"): "Check the barrel heater zones and the nozzle heater.",
    ("mould_temp_c", "low"): "Check the mould temperature controller and the cooling water flow.",
    ("mould_temp_c", "high"): "Check the cooling circuit for a blocked channel.",
    ("hold_pressure_bar", "low"): "Check the check ring and the hydraulic pressure.",
    ("hold_pressure_bar", "high"): "Check the hold pressure set point against the recipe.",
    ("injection_time_s", "low"): "Check the injection speed profile.",
    ("injection_time_s", "high"): "Check the material feed and the screw for wear.",
    ("cushion_mm", "low"): "Check the check ring for wear; set part aside for inspection.",
    ("cushion_mm", "high"): "Check the shot size and the dosing stroke.",
}
_PRODUCTS = ("housing-A", "housing-B", "cover-C")
_SHIFTS = ("A", "B", "C")
_BATCH = 50_000
FEATURE_SET = "default-1"
# The part decision of the seeded predictions: about 1 part in 60 is diverted for inspection.
DIVERSION_THRESHOLD = 0.2


@dataclass(frozen=True)
class SeedSummary:
    lines: list[str]
    parts: int
    predictions: int
    alerts: int
    active_alerts: int


def _line_ids(n: int) -> list[str]:
    return [f"line-{i:02d}" for i in range(1, n + 1)]


def _shift(ts: datetime) -> str:
    return _SHIFTS[(ts.hour // 8) % 3]


def _lot(ts: datetime, line_idx: int) -> str:
    return f"LOT-{(int(ts.timestamp()) // 14_400 + line_idx * 7) % 9000 + 1000}"


def _context(ts: datetime, rng: random.Random) -> dict[str, Any]:
    hour = ts.hour + ts.minute / 60
    ambient = 22.0 + 6.0 * __import__("math").sin((hour - 9) / 24 * 6.283) + rng.gauss(0, 0.3)
    return {"ambient_temp_c": round(ambient, 1), "humidity_pct": round(45 + rng.gauss(0, 6), 1),
            "supplier": "B-Polymers" if ts.day % 3 == 0 else "A-Resins", "tool_wear_pct": round(rng.uniform(5, 60), 1)}


def _explanation(signal: str, direction: str, rng: random.Random) -> list[dict]:
    out = []
    names = [signal] + rng.sample([s for s in _SIG if s != signal], 2)
    for rank, name in enumerate(names):
        _, label, unit, lo, hi, noise = _SIG[name]
        shift = (hi - lo) * (0.9 if rank == 0 else 0.15) + noise
        d = direction if rank == 0 else rng.choice(("low", "high"))
        value = (lo - shift) if d == "low" else (hi + shift)
        out.append({"signal": name, "label": label, "value": round(value, 2), "unit": unit,
                    "normal_lo": lo, "normal_hi": hi, "direction": d,
                    "contribution": round(1.2 / (rank + 1), 3)})
    return out


def _title(expl: dict) -> str:
    gap = expl["normal_lo"] - expl["value"] if expl["direction"] == "low" else expl["value"] - expl["normal_hi"]
    word = "below" if expl["direction"] == "low" else "above"
    return f"{expl['label']} {gap:.3g} {expl['unit']} {word} normal for this lot"


def _alert_row(line_id: str, serial: str, at: datetime, rng: random.Random, *, state: str,
               now: datetime, station: str) -> dict:
    signal = rng.choice(list(_SIG))
    direction = rng.choice(("low", "high"))
    expl = _explanation(signal, direction, rng)
    severity = rng.choices(("low", "medium", "high"), (2, 5, 3))[0]
    row = {
        "id": str(uuid.uuid4()), "line_id": line_id, "kind": "part", "cause": signal, "state": state,
        "severity": severity, "serial": serial, "station": station, "product": rng.choice(_PRODUCTS),
        "material_lot": _lot(at, 0), "shift": _shift(at), "score": round(rng.uniform(0.5, 0.99), 3),
        "title": _title(expl[0]), "action": _ACTIONS[(signal, direction)], "explanation": expl,
        "model_version_id": None, "repeat_count": 1, "raised_at": at, "updated_at": at,
        "acked_at": None, "acked_by": None, "cleared_at": None, "shelved_until": None, "shelve_reason": None,
        "feedback": None, "feedback_comment": None, "feedback_by": None, "feedback_at": None,
    }
    if state in ("cleared", "acknowledged"):
        row["acked_at"] = at + timedelta(seconds=rng.uniform(10, 600))
        row["acked_by"] = rng.choice(("ann", "omar", "li"))
    if state == "cleared":
        row["cleared_at"] = at + timedelta(seconds=rng.uniform(600, 1800))
        if rng.random() < 0.6:
            row["feedback"] = rng.choices(("confirmed", "false_alarm", "not_checked"), (5, 3, 2))[0]
            row["feedback_by"] = row["acked_by"]
            row["feedback_at"] = row["acked_at"] + timedelta(seconds=60)
            if rng.random() < 0.3:
                row["feedback_comment"] = rng.choice(("sink mark on rib", "measured OK", "short shot", "flash at gate"))
    return row


# -- writing ---------------------------------------------------------------------------------------

def _copy(store: Store, table, rows: Iterable[dict], columns: list[str]) -> int:
    """COPY on PostgreSQL, executemany on SQLite; batches of _BATCH rows."""
    n = 0
    json_cols = {c.name for c in table.columns if c.type.__class__.__name__ in ("JSON", "JSONB")
                 or getattr(c.type, "impl", None) is not None and "JSON" in type(c.type).__name__}
    json_cols |= {c for c in columns if c in ("context", "explanation", "detail", "contributions", "features",
                                              "top_causes", "metrics", "regime_metrics")}
    if store.dialect == "postgresql":
        raw = store.engine.raw_connection()
        try:
            cur = raw.cursor()
            with cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row([json.dumps(r[c]) if c in json_cols and r.get(c) is not None else r.get(c) for c in columns])
                    n += 1
            raw.commit()
        finally:
            raw.close()
        return n
    batch: list[dict] = []
    with store.engine.begin() as conn:
        for r in rows:
            batch.append(r)
            if len(batch) >= _BATCH:
                conn.execute(insert(table), batch)
                n += len(batch)
                batch = []
        if batch:
            conn.execute(insert(table), batch)
            n += len(batch)
    return n


def upsert_health(store: Store, component: str, line_id: str | None, state: str, detail: dict,
                  updated_at: datetime | None = None) -> None:
    """Write one component_health row (replacing the previous one)."""
    t = schema.component_health
    with store.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.component == component))
        conn.execute(t.insert().values(component=component, line_id=line_id, state=state, detail=detail,
                                       updated_at=updated_at or datetime.now(timezone.utc)))


def seed(store: Store, *, lines: int = 3, parts_per_line: int = 600, alerts: int = 60,
         active_alerts: int = 3, cycle_s: float = 30.0, now: datetime | None = None,
         features_per_line: int = 120, seed_value: int = 7) -> SeedSummary:
    """Fill an upgraded, empty store. Parts end at ``now``; alerts are spread over the history."""
    rng = random.Random(seed_value)
    now = now or datetime.now(timezone.utc)
    ids = _line_ids(lines)
    with store.engine.begin() as conn:
        conn.execute(insert(schema.lines), [
            {"id": lid, "name": f"Line {i + 1}", "station": f"Press {i + 1}", "description": "injection moulding",
             "created_at": now - timedelta(days=400)} for i, lid in enumerate(ids)])
    span = timedelta(seconds=cycle_s * parts_per_line)
    start = now - span

    def part_rows():
        for li, lid in enumerate(ids):
            for k in range(parts_per_line):
                end = start + timedelta(seconds=cycle_s * (k + 1))
                yield {"line_id": lid, "serial": f"{lid[-2:]}-{k:08d}", "cycle_start": end - timedelta(seconds=cycle_s * 0.9),
                       "cycle_end": end, "product": _PRODUCTS[(k // 2000) % 3], "material_lot": _lot(end, li),
                       "shift": _shift(end), "context": _context(end, rng), "created_at": end}

    n_parts = _copy(store, schema.parts, part_rows(),
                    ["line_id", "serial", "cycle_start", "cycle_end", "product", "material_lot", "shift",
                     "context", "created_at"])

    def prediction_rows():
        for lid in ids:
            for k in range(parts_per_line):
                end = start + timedelta(seconds=cycle_s * (k + 1))
                score = rng.betavariate(1.2, 20)
                diverted = score >= DIVERSION_THRESHOLD  # the part decision: set aside, with its reason
                why = _explanation(rng.choice(list(_SIG)), rng.choice(("low", "high")), rng) if diverted else None
                yield {"id": str(uuid.uuid4()), "decided_at": end + timedelta(milliseconds=40), "line_id": lid,
                       "serial": f"{lid[-2:]}-{k:08d}", "model_version_id": None, "feature_set_version": FEATURE_SET,
                       "score": round(score, 4), "threshold": DIVERSION_THRESHOLD,
                       "decision": "at_risk" if diverted else "ok", "reason": None,
                       "contributions": [dict(c, sentence=_title(c)) for c in why] if why else None,
                       "latency_ms": round(rng.uniform(5, 40), 1)}

    n_pred = _copy(store, schema.predictions, prediction_rows(),
                   ["id", "decided_at", "line_id", "serial", "model_version_id", "feature_set_version", "score",
                    "threshold", "decision", "reason", "contributions", "latency_ms"])

    def feature_rows():
        part_ids = {}
        from sqlalchemy import select
        with store.engine.connect() as conn:
            for lid in ids:
                q = (select(schema.parts.c.id, schema.parts.c.serial).where(schema.parts.c.line_id == lid)
                     .order_by(schema.parts.c.cycle_end.desc()).limit(features_per_line))
                part_ids[lid] = list(conn.execute(q))
        for lid in ids:
            for pid, _serial in part_ids[lid]:
                feats = {}
                for name, _l, _u, lo, hi, noise in SIGNALS:
                    mid = (lo + hi) / 2
                    feats[f"{name}__mean"] = round(rng.gauss(mid, (hi - lo) / 6), 3)
                    feats[f"{name}__std"] = round(abs(rng.gauss(noise, noise / 4)), 3)
                yield {"part_id": pid, "feature_set_version": FEATURE_SET, "source": "edge", "features": feats,
                       "reason": None, "computed_at": now}

    _copy(store, schema.part_features, feature_rows(),
          ["part_id", "feature_set_version", "source", "features", "reason", "computed_at"])

    def alert_rows():
        per_line = alerts // max(1, len(ids))
        for li, lid in enumerate(ids):
            for j in range(per_line):
                k = int(parts_per_line * (j + 0.5) / per_line)
                at = start + timedelta(seconds=cycle_s * (k + 1))
                if at > now - timedelta(hours=1):
                    at = now - timedelta(hours=1, minutes=j % 50)
                yield _alert_row(lid, f"{lid[-2:]}-{k:08d}", at, rng, state="cleared", now=now,
                                 station=f"Press {li + 1}")
        for j in range(active_alerts):
            lid = ids[j % len(ids)]
            k = parts_per_line - 1 - j * 3
            at = now - timedelta(minutes=2 + 4 * j)
            yield _alert_row(lid, f"{lid[-2:]}-{k:08d}", at, rng, state="active", now=now,
                             station=f"Press {ids.index(lid) + 1}")

    alert_cols = [c.name for c in schema.alerts.columns]
    n_alerts = _copy(store, schema.alerts, alert_rows(), alert_cols)

    for li, lid in enumerate(ids):
        upsert_health(store, f"edge:{lid}", lid, "scoring",
                      {"freshness_s": round(rng.uniform(0.2, 1.5), 2), "model_version": None, "parts_per_h": 3600 / cycle_s},
                      updated_at=now)
        upsert_health(store, f"connector:{lid}", lid, "connected",
                      {"samples_per_s": 250.0, "spool_depth": rng.randint(0, 30), "lag_s": round(rng.uniform(0.1, 0.8), 2),
                       "dropped": 0}, updated_at=now)
    logger.info("seeded %d lines, %d parts, %d predictions, %d alerts", len(ids), n_parts, n_pred, n_alerts)
    return SeedSummary(ids, n_parts, n_pred, n_alerts, active_alerts)


def add_live_alert(store: Store, line_id: str, *, signal: str = "melt_temp_c", direction: str = "low",
                   severity: str = "high", serial: str | None = None, title: str | None = None,
                   at: datetime | None = None) -> str:
    """Insert one new active alert (as the edge runtime would) and return its id."""
    rng = random.Random()
    at = at or datetime.now(timezone.utc)
    serial = serial or f"{line_id[-2:]}-LIVE{rng.randint(0, 99999):05d}"
    row = _alert_row(line_id, serial, at, rng, state="active", now=at, station="Press")
    expl = _explanation(signal, direction, rng)
    row.update(cause=signal, severity=severity, explanation=expl, title=title or _title(expl[0]),
               action=_ACTIONS[(signal, direction)])
    with store.engine.begin() as conn:
        conn.execute(insert(schema.alerts), [row])
        conn.execute(insert(schema.alert_events), [{"id": str(uuid.uuid4()), "alert_id": row["id"], "event": "raised",
                                                    "at": at, "username": "edge", "detail": None}])
    return row["id"]


def seed_training_history(store: Store, *, n_parts: int = 3000, feature_set_version: str = "synthetic-1",
                          seed_value: int = 3, end: datetime | None = None) -> int:
    """Labelled part history (features + inspections) from benchmarks.synthetic_parts, ending at ``end``,
    so the Models page can retrain and compare. Returns the number of parts written."""
    from benchmarks.synthetic_parts import synthetic_part_history

    # 3 min cycles: 3000 parts span six days, enough for day-grouped validation folds
    features, parts = synthetic_part_history(n_parts=n_parts, seed=seed_value, lines=1, cycle_s=180.0)
    end = end or datetime.now(timezone.utc) - timedelta(hours=2)
    shift = end - parts["cycle_end"].max().to_pydatetime()
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        for lid in sorted(parts["line_id"].unique()):
            exists = conn.execute(schema.lines.select().where(schema.lines.c.id == lid)).first()
            if not exists:
                conn.execute(insert(schema.lines), [{"id": lid, "name": lid.replace("-", " ").title(), "station": None,
                                                     "description": "synthetic history", "created_at": now}])
    ctx_cols = ["ambient_temp_c", "humidity_pct", "lot_mfi_g10min", "supplier"]
    rows = [{"line_id": r.line_id, "serial": r.serial, "cycle_start": r.cycle_start.to_pydatetime() + shift,
             "cycle_end": r.cycle_end.to_pydatetime() + shift, "product": r.product, "material_lot": r.material_lot,
             "shift": r.shift, "context": {c: (getattr(r, c).item() if hasattr(getattr(r, c), "item") else getattr(r, c))
                                           for c in ctx_cols}, "created_at": now}
            for r in parts.itertuples()]
    _copy(store, schema.parts, iter(rows), ["line_id", "serial", "cycle_start", "cycle_end", "product", "material_lot",
                                            "shift", "context", "created_at"])
    from sqlalchemy import select

    with store.engine.connect() as conn:
        ids = dict(((l, s), i) for i, l, s in conn.execute(select(schema.parts.c.id, schema.parts.c.line_id,
                                                                   schema.parts.c.serial)))
    cols = list(features.columns)
    values = features.to_numpy()

    def feature_rows():
        for (key, vec) in zip(features.index, values):
            yield {"part_id": ids[key], "feature_set_version": feature_set_version, "source": "backfill",
                   "features": {c: float(v) for c, v in zip(cols, vec)}, "reason": None, "computed_at": now}

    _copy(store, schema.part_features, feature_rows(),
          ["part_id", "feature_set_version", "source", "features", "reason", "computed_at"])
    insp = [{"line_id": r.line_id, "serial": r.serial, "defect": bool(r.defect), "defect_code": r.defect_code or None,
             "inspected_at": r.cycle_end.to_pydatetime() + shift + timedelta(minutes=10), "source": "inspection"}
            for r in parts.itertuples() if r.defect == r.defect]  # NaN = not inspected yet
    _copy(store, schema.inspections, iter(insp), ["line_id", "serial", "defect", "defect_code", "inspected_at", "source"])
    return len(rows)
