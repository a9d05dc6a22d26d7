"""Whether a part's score can be trusted, in plain words: the checks before a part is scored.

Owns :class:`CycleChecks`. A part is "not scored" (with the reason on the operator's screen, no
alert) when a key signal has no value yet, went stale, reports Bad quality, began after the part did
(the edge just started or the sensor just recovered), is stuck, or when the part's features lie
outside what the model was trained on. Must not import connectors, models, ui or simulators.

Example::

    checks = CycleChecks(rings, settings, label=playbook_label)
    problems = checks.signal_problems(["melt_temp_c"], start_ns, end_ns) or checks.drift(scorer, vector)
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Sequence

from pq.alerts.explain import fmt_reading
from pq.config import Settings
from pq.edge.interfaces import Scorer, is_bad
from pq.edge.ringbuffer import TagRings

__all__ = ["CycleChecks"]

_NS = 1_000_000_000


class CycleChecks:
    def __init__(self, rings: TagRings, settings: Settings, label: Callable[[str], str]):
        self.rings = rings
        self.settings = settings
        self.label = label  # signal -> the operator's name for it (the playbook's)

    def signal_problems(self, tags: Sequence[str], cycle_start_ns: int, cycle_end_ns: int) -> list[str]:
        """Key signals that make a score untrustworthy at this cycle end."""
        problems = []
        stale_ns = int(self.settings.edge_stale_s * _NS)
        # The part under way when the edge (re)started, or when a sensor came back, has only the
        # end of its window: its statistics would look like drift. Say what it is instead.
        late = [t for t in tags if (st := self.rings.state(t)) is not None and st.first_good_ns > cycle_start_ns]
        if late:
            problems.append("incomplete cycle: no good value of " + ", ".join(self.label(t) for t in late[:4])
                            + (f" and {len(late) - 4} more" if len(late) > 4 else "")
                            + " before it began (edge just started, or the sensor just recovered)")
        for tag in tags:
            st = self.rings.state(tag)
            if st is None:
                problems.append(f"{self.label(tag)} sensor: no value received yet")
            elif st.last_good_ns == 0 or cycle_end_ns - st.last_good_ns > stale_ns:
                age = (cycle_end_ns - st.last_good_ns) / _NS if st.last_good_ns else None
                problems.append(f"{self.label(tag)} sensor: no good value for "
                                f"{'ever' if age is None else f'{age:.0f} s'}")
            elif is_bad(st.last_status):
                problems.append(f"{self.label(tag)} sensor reports Bad quality")
        return problems

    def stale_now(self, tags: Sequence[str]) -> list[str]:
        """Between parts: key signals with no good value for ``edge_stale_s`` of wall time."""
        now_s = time.perf_counter()
        limit = self.settings.edge_stale_s
        stale = [t for t in tags if self.rings.state(t) is None
                 or now_s - self.rings.state(t).last_good_arrival_s > limit]
        return [f"{self.label(t)} sensor: no good value for {limit:.0f} s" for t in stale]

    def drift(self, scorer: Scorer, vec: Mapping[str, float]) -> list[str]:
        """Features outside the model's training range (by more than ``edge_drift_margin`` of it), and
        stuck readings."""
        ranges = scorer.feature_ranges
        if not ranges:
            return []
        m = self.settings.edge_drift_margin
        out, frozen = [], set()
        # A reading that never moved during the cycle, where training always saw it move, is a stuck
        # sensor (or a frozen gateway value): say that, not "std is 0, outside the training range".
        for name, x in vec.items():
            if not name.endswith("__std") or x != 0.0:
                continue
            sig = name[: -len("__std")]
            lo = (ranges.get(name) or (None, None))[0]
            if (lo is not None and lo > 0) or sig in scorer.moving_signals:
                frozen.add(sig)
                out.append(f"{self.label(sig)} reading did not change during the cycle (stuck sensor?)")
        for name, (lo, hi) in ranges.items():
            x = vec.get(name)
            if x is None or lo is None or hi is None or not math.isfinite(x) or name.split("__")[0] in frozen:
                continue
            span = max(hi - lo, abs(hi) * 1e-6, 1e-12)
            if x < lo - m * span or x > hi + m * span:
                sig = name.split("__")[0]
                r = fmt_reading(x, lo, hi)  # one precision for the value and the range
                out.append(f"{self.label(sig)} ({name}) is {r.value}, outside what the model was trained on "
                           f"({r.lo} to {r.hi})")
        return out
