"""The durable local spool: an append-only queue of typed records in one SQLite file (WAL).

Owns :class:`Spool` and :class:`SpoolRecord`. Writers (connector, edge runtime) ``append``; the
drainer (:mod:`pq.spool.drain`) ``peek``s the oldest records, writes them to the store and ``ack``s
(deletes) them only after the store committed. Must not import connectors, models, ui or simulators.

Why SQLite: a record is appended and acknowledged atomically, a ``kill -9`` at any instant leaves
either the whole record or none of it, and the file needs no recovery code of ours. Records are
batches (a connector spools every ~100 ms), so a commit per append costs little.

Durability (``fsync``):
- ``"full"`` (default): ``synchronous=FULL``, every append is fsynced before it returns; a record
  survives a process kill *and* a power cut.
- ``"normal"``: ``synchronous=NORMAL`` in WAL; survives a process kill (``kill -9``), a power cut
  may lose the last appends.

Size bound: the sum of payload bytes is kept under ``max_bytes`` (the file itself is larger by
SQLite's page overhead, about 10-20 %). When an append would exceed it, ``full_policy`` decides:
- ``"block"``: the append waits up to ``block_timeout_s`` for the drainer to free space, then
  raises :class:`SpoolFull` (counted in ``stats()["rejected_records"]``); the caller keeps the data
  (back-pressure).
- ``"drop_oldest"``: the oldest records are deleted to make room (counted in
  ``dropped_records``/``dropped_bytes``; one warning per episode).

Example::

    spool = Spool("var/spool/line-1.sqlite", max_bytes=512 * 2**20, full_policy="block")
    spool.append("part", {"line_id": "line-1", "serial": "L1-000001", "cycle_end": now})
    spool.depth(), spool.oldest_age_s()
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pq.errors import ConfigError, SpoolError, SpoolFull
from pq.health import metrics
from pq.spool import records

__all__ = ["Spool", "SpoolRecord", "SpoolFull", "FULL_POLICIES", "FSYNC_POLICIES"]

logger = logging.getLogger(__name__)

FULL_POLICIES = ("block", "drop_oldest")
FSYNC_POLICIES = ("full", "normal")


@dataclass(frozen=True)
class SpoolRecord:
    id: int
    kind: str
    created_us: int
    payload: Any
    size: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: order survives deletes and restarts
    kind TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (   -- records the store refused for good (not outages)
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    failed_us INTEGER NOT NULL
);
"""


class Spool:
    """A bounded, durable FIFO of typed records; safe to share between threads of one process.

    One spool file belongs to one process: it keeps the depth and size counters in memory, so a
    second process opening the same file (two connections with the same name, say) is refused with
    a clear error instead of corrupting them. The lock is an advisory ``flock`` on ``<file>.lock``,
    released by the kernel when the process dies, so a ``kill -9`` never leaves it stuck.
    """

    def __init__(self, path: str | Path, max_bytes: int = 512 * 2**20, full_policy: str = "block", *,
                 fsync: str = "full", block_timeout_s: float = 5.0, name: str | None = None):
        if full_policy not in FULL_POLICIES:
            raise ConfigError(f"spool full_policy: got {full_policy!r}, expected one of {', '.join(FULL_POLICIES)}")
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"spool fsync: got {fsync!r}, expected one of {', '.join(FSYNC_POLICIES)}")
        if max_bytes <= 0:
            raise ConfigError(f"spool max_bytes must be > 0, got {max_bytes}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.name = name or self.path.stem
        self.max_bytes = int(max_bytes)
        self.full_policy = full_policy
        self.block_timeout_s = block_timeout_s
        self._owner = self._claim(self.path)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # appenders waiting for room (policy block)
        self._arrived = threading.Condition(self._lock)  # the drainer waiting for records
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'full' else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(created_us) "
                                   "FROM records").fetchone()
        except sqlite3.DatabaseError as exc:
            self._owner.close()
            raise ConfigError(f"spool file {self.path}: cannot open ({exc}); move it aside to start empty") from None
        self._depth, self._bytes, self._oldest_us = int(row[0]), int(row[1]), row[2]
        self._stats = {"appended_records": 0, "appended_bytes": 0, "acked_records": 0, "dropped_records": 0,
                       "dropped_bytes": 0, "rejected_records": 0, "dead_letters": 0}
        self._full_episode = False
        self._closed = False
        if self._depth:
            logger.info("spool %s opened with %d records (%d bytes) to replay", self.path, self._depth, self._bytes)

    @staticmethod
    def _claim(path: Path):
        lock = open(path.with_name(path.name + ".lock"), "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ConfigError(f"spool file {path} is in use by {holder}: give each connection and edge "
                              "its own name (tag map [connection] name)") from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        return lock

    # -- writing -----------------------------------------------------------------------------------
    def append(self, kind: str, payload: Any, *, timeout_s: float | None = None) -> int:
        """Append one record durably; returns its id. Raises SpoolFull (policy block) when no room."""
        return self.append_many([(kind, payload)], timeout_s=timeout_s)[0]

    def append_many(self, items: Iterable[tuple[str, Any]], *, timeout_s: float | None = None) -> list[int]:
        """Append several records in one transaction (one fsync); all or none are stored."""
        encoded = [(kind, records.encode(kind, payload)) for kind, payload in items]
        need = sum(len(b) for _, b in encoded)
        if need > self.max_bytes:
            with self._lock:
                self._stats["rejected_records"] += len(encoded)
            metrics().spool_dropped.labels(self.name, "rejected").inc(len(encoded))
            raise SpoolFull(f"spool {self.path}: a {need}-byte append cannot fit the {self.max_bytes}-byte bound "
                            "(raise PQ_SPOOL_MAX_MB)")
        now_us = time.time_ns() // 1000
        with self._lock:
            self._check_open()
            if self._bytes + need > self.max_bytes:
                self._make_room(need, len(encoded), self.block_timeout_s if timeout_s is None else timeout_s)
            try:
                ids = self._insert(encoded, now_us)
            except (sqlite3.Error, OSError) as exc:  # the spool's disk is full or failing: the caller keeps the data
                raise SpoolError(f"spool {self.path}: append of {len(encoded)} records failed ({exc})") from exc
            self._depth += len(ids)
            self._bytes += need
            if self._oldest_us is None:
                self._oldest_us = now_us
            self._stats["appended_records"] += len(ids)
            self._stats["appended_bytes"] += need
            self._arrived.notify_all()
            return ids

    def _insert(self, encoded: list[tuple[str, bytes]], now_us: int) -> list[int]:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            ids = []
            for kind, blob in encoded:
                cur.execute("INSERT INTO records (kind, created_us, payload) VALUES (?, ?, ?)", (kind, now_us, blob))
                ids.append(cur.lastrowid)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return ids

    def _make_room(self, need: int, n: int, timeout_s: float) -> None:
        # called with the lock held
        if self.full_policy == "block":
            deadline = time.monotonic() + max(timeout_s, 0.0)
            if not self._full_episode:
                logger.warning("spool %s full (%d of %d bytes): appends wait for the store (policy block)",
                               self.path, self._bytes, self.max_bytes)
                self._full_episode = True
            while self._bytes + need > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stats["rejected_records"] += n
                    metrics().spool_dropped.labels(self.name, "rejected").inc(n)
                    raise SpoolFull(f"spool {self.path} full: {self._bytes} of {self.max_bytes} bytes, "
                                    f"the store is not keeping up (policy block)")
                self._space.wait(left)
                self._check_open()
            return
        # drop_oldest: delete from the head until the new records fit
        if not self._full_episode:
            logger.warning("spool %s full (%d of %d bytes): dropping the oldest records (policy drop_oldest)",
                           self.path, self._bytes, self.max_bytes)
            self._full_episode = True
        while self._bytes + need > self.max_bytes and self._depth:
            rows = self._db.execute("SELECT id, LENGTH(payload) FROM records ORDER BY id LIMIT 64").fetchall()
            freed, ids = 0, []
            for rid, size in rows:
                ids.append(rid)
                freed += size
                if self._bytes - freed + need <= self.max_bytes:
                    break
            self._delete(ids, freed, dropping=True)
            self._stats["dropped_records"] += len(ids)
            self._stats["dropped_bytes"] += freed
            metrics().spool_dropped.labels(self.name, "dropped_oldest").inc(len(ids))

    # -- reading and acknowledging (the drainer) -------------------------------------------------------
    def peek(self, max_records: int = 500, max_bytes: int = 32 * 2**20) -> list[SpoolRecord]:
        """The oldest records (decoded), without removing them; at least one if any is there."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT id, kind, created_us, payload FROM records ORDER BY id LIMIT ?", (max_records,)).fetchall()
        out, total = [], 0
        for rid, kind, created_us, blob in rows:
            if out and total + len(blob) > max_bytes:
                break
            total += len(blob)
            try:
                payload = records.decode(kind, blob)
            except (ValueError, KeyError, TypeError) as exc:  # corrupt or from an incompatible version
                self.quarantine(SpoolRecord(rid, kind, created_us, blob, len(blob)), f"undecodable: {exc}")
                continue
            out.append(SpoolRecord(rid, kind, created_us, payload, len(blob)))
        return out

    def wait_for_records(self, timeout_s: float) -> bool:
        """Block until the spool holds a record or ``timeout_s`` passes; True when there is one."""
        with self._lock:
            if self._depth == 0 and not self._closed:
                self._arrived.wait(timeout_s)
            return self._depth > 0

    def ack(self, spool_records: Iterable[SpoolRecord]) -> None:
        """Delete records the store has committed (a record dropped meanwhile is ignored)."""
        recs = list(spool_records)
        if not recs:
            return
        with self._lock:
            self._check_open()
            before = self._depth
            self._delete([r.id for r in recs], None)
            self._stats["acked_records"] += before - self._depth

    def quarantine(self, record: SpoolRecord, error: str) -> None:
        """Move a record the store refuses for good into ``dead_letters`` (kept, counted, logged)."""
        blob = record.payload if isinstance(record.payload, bytes) else records.encode(record.kind, record.payload)
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                             (record.id, record.kind, record.created_us, blob, error[:2000], time.time_ns() // 1000))
            self._db.execute("COMMIT")
            self._delete([record.id], None)
            self._stats["dead_letters"] += 1
        logger.error("spool %s: record %d (%s) refused by the store, moved to dead_letters: %s",
                     self.path, record.id, record.kind, error)

    def _delete(self, ids: list[int], freed: int | None, *, dropping: bool = False) -> None:
        # lock held; ``dropping``: making room under drop_oldest, so the full episode goes on
        if not ids:
            return
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            n_deleted, n_bytes = 0, 0
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                size, count = cur.execute(
                    f"SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM records WHERE id IN ({marks})",
                    chunk).fetchone()
                cur.execute(f"DELETE FROM records WHERE id IN ({marks})", chunk)
                n_deleted += count
                n_bytes += size
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._depth -= n_deleted
        self._bytes -= n_bytes
        oldest = self._db.execute("SELECT created_us FROM records ORDER BY id LIMIT 1").fetchone()
        self._oldest_us = oldest[0] if oldest else None
        if self._full_episode and not dropping and self._bytes <= self.max_bytes * 0.9:
            logger.info("spool %s has room again (%d of %d bytes; dropped so far %d records, rejected %d)",
                        self.path, self._bytes, self.max_bytes, self._stats["dropped_records"],
                        self._stats["rejected_records"])
            self._full_episode = False
        self._space.notify_all()

    # -- facts ---------------------------------------------------------------------------------------
    def depth(self) -> int:
        """Records waiting for the store."""
        return self._depth


    def oldest_age_s(self) -> float:
        """Age of the oldest waiting record in seconds (0 when empty)."""
        oldest = self._oldest_us
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1e6)

    def stats(self) -> dict[str, int | float]:
        """Depth, bytes, age and the counters (appended, acked, dropped, rejected, dead letters)."""
        with self._lock:
            return {"depth_records": self._depth, "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "oldest_age_s": round(self.oldest_age_s(), 3), **self._stats}

    def dead_letters(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT id, kind, created_us, error, failed_us FROM dead_letters ORDER BY id")
            return [dict(zip(("id", "kind", "created_us", "error", "failed_us"), r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._space.notify_all()
            self._arrived.notify_all()
            self._db.close()
            self._owner.close()  # releases the flock

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.path} is closed")

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
