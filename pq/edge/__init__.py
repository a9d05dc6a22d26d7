"""Edge runtime: one process per line scores every part in memory and raises explained alerts.

Modules: ``runtime`` (LineRuntime), ``interfaces`` (the Protocols it is built on), ``ringbuffer``,
``modelwatch`` (hot reload), ``records`` (spool kinds and store writers), ``metrics``
(Prometheus) and ``cli`` (the composition root; ``benchmarks/edge.py`` is another). Must not
import connectors, models, ui or simulators outside the composition roots' command functions.
"""

from pq.edge.interfaces import PartEvent, Sample
from pq.edge.runtime import Decision, LineRuntime

__all__ = ["LineRuntime", "Decision", "PartEvent", "Sample"]
