"""Defect models: dataset, training, registry, scoring with explanations, reports, history import.

Imports pq only (never connectors/, ui/ or simulators/). Submodules are imported where needed so
that ``import models`` stays cheap (LightGBM loads with ``models.estimator``). See models/README.md.
"""

import os

# LightGBM trains with OpenMP threads that spin while they wait for each other. On a shared 2-core
# box (an edge PC, a CI runner) a spinning thread steals the core its partner needs: AI4I training
# took 20-24 s with 2 threads under load and 2-5 s with passive waiting (1.5-0.8 ms against
# 8-10 ms per tree). The OpenMP runtime reads this once when LightGBM's library loads, which is
# always through this package; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["dataset", "regimes", "metrics", "estimator", "training", "registry", "scoring", "report",
           "importer", "experiment", "decisions", "thresholds", "oracle", "protocol", "history", "distributed"]
