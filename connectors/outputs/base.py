"""The delivery worker every plant output shares: a bounded queue, retries with backoff, counters.

Owns :class:`QueuedOutput`: ``offer`` returns at once (the edge's decision path never waits for a
plant system); a daemon thread delivers in order, retrying a failed message with exponential
backoff until it goes through. A message the endpoint refuses for good (e.g. HTTP 400) raises
:class:`PermanentDeliveryError` and is dropped, counted and logged. When the queue is full the
OLDEST message is dropped and counted: a plant system wants the newest alerts first. One warning
when an endpoint goes down, one info when it is back. Imports pq only.

Example::

    class Printer(QueuedOutput):
        def deliver(self, msg): print(msg)
    out = Printer("printer", queue_max=100)
    out.offer({"event": "raised"})
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any, Mapping

from pq.errors import PermanentDeliveryError

__all__ = ["QueuedOutput", "PermanentDeliveryError", "to_json"]

logger = logging.getLogger(__name__)


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def to_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON; datetimes ISO 8601, NaN/Inf as null."""
    return json.dumps(_clean(obj), default=_default, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class QueuedOutput:
    """Base class: subclasses implement ``deliver(msg)`` (raise to retry) and the two hooks."""

    kind = "output"

    def __init__(self, name: str, *, queue_max: int = 1000, max_backoff_s: float = 30.0):
        if queue_max < 1:
            raise ValueError(f"queue_max must be >= 1, got {queue_max}")
        self.name = name
        self.queue_max = queue_max
        self.max_backoff_s = max_backoff_s
        self._q: deque = deque()
        self._cv = threading.Condition()
        self._closing = False
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self.rejected = 0
        self.up: bool | None = None
        self.last_error: str | None = None
        self._full_logged = False
        self._thread = threading.Thread(target=self._run, name=f"pq-output-{name}", daemon=True)
        self._started = False

    # -- the edge's side ---------------------------------------------------------------------------
    def start(self) -> "QueuedOutput":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def offer(self, msg: Any) -> None:
        with self._cv:
            if len(self._q) >= self.queue_max:
                self._q.popleft()
                self.dropped += 1
                if not self._full_logged:
                    logger.warning("output %s: queue full (%d), dropping the oldest messages", self.name, self.queue_max)
                    self._full_logged = True
            self._q.append(msg)
            self._cv.notify()

    def on_alert(self, event: str, alert: Mapping[str, Any]) -> None:
        """Alert changes (raised, updated, cleared ...); default: ignored."""

    def on_decision(self, decision: Mapping[str, Any]) -> None:
        """Every part decision; default: ignored."""

    def status(self) -> dict:
        with self._cv:  # one consistent snapshot: a message leaves the queue and is counted at once
            return {"kind": self.kind, "up": self.up, "queued": len(self._q), "delivered": self.delivered,
                    "failures": self.failures, "dropped": self.dropped, "rejected": self.rejected,
                    "last_error": self.last_error}

    def close(self, flush_timeout_s: float = 2.0) -> None:
        """Try to deliver what is queued for up to ``flush_timeout_s``, then stop."""
        deadline = time.monotonic() + flush_timeout_s
        while self._q and self.up is not False and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._started:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 1)
        if self._q:
            logger.warning("output %s: closed with %d undelivered messages", self.name, len(self._q))
        self._disconnect()

    # -- subclass hooks ------------------------------------------------------------------------------
    def deliver(self, msg: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Release connections (called once at close)."""

    def describe(self) -> str:
        return self.name

    # -- the worker ------------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.25
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return
                msg = self._q[0]
            try:
                self.deliver(msg)
            except PermanentDeliveryError as exc:
                with self._cv:
                    self._pop(msg)
                    self.rejected += 1
                    self.failures += 1
                    self.last_error = str(exc)
                logger.error("output %s: message refused, dropped: %s", self.describe(), exc)
                continue
            except Exception as exc:  # noqa: BLE001 - any transport error is retried; counted and logged once
                with self._cv:
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    was_up = self.up is not False
                    self.up = False
                if was_up:
                    logger.warning("output %s unavailable (%s); retrying with backoff, %d queued",
                                   self.describe(), self.last_error, len(self._q))
                with self._cv:
                    self._cv.wait(timeout=backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            with self._cv:
                self._pop(msg)
                self.delivered += 1
                was_down = self.up is False
                self.up = True
            backoff = 0.25
            if was_down:
                logger.info("output %s available again", self.describe())

    def _pop(self, msg: Any) -> None:
        with self._cv:
            if self._q and self._q[0] is msg:
                self._q.popleft()
            if len(self._q) < self.queue_max // 2:
                self._full_logged = False
