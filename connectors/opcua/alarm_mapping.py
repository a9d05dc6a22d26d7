"""How one pq alert row reads as an OPC UA Part 9 alarm condition (pure functions, no server).

Owns the mapping table documented in docs/alarms.md ("OPC UA Alarms & Conditions"): severity
low/medium/high -> 300/600/900, pq states -> ActiveState / AckedState / ConfirmedState / Retain /
ShelvingState, and :class:`ConditionView`, the snapshot the A&C server compares between polls (an
event fires when the snapshot changes). Imports pq only; asyncua stays in ``alarm_server``.

Example::

    view = condition_view(alert_row, confirmed=False, comment=None)
    view.severity, view.active, view.acked, view.retain   # 900, True, False, True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

__all__ = ["SEVERITY", "EXPOSED_STATES", "ConditionView", "condition_view", "condition_node_name",
           "alert_id_from_node_name", "SHELVING_SUFFIX"]

# pq severity -> OPC UA Severity (1..1000). Part 9 leaves the scale to the server; 300/600/900 sit in the
# middle of the lower, middle and upper thirds, so an HMI's severity -> priority bands read them as low,
# medium and high whatever their exact edges.
SEVERITY: dict[str, int] = {"low": 300, "medium": 600, "high": 900}

# Suppressed alerts are held back during a flood and never annunciated by pq (not published to any
# output); the HMI sees the one flood alert instead. Every other state is exposed.
EXPOSED_STATES = ("active", "acknowledged", "shelved", "cleared")

SHELVING_SUFFIX = "/ShelvingState"
_PREFIX = "alert:"


def condition_node_name(alert_id: str) -> str:
    """String identifier of the condition's NodeId (ConditionId): ``alert:<uuid>``."""
    return _PREFIX + alert_id


def alert_id_from_node_name(identifier: Any) -> str | None:
    """The alert id behind a condition (or its ShelvingState) node identifier, else None."""
    if not isinstance(identifier, str) or not identifier.startswith(_PREFIX):
        return None
    ident = identifier[len(_PREFIX):]
    if ident.endswith(SHELVING_SUFFIX):
        ident = ident[: -len(SHELVING_SUFFIX)]
    return ident or None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ConditionView:
    """What a client sees of one alert; two equal views mean no event to send."""

    alert_id: str
    line_id: str
    kind: str
    cause: str
    state: str                  # pq state: active | acknowledged | shelved | cleared
    title: str                  # Message: the operator sentence
    action: str | None          # RecommendedAction
    serial: str | None
    station: str | None
    score: float | None
    repeat_count: int
    severity: int
    active: bool                # ActiveState: pq has not cleared it
    acked: bool                 # AckedState
    acked_by: str | None
    client_user: str | None     # ClientUserId: who made the latest operator change (ack, shelve, comment ...)
    confirmed: bool             # ConfirmedState: a Confirm was recorded (alert_events 'confirmed')
    shelved_until: datetime | None
    retain: bool                # Retain: in the alarm summary until pq clears it
    comment: str | None         # the latest comment (Acknowledge / Confirm / AddComment)
    raised_at: datetime
    changed_at: datetime        # Time of the latest transition

    @property
    def shelved(self) -> bool:
        return self.state == "shelved"

    def unshelve_in_ms(self, now: datetime) -> float:
        """ShelvingState/UnshelveTime: milliseconds until a timed shelve runs out (0 when not shelved)."""
        if not self.shelved or self.shelved_until is None:
            return 0.0
        return max(0.0, (self.shelved_until - now).total_seconds() * 1000.0)


def condition_view(row: Mapping[str, Any], *, confirmed: bool, comment: str | None,
                   last_actor: str | None = None) -> ConditionView:
    """The condition an ``alerts`` row reads as (see the module docstring for the mapping)."""
    state = row["state"]
    acked_at, cleared_at, updated_at = _utc(row.get("acked_at")), _utc(row.get("cleared_at")), _utc(row["updated_at"])
    # Time of the latest transition pq recorded: cleared, acknowledged or updated by the edge.
    changed_at = max(t for t in (updated_at, acked_at, cleared_at) if t is not None)
    return ConditionView(
        alert_id=row["id"], line_id=row["line_id"], kind=row.get("kind") or "part", cause=row["cause"], state=state,
        title=row["title"], action=row.get("action"), serial=row.get("serial"), station=row.get("station"),
        score=row.get("score"), repeat_count=int(row.get("repeat_count") or 1),
        severity=SEVERITY.get(row["severity"], SEVERITY["medium"]),
        active=state != "cleared",
        acked=acked_at is not None,
        acked_by=row.get("acked_by"),
        client_user=last_actor or row.get("acked_by"),
        confirmed=confirmed,
        shelved_until=_utc(row.get("shelved_until")) if state == "shelved" else None,
        # pq's "cleared" is final (a new occurrence is a new alert): the condition leaves the summary.
        retain=state != "cleared",
        comment=comment,
        raised_at=_utc(row["raised_at"]),
        changed_at=changed_at,
    )
