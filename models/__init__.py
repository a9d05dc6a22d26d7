"""Defect models: dataset, training, registry, scoring with explanations, reports, history import.

Imports pq only (never connectors/, ui/ or simulators/). Submodules are imported where needed so
that ``import models`` stays cheap (LightGBM loads with ``models.estimator``). See models/README.md.
"""

__all__ = ["dataset", "regimes", "metrics", "estimator", "training", "registry", "scoring", "report",
           "importer", "experiment", "cli"]
