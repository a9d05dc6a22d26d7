"""Alert outputs into plant systems: MQTT, webhook, OPC UA write-back (each optional, from a TOML file).

Every output queues in memory (bounded, oldest dropped and counted), retries with backoff and
never blocks the edge's decision. Imports pq (and asyncua / paho-mqtt / httpx) only.
"""

from connectors.outputs.base import PermanentDeliveryError, QueuedOutput
from connectors.outputs.config import load_outputs, parse_outputs

__all__ = ["QueuedOutput", "PermanentDeliveryError", "load_outputs", "parse_outputs"]
