"""Storage: schema, store handle, migrations, TimescaleDB set-up and fast idempotent ingest.

Must not import connectors, models, ui or simulators.
"""

from pq.storage.engine import Store, safe_url

__all__ = ["Store", "safe_url"]
