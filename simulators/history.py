"""History generation faster than real time, from the same line model the live server drives.

Owns :func:`generate_history` and the table layouts it produces (``parts``, ``samples``,
``ground_truth``, ``tags``) and writes (Parquet + ``tags.csv`` + ``manifest.json``), in the shape
``pq db load DIR`` bulk-loads. Imports nothing of ``pq`` (numpy, pandas, pyarrow).

Example::

    res = generate_history(days=1, lines=2, seed=7, scenario="normal,0.5:heatwave", out_dir="var/hist")
    res.parts.groupby("line_id").defect.mean()
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq_

from .line_model import US, LineModel
from .scenarios import parse_schedule
from .signals import SIGNALS, line_id, signals_frame

logger = logging.getLogger(__name__)

# tags that go into the long samples table: every signal except the two DateTime cycle stamps,
# which are the parts table's cycle_start / cycle_end
SAMPLE_TAGS: tuple[str, ...] = tuple(s.name for s in SIGNALS if s.dtype != "datetime")
_TAG_CODE = {n: i for i, n in enumerate(SAMPLE_TAGS)}
_STRING_TAGS = {s.name for s in SIGNALS if s.dtype == "string"}

SAMPLES_SCHEMA = pa.schema([
    ("line_id", pa.dictionary(pa.int16(), pa.string())),
    ("tag", pa.dictionary(pa.int16(), pa.string())),
    ("ts", pa.timestamp("ns", tz="UTC")),
    ("value", pa.float64()),
    ("status", pa.uint32()),
    ("value_text", pa.string()),
])

Progress = Callable[[float, str], None]


@dataclass
class HistoryResult:
    """What :func:`generate_history` made. ``samples`` is None when ``keep_samples=False``."""

    parts: pd.DataFrame
    samples: pd.DataFrame | None
    ground_truth: pd.DataFrame
    tags: pd.DataFrame
    out_dir: Path | None = None
    stats: dict = field(default_factory=dict)


def parts_frame(parts: list[dict], start: datetime | None = None) -> pd.DataFrame:
    """Parts rows from the model (``*_us`` offsets from ``start``) -> the ``parts`` table."""
    cols = ["line_id", "serial", "cycle_start", "cycle_end", "product", "material_lot", "supplier", "shift",
            "ambient_temp_c", "humidity_pct", "lot_moisture_pct", "lot_mfi_g10min", "dryer_dew_point_c",
            "tool_wear_shots", "scenario", "defect", "defect_code", "inspected_at"]
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(parts)
    base = int(round((start or datetime(1970, 1, 1, tzinfo=timezone.utc)).timestamp() * US))
    for name in ("cycle_start", "cycle_end", "inspected_at"):
        us = pd.to_numeric(df.pop(f"{name}_us"), errors="coerce")
        df[name] = pd.to_datetime(us + base, unit="us", utc=True).astype("datetime64[ns, UTC]")
    df["defect"] = df["defect"].astype(bool)
    df["tool_wear_shots"] = df["tool_wear_shots"].astype(np.int64)
    return df[cols]


class _SampleBuffer:
    """Accumulates one line's samples as numpy chunks and turns them into Arrow tables."""

    def __init__(self, line: str, base_us: int) -> None:
        self.line = line
        self.base_us = base_us
        self.t: list[np.ndarray] = []
        self.tag: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.st: list[np.ndarray] = []
        self.text_rows: list[tuple[int, int, str]] = []  # (row offset, tag code, text)
        self.rows = 0

    def add_cycle(self, cycle) -> None:
        for cs in cycle.cont:
            n = len(cs.t_us)
            self.t.append(cs.t_us)
            self.tag.append(np.full(n, _TAG_CODE[cs.name], dtype=np.int16))
            self.v.append(cs.values)
            self.st.append(cs.status if cs.status is not None else np.zeros(n, dtype=np.uint32))
            self.rows += n
        ev = [(name, value, status) for name, value, status in cycle.events if name in _TAG_CODE]
        n = len(ev)
        vals = np.empty(n)
        for i, (name, value, _) in enumerate(ev):
            if name in _STRING_TAGS:
                vals[i] = np.nan
                self.text_rows.append((self.rows + i, _TAG_CODE[name], value))
            else:
                vals[i] = float(value)
        self.t.append(np.full(n, cycle.t_end_us, dtype=np.int64))
        self.tag.append(np.fromiter((_TAG_CODE[e[0]] for e in ev), dtype=np.int16, count=n))
        self.v.append(vals)
        self.st.append(np.fromiter((e[2] for e in ev), dtype=np.uint32, count=n))
        self.rows += n

    def flush(self) -> pa.Table | None:
        if not self.rows:
            return None
        t = np.concatenate(self.t) + self.base_us
        tag = np.concatenate(self.tag)
        v = np.concatenate(self.v)
        st = np.concatenate(self.st)
        text = np.full(self.rows, None, dtype=object)
        for row, _, value in self.text_rows:
            text[row] = value
        n = self.rows
        self.t, self.tag, self.v, self.st, self.text_rows, self.rows = [], [], [], [], [], 0
        line_arr = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int16)), pa.array([self.line]))
        tag_arr = pa.DictionaryArray.from_arrays(pa.array(tag), pa.array(list(SAMPLE_TAGS)))
        ts = pa.array(t * 1000, type=pa.timestamp("ns", tz="UTC"))
        return pa.Table.from_arrays(
            [line_arr, tag_arr, ts, pa.array(v, type=pa.float64()), pa.array(st, type=pa.uint32()),
             pa.array(text, type=pa.string())],
            schema=SAMPLES_SCHEMA,
        )


def generate_history(
    days: float = 1.0,
    lines: int = 1,
    seed: int = 0,
    scenario: str | list | tuple = "normal",
    sample_hz: float = 10.0,
    start: datetime | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    label_delay: int = 3,
    signal_hz: dict[str, float] | None = None,
    keep_samples: bool = True,
    chunk_cycles: int = 2000,
    season_day: float | None = None,
) -> HistoryResult:
    """Run ``lines`` line models for ``days`` simulated days as fast as possible.

    ``scenario`` is a name or a schedule (``[(day_offset, name), ...]`` or ``"normal,7:heatwave"``).
    ``start`` defaults to 2025-01-06 00:00 UTC (a Monday) so that a seed alone fixes the data.
    Every part made in the window gets its inspection (the line runs ``label_delay`` cycles past
    the end for that; those cycles' samples are not kept). With ``out_dir``, writes
    ``parts.parquet``, ``samples.parquet``, ``ground_truth.parquet``, ``tags.csv`` and
    ``manifest.json``. ``progress(fraction, message)`` is called as it goes.

    >>> res = generate_history(days=0.01, lines=1, seed=1)
    >>> res.parts.serial.iloc[0], res.samples.tag.dtype.name
    ('L1-000001', 'category')
    """
    _check_arguments(days=days, lines=lines, sample_hz=sample_hz)
    schedule = parse_schedule(scenario)
    start = start or datetime(2025, 1, 6, tzinfo=timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    progress = progress or (lambda fraction, message: None)
    out = Path(out_dir) if out_dir is not None else None
    writer = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        writer = pq_.ParquetWriter(out / "samples.parquet", SAMPLES_SCHEMA, compression="zstd")
    end_us = int(round(days * 86400 * US))
    t_wall = time.perf_counter()
    all_parts: list[dict] = []
    truth: list[dict] = []
    sink = _SampleSink(writer, keep_samples)
    try:
        for i in range(lines):
            lid = line_id(i)
            model = LineModel(lid, seed=seed, start=start, sample_hz=sample_hz, scenario=schedule,
                              label_delay=label_delay, signal_hz=signal_hz, line_index=i, season_day=season_day)
            cycles = _run_line(model, end_us, sink, all_parts, truth, chunk_cycles,
                               lambda frac, message, i=i: progress(0.95 * ((i + frac) / lines), message))
            progress(0.95 * (i + 1) / lines, f"{lid}: {cycles:,} parts, {sink.rows:,} samples")
    finally:
        if writer is not None:
            writer.close()

    parts = parts_frame(all_parts, start)
    gt = pd.DataFrame(truth)
    tags = signals_frame()
    samples = _samples_frame(sink.tables) if keep_samples else None
    elapsed = time.perf_counter() - t_wall
    stats = {
        "days": days, "lines": lines, "seed": seed, "sample_hz": sample_hz, "label_delay": label_delay,
        "scenario": [[d, n] for d, n in schedule], "start": start.isoformat(), "parts": len(parts),
        "samples": sink.rows, "defect_rate": float(parts["defect"].mean()) if len(parts) else 0.0,
        "elapsed_s": round(elapsed, 3), "x_realtime": round(days * 86400 * lines / max(elapsed, 1e-9), 1),
    }
    if out is not None:
        progress(0.97, "writing parts, ground truth and tags")
        _write_tables(out, parts, gt, tags, stats)
    progress(1.0, f"{len(parts):,} parts, {sink.rows:,} samples in {elapsed:.1f} s ({stats['x_realtime']:,}x real time)")
    logger.info("history: %d line(s) x %g day(s): %d parts, %d samples in %.1f s", lines, days, len(parts),
                sink.rows, elapsed)
    return HistoryResult(parts=parts, samples=samples, ground_truth=gt, tags=tags, out_dir=out, stats=stats)


def _check_arguments(*, days: float, lines: int, sample_hz: float) -> None:
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    if lines < 1:
        raise ValueError(f"lines must be >= 1, got {lines}")
    if sample_hz <= 0:
        raise ValueError(f"sample_hz must be > 0, got {sample_hz}")


class _SampleSink:
    """Where each flushed chunk of samples goes: the Parquet file (if any) and, if kept, memory."""

    def __init__(self, writer: pq_.ParquetWriter | None, keep: bool) -> None:
        self.writer = writer
        self.keep = keep
        self.tables: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.writer is not None:
            self.writer.write_table(table)
        if self.keep:
            self.tables.append(table)


def _run_line(model: LineModel, end_us: int, sink: _SampleSink, all_parts: list[dict], truth: list[dict],
              chunk_cycles: int, progress: Progress) -> int:
    """Run one line to ``end_us``, then on until its last part is inspected; return the parts made.

    Samples go to ``sink`` every ``chunk_cycles`` cycles (memory stays bounded however long the
    history); ``progress`` gets the fraction of this line done.
    """
    lid = model.line_id
    buf = _SampleBuffer(lid, model.start_epoch_us)
    cycles = 0
    while model.t_us < end_us:
        c = model.next_cycle()
        all_parts.append(c.part)
        truth.append(c.truth)
        buf.add_cycle(c)
        cycles += 1
        if cycles % chunk_cycles == 0:
            sink.add(buf.flush())
            progress(min(1.0, model.t_us / end_us), f"{lid}: {cycles:,} parts, {sink.rows:,} samples")
    # the last parts still need their inspection: keep the line running, keep only the labels
    last_serial = c.serial if cycles else None
    while last_serial and all_parts[-1]["inspected_at_us"] is None:
        model.next_cycle()
    table = buf.flush()
    if table is not None:
        sink.add(table)
    return cycles


def _samples_frame(tables: list[pa.Table]) -> pd.DataFrame:
    table = pa.concat_tables(tables) if tables else SAMPLES_SCHEMA.empty_table()
    samples = table.to_pandas()
    for col in ("line_id", "tag"):
        samples[col] = samples[col].astype("category")
    return samples


def _write_tables(out: Path, parts: pd.DataFrame, gt: pd.DataFrame, tags: pd.DataFrame, stats: dict) -> None:
    """The files besides ``samples.parquet`` (written chunk by chunk while the lines run)."""
    parts.to_parquet(out / "parts.parquet", index=False)
    gt.to_parquet(out / "ground_truth.parquet", index=False)
    tags.to_csv(out / "tags.csv", index=False)
    (out / "manifest.json").write_text(json.dumps({"generator": "pq simulator", **stats}, indent=2) + "\n")
