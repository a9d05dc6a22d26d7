"""Labelled datasets from a history directory (``pq simulate history --out DIR`` or a historian export).

Owns reading ``parts``, ``samples`` and ``tags`` tables (Parquet or CSV) and computing their feature
vectors with pq's own batch path, so experiments and reports run on raw history without loading it
into a store first. Imports pq and models only.

Example::

    ds = dataset_from_history_dir(Path("var/history/heatwave"))     # default feature set
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from models.dataset import Dataset, dataset_from_frames
from pq.errors import ConfigError, ModelError

__all__ = ["dataset_from_history_dir", "read_table"]

logger = logging.getLogger(__name__)


def read_table(directory: Path, stem: str, required: bool = True) -> pd.DataFrame | None:
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", pd.read_csv)):
        path = Path(directory) / f"{stem}{suffix}"
        if path.exists():
            try:
                return reader(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if required:
        raise ConfigError(f"{directory}: no {stem}.parquet or {stem}.csv (expected `pq simulate history --out` output)")
    return None


def _time(frame: pd.DataFrame, name: str) -> None:
    if name not in frame.columns and f"{name}_us" in frame.columns:
        frame[name] = pd.to_datetime(frame[f"{name}_us"], unit="us", utc=True)
    elif name in frame.columns:
        frame[name] = pd.to_datetime(frame[name], utc=True)


def dataset_from_history_dir(directory: Path, feature_set=None, *, label_available_only: bool = True) -> Dataset:
    """Compute feature vectors for every part of the history and join its labels."""
    from pq.features.batch import compute_batch
    from pq.features.spec import load_feature_set

    fs = feature_set or load_feature_set()
    parts = read_table(directory, "parts")
    samples = read_table(directory, "samples")
    tags = read_table(directory, "tags", required=False)
    for c in ("cycle_start", "cycle_end", "inspected_at"):
        _time(parts, c)
    _time(samples, "ts")
    if "defect" not in parts.columns:
        raise ModelError(f"{directory}/parts: no 'defect' column; a labelled history is needed for training or reports")
    catalog = None
    if tags is not None and "name" in tags.columns:
        catalog = tags.rename(columns={"low": "low_limit", "high": "high_limit"})
    logger.info("computing feature set %s for %d parts from %d samples in %s", fs.version, len(parts), len(samples),
                directory)
    features = compute_batch(fs, samples, parts, tags=catalog)
    return dataset_from_frames(features, parts, fs.version)
