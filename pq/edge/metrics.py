"""Prometheus metrics of the edge runtime.

Owns the metric definitions (samples, ring-buffer fill, decision latency histogram, decisions,
alerts by state, spool depth and drops, model version, output failures). One :class:`EdgeMetrics` per
process, shared by its line runtimes (label ``line``); the HTTP endpoint is started by the
composition root with :func:`serve` when ``PQ_METRICS_PORT`` is set. Must not import connectors,
models, ui or simulators.

Example::

    metrics = EdgeMetrics()                      # default registry
    serve(metrics, port=9108, addr="127.0.0.1")
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["EdgeMetrics", "serve", "LATENCY_BUCKETS_S"]

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        from prometheus_client import REGISTRY

        self.registry = registry if registry is not None else REGISTRY
        r = self.registry
        self.samples = Counter("pq_edge_samples", "Samples received by the edge runtime", ["line"], registry=r)
        self.ring_fill = Gauge("pq_edge_ring_fill_ratio", "Fill of the fullest per-tag ring buffer, 0..1",
                               ["line"], registry=r)
        self.decision_latency = Histogram(
            "pq_edge_decision_latency_seconds", "Cycle-complete notification to decision and alert published",
            ["line"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.decisions = Counter("pq_edge_decisions", "Part decisions", ["line", "decision"], registry=r)
        self.alerts = Gauge("pq_edge_alerts", "Open alerts by state", ["line", "state"], registry=r)
        self.spool_depth = Gauge("pq_edge_spool_depth", "Records waiting in the edge spool", ["line"], registry=r)
        self.spool_dropped = Gauge("pq_edge_spool_dropped", "Decision records dropped because the spool writer "
                                   "was too far behind (a failing disk)", ["line"], registry=r)
        self.model_version = Gauge("pq_edge_model_version_id", "Model version id in production at the edge (0 = none)",
                                   ["line"], registry=r)
        self.scoring_state = Gauge("pq_edge_scoring", "1 scoring, 0 degraded / no model", ["line"], registry=r)
        self.output_failures = Counter("pq_edge_output_failures", "Failed deliveries to plant outputs",
                                       ["line", "output"], registry=r)
        self.output_dropped = Gauge("pq_edge_output_dropped", "Messages outputs dropped because their queue was full",
                                    ["line", "output"], registry=r)


def serve(metrics: EdgeMetrics, port: int, addr: str = "127.0.0.1") -> None:
    """Start the /metrics HTTP endpoint (a daemon thread of prometheus-client)."""
    start_http_server(port, addr=addr, registry=metrics.registry)
    logger.info("edge metrics on http://%s:%d/metrics", addr, port)
