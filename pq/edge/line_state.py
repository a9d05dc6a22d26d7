"""A line's scoring state as the operator screen shows it, and the ``line_event`` rows that record it.

Owns :class:`LineState`: ``scoring``, ``degraded`` (with a plain reason), ``no_model`` or ``stopped``.
Every period outside ``scoring`` is one ``line_event`` row, opened when it starts and closed when
the line scores again or changes state; the log gets one line per change of state (a reason that
differs only in its numbers, each part's drift value, is logged at debug).
Must not import connectors, models, ui or simulators.

Example::

    state = LineState("line-1", clock)
    records = state.change("degraded", "melt temperature sensor: no good value for 12 s")
    # -> [("line_event", {... "kind": "degraded", "ended_at": None ...})]
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime
from typing import Callable

__all__ = ["LineState", "STATES"]

logger = logging.getLogger(__name__)

STATES = ("scoring", "degraded", "no_model", "stopped")

_NUMBER = re.compile(r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?")


def _reason_key(reason: str | None) -> str:
    """A reason without its numbers: what kind of trouble it is."""
    return _NUMBER.sub("#", reason or "")


class LineState:
    def __init__(self, line_id: str, clock: Callable[[], datetime]):
        self.line_id = line_id
        self.clock = clock
        self.state = "no_model"
        self.reason = "starting: no part decided yet"
        self.since = clock()
        self._event_id: str | None = None
        self._event_start: datetime | None = None

    def change(self, state: str, reason: str) -> list[tuple[str, dict]] | None:
        """Move to ``state``; the line_event records to store, or None when nothing changed."""
        if state not in STATES:
            raise ValueError(f"line state must be one of {STATES}, got {state!r}")
        if state == self.state and (state == "scoring" or reason == self.reason):
            return None
        now = self.clock()
        old, old_reason = self.state, self.reason
        self.state, self.reason, self.since = state, reason, now
        if state == "scoring":
            logger.info("line %s: scoring again (was %s: %s)", self.line_id, old, old_reason)
        elif old != state or _reason_key(reason) != _reason_key(old_reason):
            logger.warning("line %s: %s: %s", self.line_id, state.replace("_", " "), reason)
        else:
            logger.debug("line %s: still %s: %s", self.line_id, state, reason)
        records = []
        source = f"edge:{self.line_id}"
        if self._event_id is not None and (state == "scoring" or old != state):
            records.append(("line_event", {"id": self._event_id, "line_id": self.line_id, "source": source,
                                           "kind": old, "started_at": self._event_start, "ended_at": now,
                                           "detail": {"reason": old_reason}}))
            self._event_id = None
        if state != "scoring" and self._event_id is None:
            self._event_id, self._event_start = str(uuid.uuid4()), now
            records.append(("line_event", {"id": self._event_id, "line_id": self.line_id, "source": source,
                                           "kind": state, "started_at": now, "ended_at": None,
                                           "detail": {"reason": reason}}))
        return records
