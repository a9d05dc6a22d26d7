"""The live server's schedule of writes: each cycle of a :class:`~simulators.line_model.LineModel`
flattened into groups of values that share a source timestamp, handed out when the simulated clock
reaches them.

Owns the order in which values are written (time order, stable, so values with equal timestamps
keep the model's order; a part's events as one last group at the cycle's end) and the record of
completed parts. Knows nothing of OPC UA. Imports nothing of ``pq``.

Example::

    runner = LineRunner(model)
    due: list = []
    runner.pop_due(now_us, due)   # [(runner, t_us, [(signal index, value, status), ...]), ...]
"""

from __future__ import annotations

import bisect

import numpy as np

from .line_model import Cycle, LineModel
from .signals import SIGNALS

_SIG_INDEX = {s.name: i for i, s in enumerate(SIGNALS)}  # a signal's position in SIGNALS, as written


class LineRunner:
    """Flattens each cycle of one model into time-ordered write groups and hands out the due ones."""

    def __init__(self, model: LineModel) -> None:
        self.model = model
        self.line_id = model.line_id
        self.completed: list[dict] = []  # truth rows of parts whose serial was published
        self.parts: list[dict] = []
        self._group_t: list[int] = []
        self._groups: list[list[tuple[int, object, int]]] = []
        self._pos = 0
        self._cycle: Cycle | None = None
        self._load_next()

    def _load_next(self) -> None:
        c = self.model.next_cycle()
        self._cycle = c
        if c.cont:
            t = np.concatenate([s.t_us for s in c.cont])
            sig = np.concatenate([np.full(len(s.t_us), _SIG_INDEX[s.name], dtype=np.int64) for s in c.cont])
            val = np.concatenate([s.values for s in c.cont])
            st = np.concatenate(
                [s.status if s.status is not None else np.zeros(len(s.t_us), dtype=np.uint32) for s in c.cont]
            )
            order = np.argsort(t, kind="stable")
            t, sig, val, st = t[order].tolist(), sig[order].tolist(), val[order].tolist(), st[order].tolist()
        else:
            t, sig, val, st = [], [], [], []
        group_t: list[int] = []
        groups: list[list[tuple[int, object, int]]] = []
        last = None
        for ti, si, vi, sti in zip(t, sig, val, st):
            if ti != last:
                group_t.append(ti)
                groups.append([])
                last = ti
            groups[-1].append((si, vi, sti))
        group_t.append(c.t_end_us)
        groups.append([(_SIG_INDEX[name], value, status) for name, value, status in c.events])
        self._group_t, self._groups, self._pos = group_t, groups, 0

    @property
    def next_due_us(self) -> int:
        return self._group_t[self._pos]

    def pop_due(self, now_us: int, out: list) -> None:
        """Append (line runner, t_us, items) for every group due at ``now_us`` (crossing cycles)."""
        while True:
            end = bisect.bisect_right(self._group_t, now_us, lo=self._pos)
            for i in range(self._pos, end):
                out.append((self, self._group_t[i], self._groups[i]))
            finished = end == len(self._group_t)
            self._pos = end
            if not finished:
                return
            c = self._cycle
            self.completed.append(c.truth)
            self.parts.append(c.part)
            self._load_next()

    def pop_cycle(self, out: list) -> None:
        """Append all remaining groups of the current cycle (flat-out mode)."""
        self.pop_due(self._group_t[-1], out)
