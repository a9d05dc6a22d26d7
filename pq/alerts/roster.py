"""Rosters: who is on duty per line and shift, in which duty role, and who gets an alarm.

Owns the pure lookup (no I/O): a :class:`Roster` of :class:`Duty` entries answers "who is the
operator / shift lead / quality engineer of line-1 in shift B". Duty roles say who answers for an
alarm; they are not the UI's permissions (``pq.auth.roles``). ``*`` stands for every line or every
shift; the most specific entry wins: (line, shift) > (line, *) > (*, shift) > (*, *).

When nobody holds the role asked for, :meth:`Roster.find` hands the alarm to the next role that has
someone (upwards first: operator -> shift lead -> quality engineer, then downwards) and says that
it missed, so the caller counts it: an escalation is never dropped in silence.
The shift is the parts' ``shift`` context value (the simulator's A/B/C); the edge takes the latest
part's. Stored in ``rosters`` by ``pq/alerts/roster_store.py``. Must not import connectors,
models, ui or simulators.

Example::

    roster = Roster([Duty("line-1", "A", "operator", "ann"), Duty("*", "*", "shift_lead", "bob")])
    roster.find("line-1", "A", "shift_lead")    # (Duty(... 'bob' ...), False)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

from pq.errors import InvalidRequest

__all__ = ["Duty", "Roster", "DUTY_ROLES", "ROLE_WORDS", "ANY", "validate_duty"]

DUTY_ROLES = ("operator", "shift_lead", "quality_engineer")  # mirrors pq.storage.schema.DUTY_ROLES
ROLE_WORDS = {"operator": "operator", "shift_lead": "shift lead", "quality_engineer": "quality engineer"}
ANY = "*"

_LINE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")
_SHIFT = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,15})$")


@dataclass(frozen=True)
class Duty:
    line_id: str
    shift: str
    role: str
    username: str
    contact: str | None = None

    def public(self) -> dict:
        return asdict(self)


def validate_duty(line_id: str, shift: str, role: str, contact: str | None = None) -> tuple[str, str, str, str | None]:
    """Cleaned (line_id, shift, role, contact); InvalidRequest naming the field that is wrong."""
    line_id, shift = (line_id or "").strip(), (shift or "").strip()
    if not _LINE.match(line_id):
        raise InvalidRequest(f"line must be a line id (letters, digits, . _ -) or *, got {line_id!r}")
    if not _SHIFT.match(shift):
        raise InvalidRequest(f"shift must be the parts' shift value (e.g. A, B, C; up to 16 characters) or *, got {shift!r}")
    if role not in DUTY_ROLES:
        raise InvalidRequest(f"duty role must be one of {', '.join(DUTY_ROLES)}, got {role!r}")
    contact = (contact or "").strip() or None
    if contact is not None and len(contact) > 200:
        raise InvalidRequest(f"contact must be at most 200 characters, got {len(contact)}")
    return line_id, shift, role, contact


def _fallbacks(role: str) -> tuple[str, ...]:
    i = DUTY_ROLES.index(role)
    return DUTY_ROLES[i:] + tuple(reversed(DUTY_ROLES[:i]))


class Roster:
    """Who is on duty; immutable once built (the edge swaps in a new one)."""

    def __init__(self, duties: Iterable[Duty] = ()):
        self.duties = tuple(sorted(duties, key=lambda d: (d.line_id, d.shift, DUTY_ROLES.index(d.role))))
        self._by_key = {(d.line_id, d.shift, d.role): d for d in self.duties}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Roster) and self.duties == other.duties

    def __len__(self) -> int:
        return len(self.duties)

    def covers(self, line_id: str) -> bool:
        """True when any entry names this line (or every line): the line has a roster at all."""
        return any(d.line_id in (line_id, ANY) for d in self.duties)

    def on_duty(self, line_id: str, shift: str | None, role: str) -> Duty | None:
        """Who holds ``role`` on ``line_id`` in ``shift`` (None: unknown shift, only * entries match)."""
        shifts = (shift, ANY) if shift else (ANY,)
        for line in (line_id, ANY):
            for s in shifts:
                d = self._by_key.get((line, s, role))
                if d is not None:
                    return d
        return None

    def find(self, line_id: str, shift: str | None, role: str) -> tuple[Duty | None, bool]:
        """The person for ``role``, else for the next role that has someone; and whether ``role`` was empty."""
        for r in _fallbacks(role):
            d = self.on_duty(line_id, shift, r)
            if d is not None:
                return d, r != role
        return None, True

    def for_line(self, line_id: str) -> "Roster":
        return Roster(d for d in self.duties if d.line_id in (line_id, ANY))

    def to_json(self) -> list[dict]:
        return [d.public() for d in self.duties]

    @classmethod
    def from_json(cls, rows: Iterable[dict]) -> "Roster":
        return cls(Duty(r["line_id"], r["shift"], r["role"], r["username"], r.get("contact")) for r in rows)
