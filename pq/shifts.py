"""The plant's shift clock: which shift a moment belongs to, and where that shift starts and ends.

Shifts are named start times in the plant's local time (``PQ_SHIFT_STARTS``, e.g.
``A=06:00,B=14:00,C=22:00``; ``PQ_PLANT_TIMEZONE``), because a shift lead thinks in "the early shift",
not in UTC; windows come back in UTC like every other timestamp in pq. A night shift that crosses
midnight belongs to the day it started, and a daylight-saving change simply makes one shift an hour
shorter or longer. Imports nothing of ours.

Example::

    clock = ShiftClock.from_settings(settings)
    now = clock.shift_at(datetime.now(timezone.utc))      # Shift(name="B", start=..., end=...)
    clock.previous(now)                                    # the shift that handed over to it
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Shift", "ShiftClock", "parse_shift_starts", "zone"]

_ITEM = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9 _-]{0,15}?)\s*=\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class Shift:
    name: str
    start: datetime  # UTC
    end: datetime    # UTC, exclusive

    @property
    def key(self) -> str:
        """A stable identifier of this shift on this day (its UTC start), for notes and 'already sent'."""
        return self.start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def parse_shift_starts(text: str) -> list[tuple[str, time]]:
    """``"A=06:00,B=14:00,C=22:00"`` -> [("A", 06:00), ...], sorted by time; a clear ValueError otherwise."""
    items = [p for p in (text or "").split(",") if p.strip()]
    if not items:
        raise ValueError("expected at least one shift such as A=06:00")
    out: list[tuple[str, time]] = []
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise ValueError(f"shift {item.strip()!r}: expected NAME=HH:MM, e.g. A=06:00")
        out.append((m.group(1), time(int(m.group(2)), int(m.group(3)))))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"shift names must differ, got {', '.join(names)}")
    starts = [t for _, t in out]
    if len(set(starts)) != len(starts):
        raise ValueError("two shifts start at the same time")
    return sorted(out, key=lambda x: x[1])


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: expected an IANA name such as Europe/Berlin or UTC") from None


class ShiftClock:
    def __init__(self, starts: list[tuple[str, time]], tz: tzinfo = timezone.utc):
        if not starts:
            raise ValueError("a shift clock needs at least one shift")
        self.starts = sorted(starts, key=lambda x: x[1])
        self.tz = tz

    @classmethod
    def from_settings(cls, settings) -> "ShiftClock":
        return cls(parse_shift_starts(settings.shift_starts), zone(settings.plant_timezone))

    def _boundaries(self, day) -> list[tuple[str, datetime]]:
        return [(name, datetime.combine(day, t, tzinfo=self.tz)) for name, t in self.starts]

    def shift_at(self, when: datetime) -> Shift:
        """The shift that ``when`` (aware) falls in."""
        local = when.astimezone(self.tz)
        candidates = []
        for d in (local.date() - timedelta(days=1), local.date(), local.date() + timedelta(days=1)):
            candidates += self._boundaries(d)
        candidates.sort(key=lambda x: x[1])
        for (name, start), (_, nxt) in zip(candidates, candidates[1:]):
            if start <= local < nxt:
                return Shift(name, start.astimezone(timezone.utc), nxt.astimezone(timezone.utc))
        raise AssertionError("unreachable: three days of boundaries cover any moment")

    def previous(self, shift: Shift) -> Shift:
        return self.shift_at(shift.start - timedelta(seconds=1))

    def next(self, shift: Shift) -> Shift:
        return self.shift_at(shift.end)

    def recent(self, when: datetime, count: int) -> list[Shift]:
        """The shift at ``when`` and the ``count - 1`` before it, newest first."""
        out = [self.shift_at(when)]
        while len(out) < count:
            out.append(self.previous(out[-1]))
        return out
