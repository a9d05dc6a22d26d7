"""Per-tag ring buffers of recent samples, and what the runtime must know about each signal's health.

Owns the edge's short memory of the line: the last ``capacity`` samples per tag (replayed into a new
feature computer when a model with another feature set is promoted), and per tag the last good
value's timestamp, the last status code and arrival time, which drive degraded mode. Overwriting
the oldest sample is the ring's purpose, not a loss: the spool keeps the full history.
Must not import connectors, models, ui or simulators.

Example::

    rings = TagRings(capacity=4096)
    rings.push("melt_temp_c", ts_ns_array, values, statuses, now_s=time.perf_counter())
    rings.state("melt_temp_c").last_good_ns
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pq.edge.interfaces import Sample

__all__ = ["TagRings", "TagState"]


@dataclass
class TagState:
    last_ts_ns: int = 0  # source timestamp of the last sample to arrive (any status)
    first_good_ns: int = 0  # source timestamp of the first Good sample this process received
    last_good_ns: int = 0  # source timestamp of the last Good sample to arrive
    last_good_value: float = float("nan")
    last_status: int = 0
    last_arrival_s: float = 0.0  # perf_counter when the last sample arrived
    last_good_arrival_s: float = 0.0
    n: int = 0
    n_bad: int = 0


class _Ring:
    __slots__ = ("ts", "val", "st", "head", "count")

    def __init__(self, capacity: int):
        self.ts = np.zeros(capacity, dtype=np.int64)
        self.val = np.zeros(capacity, dtype=np.float64)
        self.st = np.zeros(capacity, dtype=np.int64)
        self.head = 0
        self.count = 0


class TagRings:
    """Ring buffers and health per tag; single-threaded (the runtime's event loop)."""

    def __init__(self, capacity: int = 4096):
        if capacity < 2:
            raise ValueError(f"ring capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._rings: dict[str, _Ring] = {}
        self._state: dict[str, TagState] = {}
        self.samples_total = 0

    def push(self, tag: str, ts_ns: np.ndarray, values: np.ndarray, statuses: np.ndarray, now_s: float) -> int:
        """Append one tag's samples (1-D arrays of one length, arrival order)."""
        n = int(ts_ns.size)
        if n == 0:
            return 0
        ring = self._rings.get(tag)
        if ring is None:
            ring = self._rings[tag] = _Ring(self.capacity)
            self._state[tag] = TagState()
        cap = self.capacity
        if n >= cap:
            ts_ns, values, statuses, k = ts_ns[-cap:], values[-cap:], statuses[-cap:], cap
        else:
            k = n
        idx = (ring.head + np.arange(k)) % cap
        ring.ts[idx], ring.val[idx], ring.st[idx] = ts_ns, values, statuses
        ring.head = int((ring.head + k) % cap)
        ring.count = min(cap, ring.count + k)
        st = self._state[tag]
        st.n += n
        st.last_status = int(statuses[-1])
        st.last_arrival_s = now_s
        # Arrival order, not the maximum: one bogus stamp (servers stamp initial values with their
        # own clock, e.g. UncertainInitialValue at "now" while the line's clock says otherwise) must
        # not freeze a tag's health for good.
        st.last_ts_ns = int(ts_ns[-1])
        sev = statuses.astype(np.int64) & 0xC0000000
        # Only Good counts for health: Uncertain (initial values, "last usable value", inaccurate
        # sensor) is excluded by the feature spec by default, so it must not keep a signal "fresh".
        good = (sev == 0) & np.isfinite(values)
        st.n_bad += int(k - good.sum())
        if good.any():
            j = int(np.flatnonzero(good)[-1])
            st.last_good_ns, st.last_good_value, st.last_good_arrival_s = int(ts_ns[j]), float(values[j]), now_s
            if st.first_good_ns == 0:
                st.first_good_ns = int(ts_ns[np.flatnonzero(good)[0]])
        self.samples_total += n
        return n

    def tags(self) -> list[str]:
        return list(self._state)

    def state(self, tag: str) -> TagState | None:
        return self._state.get(tag)

    def fill(self) -> float:
        """Fill of the fullest ring, 0..1."""
        return max((r.count / self.capacity for r in self._rings.values()), default=0.0)

    def window(self, tag: str, since_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One tag's buffered samples with ts >= since_ns, in arrival order: (ts_ns, values, statuses)."""
        ring = self._rings.get(tag)
        if ring is None or ring.count == 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        start = (ring.head - ring.count) % self.capacity
        idx = (start + np.arange(ring.count)) % self.capacity
        ts, val, st = ring.ts[idx], ring.val[idx], ring.st[idx]
        keep = ts >= since_ns
        return ts[keep], val[keep], st[keep]

    def recent(self, since_ns: int, tags: Sequence[str] | None = None) -> list[Sample]:
        """Samples with ts >= since_ns, per tag in arrival order (for replay into a new feature computer)."""
        out: list[Sample] = []
        for tag in tags if tags is not None else list(self._rings):
            ring = self._rings.get(tag)
            if ring is None or ring.count == 0:
                continue
            start = (ring.head - ring.count) % self.capacity
            idx = (start + np.arange(ring.count)) % self.capacity
            ts, val, st = ring.ts[idx], ring.val[idx], ring.st[idx]
            keep = ts >= since_ns
            out.extend(Sample(tag, int(t), float(v), int(s)) for t, v, s in zip(ts[keep], val[keep], st[keep]))
        return out
