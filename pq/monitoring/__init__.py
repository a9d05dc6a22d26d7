"""Monitoring: feature drift against the training reference (and explained by context: expected for
the conditions or not), alert precision from operator feedback and estimated from the calibrated
probabilities, alarm KPIs (ISA-18.2 style) and ingest health per connector.

Reads the store only; must not import connectors, models, ui or simulators.
"""

from pq.monitoring.drift import js_distance, js_divergence, psi
from pq.monitoring.drift_context import drift_explained, explain_drift
from pq.monitoring.kpis import alarm_kpis
from pq.monitoring.precision import precision_by_day
from pq.monitoring.precision_estimate import precision_estimate

__all__ = ["psi", "js_divergence", "js_distance", "explain_drift", "drift_explained", "alarm_kpis", "precision_by_day",
           "precision_estimate"]
