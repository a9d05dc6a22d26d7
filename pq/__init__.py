"""pq: industrial predictive quality.

The core package: configuration, storage, features, alerts, the edge runtime and the CLI. It imports
none of ``connectors``, ``models``, ``ui`` or ``simulators``; only :mod:`pq.cli` wires them together.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
