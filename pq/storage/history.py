"""Bulk load of a part-level history with its raw sample windows (``pq db load DIR``).

The directory holds what ``pq simulate history --out DIR`` writes, or the same shape exported
from a historian:

- ``tags.csv`` or ``tags.parquet``: name, unit, role, low/high limits (+ description, line_id);
- ``samples.parquet``: long format line_id, tag, ts (or ts_us), value, status (+ value_text);
- ``parts.parquet``: line_id, serial, cycle_start/cycle_end (or *_us), product, material_lot,
  shift, context columns, and the label: defect, defect_code, inspected_at (or *_us).

Samples go through the same idempotent ingest as live data, so loading twice stores once.
Columns that a plant could not observe (the simulator's scenario and ground truth) are not loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pq.errors import ConfigError
from pq.storage.catalog import TagDef, ensure_tags
from pq.storage.engine import Store
from pq.storage.parts import upsert_inspections, upsert_parts
from pq.storage.samples import IngestResult, write_samples

__all__ = ["load_history_dir", "HistoryLoad", "read_table", "history_time"]

logger = logging.getLogger(__name__)

_ROLE = {"part": "part_event", "part_event": "part_event", "inspection": "label", "label": "label",
         "process": "process", "context": "context"}
_PART_COLUMNS = {"line_id", "serial", "cycle_start", "cycle_end", "product", "material_lot", "shift"}
_NOT_OBSERVABLE = {"scenario", "mechanism", "defect_prob", "defect", "defect_code", "inspected_at"}

Progress = Callable[[float, str], None]


@dataclass
class HistoryLoad(IngestResult):
    parts: int = 0
    inspections: int = 0


def read_table(directory: Path, stem: str, required: bool = True) -> pd.DataFrame | None:
    """A history directory's table ``stem`` (Parquet or CSV); None (or ConfigError when required) if absent."""
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", pd.read_csv)):
        path = Path(directory) / f"{stem}{suffix}"
        if path.exists():
            try:
                return reader(path)
            except Exception as exc:  # pyarrow and pandas raise many types for a damaged file
                raise ConfigError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if required:
        raise ConfigError(f"{directory}: no {stem}.parquet or {stem}.csv (expected `pq simulate history --out` output)")
    return None


def history_time(frame: pd.DataFrame, name: str) -> pd.Series | None:
    """Column ``name`` (or ``<name>_us``, microseconds) as UTC timestamps; None when the frame has neither."""
    if name in frame:
        return pd.to_datetime(frame[name], utc=True)
    if f"{name}_us" in frame:
        return pd.to_datetime(frame[f"{name}_us"], unit="us", utc=True)
    return None


def _tag_defs(tags: pd.DataFrame) -> list[TagDef]:
    out = []
    for row in tags.to_dict("records"):
        role = _ROLE.get(str(row.get("role", "process")))
        if role is None:
            raise ConfigError(f"tags table: tag {row.get('name')!r} has unknown role {row.get('role')!r}")
        low, high = row.get("low", row.get("low_limit")), row.get("high", row.get("high_limit"))
        out.append(TagDef(name=row["name"], unit=row.get("unit") or None, role=role,
                          low_limit=None if pd.isna(low) else float(low),
                          high_limit=None if pd.isna(high) else float(high),
                          description=row.get("description")))
    return out


def load_history_dir(store: Store, directory: Path, *, chunk_rows: int = 500_000,
                     progress: Progress | None = None) -> HistoryLoad:
    """Load tags, parts, inspections and samples from ``directory`` into the store."""
    directory = Path(directory)
    progress = progress or (lambda fraction, message: None)
    tags = read_table(directory, "tags")
    parts = read_table(directory, "parts")
    result = HistoryLoad()

    line_ids = sorted(parts["line_id"].unique())
    tag_ids: dict[tuple[str, str], int] = {}
    defs = _tag_defs(tags)
    for line_id in line_ids:
        for name, tag_id in ensure_tags(store, line_id, defs).items():
            tag_ids[(line_id, name)] = tag_id

    progress(0.02, f"{len(parts):,} parts on {len(line_ids)} line(s)")
    parts = parts.assign(cycle_start=history_time(parts, "cycle_start"), cycle_end=history_time(parts, "cycle_end"),
                         inspected_at=history_time(parts, "inspected_at"))
    context_cols = [c for c in parts.columns if c not in _PART_COLUMNS | _NOT_OBSERVABLE and not c.endswith("_us")]
    rows = []
    for rec in parts.to_dict("records"):
        context = {c: (None if pd.isna(rec[c]) else (rec[c].item() if hasattr(rec[c], "item") else rec[c]))
                   for c in context_cols}
        rows.append({"line_id": rec["line_id"], "serial": rec["serial"],
                     "cycle_start": rec["cycle_start"].to_pydatetime(), "cycle_end": rec["cycle_end"].to_pydatetime(),
                     "product": rec.get("product"), "material_lot": rec.get("material_lot"),
                     "shift": None if rec.get("shift") is None else str(rec.get("shift")), "context": context})
    for i in range(0, len(rows), 5000):
        result.parts += upsert_parts(store, rows[i:i + 5000])
    labelled = parts[parts["inspected_at"].notna()] if "defect" in parts else parts.iloc[:0]
    inspections = [{"line_id": r["line_id"], "serial": r["serial"], "defect": bool(r["defect"]),
                    "defect_code": r.get("defect_code") or None, "inspected_at": r["inspected_at"].to_pydatetime()}
                   for r in labelled.to_dict("records")]
    for i in range(0, len(inspections), 5000):
        result.inspections += upsert_inspections(store, inspections[i:i + 5000])
    progress(0.1, f"{result.parts:,} parts, {result.inspections:,} inspections stored")

    samples = read_table(directory, "samples")
    key = pd.MultiIndex.from_frame(samples[["line_id", "tag"]])
    lookup = pd.Series(tag_ids, dtype="int64")
    lookup.index = pd.MultiIndex.from_tuples(lookup.index)
    ids = lookup.reindex(key).to_numpy()
    frame = pd.DataFrame({
        "tag_id": np.nan_to_num(ids, nan=-1).astype(np.int64),  # unknown tags are rejected and counted
        "ts": history_time(samples, "ts"),
        "value": samples["value"].to_numpy(dtype=np.float64),
        "status": samples["status"].to_numpy(dtype=np.int64) if "status" in samples else 0,
    })
    if "value_text" in samples:
        frame["value_text"] = samples["value_text"]
    total = len(frame)
    for i in range(0, total, chunk_rows):
        result.add(write_samples(store, frame.iloc[i:i + chunk_rows]))
        progress(0.1 + 0.9 * min(1.0, (i + chunk_rows) / max(total, 1)), f"{min(i + chunk_rows, total):,} of {total:,} samples")
    logger.info("loaded %s: %d parts, %d inspections, %d samples written (%d duplicates, rejected %s)",
                directory, result.parts, result.inspections, result.written, result.duplicates, result.rejected)
    return result
