"""Background retraining for the Models page.

A retrain request becomes a ``training_jobs`` row (models.training.start_job) and runs in one
background thread of the UI process (models.training.run_job writes progress into the row), so it
survives the engineer leaving the page: the page only polls the row. One job at a time: training
uses both cores of a line PC, and a second request while one runs is refused with a message.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from pq.errors import InvalidRequest
from pq.auth.roles import Actor, require
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["TrainingRunner", "recent_jobs"]

logger = logging.getLogger(__name__)


def recent_jobs(store: Store, limit: int = 5) -> list[dict]:
    j = schema.training_jobs.c
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(schema.training_jobs).order_by(j.id.desc()).limit(limit))]


class TrainingRunner:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, actor: Actor, config, params: dict) -> int:
        """Queue and start a job; returns its id. InvalidRequest when one is already running."""
        from models.training import run_job, start_job

        require(actor, "engineer")
        with self._lock:
            if self.busy():
                raise InvalidRequest("a retraining job is already running: wait for it to finish")
            job_id = start_job(self.store, params, requested_by=actor.username)
            from pq.auth import audit

            with self.store.engine.begin() as conn:
                audit.record(conn, username=actor.username, action="model.retrain", target=f"training_job:{job_id}",
                             detail=params, client=actor.client)

            def work():
                try:
                    run_job(self.store, job_id, config, trained_by=actor.username, client=actor.client)
                except Exception:  # run_job already marked the row failed and logged the traceback
                    logger.error("training job %d ended with an internal error", job_id)

            self._thread = threading.Thread(target=work, name=f"pq-train-{job_id}", daemon=True)
            self._thread.start()
        logger.info("training job %d started by %s", job_id, actor.username)
        return job_id
