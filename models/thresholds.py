"""Decision thresholds on calibrated probabilities: part diversion by budget, and matched recall.

Owns the two thresholds that are not an alarm budget (that one is :func:`models.metrics.choose_threshold`):

- :func:`diversion_threshold`: the part-diversion decision. A plant can quarantine a budgeted share
  of parts (default 3 %) for a second look; the threshold is the quantile of the model's validation
  (out-of-fold) probabilities that diverts that share. Operator alarms are a separate decision built
  on top of it (:mod:`pq.alerts.episodes`).
- :func:`threshold_for_recall`: the highest threshold that reaches a recall on labelled parts; the
  robustness report uses it to compare two models at the same held-out recall (a point on their
  FAR-recall curves).

Imports numpy only. Training can call these later to ship a diversion threshold in the artifact.

Example::

    thr = diversion_threshold(outcome.oof_proba, share=0.03)
    (p_heldout >= thr).mean()          # the diverted share on new data
    thr_r = threshold_for_recall(p, y, 0.5)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_DIVERSION_SHARE", "ALARM_CEILING_PER_H", "diversion_threshold", "threshold_for_recall"]

# 3 % of parts: a second-look station or a quarantine cart handles a few parts per hour at a
# 15-20 s cycle, about twice the defect rate of a healthy line.
DEFAULT_DIVERSION_SHARE = 0.03

# ISA-18.2: about one alarm per 10 minutes per operator is the most a person can handle; a model
# whose validation alarm rate is above it is not promoted without an override (models.registry).
ALARM_CEILING_PER_H = 6.0


def diversion_threshold(p_validation, share: float = DEFAULT_DIVERSION_SHARE) -> float:
    """The lowest threshold that diverts at most ``share`` of the validation parts (``p >= thr``).

    >>> diversion_threshold([0.1, 0.2, 0.3, 0.4], share=0.5) > 0.2
    True
    """
    if not 0 < share < 1:
        raise ValueError(f"diversion share must be in (0, 1), got {share}")
    s = np.sort(np.asarray(p_validation, dtype=float))[::-1]
    s = s[np.isfinite(s)]
    if not len(s):
        raise ValueError("diversion threshold: no finite validation probabilities")
    allowed = int(math.floor(share * len(s)))
    # strictly above the (allowed+1)-th probability, so ties cannot push the share over budget
    return float(np.nextafter(s[allowed], np.inf))


def threshold_for_recall(p, y, recall: float) -> float | None:
    """The highest threshold at which ``p >= thr`` catches at least ``recall`` of the defects
    (None without defects).

    >>> threshold_for_recall([0.9, 0.8, 0.1, 0.7], [1, 0, 1, 0], 0.5)
    0.9
    """
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    pos = np.sort(np.asarray(p, dtype=float)[np.asarray(y, dtype=int) == 1])[::-1]
    if not len(pos):
        return None
    need = max(1, math.ceil(recall * len(pos) - 1e-9))
    return float(pos[need - 1])
