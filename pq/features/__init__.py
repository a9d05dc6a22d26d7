"""Feature windows: a versioned feature set declared as data, computed by Numba kernels.

Owns everything between raw samples and a part's feature vector: the spec (`spec.py`,
`default_spec.toml`), the kernels (`_kernels.py`), the batch path (`batch.py`), the streaming edge
path (`streaming.py`), the context baseline (`baseline.py`) and store integration (`backfill.py`)
(the pandas parity oracle lives in `benchmarks/feature_reference.py`, the CLI in `pq/cli/features.py`).
It must not import connectors/, models/, ui/ or simulators/.

Imports are lazy: `import pq.features` does not import numba or pandas; the first use of
`compute_batch` or `StreamingFeatures` does (warm start: ~1 s, see README).

Example::

    from pq.features import load_feature_set, compute_batch, StreamingFeatures
    fs = load_feature_set()
    X = compute_batch(fs, samples, parts, tags=tags_df)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FeatureSet", "FeatureSpecError", "UnknownTagError", "FeatureInputError", "STATS",
    "load_feature_set", "parse_feature_set",
    "compute_batch", "StreamingFeatures", "ContextBaseline",
    "log_served_features", "backfill", "warmup",
]

_LAZY = {
    "FeatureSet": "pq.features.spec", "FeatureSpecError": "pq.features.spec",
    "UnknownTagError": "pq.features.spec", "FeatureInputError": "pq.features.spec",
    "STATS": "pq.features.spec", "load_feature_set": "pq.features.spec",
    "parse_feature_set": "pq.features.spec",
    "compute_batch": "pq.features.batch", "StreamingFeatures": "pq.features.streaming",
    "ContextBaseline": "pq.features.baseline",
    "log_served_features": "pq.features.backfill", "backfill": "pq.features.backfill",
    "warmup": "pq.features.warmup",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'pq.features' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
