"""Operator sentences for at-risk parts: which signal, how far from normal for today's conditions.

Owns turning a scorer's per-signal contributions into plain words ("Melt temperature 9 °C below
normal for today's conditions (now 222 °C, normal 231–239 °C)"; "Injection time 0.014 s below
normal ... (now 1.204 s, normal 1.218–1.310 s)": one precision for every number of a sentence, see
:func:`reading_decimals`), the alert title, and the explanation JSON stored with the alert. Pure
functions; must not import connectors, models, ui or simulators.

Example::

    items = explain_contributions(score.contributions, playbook, top_n=3)
    items[0]["sentence"]
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Mapping, NamedTuple

from pq.alerts.playbook import Playbook

__all__ = ["explain_contributions", "direction_of", "sentence", "title_for", "fmt_number", "fmt_reading",
           "fmt_range", "reading_decimals", "Reading"]

_DIRECTION_WORDS = {"high": "high", "above": "high", "up": "high", "+": "high", "increase": "high",
                    "low": "low", "below": "low", "down": "low", "-": "low", "decrease": "low"}


def fmt_number(x: float | None) -> str:
    """A lone value as an operator reads it: 3 significant figures, no scientific notation.

    For a value shown next to a range, use :func:`fmt_reading`: it gives the value, the bounds and
    the gap one common precision.
    """
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


_MAX_DECIMALS = 10


class Reading(NamedTuple):
    """A value, its normal range and its distance from it, as text with one precision."""

    value: str
    lo: str
    hi: str
    gap: str | None  # how far outside the range (positive), None when inside or unknown
    side: str | None  # "above" | "below" when outside the range, else None
    decimals: int | None  # the common number of decimals; None when nothing was formatted


def _fixed(x: float, decimals: int) -> str:
    """``x`` with ``decimals`` decimals, rounded half up from the shortest repr (3.25 -> 3.3, as a
    person rounds the number they see), never "-0.00"."""
    d = Decimal(repr(x)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    text = f"{d:f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def _decimals_for(q: float, cap: int) -> int:
    """The fewest decimals (at most ``cap``) that give ``q`` at least 5 units of the last one."""
    n = 0
    while n < cap and q * (1 + 1e-9) < 5 * 10.0 ** -n:
        n += 1
    return n


def reading_decimals(value: float | None, lo: float | None, hi: float | None) -> int | None:
    """Decimals that keep a reading, its normal range and its gap consistent and distinguishable.

    The finest quantity of the sentence (the gap outside the range, or the band's width) gets at
    least 5 units of the last decimal, so rounding moves the printed gap by at most a fifth: the
    printed reading lies outside the printed range whenever the reading does by 1 % of the band or
    more (finer gaps are not resolved: the reading prints on the limit), and the printed gap is the
    difference of the printed numbers. With neither gap nor band, 3 significant figures of the
    largest number. Example: 1.204 vs 1.218-1.31 -> 3 (gap 0.014); 231.4 vs 225-230 -> 1 (gap
    1.4); 222 vs 231-239 -> 0.
    """
    nums = [x for x in (value, lo, hi) if x is not None and math.isfinite(x)]
    if not nums:
        return None
    cap = _MAX_DECIMALS
    scales = []
    if lo is not None and hi is not None and hi > lo:
        scales.append(hi - lo)
        cap = min(cap, _decimals_for(hi - lo, _MAX_DECIMALS) + 2)
    if value is not None:
        if lo is not None and value < lo:
            scales.append(lo - value)
        elif hi is not None and value > hi:
            scales.append(value - hi)
    scales = [q for q in scales if q > 0 and math.isfinite(q)]
    if not scales:
        biggest = max(abs(x) for x in nums)
        return 0 if biggest == 0 else min(_MAX_DECIMALS, max(0, 2 - math.floor(math.log10(biggest))))
    return _decimals_for(min(scales), cap)


def fmt_reading(value: float | None, lo: float | None, hi: float | None) -> Reading:
    """``value``, ``lo``, ``hi`` and the gap outside the range, all with :func:`reading_decimals`.

    The gap is computed from the printed numbers, so "now 1.206, normal 1.220–1.310, 0.014
    below" adds up. Missing or non-finite numbers print as "–".

    Example::

        fmt_reading(1.206, 1.22, 1.31)  # Reading('1.206', '1.220', '1.310', '0.014', 'below', 3)
    """
    value, lo, hi = _finite(value), _finite(lo), _finite(hi)
    n = reading_decimals(value, lo, hi)
    if n is None:
        return Reading("–", "–", "–", None, None, None)
    text = {k: ("–" if x is None else _fixed(x, n)) for k, x in (("value", value), ("lo", lo), ("hi", hi))}
    gap = side = None
    if value is not None:
        v = Decimal(text["value"])
        if lo is not None and v < Decimal(text["lo"]):
            gap, side = Decimal(text["lo"]) - v, "below"
        elif hi is not None and v > Decimal(text["hi"]):
            gap, side = v - Decimal(text["hi"]), "above"
    return Reading(text["value"], text["lo"], text["hi"], None if gap is None else f"{gap:.{n}f}", side, n)


def fmt_range(r: Reading, unit: str = "") -> str:
    """The normal range of a :class:`Reading` in words: "1.220–1.310 s", "above 1.220 s", "-0.5 to 0.5"."""
    u = f" {unit}" if unit else ""
    if r.lo != "–" and r.hi != "–":
        sep = " to " if r.lo.startswith("-") or r.hi.startswith("-") else "–"
        return f"{r.lo}{sep}{r.hi}{u}"
    if r.lo != "–":
        return f"above {r.lo}{u}"
    if r.hi != "–":
        return f"below {r.hi}{u}"
    return ""


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
    """One plain sentence about one signal; every number in it has the same precision.

    A reading outside its range is said to be above or below it whatever ``direction`` hints (the
    numbers must not contradict the words); inside it, ``direction`` says which side is unusual.
    """
    value, lo, hi = _finite(value), _finite(lo), _finite(hi)
    if value is None:
        return f"{label}: no value in this cycle"
    u = f" {unit}" if unit else ""
    r = fmt_reading(value, lo, hi)
    rng = fmt_range(r, unit)
    now = f"now {r.value}{u}"
    detail = f"{now}, normal {rng}" if rng else now
    if r.side is not None:
        return f"{label} {r.gap}{u} {r.side} normal for today's conditions ({detail})"
    side = {"high": "on the high side", "low": "on the low side"}.get(direction or "", "unusual")
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


def episode_title(at_risk: int, of_parts: int, serial: str, top: list[dict], cause_label: str | None = None) -> str:
    """An operator alarm's title: the episode (how many of the last parts, one cause), then the latest part's reason."""
    head = f"{at_risk} of the last {of_parts} parts at risk, same cause"
    if top:
        return f"{head}: {top[0]['sentence']} (latest: part {serial})"
    return f"{head}{': ' + cause_label if cause_label else ''} (latest: part {serial})"
