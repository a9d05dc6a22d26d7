"""The edge's time-driven work beside the decisions: the store, the playbook, timers and metrics.

Owns :class:`Housekeeper`, one per line runtime, running as an asyncio task in the edge's event
loop. Every second it runs the runtime's alarm timers (:meth:`LineRuntime.tick`) and exports the
Prometheus gauges; on its own intervals it writes the line's health record, adopts open alerts
from the store after a (re)start, merges operator actions (acknowledge, shelve) from the store, and
reloads the playbook and the roster (who is on duty, ``pq/edge/duty.py``). Store work runs in worker
threads, one per job at a time, so a hung database never stalls a decision or piles up threads; the
store may be absent (down at start) and is handed in later through :attr:`store`. Must not import connectors, models, ui or simulators.

Example::

    hk = Housekeeper(runtime, store)
    task = asyncio.create_task(hk.run(stop_event))
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from sqlalchemy import select

from pq.alerts.discipline import OPEN_STATES
from pq.edge.runtime import LineRuntime
from pq.storage import schema

__all__ = ["Housekeeper"]

logger = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, runtime: LineRuntime, store: Any = None):
        self.runtime = runtime
        self.store = store  # a pq.storage Store, or None while the database is away
        self._busy: set[str] = set()
        self._published_failures: dict[str, int] = {}

    # -- store work (worker threads) ---------------------------------------------------------------
    def load_open_alerts(self) -> int:
        """At start-up: adopt this line's open alerts from the store."""
        rt = self.runtime
        t = schema.alerts
        with self.store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(t).where(t.c.line_id == rt.line_id, t.c.state.in_(OPEN_STATES)))]
        return rt.board.load(rows)

    def _read_roster(self):
        from pq.alerts.roster_store import load_roster

        return load_roster(self.store, self.runtime.line_id)

    def _read_operator_rows(self) -> list[dict]:
        ids = [a.id for a in self.runtime.board.open_alerts()]
        if not ids:
            return []
        t = schema.alerts
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(t).where(t.c.id.in_(ids)))]

    async def _in_thread(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run store work in a thread, one at a time per job, so a hung database never piles up threads."""
        if name in self._busy:
            return None
        self._busy.add(name)
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:  # noqa: BLE001 - store trouble is reported by the spool/health; here logged at debug
            logger.debug("line %s: %s skipped: %s", self.runtime.line_id, name, exc)
            return None
        finally:
            self._busy.discard(name)

    # -- metrics -----------------------------------------------------------------------------------
    def export_metrics(self) -> None:
        rt = self.runtime
        m, line = rt.metrics, rt.line_id
        if m is None:
            return
        m.ring_fill.labels(line).set(rt.rings.fill())
        for st, n in rt.board.counts().items():
            m.alerts.labels(line, st).set(n)
        m.scoring_state.labels(line).set(1 if rt.state == "scoring" else 0)
        m.model_version.labels(line).set(rt.scorers.status().get("model_version_id") or 0)
        if rt.sink is not None:
            try:
                m.spool_depth.labels(line).set(rt.sink.depth())
            except Exception as exc:  # noqa: BLE001 - a metric must not stop the loop
                logger.debug("spool depth unavailable: %s", exc)
        m.spool_dropped.labels(line).set(rt.spool_dropped)
        for out in rt.outputs:
            st = out.status()
            new = int(st.get("failures", 0)) - self._published_failures.get(out.name, 0)
            if new > 0:
                m.output_failures.labels(line, out.name).inc(new)
                self._published_failures[out.name] = int(st.get("failures", 0))
            m.output_dropped.labels(line, out.name).set(int(st.get("dropped", 0)))

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        rt, s = self.runtime, self.runtime.settings
        last = {"health": 0.0, "sync": 0.0, "playbook": 0.0, "load": 0.0, "roster": 0.0}
        adopted = False
        while not stop.is_set():
            t = time.monotonic()
            # The store may come up after the edge (it scores from a local model copy meanwhile):
            # open alerts of an earlier run are adopted once it answers.
            if not adopted and self.store is not None and t - last["load"] >= s.edge_alert_sync_s:
                last["load"] = t
                n = await self._in_thread("load", self.load_open_alerts)
                if n is not None:
                    adopted = True
                    if n:
                        logger.info("line %s: %d open alerts adopted from the store", rt.line_id, n)
            rt.tick()
            self.export_metrics()
            if t - last["health"] >= s.edge_health_interval_s:
                last["health"] = t
                rt.record_health()
            if self.store is not None and t - last["sync"] >= s.edge_alert_sync_s:
                last["sync"] = t
                rows = await self._in_thread("sync", self._read_operator_rows)
                if rows:
                    rt.apply_operator_rows(rows)
            if self.store is not None and t - last["roster"] >= s.edge_alert_sync_s:
                last["roster"] = t  # who is on duty; kept on local disk for a restart without the store
                roster = await self._in_thread("roster", self._read_roster)
                if roster is not None:
                    rt.duty.set_roster(roster)
            if t - last["playbook"] >= s.edge_playbook_poll_s:
                last["playbook"] = t
                await self._in_thread("playbook", rt.playbook.reload)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
