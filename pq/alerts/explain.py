"""Operator sentences for at-risk parts: which signal, how far from normal for today's conditions.

Owns turning a scorer's per-signal contributions into plain words ("Melt temperature 9 °C below
normal for today's conditions (now 222 °C, normal 231–239 °C)"), the alert title, and the
explanation JSON stored with the alert. Pure functions; must not import connectors, models, ui or
simulators.

Example::

    items = explain_contributions(score.contributions, playbook, top_n=3)
    items[0]["sentence"]
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from pq.alerts.playbook import Playbook

__all__ = ["explain_contributions", "direction_of", "sentence", "title_for", "fmt_number"]

_DIRECTION_WORDS = {"high": "high", "above": "high", "up": "high", "+": "high", "increase": "high",
                    "low": "low", "below": "low", "down": "low", "-": "low", "decrease": "low"}


def fmt_number(x: float | None) -> str:
    """A value as an operator reads it: 3 significant figures, no scientific notation."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    ax = abs(x)
    if ax >= 100:
        text = f"{x:.0f}"
    elif ax >= 10:
        text = f"{x:.1f}"
    elif ax >= 1:
        text = f"{x:.2f}"
    else:
        text = f"{x:.3f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _get(c: Any, key: str) -> Any:
    return c.get(key) if isinstance(c, Mapping) else getattr(c, key, None)


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def direction_of(value: float | None, lo: float | None, hi: float | None, hint: Any = None) -> str | None:
    """'high' or 'low' relative to the normal range, else the scorer's hint, else None."""
    if value is not None:
        if hi is not None and value > hi:
            return "high"
        if lo is not None and value < lo:
            return "low"
    return _DIRECTION_WORDS.get(str(hint).lower()) if hint is not None else None


def sentence(label: str, unit: str, value: float | None, lo: float | None, hi: float | None,
             direction: str | None) -> str:
    """One plain sentence about one signal."""
    u = f" {unit}" if unit else ""
    rng = f"normal {fmt_number(lo)}–{fmt_number(hi)}{u}" if lo is not None and hi is not None else ""
    now = f"now {fmt_number(value)}{u}"
    if value is not None and direction == "high" and hi is not None and value > hi:
        return f"{label} {fmt_number(value - hi)}{u} above normal for today's conditions ({now}, {rng})"
    if value is not None and direction == "low" and lo is not None and value < lo:
        return f"{label} {fmt_number(lo - value)}{u} below normal for today's conditions ({now}, {rng})"
    if value is None:
        return f"{label}: no value in this cycle"
    side = {"high": "on the high side", "low": "on the low side"}.get(direction or "", "unusual")
    detail = f"{now}, {rng}" if rng else now
    return f"{label} {side} for today's conditions ({detail})"


def explain_contributions(contributions: Iterable[Any], playbook: Playbook, top_n: int = 3) -> list[dict]:
    """The top signals pushing the part towards a defect, as JSON-ready dicts with a sentence each.

    Contributions may be objects or mappings with signal, contribution, value, normal_lo,
    normal_hi and direction; only positive contributions (towards a defect) are kept.
    """
    items = []
    for c in contributions:
        contrib = _finite(_get(c, "contribution"))
        if contrib is None or contrib <= 0:
            continue
        signal = str(_get(c, "signal"))
        value, lo, hi = _finite(_get(c, "value")), _finite(_get(c, "normal_lo")), _finite(_get(c, "normal_hi"))
        direction = direction_of(value, lo, hi, _get(c, "direction"))
        label, unit = playbook.label_for(signal), playbook.unit_for(signal)
        items.append({
            "signal": signal, "label": label, "unit": unit, "value": value, "normal_lo": lo, "normal_hi": hi,
            "direction": direction, "contribution": contrib,
            "sentence": sentence(label, unit, value, lo, hi, direction),
        })
    items.sort(key=lambda d: d["contribution"], reverse=True)
    return items[:top_n]


def title_for(serial: str, probability: float, top: list[dict], cause_label: str | None = None) -> str:
    """The alert's one-line title: which part, how likely, the main reason."""
    pct = f"{probability * 100:.0f} %"
    if top:
        return f"Part {serial} at risk ({pct}): {top[0]['sentence']}"
    return f"Part {serial} at risk ({pct}){': ' + cause_label if cause_label else ''}"
