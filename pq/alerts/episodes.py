"""Operator alarms as episodes: k of the last n parts at risk with the same cause.

Owns the episode rule that turns per-part decisions into operator alarms. Diverting a part and
calling an operator are two decisions: a single at-risk part is diverted (quarantined) without
anyone being called, while an operator is called when a *cause* keeps coming back, because that
is what a person can act on (a heater band, a check ring, a dryer). One alarm per episode, not
per part, keeps the alarm load low while an excursion lasts (ISA-18.2: one alarm per condition).

The rule, per line and per cause (e.g. the signal with the largest TreeSHAP contribution):

- an episode **opens** at the part where, among the last ``n`` parts, ``k`` or more were at risk
  with that cause and no episode of that cause is open;
- it **closes** after ``n`` consecutive parts without an at-risk part of that cause; the cause can
  open a new episode after that.

Pure functions over plain values: :func:`advance` folds one part into an immutable
:class:`EpisodeState` (the edge runtime calls it per scored part), :func:`episodes` folds a whole
sequence (reports, backtests). Both give the same episodes for the same parts. Must not import
connectors, models, ui or simulators.

Example::

    rule = EpisodeRule(k=3, n=10)
    eps = episodes([True, True, False, True], ["melt_temp_c"] * 4, rule)
    eps[0].start, eps[0].cause          # (3, 'melt_temp_c'): the third at-risk part of 4 opens it
    state, opened, cleared = advance(EpisodeState(), True, "melt_temp_c", rule)   # one part at a time
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Hashable, Iterable, Sequence

__all__ = ["EpisodeRule", "EpisodeState", "Episode", "advance", "episodes", "DEFAULT_EPISODE_RULE"]


@dataclass(frozen=True)
class EpisodeRule:
    """``k`` at-risk parts with one cause among the last ``n`` parts open an alarm."""

    k: int = 3
    n: int = 10

    def __post_init__(self):
        if self.n < 1 or not 1 <= self.k <= self.n:
            raise ValueError(f"episode rule needs 1 <= k <= n, got k={self.k}, n={self.n}")


# 3 of 10: the simulator's process excursions last 6-40 cycles, so an excursion that makes bad parts
# puts several at-risk parts with one cause into ten cycles, while isolated false alarms rarely do.
DEFAULT_EPISODE_RULE = EpisodeRule(k=3, n=10)


@dataclass(frozen=True)
class Episode:
    """One operator alarm: the part index that opened it, the last at-risk part, and the cause."""

    start: int
    last: int
    cause: Hashable
    parts_at_risk: int


@dataclass(frozen=True)
class EpisodeState:
    """What the rule remembers: the index of the next part, recent at-risk parts per cause, and the
    open episodes per cause. Immutable; :func:`advance` returns a new one."""

    index: int = 0
    recent: tuple = ()  # ((part index, cause), ...) of at-risk parts within the last n parts
    open: tuple = ()  # ((cause, Episode), ...) sorted by cause repr

    def open_episodes(self) -> dict:
        return dict(self.open)


def advance(state: EpisodeState, at_risk: bool, cause: Hashable, rule: EpisodeRule = DEFAULT_EPISODE_RULE
            ) -> tuple[EpisodeState, Episode | None, tuple[Episode, ...]]:
    """Fold one part (in production order) into ``state``; returns the new state, the episode this
    part opened (or None) and the episodes that cleared with it. ``cause`` is ignored for a part
    that is not at risk."""
    i = state.index
    recent = tuple((j, c) for j, c in state.recent if j > i - rule.n)
    if at_risk:
        recent += ((i, cause),)
    opened_now = None
    open_ = dict(state.open)
    closed = []
    if at_risk:
        if cause in open_:
            ep = open_[cause]
            open_[cause] = replace(ep, last=i, parts_at_risk=ep.parts_at_risk + 1)
        elif sum(1 for _, c in recent if c == cause) >= rule.k:
            opened_now = Episode(start=i, last=i, cause=cause, parts_at_risk=1)
            open_[cause] = opened_now
    for c, ep in list(open_.items()):
        if i - ep.last >= rule.n:  # n parts in a row without this cause at risk: the condition cleared
            closed.append(ep)
            del open_[c]
    new = EpisodeState(index=i + 1, recent=recent, open=tuple(sorted(open_.items(), key=lambda kv: repr(kv[0]))))
    return new, opened_now, tuple(closed)


def episodes(at_risk: Sequence[bool], causes: Iterable[Hashable], rule: EpisodeRule = DEFAULT_EPISODE_RULE
             ) -> list[Episode]:
    """Every episode of one line's parts in production order, sorted by the part that opened it.
    Episodes still open at the end are included (with their last at-risk part so far)."""
    state, found = EpisodeState(), []
    for flag, cause in zip(at_risk, causes):
        state, _, cleared = advance(state, bool(flag), cause, rule)
        found.extend(cleared)
    return sorted(found + [ep for _, ep in state.open], key=lambda e: (e.start, repr(e.cause)))
