"""The connector session: one OPC UA connection that owns connect, reconnect and subscribe.

Owns :class:`ConnectorSession` and the :class:`Listener` interface of the in-memory stream.
Notifications become :class:`~pq.spool.SampleBatch` rows (rules in :mod:`connectors.opcua.convert`),
part and inspection events (:mod:`connectors.opcua.events`); both go

- at once, to in-process listeners (the edge runtime), independent of the database, and
- every ``PQ_CONNECTOR_FLUSH_INTERVAL_MS``, to the durable spool in one fsynced append.

Delivery path: asyncua 2.1 funnels every notification of a subscription through
``Subscription._deliver``; the session replaces it on its own subscription objects, so a
notification goes straight into the session's buffer with no intermediate queue, hence no silent
drop-oldest (asyncua's iterator queue holds 1,000 events and drops the oldest by default, while one
publish may carry up to ``MaxNotificationsPerPublish``). If a later asyncua lacks the hook, the
session falls back to the iterator with a 200,000-event queue and ``OverflowPolicy.DISCONNECT``,
which forces a reconnect (visible, counted) rather than losing data silently.

Reconnect: asyncua 2.1's own supervisor (``auto_reconnect=True``) probes the server every
``PQ_CONNECTOR_WATCHDOG_S`` (a hung server, TCP open and no answers, fails the probe), reconnects
with backoff capped at ``PQ_CONNECTOR_RECONNECT_MAX_DELAY_S``, reactivates or recreates the session
and transfers or recreates the subscription with the same client handles; its stale-subscription
watchdog recreates a subscription whose keep-alives stop (``keepalive_s`` in the tag map). The
session watches the client's state: one warning when the connection is lost, one info when it is
back, a ``connection_lost`` and a ``gap`` line event per line (never interpolated), and a health row.
If the first connection fails the session retries with the same backoff.

Source schema: at every connect and reconnect, when the server announces a model change (events of
the Server object on the data subscription) and when a monitored item reports Bad_NodeIdUnknown, the
session compares what the server offers with the map (:mod:`connectors.opcua.source_schema`): each
difference is a ``source_change`` line event and an ``on_source_change`` call to the listeners; a
mapped node that comes back is monitored again.

Why one file of ~880 lines: connect, reconnect, subscribe, the notification hot path and the
flush to the spool share one connection's state and one event loop; split across modules they would
reach into each other's private fields (conversion, events and the schema comparison already live in
their own modules).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, OpcEvent, OverflowPolicy, StatusChangeEvent

from pq.config import Settings
from pq.errors import ConfigError, ConnectorError
from pq.health import metrics, health_row, line_event
from pq.spool import SampleBatch, Spool, SpoolError, SpoolFull
from pq.storage.catalog import TagDef

from connectors.opcua.convert import ConvertCounters, to_row
from connectors.opcua.events import EventAssembler
from connectors.opcua.security import apply_security
from connectors.opcua.source_schema import (MODEL_CHANGE_EVENT_TYPES, NODE_GONE_CODES, SchemaWatch,
                                             SourceChange, read_source_schema)
from connectors.tagmap import TagMap, TagSpec

__all__ = ["ConnectorSession", "Listener"]

logger = logging.getLogger(__name__)

_DEADBAND = {"none": 0, "absolute": 1, "percent": 2}


class Listener(Protocol):
    """In-process consumer of a connector (the edge runtime). Every method is optional.

    Called in the connector's event loop right after each notification burst, before the data
    reaches the spool; keep them fast (hand off to your own queue). An exception is logged with
    its traceback and counted (``listener_errors``); it never stops the connector.
    """

    def on_samples(self, batch: SampleBatch) -> None: ...
    def on_part(self, part: dict) -> None: ...
    def on_inspection(self, inspection: dict) -> None: ...
    def on_state(self, connection: str, state: str, detail: dict) -> None: ...
    def on_source_change(self, changes: list[dict]) -> None:
        """The server's schema changed under the map (or went back): ``SourceChange.as_dict()`` rows, ended
        ones first; ``pauses`` says whether scores depending on ``tag`` must stop, ``ended`` that it is over."""


def _read_ids(node_ids: list[ua.NodeId], attribute: int) -> list[ua.ReadValueId]:
    """One ReadValueId per node for a batched Read of ``attribute``."""
    out = []
    for nid in node_ids:
        rv = ua.ReadValueId()
        rv.NodeId = nid
        rv.AttributeId = attribute
        out.append(rv)
    return out


def monitored_item_request(tag, node_id: ua.NodeId, handle: int) -> ua.MonitoredItemCreateRequest:
    """The monitored item pq asks for a tag: its sampling interval, queue size and deadband, oldest
    value discarded when the server's queue is full (counted through the Overflow bit), and every
    write reported (StatusValueTimestamp: a value rewritten unchanged with a new source time is a new
    sample)."""
    rv = ua.ReadValueId()
    rv.NodeId = node_id
    rv.AttributeId = ua.AttributeIds.Value
    mp = ua.MonitoringParameters()
    mp.ClientHandle = handle
    mp.SamplingInterval = tag.sampling_interval_ms
    mp.QueueSize = tag.queue_size
    mp.DiscardOldest = True
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
    flt.DeadbandType = _DEADBAND[tag.deadband_type]
    flt.DeadbandValue = tag.deadband
    mp.Filter = flt
    mir = ua.MonitoredItemCreateRequest()
    mir.ItemToMonitor = rv
    mir.MonitoringMode = ua.MonitoringMode.Reporting
    mir.RequestedParameters = mp
    return mir


class ConnectorSession:
    """Runs one tag map's connection until closed.

    Example::

        async with ConnectorSession(tagmap, settings, spool=spool, listeners=[edge]) as session:
            await session.wait_stopped()      # or: await asyncio.sleep(60)
        # leaving the block flushes what was received into the spool and disconnects
    """

    def __init__(self, tagmap: TagMap, settings: Settings, *, spool: Spool | None,
                 listeners: Iterable[Any] = (), username: str | None = None, password: str | None = None,
                 pki_dir: Path | None = None):
        self.tagmap = tagmap
        self.settings = settings
        self.spool = spool
        self.name = tagmap.connection.name
        self.endpoint = tagmap.connection.endpoint
        self.listeners = list(listeners)
        self._username, self._password = username, password
        self.pki_dir = Path(pki_dir) if pki_dir else (settings.pki_dir or Path(settings.data_dir) / "pki")
        self.tags: tuple[TagSpec, ...] = tagmap.tags
        self.keys = tuple(t.key for t in self.tags)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.assembler = EventAssembler(tagmap, self.index)
        self._watched = self.assembler.watched
        self.counters = ConvertCounters()
        n = len(self.tags)
        self.last_ts_us = np.zeros(n, np.int64)
        self.last_status = np.zeros(n, np.int64)
        self.unknown_nodes: dict[str, str] = {}  # "line/name" -> reason
        # burst buffers (filled by the delivery hook, closed by _end_burst)
        self._b_tag: list[int] = []
        self._b_ts: list[int] = []
        self._b_val: list[float] = []
        self._b_st: list[int] = []
        self._b_sts: list[int] = []
        self._b_text: dict[int, str] = {}
        self._burst_open = False
        self._burst_us = 0
        # waiting for the spool
        self._pending_batches: list[SampleBatch] = []
        self._pending_records: list[tuple[str, Any]] = []
        self._pending_samples = 0
        self._buffer_full = False
        self._spool_failing = False
        self._overflow_seen = 0
        # state
        self.state = "starting"
        self.samples_total = 0
        self.parts_total = 0
        self.inspections_total = 0
        self.dropped: dict[str, int] = {"buffer_full": 0}
        self.reconnects = 0
        self.listener_errors = 0
        self.spool_rejections = 0
        self.last_notification_us = 0
        self._lost_at: datetime | None = None
        self._last_data_before_loss: datetime | None = None
        self._lost_event_ids: dict[str, str] = {}
        self._client: Client | None = None
        self._subscription = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._fatal: BaseException | None = None
        self._connected_once = asyncio.Event()
        self._rate_mark = (time.monotonic(), 0)
        self.samples_per_s = 0.0
        self._init_source_schema()
        self._metric = {"samples": metrics().samples.labels(self.name),
                        "not_good": metrics().samples_bad.labels(self.name),
                        "connected": metrics().connected.labels(self.name),
                        "reconnects": metrics().reconnects.labels(self.name),
                        "parts": metrics().parts.labels(self.name),
                        "inspections": metrics().inspections.labels(self.name)}

    # -- lifecycle ------------------------------------------------------------------------------------
    async def __aenter__(self) -> "ConnectorSession":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        """Declare the tags (through the spool), then connect in the background."""
        for line_id in self.tagmap.lines:
            tags = [TagDef(t.name, t.unit, t.role, t.low_limit, t.high_limit, t.node_id, t.description).__dict__
                    for t in self.tags if t.line_id == line_id]
            conn = self.tagmap.connection
            self._pending_records.append(("tags", {
                "line_id": line_id, "tags": tags,
                "line_name": conn.line_name if line_id == conn.line_id else None,
                "station": conn.station if line_id == conn.line_id else None}))
        self._set_state("starting", log=False)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._connection_loop(), name=f"pq-connect-{self.name}"),
                       loop.create_task(self._flush_loop(), name=f"pq-flush-{self.name}"),
                       loop.create_task(self._health_loop(), name=f"pq-health-{self.name}")]

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait for the first successful subscription (ConnectorError on timeout or a fatal error)."""
        waiter = asyncio.ensure_future(self._connected_once.wait())
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if self._fatal is not None:
            raise self._fatal
        if not self._connected_once.is_set():
            raise ConnectorError(f"connection {self.name}: no subscription on {self.endpoint} after {timeout_s:.0f} s")

    async def wait_stopped(self) -> None:
        """Until :meth:`stop` is called or a fatal error (untrusted server, bad map) ends the session."""
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Disconnect, then move everything received into the spool (the SIGTERM path)."""
        self._stopping.set()
        conn_task = self._tasks[0] if self._tasks else None
        if conn_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(conn_task), timeout=5)
            except asyncio.TimeoutError:
                conn_task.cancel()
        if self._burst_open:
            self._end_burst()
        if self._schema_task is not None:
            self._schema_task.cancel()
        for task in self._tasks[1:]:
            task.cancel()
        for task, result in zip(self._tasks, await asyncio.gather(*self._tasks, return_exceptions=True)):
            if isinstance(result, Exception):  # a bug in a background task: shown, never swallowed
                logger.error("connection %s: task %s had failed: %r", self.name, task.get_name(), result)
        self._set_state("stopped")
        self._queue_health()
        await self._flush(final=True)
        self._stopped.set()

    # -- connection ----------------------------------------------------------------------------------
    async def check_nodes(self) -> dict:
        """Connect once (with the tag map's security), resolve every node id, disconnect: the node ids
        the server does not know, {key: reason} (``pq connect check``). Raises ConnectorError when the
        server cannot be reached."""
        client = self._new_client()
        await apply_security(client, self.tagmap.connection.security, self.pki_dir, self.endpoint,
                             self._username, self._password)
        try:
            await client.connect()
        except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
            await self._disconnect(client)
            raise ConnectorError(f"cannot connect to {self.endpoint}: {_reason(exc)}") from None
        try:
            await self._resolve_nodes(client)
        finally:
            await self._disconnect(client)
        return dict(self.unknown_nodes)

    def _new_client(self) -> Client:
        s = self.settings
        client = Client(self.endpoint, timeout=s.connector_request_timeout_s, watchdog_intervall=s.connector_watchdog_s,
                        auto_reconnect=True, reconnect_max_delay=s.connector_reconnect_max_delay_s,
                        reconnect_request_timeout=max(10.0, s.connector_request_timeout_s))
        client.session_timeout = int(self.tagmap.connection.session_timeout_s * 1000)
        return client

    async def _connection_loop(self) -> None:
        delay, warned = 0.5, False
        while not self._stopping.is_set():
            client = self._new_client()
            try:
                await apply_security(client, self.tagmap.connection.security, self.pki_dir, self.endpoint,
                                     self._username, self._password)
                await client.connect()
                await self._subscribe(client)
            except (ConnectorError, ConfigError) as exc:  # untrusted server, no matching endpoint, missing cert
                logger.error("connection %s: %s", self.name, exc)
                self._fatal = exc
                await self._disconnect(client)
                self._stopping.set()
                self._stopped.set()
                return
            except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
                reason = _reason(exc)
                if isinstance(exc, ua.UaStatusCodeError) and _is_auth_error(exc):
                    logger.error("connection %s: %s refused the user credentials (%s)", self.name, self.endpoint, reason)
                if not warned:
                    logger.warning("connection %s: cannot connect to %s (%s); retrying every <= %.0f s",
                                   self.name, self.endpoint, reason, self.settings.connector_reconnect_max_delay_s)
                    warned = True
                    self._mark_lost(reason)
                await self._disconnect(client)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, self.settings.connector_reconnect_max_delay_s)
                continue
            delay, warned = 0.5, False
            self._client = client
            self._mark_connected("subscribed")
            self._connected_once.set()
            gave_up = await self._watch_state(client)
            self._client = None
            await self._disconnect(client)
            if not gave_up:
                return

    async def _watch_state(self, client: Client) -> bool:
        """Follow asyncua's connection state until stop (False) or until its supervisor gives up (True)."""
        async with client.uaclient.subscribe_state() as changes:
            while not self._stopping.is_set():
                try:
                    state = await asyncio.wait_for(changes.next_change(), timeout=0.5)
                except asyncio.TimeoutError:
                    state = client.uaclient.state
                if state is UaClientState.CONNECTED:
                    if self.state != "connected":
                        self._mark_connected("reconnected")
                        self._request_schema_check()  # a change made during the outage
                elif state in (UaClientState.RECONNECTING, UaClientState.DISCONNECTED):
                    if self.state == "connected":
                        self._mark_lost("connection to the server lost")
                    if state is UaClientState.DISCONNECTED and not self._stopping.is_set():
                        return True
        return False

    async def _disconnect(self, client: Client) -> None:
        try:
            if client.uaclient.state not in (UaClientState.CONNECTED, UaClientState.RECONNECTING):
                # Never got a session, or its supervisor gave up: a full disconnect only logs asyncua
                # warnings. Its background tasks must stop all the same: a stale-subscription watchdog
                # left running "recovers" the old subscription on the server later and takes over the
                # publish responses meant for the new client (seen after a server restart: connected,
                # and no data).
                await _stop_background_tasks(client)
                client.disconnect_socket()
                return
            await asyncio.wait_for(client.disconnect(), timeout=3)
        except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError, AttributeError) as exc:
            logger.debug("connection %s: disconnect: %s", self.name, exc)

    async def _subscribe(self, client: Client) -> None:
        nodes = await self._resolve_nodes(client)
        conn = self.tagmap.connection
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = conn.publishing_interval_ms
        keepalive = max(1, math.ceil(conn.keepalive_s * 1000 / conn.publishing_interval_ms))
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = keepalive * 10  # the spec wants >= 3x; 10x survives short stalls
        params.MaxNotificationsPerPublish = 0  # no limit: a slow publish must not split into a backlog
        params.PublishingEnabled = True
        params.Priority = 0
        sub = await client.create_subscription(params, handler=None, queue_maxsize=200_000,
                                               overflow=OverflowPolicy.DISCONNECT)
        if hasattr(sub, "_deliver"):
            sub._deliver = self._on_event  # see module docstring: direct delivery, no drop-oldest queue
        else:  # pragma: no cover - only with an asyncua that changed its internals
            logger.warning("asyncua has no Subscription._deliver; using its iterator (200,000 events, DISCONNECT)")
            self._tasks.append(asyncio.get_running_loop().create_task(self._consume(sub)))
        requests, req_tags = [], []
        for i, tag in enumerate(self.tags):
            if tag.mode != "subscribe" or i not in nodes:
                continue
            requests.append(monitored_item_request(tag, nodes[i], i + 1))
            req_tags.append(i)
        results = await sub.create_monitored_items(requests) if requests else []
        revised = []
        for i, result in zip(req_tags, results):
            if isinstance(result, ua.StatusCode):
                self._report_unknown(i, f"monitored item refused: {result.name}")
            elif getattr(result, "RevisedQueueSize", None) and result.RevisedQueueSize < self.tags[i].queue_size:
                revised.append((i, result.RevisedQueueSize))
        if revised:
            # The server keeps fewer values per tag between publishes than the map asks for: a burst
            # longer than that is discarded on the server (oldest first) before it reaches us.
            i, q = revised[0]
            logger.warning("connection %s: the server granted a queue of %d values where the map asks for %d "
                           "(%d tags, first %s/%s); bursts beyond it are lost on the server", self.name, q,
                           self.tags[i].queue_size, len(revised), self.tags[i].line_id, self.tags[i].name)
        self._subscription = sub
        self._dead_items = {i for i, t in enumerate(self.tags) if t.mode == "subscribe" and i not in nodes} | {
            i for i, r in zip(req_tags, results) if isinstance(r, ua.StatusCode)}
        await self._subscribe_model_changes(sub)
        await self.check_source_schema(client)
        ok = len(req_tags) - sum(isinstance(r, ua.StatusCode) for r in results)
        polled = [i for i, t in enumerate(self.tags) if t.mode == "poll" and i in nodes]
        for interval in sorted({self.tags[i].poll_interval_ms for i in polled}):
            group = [i for i in polled if self.tags[i].poll_interval_ms == interval]
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._poll_loop(client, group, nodes, interval), name=f"pq-poll-{self.name}-{interval:g}"))
        logger.info("connection %s: subscribed %d of %d tags on %s (publishing %g ms), polling %d%s",
                    self.name, ok, len(self.tags), self.endpoint, sub.parameters.RequestedPublishingInterval,
                    len(polled), f"; unknown: {', '.join(self.unknown_nodes)}" if self.unknown_nodes else "")

    async def _resolve_nodes(self, client: Client) -> dict[int, ua.NodeId]:
        """Node ids from the map; nsu= URIs resolved to the server's namespace indices; unknown ones reported."""
        nodes = self._node_ids(await client.get_namespace_array(), report=True)
        # One batched read of the node class tells which node ids do not exist, by name.
        ids = list(nodes)
        if ids:
            params = ua.ReadParameters()
            params.NodesToRead = _read_ids([nodes[i] for i in ids], ua.AttributeIds.NodeClass)
            results = await client.uaclient.read(params)
            for i, dv in zip(ids, results):
                if dv.StatusCode is not None and not dv.StatusCode.is_good():
                    self._report_unknown(i, f"{dv.StatusCode.name}")
                    del nodes[i]
                elif dv.Value is not None and dv.Value.Value != ua.NodeClass.Variable:
                    self._report_unknown(i, f"node class {ua.NodeClass(dv.Value.Value).name}, expected Variable")
                    del nodes[i]
        return nodes

    def _node_ids(self, ns_array: list[str], *, report: bool = False) -> dict[int, ua.NodeId]:
        """The map's node ids with nsu= URIs turned into this server's namespace indices."""
        nodes: dict[int, ua.NodeId] = {}
        for i, tag in enumerate(self.tags):
            nid = ua.NodeId.from_string(tag.node_id)
            uri = getattr(nid, "NamespaceUri", None)
            if uri:
                if uri not in ns_array:
                    if report:
                        self._report_unknown(i, f"namespace {uri!r} is not on the server")
                    continue
                nid = ua.NodeId(nid.Identifier, ns_array.index(uri), nid.NodeIdType)
            nodes[i] = nid
        return nodes

    def _report_unknown(self, i: int, reason: str) -> None:
        tag = self.tags[i]
        key = f"{tag.line_id}/{tag.name}"
        if key not in self.unknown_nodes:
            where = f"{self.tagmap.path}:{tag.source_line}" if tag.source_line else self.tagmap.path
            logger.error("connection %s: tag %s (node %s, %s) cannot be read: %s; the other tags keep running",
                         self.name, key, tag.node_id, where, reason)
        self.unknown_nodes[key] = reason

    async def _consume(self, sub) -> None:  # pragma: no cover - fallback path
        async for ev in sub:
            self._on_event(ev)

    # -- notifications (hot path) -----------------------------------------------------------------------
    def _on_event(self, ev) -> None:
        if type(ev) is DataChangeEvent:
            mi = ev.data.monitored_item
            if not self._burst_open:
                self._burst_open = True
                self._burst_us = time.time_ns() // 1000
                asyncio.get_running_loop().call_soon(self._end_burst)
            self._append(mi.ClientHandle - 1, *to_row(mi.Value, self._burst_us, self.counters))
        elif type(ev) is StatusChangeEvent:
            status = ev.notification.Status
            logger.warning("connection %s: the server reports subscription status %s", self.name,
                           getattr(status, "name", status))
            if getattr(status, "value", None) in NODE_GONE_CODES:  # a monitored node was deleted
                self._request_schema_check()
        elif type(ev) is OpcEvent:  # the only events subscribed: the server's model change events
            logger.info("connection %s: the server announces a change of its address space", self.name)
            self._request_schema_check()
        else:
            logger.debug("connection %s: ignored %s", self.name, type(ev).__name__)

    def _end_burst(self) -> None:
        self._burst_open = False
        if not self._b_tag:
            return
        batch = SampleBatch(self.keys, np.array(self._b_tag, np.int32), np.array(self._b_ts, np.int64),
                            np.array(self._b_sts, np.int64), np.array(self._b_val, np.float64),
                            np.array(self._b_st, np.int64), self._b_text)
        self._b_tag, self._b_ts, self._b_val, self._b_st, self._b_sts, self._b_text = [], [], [], [], [], {}
        self._accept(batch)

    def _accept(self, batch: SampleBatch) -> None:
        n = len(batch)
        np.maximum.at(self.last_ts_us, batch.tag, batch.ts_us)
        self.last_status[batch.tag] = batch.status
        self.last_notification_us = time.time_ns() // 1000
        self.samples_total += n
        self._metric["samples"].inc(n)
        not_good = int(np.count_nonzero(batch.status & 0xC0000000))
        if not_good:
            self._metric["not_good"].inc(not_good)
            if np.isin(batch.status & 0xFFFF0000, NODE_GONE_CODES).any():
                self._request_schema_check()
        parts, inspections = self.assembler.finish()
        if self._pending_samples + n > self.settings.connector_buffer_max_samples:
            # The spool refuses appends (store down and spool full under policy block) for so long that
            # memory is at its bound: the newest samples are dropped, counted and logged once per episode.
            self.dropped["buffer_full"] += n
            metrics().dropped.labels(self.name, "buffer_full").inc(n)
            if not self._buffer_full:
                self._buffer_full = True
                logger.error("connection %s: %d samples waiting for the spool, dropping new samples until it "
                             "accepts again (PQ_CONNECTOR_BUFFER_MAX_SAMPLES)", self.name, self._pending_samples)
        else:
            self._pending_batches.append(batch)
            self._pending_samples += n
        for p in parts:
            self._pending_records.append(("part", p))
        for p in inspections:
            self._pending_records.append(("inspection", p))
        self.parts_total += len(parts)
        self.inspections_total += len(inspections)
        if parts:
            self._metric["parts"].inc(len(parts))
        if inspections:
            self._metric["inspections"].inc(len(inspections))
        self._emit("on_samples", batch)
        for p in parts:
            self._emit("on_part", p)
        for p in inspections:
            self._emit("on_inspection", p)

    def _emit(self, method: str, *args) -> None:
        for listener in self.listeners:
            fn = getattr(listener, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:  # a consumer's bug must not stop data collection; shown with traceback
                self.listener_errors += 1
                logger.exception("connection %s: listener %r.%s failed", self.name, listener, method)

    # -- polling fallback ------------------------------------------------------------------------------
    async def _poll_loop(self, client: Client, group: list[int], nodes: dict[int, ua.NodeId], interval_ms: float):
        params = ua.ReadParameters()
        params.NodesToRead = _read_ids([nodes[i] for i in group], ua.AttributeIds.Value)
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        last_ts: dict[int, int] = {}
        while not self._stopping.is_set():
            if self._client is not None and self._client is not client:
                return  # a new client replaced this one (its own poll tasks run now)
            started = time.monotonic()
            if client.uaclient.state is UaClientState.CONNECTED:
                try:
                    results = await client.uaclient.read(params)
                except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
                    logger.debug("connection %s: poll failed: %s", self.name, exc)  # the supervisor reports the loss
                else:
                    now_us = time.time_ns() // 1000
                    for i, dv in zip(group, results):
                        ts_us, value, status, server_us, text = to_row(dv, now_us, self.counters)
                        if last_ts.get(i) == ts_us:
                            continue  # unchanged since the last poll: not a new sample
                        last_ts[i] = ts_us
                        self._append(i, ts_us, value, status, server_us, text)
                    if not self._burst_open:
                        self._end_burst()
            await asyncio.sleep(max(0.0, interval_ms / 1000 - (time.monotonic() - started)))

    def _append(self, i: int, ts_us: int, value: float, status: int, server_us: int | None, text: str | None) -> None:
        """One sample into the current burst (subscription and polling alike), and to part assembly."""
        n = len(self._b_tag)
        self._b_tag.append(i)
        self._b_ts.append(ts_us)
        self._b_val.append(value)
        self._b_st.append(status)
        self._b_sts.append(server_us if server_us is not None else _MISSING)
        if text is not None:
            self._b_text[n] = text
        if i in self._watched:
            self.assembler.update(i, ts_us, value, status, text)

    # -- source schema ------------------------------------------------------------------------------------
    def _init_source_schema(self) -> None:
        path = None
        if self.spool is not None and getattr(self.spool, "path", None) is not None:
            path = Path(self.spool.path).with_suffix(".source-schema.json")  # beside the spool, same lifetime
        self.schema = SchemaWatch(self.tags, path)
        self.source_changes: dict[tuple, tuple[SourceChange, str, datetime]] = {}  # key -> (change, event id, since)
        self._dead_items: set[int] = set()  # subscribed tags without a live monitored item (node missing)
        self._schema_lock = asyncio.Lock()
        self._schema_task: asyncio.Task | None = None
        self._schema_due = False

    async def _subscribe_model_changes(self, sub) -> None:
        """Model change and semantic change events of the Server object, on the data subscription."""
        if hasattr(sub, "_client_handle"):  # asyncua numbers its own handles from 201; ours are 1..n
            sub._client_handle = max(sub._client_handle, len(self.tags) + 1)
        try:
            await sub.subscribe_events(ua.ObjectIds.Server, list(MODEL_CHANGE_EVENT_TYPES))
        except (ua.UaError, asyncio.TimeoutError, OSError, ConnectionError) as exc:
            logger.info("connection %s: %s offers no model change events (%s); its schema is checked at every "
                        "connect", self.name, self.endpoint, _reason(exc))

    def _request_schema_check(self) -> None:
        """Check the source schema soon (once for a burst of events), in the background."""
        self._schema_due = True
        if self._schema_task is None or self._schema_task.done():
            self._schema_task = asyncio.get_running_loop().create_task(self._schema_loop(),
                                                                       name=f"pq-schema-{self.name}")

    async def _schema_loop(self) -> None:
        while self._schema_due and not self._stopping.is_set():
            self._schema_due = False
            # The events of one change arrive in one publish: a short pause makes them one check, and
            # keeps short the time a part could be decided on values from after the change.
            await asyncio.sleep(0.05)
            client = self._client
            if client is None or client.uaclient.state is not UaClientState.CONNECTED:
                return  # the next (re)connect checks
            await self.check_source_schema(client)

    async def check_source_schema(self, client: Client) -> list[dict]:
        """Compare what the server offers with what the map expects; record and tell what changed since
        the last check (new differences, and differences that are gone). Returns those rows."""
        async with self._schema_lock:
            try:
                nodes = self._node_ids(await client.get_namespace_array())
                facts, children = await read_source_schema(client, nodes)
                found = self.schema.compare(nodes, facts, children)
                self.schema.learn(facts, children)
                await self._revive_items(nodes, facts)
            except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
                logger.warning("connection %s: cannot read the source schema of %s (%s); checking again at the "
                               "next reconnect or model change", self.name, self.endpoint, _reason(exc))
                return []
            return self._report_source_changes(found)

    async def _revive_items(self, nodes: dict[int, ua.NodeId], facts) -> None:
        """A subscribed tag whose node went away has no live monitored item; when the node is back,
        monitor it again (the values then flow and its scores resume)."""
        revive = []
        for i, f in facts.items():
            if not f.present:  # listed like a node unknown at start (health detail, `pq connect check`)
                self.unknown_nodes[f"{self.tags[i].line_id}/{self.tags[i].name}"] = f.status or "missing"
            if self.tags[i].mode != "subscribe":
                continue
            if not f.present:
                self._dead_items.add(i)
            elif i in self._dead_items and self._subscription is not None:
                revive.append(i)
        if not revive:
            return
        results = await self._subscription.create_monitored_items(
            [monitored_item_request(self.tags[i], nodes[i], i + 1) for i in revive])
        for i, r in zip(revive, results):
            if not isinstance(r, ua.StatusCode):
                self._dead_items.discard(i)
                self.unknown_nodes.pop(f"{self.tags[i].line_id}/{self.tags[i].name}", None)
                logger.info("connection %s: tag %s/%s is on the server again; monitoring it", self.name,
                            self.tags[i].line_id, self.tags[i].name)

    def _report_source_changes(self, found: list[SourceChange]) -> list[dict]:
        now = datetime.now(timezone.utc)
        source = f"connector:{self.name}"
        current = {c.key: c for c in found}
        out: list[dict] = []
        for key in [k for k in self.source_changes if k not in current]:  # back as expected: ended first
            c, ev_id, since = self.source_changes.pop(key)
            self._pending_records.append(("line_event", line_event(
                "source_change", source, line_id=c.line_id, started_at=since, ended_at=now, event_id=ev_id,
                detail=c.as_dict(ended=True))))
            logger.info("connection %s: tag %s/%s is as expected again (was: %s)", self.name, c.line_id, c.tag,
                        c.what())
            out.append(c.as_dict(ended=True))
        for key, c in current.items():
            if key in self.source_changes:
                continue
            if c.kind == "added":  # information, said once: from now on the new variable is known
                self.schema.accept_child(c.parent_id, c.tag)
                self._pending_records.append(("line_event", line_event(
                    "source_change", source, line_id=c.line_id, started_at=now, ended_at=now, detail=c.as_dict())))
                logger.info("connection %s: %s", self.name, c.message())
            else:
                ev = line_event("source_change", source, line_id=c.line_id, started_at=now, detail=c.as_dict())
                self.source_changes[key] = (c, ev["id"], now)
                self._pending_records.append(("line_event", ev))
                logger.warning("connection %s: %s (node %s)", self.name, c.message(), c.node_id)
            out.append(c.as_dict())
        if out:
            self._emit("on_source_change", out)
            self._queue_health()
        return out

    # -- state, events, health ---------------------------------------------------------------------------
    def _set_state(self, state: str, *, log: bool = True, detail: dict | None = None) -> None:
        self.state = state
        self._metric["connected"].set(1 if state == "connected" else 0)
        self._emit("on_state", self.name, state, detail or {})

    def _mark_lost(self, reason: str) -> None:
        if self._lost_at is not None:  # already lost: one event per outage, however many retries
            return
        now = datetime.now(timezone.utc)
        was_connected = self.state == "connected"
        self._set_state("lost", detail={"reason": reason})
        self._lost_at = now
        self._last_data_before_loss = datetime.fromtimestamp(self.last_notification_us / 1e6, timezone.utc) \
            if self.last_notification_us else now
        if was_connected:
            logger.warning("connection %s: lost %s (%s); reconnecting", self.name, self.endpoint, reason)
        self._lost_event_ids = {}
        for line_id in self.tagmap.lines:
            ev = line_event("connection_lost", f"connector:{self.name}", line_id=line_id, started_at=now,
                            detail={"endpoint": self.endpoint, "reason": reason})
            self._lost_event_ids[line_id] = ev["id"]
            self._pending_records.append(("line_event", ev))
        self._queue_health()

    def _mark_connected(self, how: str) -> None:
        now = datetime.now(timezone.utc)
        if self._lost_at is not None:
            down_s = (now - self._lost_at).total_seconds()
            if how == "reconnected" or self._connected_once.is_set():
                self.reconnects += 1
                self._metric["reconnects"].inc()
            logger.info("connection %s: %s to %s after %.1f s", self.name, "reconnected" if self._connected_once.is_set()
                        else "connected", self.endpoint, down_s)
            for line_id in self.tagmap.lines:
                ev_id = self._lost_event_ids.get(line_id)
                if ev_id:
                    self._pending_records.append(("line_event", line_event(
                        "connection_lost", f"connector:{self.name}", line_id=line_id, started_at=self._lost_at,
                        ended_at=now, event_id=ev_id, detail={"endpoint": self.endpoint, "down_s": round(down_s, 3)})))
                # The data gap: from the last value received before the loss to the recovery.
                # Values the server produced meanwhile and did not keep are missing, never interpolated.
                self._pending_records.append(("line_event", line_event(
                    "gap", f"connector:{self.name}", line_id=line_id, started_at=self._last_data_before_loss or
                    self._lost_at, ended_at=now, detail={"endpoint": self.endpoint, "down_s": round(down_s, 3)})))
            self._lost_at = None
        elif how == "subscribed":
            logger.info("connection %s: connected to %s", self.name, self.endpoint)
        self._set_state("connected")
        self._queue_health()

    def health_detail(self) -> dict:
        now_m = time.monotonic()
        mark_t, mark_n = self._rate_mark
        if now_m - mark_t >= 1.0:
            self.samples_per_s = (self.samples_total - mark_n) / (now_m - mark_t)
            self._rate_mark = (now_m, self.samples_total)
        tags = {}
        for i, t in enumerate(self.tags):
            ts = int(self.last_ts_us[i])
            tags[f"{t.line_id}/{t.name}"] = {
                "last_ts": datetime.fromtimestamp(ts / 1e6, timezone.utc).isoformat() if ts else None,
                "status": int(self.last_status[i])}
        sub = self._subscription
        last_publish_age = None
        if sub is not None and getattr(sub, "last_publish_at", None):
            last_publish_age = round(time.monotonic() - sub.last_publish_at, 3)
        return {
            "endpoint": self.endpoint, "state": self.state, "samples_total": self.samples_total,
            "samples_per_s": round(self.samples_per_s, 1), "parts_total": self.parts_total,
            "inspections_total": self.inspections_total, "dropped": dict(self.dropped),
            "reconnects": self.reconnects, "unknown_nodes": dict(self.unknown_nodes),
            "conversion": self.counters.as_dict(), "bad_serial": self.assembler.bad_serial,
            "bad_result": self.assembler.bad_result, "listener_errors": self.listener_errors,
            "buffered_samples": self._pending_samples, "spool_rejections": self.spool_rejections,
            "spool": self.spool.stats() if self.spool is not None else None,
            "last_publish_age_s": last_publish_age,
            "source_changes": [c.message() for c, _, _ in self.source_changes.values() if c.pauses],
            "last_notification_at": datetime.fromtimestamp(self.last_notification_us / 1e6, timezone.utc).isoformat()
            if self.last_notification_us else None,
            "tags": tags,
        }

    def _queue_health(self) -> None:
        self._pending_records.append(("health", health_row(f"connector:{self.name}", self.state,
                                                           line_id=self.tagmap.connection.line_id,
                                                           detail=self.health_detail())))

    async def _health_loop(self) -> None:
        interval = self.settings.connector_health_interval_s
        silent_logged = False
        while True:
            await asyncio.sleep(interval)
            sub = self._subscription
            if self.state == "connected" and sub is not None and getattr(sub, "last_publish_at", None):
                silence = time.monotonic() - sub.last_publish_at
                limit = max(3 * self.tagmap.connection.keepalive_s, 2 * interval)
                if silence > limit and not silent_logged:
                    logger.warning("connection %s: no publish response or keep-alive for %.1f s (subscription "
                                   "silent); asyncua's watchdog recreates it", self.name, silence)
                    silent_logged = True
                elif silence <= limit and silent_logged:
                    logger.info("connection %s: subscription publishing again", self.name)
                    silent_logged = False
            if self.counters.server_overflow > self._overflow_seen:
                # Values lost on the server (its per-tag queue overflowed), reported by the Overflow bit:
                # raise queue_size in the tag map, or lower publishing_interval_ms.
                logger.warning("connection %s: the server reports %d queue overflow(s) since the last check "
                               "(values discarded before they were sent; raise queue_size in the tag map)",
                               self.name, self.counters.server_overflow - self._overflow_seen)
                self._overflow_seen = self.counters.server_overflow
            self._queue_health()
            if self.spool is not None:
                st = self.spool.stats()
                metrics().spool_depth.labels(self.spool.name).set(st["depth_records"])
                metrics().spool_bytes.labels(self.spool.name).set(st["bytes"])
                metrics().spool_age.labels(self.spool.name).set(st["oldest_age_s"])

    # -- spool -----------------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        interval = self.settings.connector_flush_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self._flush(final=False)

    async def _flush(self, *, final: bool) -> None:
        if self.spool is None:
            self._pending_batches, self._pending_records, self._pending_samples = [], [], 0
            return
        if not self._pending_batches and not self._pending_records:
            return
        batches, records = self._pending_batches, self._pending_records
        n = self._pending_samples
        self._pending_batches, self._pending_records, self._pending_samples = [], [], 0
        items: list[tuple[str, Any]] = []
        tags_first = [r for r in records if r[0] == "tags"]
        items.extend(tags_first)
        if batches:
            items.append(("samples", SampleBatch.concat(batches)))
        items.extend(r for r in records if r[0] != "tags")
        try:
            await asyncio.to_thread(self.spool.append_many, items,
                                    timeout_s=self.spool.block_timeout_s if final else min(
                                        self.spool.block_timeout_s, 1.0))
        except SpoolError as exc:
            # SpoolFull: the store is down and the spool at its bound (policy block). Otherwise the
            # spool's disk is full or failing. Either way the data stays in memory (bounded by
            # PQ_CONNECTOR_BUFFER_MAX_SAMPLES) and the next flush retries; one error per episode.
            self.spool_rejections += 1
            if not isinstance(exc, SpoolFull) and not self._spool_failing:
                self._spool_failing = True
                logger.error("connection %s: the spool %s refuses appends (%s); holding data in memory and "
                             "retrying", self.name, self.spool.path, exc)
            # keep everything, oldest first, ahead of what arrived meanwhile
            self._pending_batches = batches + self._pending_batches
            self._pending_records = records + self._pending_records
            self._pending_samples += n
            if final:
                logger.error("connection %s: %d samples and %d records could not be spooled at shutdown: %s",
                             self.name, n, len(records), exc)
                self.dropped["shutdown_spool_full"] = self.dropped.get("shutdown_spool_full", 0) + n
            return
        if self._spool_failing:
            self._spool_failing = False
            logger.info("connection %s: the spool accepts appends again", self.name)
        if self._buffer_full and self._pending_samples < self.settings.connector_buffer_max_samples // 2:
            self._buffer_full = False
            logger.info("connection %s: spool accepts samples again (dropped so far: %d)", self.name,
                        self.dropped["buffer_full"])


_MISSING = np.iinfo(np.int64).min


async def _stop_background_tasks(client: Client) -> None:
    """Stop asyncua's supervisor, stale-subscription watchdog and channel renewal of an abandoned client."""
    client.uaclient.request_disconnect()
    for name in ("_stale_watchdog_task", "_supervisor_task", "_renew_channel_task"):
        task = getattr(client, name, None)
        if isinstance(task, asyncio.Task) and not task.done() and task is not asyncio.current_task():
            task.cancel()
            try:
                await asyncio.wait_for(task, 2.0)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception as exc:  # its own failure: we are abandoning it anyway; recorded at debug
                logger.debug("stopping %s of an abandoned client: %r", name, exc)
        setattr(client, name, None) if hasattr(client, name) else None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _is_auth_error(exc: ua.UaStatusCodeError) -> bool:
    code = getattr(exc, "code", None)
    return code in (ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenInvalid,
                    ua.StatusCodes.BadIdentityTokenRejected)
