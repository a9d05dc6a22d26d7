"""Component health: the rows the UI and edge read for freshness, line events, and Prometheus metrics.

Owns the shape of ``component_health`` payloads (:func:`health_row`), line events
(:func:`line_event`, e.g. ``connection_lost`` with ``started_at``/``ended_at``), reading them back
(:func:`read_health`, :func:`tag_freshness`), and pq's Prometheus metrics (:func:`metrics`,
:func:`start_metrics_server`). Rows go to the store through the spool (kinds ``health`` and
``line_event``) or directly with :func:`write_health_now`. Must not import connectors, models, ui
or simulators.

The ``detail`` JSON of a connector's row (component ``connector:NAME``)::

    {"endpoint": "opc.tcp://...", "samples_per_s": 812.5, "samples_total": 123456,
     "dropped": {"buffer_full": 0, ...}, "reconnects": 1, "spool": {"depth_records": 3, "oldest_age_s": 0.2, ...},
     "store_available": true, "tags": {"line-1/melt_temp_c": {"last_ts": "2026-...Z", "status": 0}, ...},
     "unknown_nodes": ["line-1/foo"], "last_notification_at": "..."}

Example::

    spool.append("health", health_row("connector:sim", "connected", line_id="line-1", detail={...}))
    read_health(store, "connector:")[0]["state"]
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["health_row", "line_event", "read_health", "read_line_events", "tag_freshness", "write_health_now",
           "metrics", "start_metrics_server", "HEALTH_STATES"]

logger = logging.getLogger(__name__)

# States a connector reports; the edge adds its own (scoring, degraded ...).
HEALTH_STATES = ("starting", "connected", "reconnecting", "lost", "stopped")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def health_row(component: str, state: str, *, line_id: str | None = None, detail: dict | None = None,
               updated_at: datetime | None = None) -> dict:
    """A ``component_health`` payload (spool kind ``health``)."""
    return {"component": component, "line_id": line_id, "state": state, "detail": detail or {},
            "updated_at": updated_at or _now()}


def line_event(kind: str, source: str, *, line_id: str | None = None, started_at: datetime | None = None,
               ended_at: datetime | None = None, detail: dict | None = None, event_id: str | None = None) -> dict:
    """A ``line_events`` payload (spool kind ``line_event``); re-send with the same id to close it."""
    return {"id": event_id or str(uuid.uuid4()), "line_id": line_id, "source": source, "kind": kind,
            "started_at": started_at or _now(), "ended_at": ended_at, "detail": detail or {}}


def write_health_now(store: Store, row: dict) -> None:
    """Write one health row directly (for processes without a spool)."""
    from pq.spool.writers import write_health

    write_health(store, [row])


def read_health(store: Store, component_prefix: str | None = None) -> list[dict]:
    """Health rows (optionally those whose component starts with ``component_prefix``), with ``age_s``."""
    t = schema.component_health
    query = select(t).order_by(t.c.component)
    if component_prefix:
        query = query.where(t.c.component.startswith(component_prefix))
    now = _now()
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for r in rows:
        r["age_s"] = (now - r["updated_at"]).total_seconds()
    return rows


def read_line_events(store: Store, line_id: str | None = None, kind: str | None = None) -> list[dict]:
    t = schema.line_events
    query = select(t).order_by(t.c.started_at)
    if line_id is not None:
        query = query.where(t.c.line_id == line_id)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def tag_freshness(row: dict, now: datetime | None = None) -> dict[str, float]:
    """Seconds since each tag's last value, from a connector health row's ``detail["tags"]``."""
    now = now or _now()
    out = {}
    for key, info in ((row.get("detail") or {}).get("tags") or {}).items():
        last = info.get("last_ts")
        if last:
            out[key] = (now - datetime.fromisoformat(last)).total_seconds()
    return out


# -- Prometheus ---------------------------------------------------------------------------------------

class _Metrics:
    """pq's metrics on the default registry, created by the first :func:`metrics` call of a process."""

    def __init__(self) -> None:
        self.samples = Counter("pq_connector_samples", "Samples received from OPC UA", ["connection"])
        self.samples_bad = Counter("pq_connector_samples_not_good",
                                   "Samples received with a Bad or Uncertain status", ["connection"])
        self.dropped = Counter("pq_connector_dropped", "Samples or records dropped, by reason",
                               ["connection", "reason"])
        self.reconnects = Counter("pq_connector_reconnects", "OPC UA reconnections", ["connection"])
        self.connected = Gauge("pq_connector_connected", "1 while the OPC UA session is up", ["connection"])
        self.parts = Counter("pq_connector_parts", "Part events assembled", ["connection"])
        self.inspections = Counter("pq_connector_inspections", "Inspection results assembled", ["connection"])
        self.spool_depth = Gauge("pq_spool_depth_records", "Records waiting in the spool", ["spool"])
        self.spool_bytes = Gauge("pq_spool_bytes", "Payload bytes waiting in the spool", ["spool"])
        self.spool_age = Gauge("pq_spool_oldest_age_seconds", "Age of the oldest spooled record", ["spool"])
        self.spool_dropped = Counter("pq_spool_dropped_records", "Spool records dropped or rejected when full",
                                     ["spool", "reason"])
        self.store_up = Gauge("pq_store_available", "1 while the drainer can write to the store", ["spool"])
        self.lag = Histogram("pq_sample_commit_lag_seconds", "Source timestamp to committed row",
                             ["connection"], buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60))


_METRICS: _Metrics | None = None
_SERVERS: dict[tuple[str, int], Any] = {}


def metrics() -> _Metrics:
    """The process's metrics (connector, spool, drainer), registered on first use, not at import."""
    global _METRICS
    if _METRICS is None:
        _METRICS = _Metrics()
    return _METRICS


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` (idempotent within a process)."""
    if (addr, port) in _SERVERS:
        return
    _SERVERS[(addr, port)] = start_http_server(port, addr=addr)
    logger.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
