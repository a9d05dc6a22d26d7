"""Import a part-level history (CSV or Parquet, one row per part) so engineers can train on the
years before pq was installed.

Owns the mapping config (TOML), its validation and the idempotent write of parts, inspections
(source ``import``) and ``part_features`` rows under the feature-set version ``import-<name>``.
Signals become ``<signal>__value`` features, numeric context becomes ``ctx__<name>`` (and the part's
context JSON), categorical context with declared ``categories`` becomes ``ctx__<name>`` = the value's
position in that list. ``[[derived]]`` features (pq.features.spec's expression language over the
mapped features) are computed at import and stored with the others. The definition of the feature
set (derived expressions, context roles, training hints) goes to ``feature_sets`` so training reads
the same meaning. Columns listed under ``[drop]`` (ones that leak the label) can never become
features. Imports pq only.

Mapping example (docs/models.md has the full AI4I 2020 walk-through)::

    name = "ai4i2020"              # feature-set version "import-ai4i2020"
    line_id = "mill-1"
    serial = "UDI"
    [time]                         # a timestamp column, or a start and a cycle time (row order = time)
    start = "2020-01-06T06:00:00Z"
    cycle_s = 60
    [label]
    column = "Machine failure"
    positive = [1]
    defect_code_columns = ["TWF", "HDF", "PWF", "OSF", "RNF"]
    [parts]
    product = "Type"
    [signals]
    "Torque [Nm]" = "torque_nm"
    "Rotational speed [rpm]" = "rotational_speed_rpm"
    [context]                      # a name, or a table: name, role (risk | baseline), categories
    "Air temperature [K]" = { name = "ambient_temp_k", role = "risk" }
    "Type" = { name = "product_type", categories = ["L", "M", "H"] }
    [[derived]]                    # pq.features.spec's expression language over the mapped features
    name = "power_w"
    expr = "torque_nm.value * rotational_speed_rpm.value * 0.10472"
    [training]                     # hyperparameter hints for `pq train` on this feature set
    max_bin = 4095
    [drop]
    columns = ["TWF", "HDF", "PWF", "OSF", "RNF"]

Example::

    result = import_history(store, Path("ai4i2020.csv"), load_mapping(Path("ai4i2020.toml")))

Why one file of ~440 lines: the import mapping's parser and the import itself share the mapping's
dataclasses; every error names file, line and key from one place.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sqlalchemy import and_, select

from pq.errors import ConfigError

__all__ = ["ImportMapping", "ImportResult", "load_mapping", "parse_mapping", "read_history_file", "import_history"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# A context's role in the environment-aware model: "risk" (a risk factor of its own: always a
# feature) or "baseline" (a condition that moves readings without making bad parts: it reaches the
# model only through the deviations a context baseline computes with it). See models.training.
CONTEXT_ROLES = ("risk", "baseline")
# [training] hints a mapping may give (models.estimator.DefectModel hyperparameters) with their range
# and whether they are integers. The defaults suit wide, noisy plant feature sets; a narrow set whose
# failures are exact limits on its features (AI4I's) wants finer histograms, every feature in every
# tree, smaller leaves, and no up-weighting of defects that are a deterministic rule.
TRAINING_HINTS = {"max_bin": (15, 65535, True), "min_data_in_bin": (1, 1000, True),
                  "min_child_samples": (1, 100000, True), "max_pos_weight": (1.0, 1000.0, False),
                  "feature_fraction": (0.01, 1.0, False), "bagging_fraction": (0.01, 1.0, False)}
_CHUNK = 5000


@dataclass(frozen=True)
class ImportMapping:
    name: str
    line_id: str
    serial: str
    label_column: str
    positive: tuple
    time_column: str | None = None
    start: datetime | None = None
    cycle_s: float | None = None
    defect_code_column: str | None = None
    defect_code_columns: tuple[str, ...] = ()
    parts: dict = field(default_factory=dict)  # product / material_lot / shift -> source column
    signals: dict = field(default_factory=dict)  # source column -> signal name
    context: dict = field(default_factory=dict)  # source column -> context name
    drop: tuple[str, ...] = ()
    context_roles: dict = field(default_factory=dict)  # context name -> "risk" | "baseline" (declared only)
    categories: dict = field(default_factory=dict)  # context name -> its categories, coded 0, 1, ... in order
    derived: tuple = ()  # pq.features.spec.DerivedFeature, computed from the mapped features at import
    training: dict = field(default_factory=dict)  # hints for training on this feature set (TRAINING_HINTS)

    @property
    def feature_set_version(self) -> str:
        return f"import-{self.name}"

    @property
    def feature_names(self) -> list[str]:
        return ([f"{s}__value" for s in self.signals.values()] + [f"ctx__{c}" for c in self.context.values()]
                + [d.name for d in self.derived])

    def definition(self) -> dict:
        """What ``feature_sets.definition`` stores for this mapping's feature set."""
        return {"derived": [{"name": d.name, "expr": d.expr, "refs": d.refs} for d in self.derived],
                "context_roles": dict(self.context_roles), "categories": {k: list(v) for k, v in self.categories.items()},
                "training": dict(self.training)}


def parse_mapping(d: dict, where: str = "mapping") -> ImportMapping:
    allowed = {"name", "line_id", "serial", "time", "label", "parts", "signals", "context", "drop", "derived", "training"}
    extra = set(d) - allowed
    if extra:
        raise ConfigError(f"{where}: unknown keys {sorted(extra)}, expected some of {sorted(allowed)}")
    for key in ("name", "line_id", "serial"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise ConfigError(f"{where}: {key} must be a non-empty string, got {d.get(key)!r}")
    if not re.match(r"^[a-z0-9][a-z0-9_.-]*$", d["name"]):
        raise ConfigError(f"{where}: name must be lower-case letters, digits, . _ -, got {d['name']!r}")
    t = d.get("time") or {}
    start = None
    if "column" not in t:
        if "start" not in t or "cycle_s" not in t:
            raise ConfigError(f"{where}: [time] needs a column, or start and cycle_s (row order = production order)")
        try:
            start = pd.Timestamp(t["start"])
        except ValueError:
            raise ConfigError(f"{where}: time.start must be an ISO timestamp, got {t['start']!r}") from None
        start = (start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")).to_pydatetime()
        if not isinstance(t["cycle_s"], (int, float)) or t["cycle_s"] <= 0:
            raise ConfigError(f"{where}: time.cycle_s must be > 0, got {t['cycle_s']!r}")
    label = d.get("label") or {}
    if "column" not in label:
        raise ConfigError(f"{where}: [label] column is required (the inspection result)")
    signals = dict(d.get("signals") or {})
    context, roles, categories = _parse_context(d.get("context") or {}, where)
    if not signals:
        raise ConfigError(f"{where}: [signals] maps no column; a model needs process signals")
    for kind, table in (("signal", signals), ("context", context)):
        for col, name in table.items():
            if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
                raise ConfigError(f"{where}: {kind} name for column {col!r} must be snake_case ending in its unit "
                                  f"(e.g. torque_nm), got {name!r}")
    drop = tuple((d.get("drop") or {}).get("columns", ()))
    leaks = [c for c in drop if c in signals or c in context]
    if leaks or label["column"] in signals or label["column"] in context:
        raise ConfigError(f"{where}: columns {leaks or [label['column']]} leak the label and cannot be features")
    parts = dict(d.get("parts") or {})
    bad = set(parts) - {"product", "material_lot", "shift"}
    if bad:
        raise ConfigError(f"{where}: [parts] keys must be product, material_lot or shift, got {sorted(bad)}")
    from pq.features.spec import parse_derived

    known = [f"{n}__value" for n in signals.values()] + [f"ctx__{n}" for n in context.values()]
    derived = parse_derived(d.get("derived") or [], known, where=f"{where}: derived")
    training = dict(d.get("training") or {})
    for key, value in training.items():
        if key not in TRAINING_HINTS:
            raise ConfigError(f"{where}: [training] key {key!r} unknown, expected some of {sorted(TRAINING_HINTS)}")
        lo, hi, integer = TRAINING_HINTS[key]
        if (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
                or not lo <= value <= hi):
            raise ConfigError(f"{where}: training.{key} must be {'an integer' if integer else 'a number'} in "
                              f"[{lo}, {hi}], got {value!r}")
    return ImportMapping(
        name=d["name"], line_id=d["line_id"], serial=d["serial"], label_column=label["column"],
        positive=tuple(label.get("positive", [1, True, "1", "NOK", "nok", "defect"])),
        time_column=t.get("column"), start=start, cycle_s=float(t["cycle_s"]) if "cycle_s" in t else None,
        defect_code_column=label.get("defect_code_column"), defect_code_columns=tuple(label.get("defect_code_columns", ())),
        parts=parts, signals=signals, context=context, drop=drop, context_roles=roles, categories=categories,
        derived=derived, training=training)


def _parse_context(table: dict, where: str) -> tuple[dict, dict, dict]:
    """``[context]`` entries: ``"Column" = "name"`` or ``"Column" = {name, role, categories}``;
    returns ({column: name}, {name: role}, {name: categories})."""
    context, roles, categories = {}, {}, {}
    for col, entry in table.items():
        if isinstance(entry, dict):
            extra = set(entry) - {"name", "role", "categories"}
            if extra:
                raise ConfigError(f"{where}: context.{col!r} has unknown keys {sorted(extra)}, "
                                  "expected name, role, categories")
            name = entry.get("name")
            role = entry.get("role")
            if role is not None and role not in CONTEXT_ROLES:
                raise ConfigError(f"{where}: context.{col!r} role must be one of {', '.join(CONTEXT_ROLES)}, got {role!r}")
            if role is not None:
                roles[name] = role
            if "categories" in entry:
                cats = entry["categories"]
                if not isinstance(cats, list) or not cats or len(set(map(str, cats))) != len(cats):
                    raise ConfigError(f"{where}: context.{col!r} categories must be a non-empty list of distinct "
                                      f"values, got {cats!r}")
                categories[name] = tuple(str(c) for c in cats)
        else:
            name = entry
        context[col] = name
    return context, roles, categories


def load_mapping(path: Path) -> ImportMapping:
    try:
        d = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"import mapping {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"import mapping {path} is not valid TOML: {exc}") from None
    return parse_mapping(d, str(path))


def read_history_file(path: Path) -> pd.DataFrame:
    """CSV (any of , ; tab, with or without a BOM, CRLF) or Parquet."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep=None, engine="python", encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


@dataclass
class ImportResult:
    rows: int = 0
    parts: int = 0
    inspections: int = 0
    features: int = 0
    rejected: dict = field(default_factory=dict)  # reason -> count
    non_numeric_values: int = 0
    feature_set_version: str = ""

    def reject(self, reason: str, n: int) -> None:
        if n:
            self.rejected[reason] = self.rejected.get(reason, 0) + int(n)


def _numeric(frame: pd.DataFrame, col: str, result: ImportResult) -> np.ndarray:
    v = pd.to_numeric(frame[col], errors="coerce")
    result.non_numeric_values += int((v.isna() & frame[col].notna()).sum())
    return v.to_numpy(dtype=float)


def _check_columns(df: pd.DataFrame, path: Path, mapping: ImportMapping) -> None:
    """ConfigError if a column the mapping names is missing; columns it leaves unmapped are logged."""
    needed = [mapping.serial, mapping.label_column, *mapping.signals, *mapping.context, *mapping.parts.values(),
              *mapping.defect_code_columns] + ([mapping.time_column] if mapping.time_column else []) + \
        ([mapping.defect_code_column] if mapping.defect_code_column else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: columns {missing} named in the mapping are not in the file "
                          f"(columns: {', '.join(map(str, df.columns[:20]))})")
    unmapped = [c for c in df.columns if c not in needed and c not in mapping.drop]
    if unmapped:
        logger.info("import %s: columns not mapped (ignored): %s", path, ", ".join(map(str, unmapped)))


@dataclass
class _Rows:
    """The file parsed for writing, one entry per row of it; ``ok`` marks the rows to import."""

    cycle_end: pd.Series
    serial: pd.Series
    ok: np.ndarray
    is_pos: np.ndarray
    has_label: np.ndarray
    codes: np.ndarray  # a failed part's defect code, else None
    signals: dict  # signal name -> values
    ctx_num: dict  # context name -> numbers (a category's code)
    ctx_raw: dict  # context name -> text (a category's text, context that is not numeric)
    derived: dict  # derived feature name -> values


def _context_values(df: pd.DataFrame, path: Path, mapping: ImportMapping, result: ImportResult) -> tuple[dict, dict]:
    """({name: numbers}, {name: text}) of each context column: a category is stored as its code and
    its text, a mostly numeric column as numbers, any other as text."""
    ctx_num, ctx_raw = {}, {}
    for col, name in mapping.context.items():
        num = pd.to_numeric(df[col], errors="coerce")
        if name in mapping.categories:
            cats = mapping.categories[name]
            text = df[col].astype(str).str.strip()
            code = text.map({c: float(i) for i, c in enumerate(cats)})
            unknown = df[col].notna() & code.isna()
            if unknown.any():
                logger.warning("import %s: %d values of %r are not among its categories %s and are stored as missing "
                               "(first: %r)", path, int(unknown.sum()), col, list(cats), text[unknown].iloc[0])
                result.non_numeric_values += int(unknown.sum())
            ctx_num[name] = code.to_numpy(dtype=float)
            ctx_raw[name] = text.where(df[col].notna(), None).to_numpy(dtype=object)
        elif num.notna().sum() >= 0.9 * df[col].notna().sum():
            ctx_num[name] = num.to_numpy(dtype=float)
        else:
            ctx_raw[name] = df[col].astype(str).to_numpy()
    return ctx_num, ctx_raw


def _parse_rows(df: pd.DataFrame, path: Path, mapping: ImportMapping, result: ImportResult) -> _Rows:
    """Keys, labels, signals, context and derived features of every row; rejected rows are counted."""
    if mapping.time_column:
        cycle_end = pd.to_datetime(df[mapping.time_column], utc=True, errors="coerce")
    else:
        cycle_end = pd.Series(pd.Timestamp(mapping.start) + pd.to_timedelta(np.arange(len(df)) * mapping.cycle_s, unit="s"))
    serial = df[mapping.serial].astype(str).str.strip()
    ok = cycle_end.notna().to_numpy() & serial.ne("").to_numpy() & df[mapping.serial].notna().to_numpy()
    result.reject("missing serial or timestamp", int((~ok).sum()))
    dup = serial.duplicated(keep="last").to_numpy() & ok
    result.reject("duplicate serial (last row kept)", int(dup.sum()))
    ok &= ~dup
    lab = df[mapping.label_column]
    positive = {str(p).strip().lower() for p in mapping.positive}
    is_pos = lab.astype(str).str.strip().str.lower().isin(positive).to_numpy()
    has_label = lab.notna().to_numpy()
    codes = np.full(len(df), None, dtype=object)
    if mapping.defect_code_column:
        codes = df[mapping.defect_code_column].where(df[mapping.defect_code_column].notna(), None).to_numpy(dtype=object)
    elif mapping.defect_code_columns:
        for c in reversed(mapping.defect_code_columns):
            flag = pd.to_numeric(df[c], errors="coerce").fillna(0).to_numpy() > 0
            codes = np.where(flag & is_pos, c, codes)
    sig = {name: _numeric(df, col, result) for col, name in mapping.signals.items()}
    ctx_num, ctx_raw = _context_values(df, path, mapping, result)
    cols = {f"{n}__value": v for n, v in sig.items()} | {f"ctx__{n}": v for n, v in ctx_num.items()}
    for d in mapping.derived:  # in declaration order: a derived feature may use an earlier one
        cols[d.name] = np.asarray(d.evaluate(cols), dtype=float)
    derived = {d.name: cols[d.name] for d in mapping.derived}
    if result.non_numeric_values:
        logger.warning("import %s: %d signal values were not numbers and are stored as missing", path,
                       result.non_numeric_values)
    return _Rows(cycle_end, serial, ok, is_pos, has_label, codes, sig, ctx_num, ctx_raw, derived)


def _insert(store):
    """The dialect's INSERT, for its ON CONFLICT DO UPDATE (SQLite and PostgreSQL share the syntax)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert if store.dialect == "postgresql" else sqlite_insert


def _upsert_feature_set(store, mapping: ImportMapping, now: datetime) -> None:
    """The feature set's definition, so training reads the same derived features, roles and hints."""
    from pq.storage import schema

    with store.engine.begin() as conn:
        fs_stmt = _insert(store)(schema.feature_sets).values(version=mapping.feature_set_version, source="import",
                                                             definition=mapping.definition(), updated_at=now)
        conn.execute(fs_stmt.on_conflict_do_update(index_elements=["version"], set_={
            "definition": fs_stmt.excluded.definition, "updated_at": fs_stmt.excluded.updated_at}))


def _chunk_rows(df: pd.DataFrame, mapping: ImportMapping, parsed: _Rows,
                rows: np.ndarray) -> tuple[list[dict], list[dict], dict[str, dict]]:
    """(parts, inspections, {serial: feature vector}) of the given rows, ready to upsert."""
    prows, irows, frows = [], [], {}
    for i in rows:
        serial = parsed.serial.iloc[i]
        ce = parsed.cycle_end.iloc[i].to_pydatetime()
        context = {k: (None if not np.isfinite(v[i]) else float(v[i])) for k, v in parsed.ctx_num.items()}
        context |= {k: v[i] for k, v in parsed.ctx_raw.items()}  # a category's text, not its code
        prow = {"line_id": mapping.line_id, "serial": serial, "cycle_end": ce, "context": context,
                "cycle_start": ce - pd.Timedelta(seconds=mapping.cycle_s) if mapping.cycle_s else None}
        for key, col in mapping.parts.items():
            val = df[col].iloc[i]
            prow[key] = None if pd.isna(val) else str(val)
        prows.append(prow)
        if parsed.has_label[i]:
            irows.append({"line_id": mapping.line_id, "serial": serial, "defect": bool(parsed.is_pos[i]),
                          "defect_code": parsed.codes[i], "inspected_at": ce, "source": "import"})
        feats = {f"{n}__value": (None if not np.isfinite(v[i]) else float(v[i])) for n, v in parsed.signals.items()}
        feats |= {f"ctx__{n}": (None if not np.isfinite(v[i]) else float(v[i])) for n, v in parsed.ctx_num.items()}
        feats |= {n: (None if not np.isfinite(v[i]) else float(v[i])) for n, v in parsed.derived.items()}
        frows[serial] = feats
    return prows, irows, frows


def _upsert_vectors(store, mapping: ImportMapping, frows: dict[str, dict], now: datetime) -> None:
    """The ``part_features`` rows of parts already written, keyed by their serial."""
    from pq.storage import schema

    p, pf = schema.parts, schema.part_features
    with store.engine.begin() as conn:
        ids = dict(conn.execute(select(p.c.serial, p.c.id).where(
            and_(p.c.line_id == mapping.line_id, p.c.serial.in_(list(frows))))).all())
        stmt = _insert(store)(pf)
        stmt = stmt.on_conflict_do_update(index_elements=["part_id", "feature_set_version"],
                                          set_={"features": stmt.excluded.features, "computed_at": stmt.excluded.computed_at})
        conn.execute(stmt, [{"part_id": ids[s], "feature_set_version": mapping.feature_set_version, "source": "import",
                             "features": f, "reason": "", "computed_at": now} for s, f in frows.items()])


def import_history(store, path: Path, mapping: ImportMapping, *, dry_run: bool = False,
                   progress: Callable[[float, str], None] | None = None) -> ImportResult:
    """Load the file into the store (idempotent: re-importing updates, never duplicates)."""
    from pq.storage.catalog import TagDef, ensure_tags
    from pq.storage.parts import upsert_inspections, upsert_parts

    progress = progress or (lambda f, m: None)
    df = read_history_file(path)
    result = ImportResult(rows=len(df), feature_set_version=mapping.feature_set_version)
    _check_columns(df, path, mapping)
    parsed = _parse_rows(df, path, mapping, result)
    ok = parsed.ok
    if dry_run:
        result.parts = int(ok.sum())
        result.inspections = int((ok & parsed.has_label).sum())
        result.features = int(ok.sum())
        return result
    ensure_tags(store, mapping.line_id,
                [TagDef(n, n.rsplit("_", 1)[-1] if "_" in n else None, "process") for n in mapping.signals.values()]
                + [TagDef(n, n.rsplit("_", 1)[-1] if "_" in n else None, "context") for n in mapping.context.values()])
    idx = np.flatnonzero(ok)
    now = datetime.now(timezone.utc)
    _upsert_feature_set(store, mapping, now)
    for start in range(0, len(idx), _CHUNK):
        rows = idx[start:start + _CHUNK]
        prows, irows, frows = _chunk_rows(df, mapping, parsed, rows)
        upsert_parts(store, prows)
        result.parts += len(prows)
        upsert_inspections(store, irows)
        result.inspections += len(irows)
        _upsert_vectors(store, mapping, frows, now)
        result.features += len(frows)
        progress(min(1.0, (start + len(rows)) / max(len(idx), 1)), f"{start + len(rows)} of {len(idx)} parts")
    logger.info("imported %s: %d parts, %d inspections, %d vectors (%s); rejected %s", path, result.parts,
                result.inspections, result.features, mapping.feature_set_version, result.rejected or "none")
    return result
