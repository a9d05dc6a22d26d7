"""The episode rule (pq.alerts.episodes): k of the last n parts at risk with one cause open one alarm."""

from __future__ import annotations

import pytest

from pq.alerts.episodes import EpisodeRule, EpisodeState, advance, episodes


def test_k_of_n_with_the_same_cause_opens_one_episode():
    rule = EpisodeRule(k=3, n=5)
    flags = [True, False, True, False, True, True, True, False]
    eps = episodes(flags, ["melt"] * len(flags), rule)
    assert [(e.start, e.last, e.cause, e.parts_at_risk) for e in eps] == [(4, 6, "melt", 3)]


def test_isolated_at_risk_parts_and_mixed_causes_open_nothing():
    rule = EpisodeRule(k=3, n=5)
    # three at-risk parts within five, but spread over two causes
    assert episodes([True, True, True, False], ["melt", "cushion", "melt", None], rule) == []
    # the same cause three times, but never three within five parts
    flags = [True, False, False, False, True, False, False, False, True]
    assert episodes(flags, ["melt"] * len(flags), rule) == []


def test_an_episode_clears_after_n_parts_without_its_cause_and_can_reopen():
    rule = EpisodeRule(k=2, n=3)
    flags = [True, True, False, False, True, False, False, False, True, True]
    eps = episodes(flags, ["x"] * len(flags), rule)
    # parts 0-1 open; part 4 is within 3 of the last (1), so it extends; 5-7 clear it; 8-9 reopen
    assert [(e.start, e.last, e.parts_at_risk) for e in eps] == [(1, 4, 2), (9, 9, 1)]


def test_two_causes_run_their_own_episodes():
    rule = EpisodeRule(k=2, n=4)
    flags = [True, True, True, True]
    eps = episodes(flags, ["a", "b", "a", "b"], rule)
    assert [(e.start, e.cause) for e in eps] == [(2, "a"), (3, "b")]


def test_streaming_fold_equals_the_batch_function():
    import random

    rng = random.Random(3)
    flags = [rng.random() < 0.3 for _ in range(500)]
    causes = [rng.choice("abc") for _ in range(500)]
    rule = EpisodeRule(k=3, n=8)
    state, opened = EpisodeState(), []
    for f, c in zip(flags, causes):
        state, ep, _ = advance(state, f, c, rule)
        if ep is not None:
            opened.append((ep.start, ep.cause))
    assert opened == [(e.start, e.cause) for e in episodes(flags, causes, rule)]
    assert len(opened) > 5  # the random stream does open episodes, so the comparison means something


@pytest.mark.parametrize("k,n", [(0, 5), (6, 5), (1, 0)])
def test_bad_rule_is_refused(k, n):
    with pytest.raises(ValueError, match="1 <= k <= n"):
        EpisodeRule(k=k, n=n)
