"""The edge's hand-over of decision records to the durable spool, on a thread of its own.

An fsync costs milliseconds and a failing disk blocks; neither may stall the event loop that decides
parts. :class:`SpoolWriter` takes record batches into a bounded queue and appends them to the spool
in groups, retrying with backoff while the spool refuses (full, disk trouble) and saying so once.

Overflow policy, chosen on purpose: when the queue is ``max_batches`` behind (the disk is failing for
minutes), new batches are dropped, counted in ``dropped`` and logged once. The decision itself was
already published to the outputs; what is lost is its record in the store.
Must not import connectors, models, ui or simulators.

Example::

    writer = SpoolWriter(spool, "line-1")
    writer.put([("prediction", {...}), ("alert", {...})])
    writer.flush(timeout_s=5)      # every record put so far is in the spool
    writer.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pq.edge.interfaces import Sink

__all__ = ["SpoolWriter"]

logger = logging.getLogger(__name__)

_GROUP = 500  # records per spool append: one transaction and fsync for many parts when behind


class SpoolWriter:
    def __init__(self, sink: Sink, line_id: str, max_batches: int = 10_000):
        self.sink = sink
        self.line_id = line_id
        self.dropped = 0  # records dropped because the queue was full
        self._outbox: queue.Queue = queue.Queue(maxsize=max_batches)
        self._thread: threading.Thread | None = None
        self._trouble_logged = False

    def put(self, records: list[tuple[str, dict]]) -> None:
        """Queue records for the spool; never blocks."""
        if not records:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"pq-edge-spool-{self.line_id}", daemon=True)
            self._thread.start()
        try:
            self._outbox.put_nowait(records)
        except queue.Full:
            self.dropped += len(records)
            if not self._trouble_logged:
                logger.error("line %s: spool writer %d batches behind; dropping records (counted) - the spool "
                             "disk is too slow or failing", self.line_id, self._outbox.maxsize)
                self._trouble_logged = True

    def _take(self) -> tuple[list[tuple[str, dict]], int, bool]:
        """The next group of records, how many queue items it took, and whether the stop marker came."""
        first = self._outbox.get()
        if first is None:
            return [], 1, True
        records, taken = list(first), 1
        while len(records) < _GROUP:
            try:
                more = self._outbox.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if more is None:
                self._outbox.put(None)  # stop after this group
                break
            records.extend(more)
        return records, taken, False

    def _loop(self) -> None:
        backoff = 0.1
        while True:
            records, taken, stop = self._take()
            while records:
                try:
                    self.sink.append_many(records)
                except Exception as exc:  # noqa: BLE001 - spool full or disk trouble: keep the records, retry, say so once
                    if not self._trouble_logged:
                        logger.error("line %s: cannot spool %d records (%s: %s); retrying, decisions are still "
                                     "published", self.line_id, len(records), type(exc).__name__, exc)
                        self._trouble_logged = True
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if self._trouble_logged:
                    logger.info("line %s: spool accepts records again", self.line_id)
                    self._trouble_logged = False
                backoff = 0.1
                break
            for _ in range(taken):
                self._outbox.task_done()
            if stop:
                return

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record put so far is in the spool; False when the timeout came first."""
        deadline = time.monotonic() + timeout_s
        while self._outbox.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._outbox.unfinished_tasks

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (within the timeout), then stop the thread."""
        if self._thread is not None:
            self._outbox.put(None)
            self._thread.join(timeout_s)
            self._thread = None
