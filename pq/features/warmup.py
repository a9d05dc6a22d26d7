"""Load (or compile, on a cold cache) every Numba kernel, so the first real part is not slow.

Owns `warmup()`: called by the edge runtime at start and by `pq features warmup` (e.g. while
building a container image, so the on-disk cache ships with it). Compiled code is cached on disk
(`cache=True`) next to the module in __pycache__, or under NUMBA_CACHE_DIR when set. Must not
import connectors/, models/, ui/ or simulators/.

Example::

    seconds = warmup()              # all kernels: cold cache ~18 s on 2 cores, warm ~1 s
    seconds = warmup(batch=False)   # edge (streaming only): cold ~4 s, warm ~0.6 s
"""

from __future__ import annotations

import logging
import time

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["warmup"]


def warmup(batch: bool = True) -> float:
    """Compile or load every kernel signature pq uses; returns the seconds it took.

    batch=False: only what the edge needs (ring buffers and the one-part kernel), about a third
    of the compile time on a cold cache; `pq features warmup` (image build) does everything."""
    t0 = time.perf_counter()
    import pandas as pd

    from pq.features import _kernels as K
    from pq.features.batch import compute_batch, prepare_samples
    from pq.features.spec import N_KERNEL_COLS, parse_feature_set
    from pq.features.streaming import StreamingFeatures

    fs = parse_feature_set({"version": "warmup", "min_good": 1,
                            "signals": [{"tag": "x", "stats": ["mean"]}]})
    ts = np.arange(4, dtype=np.int64)
    val = np.ones(4)
    st = np.zeros(4, np.uint32)
    sf = StreamingFeatures(fs, capacity_s=1.0, max_rate_hz=4.0)
    sf.push_many("x", ts, val, st)
    sf.push("x", 2, 1.0)  # late and duplicated
    sf.vector(0, 4)
    if batch:
        # one-pass and regrouped batch paths, with int8 codes (categorical columns) and int32
        # codes (factorised or >127 categories), serial and parallel
        t = pd.to_datetime([1, 2, 3, 4], unit="s", utc=True)
        parts = pd.DataFrame({"line_id": ["L"], "serial": ["w"], "cycle_start": t[:1],
                              "cycle_end": t[-1:]})
        for order in ([0, 1, 2, 3], [1, 0, 2, 3]):
            for cat in (True, False):
                s = pd.DataFrame({"line_id": "L", "tag": "x", "ts": t[order], "value": 1.0,
                                  "status": np.zeros(4, np.uint32)})
                if cat:
                    s["tag"] = s["tag"].astype("category")
                    s["line_id"] = s["line_id"].astype("category")
                for parallel in (True, False):
                    compute_batch(fs, s, parts, parallel=parallel)
        prepare_samples(fs, s, ["L"])
        i1 = np.zeros(1, np.int64)
        w = np.array([[0, 4]], np.int64)
        start, end = np.zeros(1, np.int64), np.full(1, 4, np.int64)
        args = (ts, val, st, start, end, i1, w[:, :1], w[:, 1:], i1, i1, np.full(1, 0.2),
                np.ones(1, np.int64), np.zeros(1), np.ones(1), np.uint32(0xC0000000))
        K.batch_stats(*args, np.empty((1, 1, N_KERNEL_COLS)))
        K.batch_stats_serial(*args, np.empty((1, 1, N_KERNEL_COLS)))
    dt = time.perf_counter() - t0
    logger.info("features: numba kernels ready in %.2f s", dt)
    return dt
