"""Edge runtime: one process per line scores every part in memory and raises explained alerts.

Modules: ``runtime`` (LineRuntime: input and decision), ``checks`` (can this part be scored),
``line_state`` (scoring / degraded / no model, and its line events), ``spool_writer`` (records to the
durable spool off the event loop), ``housekeeping`` (store, playbook, timers, metrics beside the
decisions), ``interfaces`` (the Protocols it is built on), ``ringbuffer``, ``modelwatch`` (hot
reload), ``records`` (spool kinds and store writers) and ``metrics`` (Prometheus). Must not import
connectors, models, ui or simulators: the composition root (``pq/cli/edge_process.py``) wires them.
"""

from pq.edge.interfaces import PartEvent, Sample
from pq.edge.runtime import Decision, LineRuntime

__all__ = ["LineRuntime", "Decision", "PartEvent", "Sample"]
