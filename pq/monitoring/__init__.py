"""Monitoring: feature drift against the training reference, alert precision from operator
feedback, alarm KPIs (ISA-18.2 style) and ingest health per connector.

Reads the store only; must not import connectors, models, ui or simulators.
"""

from pq.monitoring.drift import js_divergence, psi
from pq.monitoring.kpis import alarm_kpis
from pq.monitoring.precision import precision_by_day

__all__ = ["psi", "js_divergence", "alarm_kpis", "precision_by_day"]
