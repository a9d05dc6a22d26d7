"""The drainer: moves spooled records into the store in batches, acknowledging only after commit.

Owns :class:`SpoolDrainer` (a background thread) and :func:`drain_once`. Each pass peeks the oldest
records, groups them by kind (kinds in order of first appearance, records oldest first), calls each
kind's writer (:mod:`pq.spool.writers`) and deletes the records from the spool only after every
writer of the pass committed. Writers are idempotent, so a crash between commit and
acknowledgement replays rows the store already has and writes nothing twice.

When the store is unreachable (connection refused, reset, database not accepting connections),
the drainer logs one warning, retries with backoff (0.25 s doubling to ``max_backoff_s``) and logs
one info line with the outage length when the store is back; the records wait in the spool. A
record the store refuses for a reason that is not an outage (a constraint or type error) is
retried alone, then moved to the spool's ``dead_letters`` table, counted and logged, so one bad
record cannot stall the line. Must not import connectors, models, ui or simulators.

Example::

    drainer = SpoolDrainer(spool, store)
    drainer.start()
    ...
    drainer.stop(flush_timeout_s=10)   # writes what is left, then returns
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Callable

from pq.spool.spool import Spool, SpoolRecord
from pq.spool.writers import get_writer
from pq.storage.engine import Store
from pq.storage.outage import is_outage
from pq.health import metrics

__all__ = ["SpoolDrainer", "drain_once"]

logger = logging.getLogger(__name__)

CommitListener = Callable[[str, list, float], None]  # (kind, payloads, commit unix time)


def _group(recs: list[SpoolRecord]) -> dict[str, list[SpoolRecord]]:
    groups: dict[str, list[SpoolRecord]] = defaultdict(list)
    for r in recs:
        groups[r.kind].append(r)
    return groups


def drain_once(spool: Spool, store: Store, *, max_records: int = 500, max_bytes: int = 32 * 2**20,
               listeners: tuple[CommitListener, ...] = ()) -> int:
    """Write one batch of the oldest records; returns how many records were acknowledged.

    Raises the store's error on an outage (nothing is acknowledged then).
    """
    recs = spool.peek(max_records, max_bytes)
    if not recs:
        return 0
    done: list[SpoolRecord] = []
    for kind, group in _group(recs).items():
        writer = get_writer(kind)
        if writer is None:
            for r in group:
                spool.quarantine(r, f"no writer registered for kind {kind!r}")
            continue
        try:
            writer(store, [r.payload for r in group])
        except Exception as exc:  # classified right here: outage -> re-raise, bad record -> isolate
            if is_outage(exc):
                spool.ack(done)  # kinds already committed in this pass need not be replayed
                raise
            logger.warning("writing %d %s records failed (%s); retrying them one by one", len(group), kind, exc)
            for r in group:
                try:
                    writer(store, [r.payload])
                except Exception as one_exc:
                    if is_outage(one_exc):
                        spool.ack(done)
                        raise
                    spool.quarantine(r, f"{type(one_exc).__name__}: {one_exc}")
                    continue
                done.append(r)
                _notify(listeners, kind, [r.payload])
            continue
        done.extend(group)
        _notify(listeners, kind, [r.payload for r in group])
    spool.ack(done)
    return len(done)


def _notify(listeners: tuple[CommitListener, ...], kind: str, payloads: list, ) -> None:
    now = time.time()
    for fn in listeners:
        try:
            fn(kind, payloads, now)
        except Exception:  # a metrics hook must never stop the drain; logged with its traceback
            logger.exception("spool commit listener %r failed", fn)


class SpoolDrainer:
    """A thread that keeps the store up to date with the spool, surviving store outages."""

    def __init__(self, spool: Spool, store: Store, *, max_records: int = 500, max_bytes: int = 32 * 2**20,
                 idle_wait_s: float = 0.05, max_backoff_s: float = 5.0,
                 listeners: tuple[CommitListener, ...] = ()):
        self.spool = spool
        self.store = store
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.idle_wait_s = idle_wait_s
        self.max_backoff_s = max_backoff_s
        self.listeners = tuple(listeners)
        self.store_available = True  # until a write says otherwise
        metrics().store_up.labels(spool.name).set(1)
        self.outages = 0
        self.drained_records = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_at: float | None = None

    def start(self) -> "SpoolDrainer":
        self._thread = threading.Thread(target=self._run, name=f"pq-drain-{self.spool.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            try:
                n = drain_once(self.spool, self.store, max_records=self.max_records, max_bytes=self.max_bytes,
                               listeners=self.listeners)
            except Exception as exc:
                if not is_outage(exc):  # a bug in a writer path: keep the thread alive, show it loudly
                    logger.exception("spool %s drain failed unexpectedly", self.spool.path)
                self._mark_lost(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.25
            if self._lost_at is not None:
                self._mark_recovered()
            self.drained_records += n
            if n == 0:
                self.spool.wait_for_records(self.idle_wait_s * 20)
                if self.spool.depth() and not self._stop.is_set():
                    self._stop.wait(self.idle_wait_s)  # let a few appends gather into one store batch

    def _mark_lost(self, exc: BaseException) -> None:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        self.last_error = reason
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            self.store_available = False
            metrics().store_up.labels(self.spool.name).set(0)
            self.outages += 1
            logger.warning("store %s unavailable, records stay in spool %s (depth %d): %s",
                           self.store.display_url, self.spool.path, self.spool.depth(), reason)

    def _mark_recovered(self) -> None:
        down_s = time.monotonic() - (self._lost_at or time.monotonic())
        self._lost_at = None
        self.store_available = True
        metrics().store_up.labels(self.spool.name).set(1)
        self.last_error = None
        logger.info("store %s available again after %.1f s; replaying spool %s (depth %d)",
                    self.store.display_url, down_s, self.spool.path, self.spool.depth())

    def flush(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passes (False); the thread keeps running."""
        deadline = time.monotonic() + timeout_s
        while self.spool.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.spool.depth() == 0

    def stop(self, flush_timeout_s: float = 10.0) -> bool:
        """Write what is left (up to ``flush_timeout_s``), then stop the thread; True when empty."""
        empty = self.flush(flush_timeout_s) if flush_timeout_s > 0 else self.spool.depth() == 0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(flush_timeout_s, 5.0))
        if not empty:
            logger.warning("spool %s stopped with %d records not yet in the store; they are kept on disk and "
                           "replayed at the next start", self.spool.path, self.spool.depth())
        return empty

    def stats(self) -> dict:
        return {"store_available": self.store_available, "outages": self.outages,
                "drained_records": self.drained_records, "last_error": self.last_error}
