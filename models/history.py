"""Labelled datasets from a history directory (``pq simulate history --out DIR`` or a historian export).

Owns computing the feature vectors of a history's parts (its tables read by
:func:`pq.storage.history.read_table`, the one reader) with pq's own batch path, so experiments and reports run on raw history without loading it
into a store first. Imports pq and models only.

Example::

    ds = dataset_from_history_dir(Path("var/history/heatwave"))     # default feature set
"""

from __future__ import annotations

import logging
from pathlib import Path


from models.dataset import Dataset, dataset_from_frames
from pq.errors import ModelError
from pq.storage.history import history_time, read_table

__all__ = ["dataset_from_history_dir"]

logger = logging.getLogger(__name__)


def dataset_from_history_dir(directory: Path, feature_set=None, *, label_available_only: bool = True) -> Dataset:
    """Compute feature vectors for every part of the history and join its labels."""
    from pq.features.batch import compute_batch
    from pq.features.spec import load_feature_set

    fs = feature_set or load_feature_set()
    parts = read_table(directory, "parts")
    samples = read_table(directory, "samples")
    tags = read_table(directory, "tags", required=False)
    for frame, columns in ((parts, ("cycle_start", "cycle_end", "inspected_at")), (samples, ("ts",))):
        for c in columns:
            t = history_time(frame, c)
            if t is not None:
                frame[c] = t
    if "defect" not in parts.columns:
        raise ModelError(f"{directory}/parts: no 'defect' column; a labelled history is needed for training or reports")
    catalog = None
    if tags is not None and "name" in tags.columns:
        catalog = tags.rename(columns={"low": "low_limit", "high": "high_limit"})
    logger.info("computing feature set %s for %d parts from %d samples in %s", fs.version, len(parts), len(samples),
                directory)
    features = compute_batch(fs, samples, parts, tags=catalog)
    return dataset_from_frames(features, parts, fs.version)
