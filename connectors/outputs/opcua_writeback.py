"""OPC UA write-back: each part's verdict written to nodes on the line's server (e.g. so the PLC diverts it).

Owns :class:`OpcUaWriteBack`: a worker thread with its own asyncio loop and one asyncua client
session (reconnected on failure), so a slow or absent server never touches the edge's event loop.
Per decision it writes the configured nodes, each optional: ``quarantine`` (Boolean: at risk, or
not scored when ``quarantine_not_scored``), ``score`` (Double; NaN when not scored), ``serial``
(String), ``decision`` (String: ok | at_risk | not_scored). The serial is written last so a PLC
that triggers on it sees a consistent set. A node's data type is read once and the value written
as that variant type. Imports pq and asyncua only.

Example::

    out = OpcUaWriteBack("plc", endpoint="opc.tcp://plc:4840",
                         nodes={"quarantine": "ns=2;s=Line1.Quarantine", "serial": "ns=2;s=Line1.Serial"}).start()
    out.on_decision({"serial": "S1", "decision": "at_risk", "score": 0.91, ...})
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Mapping

from connectors.outputs.base import PermanentDeliveryError, QueuedOutput

__all__ = ["OpcUaWriteBack", "FIELDS"]

logger = logging.getLogger(__name__)

FIELDS = ("quarantine", "score", "decision", "serial")  # write order: serial last


class OpcUaWriteBack(QueuedOutput):
    kind = "opcua"

    def __init__(self, name: str = "opcua", *, endpoint: str, nodes: Mapping[str, str], on: str = "all",
                 quarantine_not_scored: bool = False, timeout_s: float = 4.0, queue_max: int = 1000,
                 username: str | None = None, password: str | None = None):
        super().__init__(name, queue_max=queue_max)
        unknown = sorted(set(nodes) - set(FIELDS))
        if unknown or not nodes:
            raise ValueError(f"opcua write-back nodes: expected some of {', '.join(FIELDS)}, got {sorted(nodes)}")
        if on not in ("all", "at_risk"):
            raise ValueError(f"opcua write-back 'on' must be 'all' or 'at_risk', got {on!r}")
        self.endpoint, self.nodes, self.on = endpoint, dict(nodes), on
        self.quarantine_not_scored = quarantine_not_scored
        self.timeout_s = timeout_s
        self._username, self._password = username, password
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._vtypes: dict[str, Any] = {}

    def describe(self) -> str:
        return f"{self.name} ({self.endpoint})"

    def on_decision(self, decision: Mapping[str, Any]) -> None:
        verdict = decision.get("decision")
        if self.on == "at_risk" and verdict != "at_risk":
            return
        quarantine = verdict == "at_risk" or (verdict == "not_scored" and self.quarantine_not_scored)
        score = decision.get("score")
        self.offer({"quarantine": bool(quarantine),
                    "score": float(score) if score is not None else math.nan,
                    "decision": str(verdict), "serial": str(decision.get("serial", ""))})

    # -- worker side (its own event loop) -------------------------------------------------------------
    def deliver(self, msg: Mapping[str, Any]) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(asyncio.wait_for(self._write(msg), timeout=self.timeout_s * 2))
        except PermanentDeliveryError:
            raise
        except BaseException:
            self._loop.run_until_complete(self._drop_client())
            raise

    async def _connect(self):
        from asyncua import Client

        # asyncua's watchdog probes the server every watchdog_intervall s with that as its timeout
        # (default 1 s) and marks the session disconnected when a probe is late: a busy server (or
        # a starved machine) then costs a reconnect. Probe as patiently as any other request.
        client = Client(self.endpoint, timeout=self.timeout_s, watchdog_intervall=max(1.0, self.timeout_s))
        if self._username:
            client.set_user(self._username)
            client.set_password(self._password or "")
        await client.connect()
        self._client, self._vtypes = client, {}
        return client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - the session is being thrown away anyway
                logger.debug("output %s: disconnect after failure: %s", self.name, exc)

    async def _write(self, msg: Mapping[str, Any]) -> None:
        from asyncua import ua

        client = self._client or await self._connect()
        for field in FIELDS:
            node_id = self.nodes.get(field)
            if node_id is None:
                continue
            node = client.get_node(node_id)
            vtype = self._vtypes.get(node_id)
            if vtype is None:
                try:
                    vtype = self._vtypes[node_id] = await node.read_data_type_as_variant_type()
                except ua.UaStatusCodeError as exc:
                    raise PermanentDeliveryError(f"node {node_id} ({field}): {exc}") from None
            value = msg[field]
            if vtype in (ua.VariantType.Float, ua.VariantType.Double):
                value = float(value)
            elif vtype == ua.VariantType.Boolean:
                value = bool(value)
            elif vtype == ua.VariantType.String:
                value = str(value)
            try:
                await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
            except ua.UaStatusCodeError as exc:
                if "BadUserAccessDenied" in type(exc).__name__ or "BadNotWritable" in type(exc).__name__ \
                        or "BadTypeMismatch" in type(exc).__name__ or "BadNodeIdUnknown" in type(exc).__name__:
                    raise PermanentDeliveryError(f"node {node_id} ({field}): {exc}") from None
                raise

    def _disconnect(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            if self._client is not None:
                try:
                    self._loop.run_until_complete(self._drop_client())
                except RuntimeError as exc:  # the worker thread may still be inside the loop at shutdown
                    logger.debug("output %s: close: %s", self.name, exc)
