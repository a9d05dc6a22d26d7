"""Plain-words formatting for the shop floor: times, ages, numbers with units.

Everything the operator reads is built here as text (Dash renders strings as text, never as HTML),
so a comment typed by a user can never become markup.
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["ago", "duration", "clock", "number", "SEVERITY_WORDS", "VERDICT_WORDS"]

SEVERITY_WORDS = {"high": "Urgent", "medium": "Check soon", "low": "For information"}
VERDICT_WORDS = {"confirmed": "Confirmed defect", "false_alarm": "False alarm", "not_checked": "Not checked"}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400 * 2:
        h, m = divmod(int(s // 60), 60)
        return f"{h} h {m:02d} min" if m else f"{h} h"
    return f"{s / 86400:.0f} days"


def ago(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return "never"
    now = now or datetime.now(timezone.utc)
    s = (now - ts).total_seconds()
    if s < 5:
        return "just now"
    return f"{duration(s)} ago"


def clock(ts: datetime | None) -> str:
    return "-" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    try:
        text = f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)
    return f"{text} {unit}".strip()
