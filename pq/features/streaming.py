"""Streaming feature path (edge): bounded ring buffers per tag, one part's vector at cycle end.

Owns `StreamingFeatures`: samples are pushed as they arrive (batched `push_many` preferred: one
Python-to-Numba call per batch), and `vector()` computes the part's feature vector with the same
Numba kernel as the batch path (`_kernels.stream_stats` over the ring buffers viewed as one
grouped sample array) and the same assembly (`_assemble`). Must not import connectors/, models/,
ui/ or simulators/; takes plain values, not asyncua objects.

Buffer policy (per tag, bounded): at most `capacity = ceil(capacity_s * max_rate_hz)` samples.
- in-order samples are appended; out-of-order samples are inserted at their ts position;
- a duplicated ts is dropped (first wins, as the store's ON CONFLICT DO NOTHING), counted;
- when full, the oldest sample is evicted and counted; a window that starts at or before the newest
  evicted ts gets NaN statistics and the reason "<tag>: buffer overflow, samples evicted";
- a sample older than an evicted one (or than everything in a full buffer) is dropped as too old;
- pushes for tags the feature set does not read are ignored and counted (`unknown_tag`).

Example::

    sf = StreamingFeatures(fs, baseline, capacity_s=120, limits=tags_df)
    sf.push_many("melt_temp_c", ts_array, values, statuses)
    x, reason = sf.vector(cycle_start, cycle_end, {"ambient_temp_c": 24.0, "shift": "A"})
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from pq.features import _kernels as K
from pq.features._assemble import assemble, plan_for
from pq.features.spec import N_KERNEL_COLS, FeatureInputError, FeatureSet

logger = logging.getLogger(__name__)

__all__ = ["StreamingFeatures", "ts_to_ns"]

_NAT = np.iinfo(np.int64).min


def ts_to_ns(ts: Any) -> int:
    """One timestamp to int64 ns (UTC): datetime (naive = UTC), np.datetime64, pandas Timestamp,
    int (ns) or float (epoch seconds)."""
    if isinstance(ts, (bool, np.bool_)):
        raise FeatureInputError(f"timestamp must be a datetime or number, got {ts!r}")
    if isinstance(ts, (int, np.integer)):
        return int(ts)
    if isinstance(ts, (float, np.floating)):
        if not math.isfinite(ts):
            raise FeatureInputError(f"timestamp must be finite, got {ts!r}")
        return int(np.rint(ts * 1e9))
    if isinstance(ts, np.datetime64):
        return int(ts.astype("datetime64[ns]").astype(np.int64))
    if hasattr(ts, "value") and hasattr(ts, "tz_convert"):  # pandas Timestamp
        t = ts if ts.tzinfo is None else ts.tz_convert("UTC").tz_localize(None)
        return int(t.as_unit("ns").value)
    if isinstance(ts, datetime):
        if ts.tzinfo is not None:
            ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
        delta = ts - datetime(1970, 1, 1)
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise FeatureInputError(f"timestamp must be a datetime or number, got {type(ts).__name__}")


def _ts_array_to_ns(ts: Any) -> np.ndarray:
    arr = np.asarray(ts)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").view(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        out = np.full(arr.shape, _NAT, np.int64)
        ok = np.isfinite(arr)
        out[ok] = np.rint(arr[ok] * 1e9).astype(np.int64)
        return out
    return np.fromiter((ts_to_ns(x) for x in arr), np.int64, count=arr.size)


class StreamingFeatures:
    """Per-tag ring buffers for one line, and the part vector at cycle end.

    feature_set: the FeatureSet; baseline: fitted ContextBaseline or None; capacity_s and
    max_rate_hz size the buffers (capacity = ceil(capacity_s * max_rate_hz) samples per tag);
    limits: tag catalog (DataFrame name, low_limit, high_limit[, line_id]) or {tag: (low, high)};
    when given, spec tags missing from it raise UnknownTagError. line_id selects the catalog rows
    of this line (required when the catalog covers several lines).
    """

    def __init__(
        self,
        feature_set: FeatureSet,
        baseline: Any = None,
        *,
        capacity_s: float = 120.0,
        max_rate_hz: float = 100.0,
        limits: Any = None,
        line_id: str | None = None,
    ):
        if not capacity_s > 0 or not max_rate_hz > 0:
            raise FeatureInputError(
                f"capacity_s and max_rate_hz must be > 0, got {capacity_s}, {max_rate_hz}"
            )
        from pq.features.batch import _catalog_names, limits_table  # pandas only for the catalog

        names = _catalog_names(limits)
        if names is not None:
            feature_set.check_tags(names)
        self.feature_set = feature_set
        self.baseline = baseline
        self._plan = plan_for(feature_set)
        T = len(self._plan.tags)
        self.capacity = int(math.ceil(capacity_s * max_rate_hz))
        L = 2 * self.capacity
        self._tix = {t: i for i, t in enumerate(self._plan.tags)}
        self._ts = np.zeros((T, L), np.int64)
        self._val = np.zeros((T, L), np.float64)
        self._st = np.zeros((T, L), np.uint32)
        self._head = np.zeros(T, np.int64)
        self._tail = np.zeros(T, np.int64)
        self._evicted_max = np.full(T, _NAT, np.int64)
        self._counters = np.zeros((T, K.N_COUNTERS), np.int64)
        self._unknown = 0
        self._row0 = np.arange(T, dtype=np.int64) * L
        if hasattr(limits, "columns") and "line_id" in limits.columns:
            if line_id is None:
                lines = sorted({str(x) for x in limits["line_id"]})
                if len(lines) > 1:
                    raise FeatureInputError(
                        f"tag catalog covers lines {lines}: pass line_id= to StreamingFeatures"
                    )
            else:
                limits = limits[limits["line_id"].astype(str) == str(line_id)]
            limits = limits.drop(columns=["line_id"])
        self.line_id = line_id
        lo, hi = limits_table(feature_set, ["_"], limits)
        self._lim_lo, self._lim_hi = lo, hi
        self._lim = (lo[self._plan.g_tag][None, :], hi[self._plan.g_tag][None, :])
        # per-call buffers, allocated once: vector() runs at every cycle end on the edge
        self._stats = np.empty((1, len(feature_set.groups), N_KERNEL_COLS))
        self._wlo = np.empty((1, len(self._plan.windows)), np.int64)
        self._whi = np.empty((1, len(self._plan.windows)), np.int64)
        self._grp_start = np.empty(T, np.int64)
        self._grp_end = np.empty(T, np.int64)
        self._ts_flat = self._ts.reshape(-1)  # views of the ring buffers, shared memory
        self._val_flat = self._val.reshape(-1)
        self._st_flat = self._st.reshape(-1)
        self._bad_mask = np.uint32(feature_set.bad_mask)
        self._one = np.ones(1, bool)
        self._empty_yes = np.ones(1, bool)
        self._empty_no = np.zeros(1, bool)
        self._logged_overflow: set[int] = set()

    @property
    def feature_names(self) -> list[str]:
        return list(self.feature_set.feature_names)

    @property
    def tags(self) -> list[str]:
        """The signals this feature set reads (the edge's key signals for a part)."""
        return list(self.feature_set.tags)

    # ---- input -------------------------------------------------------------------------------------
    def push(self, tag: str, ts: Any, value: float, status: int = 0) -> None:
        """Push one sample (prefer push_many: each call into Numba costs ~1 µs)."""
        t = self._tix.get(tag)
        if t is None:
            self._unknown += 1
            return
        self.push_many(tag, np.asarray([ts_to_ns(ts)], np.int64), [value], [status])

    def push_many(self, tag: str, ts: Any, values: Any, statuses: Any = None) -> None:
        """Push a batch of samples of one tag (arrays of equal length; statuses default Good)."""
        t = self._tix.get(tag)
        tsn = _ts_array_to_ns(ts)
        if t is None:
            self._unknown += int(tsn.size)
            return
        v = np.ascontiguousarray(values, np.float64)
        s = np.zeros(tsn.size, np.uint32) if statuses is None else np.ascontiguousarray(statuses, np.uint32)
        if not (tsn.ndim == v.ndim == s.ndim == 1 and tsn.size == v.size == s.size):
            raise FeatureInputError(
                f"push_many({tag!r}): ts, values, statuses must be 1-D of one length, "
                f"got {tsn.shape}, {v.shape}, {s.shape}"
            )
        nat = tsn == _NAT
        if nat.any():
            self._counters[t, K.C_TOO_OLD] += int(nat.sum())
            tsn, v, s = tsn[~nat], v[~nat], s[~nat]
        K.ring_push(self._ts, self._val, self._st, self._head, self._tail, self._evicted_max,
                    self._counters, self.capacity, t, tsn, v, s)

    # ---- output ------------------------------------------------------------------------------------
    def vector(self, cycle_start: Any, cycle_end: Any, context: Mapping[str, Any] | None = None
               ) -> tuple[np.ndarray, str]:
        """(features float64 in feature_set.feature_names order, reason) for the cycle
        [cycle_start, cycle_end) from the samples buffered so far."""
        cs, ce = ts_to_ns(cycle_start), ts_to_ns(cycle_end)
        empty = not ce > cs
        plan = self._plan
        stats = self._stats
        wlo, whi = self._wlo, self._whi
        np.add(self._row0, self._head, out=self._grp_start)
        np.add(self._row0, self._tail, out=self._grp_end)
        K.stream_stats(self._ts_flat, self._val_flat, self._st_flat, self._grp_start,
                       self._grp_end, cs, ce, plan.w_start_frac, plan.w_start_off,
                       plan.w_end_frac, plan.w_end_off, plan.g_tag, plan.g_win, plan.g_alpha,
                       plan.g_min, self._lim_lo, self._lim_hi, self._bad_mask, stats, wlo, whi)
        invalid = []
        em = self._evicted_max
        if not empty and (em != _NAT).any():  # rare: only after a ring buffer overflowed
            g_start = wlo[0, plan.g_win]
            g_em = em[plan.g_tag]
            for j in np.nonzero((g_em != _NAT) & (g_start < g_em))[0]:
                t = int(plan.g_tag[j])
                invalid.append((int(j), self._one, "buffer overflow, samples evicted"))
                if t not in self._logged_overflow:  # log the change of state once per tag
                    self._logged_overflow.add(t)
                    logger.warning("features: window of %s needs samples already evicted from its "
                                   "ring buffer (%d samples); raise capacity_s or max_rate_hz",
                                   plan.tags[t], self.capacity)
        X, reasons = assemble(self.feature_set, stats.copy() if invalid else stats, self._lim,
                              context or {}, self.baseline,
                              empty_cycle=self._empty_yes if empty else self._empty_no,
                              group_invalid=invalid)
        return X[0], reasons[0]

    def counters(self) -> dict[str, Any]:
        """Totals per policy: appended, duplicate, late_inserted, too_old, evicted, unknown_tag."""
        c = self._counters.sum(axis=0)
        return {
            "appended": int(c[K.C_APPENDED]), "duplicate": int(c[K.C_DUPLICATE]),
            "late_inserted": int(c[K.C_LATE]), "too_old": int(c[K.C_TOO_OLD]),
            "evicted": int(c[K.C_EVICTED]), "unknown_tag": self._unknown,
            "buffered": {t: int(self._tail[i] - self._head[i]) for t, i in self._tix.items()},
        }
