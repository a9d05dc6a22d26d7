"""Champion / challenger: one model's two decisions over a stream of parts, for comparison only.

Owns :class:`ShadowLane` (a model's diversion decision and its operator-alarm episode rule, folded
part by part) and :func:`rebase_vector` (the served vector's context-baseline deviations re-expressed
against another model's baseline). The edge runtime keeps one lane for production and one for the
challenger and writes a ``shadow_score`` row per part; ``models/shadow.py`` replays stored vectors
through the same lanes, so a live comparison and an offline replay of the same parts agree.

Both sides are judged by the same rule: a part is diverted at the model's diversion threshold (its
alert threshold in the single-threshold mode, or for versions without one), and an alarm opens when
the model's episode rule (k of the last n parts at risk with one cause, the cause being the signal
with the largest TreeSHAP contribution) opens an episode. Nothing here acts on the line.
Must not import connectors, models, ui or simulators.

Example::

    lane = ShadowLane(challenger, two=True)
    out = lane.decide(vector, context)      # {"version_id", "probability", "threshold", "decision", "alarm"}
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from pq.alerts.episodes import DEFAULT_EPISODE_RULE, EpisodeState, advance
from pq.errors import ModelError

__all__ = ["ShadowLane", "rebase_vector", "ShadowFailure"]

_DEV = "__dev_baseline"


class ShadowFailure(ModelError):
    """The challenger raised or returned something that is not a probability."""


def _cause(score: Any) -> str:
    contributions = getattr(score, "contributions", None) or ()
    return str(contributions[0].signal) if contributions else "model"


class ShadowLane:
    """One model's decisions over one line's parts in production order (single-threaded, like the runtime).

    ``two``: the two decisions (divert at the diversion threshold, alarm per episode) when the model
    has a diversion threshold; otherwise its alert threshold decides and every at-risk part counts.
    """

    def __init__(self, scorer: Any, *, two: bool = True):
        self.scorer = scorer
        self.two = bool(two) and getattr(scorer, "diversion_threshold", None) is not None
        self.threshold = float(scorer.diversion_threshold if self.two else scorer.threshold)
        self.rule = getattr(scorer, "episode_rule", None) or DEFAULT_EPISODE_RULE
        self.episodes = EpisodeState()

    @property
    def version_id(self) -> int | None:
        return self.scorer.version_id

    def decide(self, vector: Mapping[str, float], context: Mapping[str, Any] | None = None,
               score: Any = None) -> dict:
        """Score (unless ``score`` is the model's own score of this part, as production's is) and fold
        the part into the episode rule. ShadowFailure when the model raises or gives no probability."""
        if score is None:
            try:
                # explain=None: TreeSHAP only for at-risk parts, whose cause the episode rule needs
                score = self.scorer.score(vector, context, explain=None, threshold=self.threshold)
            except Exception as exc:  # noqa: BLE001 - any failure of a challenger takes it out of shadow
                raise ShadowFailure(f"model {self.version_id} raised {type(exc).__name__}: {exc}") from exc
        p = float(getattr(score, "probability", math.nan))
        if not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise ShadowFailure(f"model {self.version_id} returned probability {p!r}")
        at_risk = p >= self.threshold
        if self.two:
            self.episodes, opened, _ended = advance(self.episodes, at_risk, _cause(score) if at_risk else None,
                                                    self.rule)
            alarm = opened is not None
        else:
            alarm = at_risk  # single-threshold mode: every at-risk part alerts
        return {"version_id": self.version_id, "probability": p, "threshold": self.threshold,
                "decision": "at_risk" if at_risk else "ok", "alarm": bool(alarm)}


def rebase_vector(vector: Mapping[str, float], context: Mapping[str, Any], served_baseline: Any,
                  baseline: Any) -> Mapping[str, float]:
    """The served vector as ``baseline``'s model expects it: each ``<signal>__dev_baseline`` is the
    window mean minus what *that* baseline expects for the part's conditions. The same vector when
    both baselines are the same fit (or the model has none)."""
    if baseline is None or served_baseline is baseline:
        return vector
    fp = getattr(baseline, "fingerprint", None)
    if served_baseline is not None and fp is not None and fp() == served_baseline.fingerprint():
        return vector
    devs = [f for f in vector if f.endswith(_DEV)]
    if not devs:
        return vector
    want = baseline.predict(context)
    had = served_baseline.predict(context) if served_baseline is not None else {}
    out = dict(vector)
    for f in devs:
        target = f[: -len(_DEV)]
        mean = vector.get(f"{target}__mean")
        exp = want.get(target, math.nan)
        if mean is not None and math.isfinite(mean):
            out[f] = mean - exp
        else:
            out[f] = vector[f] + had.get(target, math.nan) - exp
    return out
