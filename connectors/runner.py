"""Running a connector until stopped: session + spool + drainer + metrics, SIGTERM-clean.

Owns :func:`run_connector` (what ``pq connect run TAGMAP`` calls) and :func:`spool_name`. The
session starts spooling at once, even while the database is unreachable; the store is opened in
the background (retrying) and the drainer starts when it answers. On SIGTERM or SIGINT the session
disconnects, everything received goes into the spool, the drainer writes what it can within
``flush_timeout_s`` and the rest stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Callable, Iterable, Mapping

from pq.config import Settings
from pq.health import metrics, start_metrics_server
from pq.spool import SpoolDrainer, open_spool
from pq.storage.opener import StoreOpener

from connectors.tagmap import TagMap, load_tagmap, resolve_credentials

__all__ = ["run_connector", "spool_name", "lag_listener"]

logger = logging.getLogger(__name__)


def spool_name(tagmap: TagMap) -> str:
    return f"connector-{tagmap.connection.name}"


def lag_listener(connection: str, sink: list | None = None) -> Callable[[str, list, float], None]:
    """A drainer commit listener feeding the source-to-commit lag histogram (and ``sink`` if given)."""
    hist = metrics().lag.labels(connection)

    def on_commit(kind: str, payloads: list, committed_at: float) -> None:
        if kind != "samples":
            return
        for batch in payloads:
            lags = committed_at - batch.ts_us / 1e6
            if sink is not None:
                sink.append(lags)
            for v in lags[:: max(1, len(lags) // 50)]:  # a sample of each batch keeps the histogram cheap
                hist.observe(float(v))

    return on_commit


async def run_connector(tagmap: TagMap | str, settings: Settings, *, open_store: Callable[[], Any],
                        environ: Mapping[str, str] | None = None, listeners: Iterable[Any] = (),
                        stop_event: asyncio.Event | None = None, flush_timeout_s: float = 10.0,
                        install_signal_handlers: bool = True, on_started: Callable[[Any], None] | None = None) -> dict:
    """Run one connection until SIGTERM/SIGINT or ``stop_event``; returns the final health detail.

    ``open_store`` is called (in a thread, retried on StorageError: :class:`~pq.storage.opener.StoreOpener`)
    to get the store to drain into.
    """
    from connectors.opcua.session import ConnectorSession

    tm = load_tagmap(tagmap) if isinstance(tagmap, str) else tagmap
    user, password = resolve_credentials(tm, environ or {})
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port, settings.metrics_addr)
    spool = open_spool(settings, spool_name(tm))
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    drainers: list[SpoolDrainer] = []
    opener = StoreOpener(open_store, name=f"connection {tm.connection.name}", on_open=[lambda store: drainers.append(
        SpoolDrainer(spool, store, listeners=(lag_listener(tm.connection.name),)).start())]).start()
    session = ConnectorSession(tm, settings, spool=spool, listeners=listeners, username=user, password=password)
    try:
        async with session:
            if on_started is not None:
                on_started(session)
            async def _store_error():  # a wrong schema or URL ends the run at once, not at SIGTERM
                while opener.error is None:
                    await asyncio.sleep(0.5)
                stop.set()

            watcher = asyncio.ensure_future(_store_error())
            stopper = asyncio.ensure_future(stop.wait())
            ender = asyncio.ensure_future(session.wait_stopped())
            done, _ = await asyncio.wait({stopper, ender}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            watcher.cancel()
            if ender in done and ender.exception() is not None:
                raise ender.exception()
            ender.cancel()
            logger.info("connection %s: stopping; flushing the spool", tm.connection.name)
    finally:
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        opener.stop()
        if drainers:
            empty = await asyncio.to_thread(drainers[0].stop, flush_timeout_s)
            if empty:
                logger.info("connection %s: spool empty, everything is in the store", tm.connection.name)
        elif spool.depth():
            logger.warning("connection %s: store never reachable; %d records wait in %s for the next start",
                           tm.connection.name, spool.depth(), spool.path)
        detail = session.health_detail()
        spool.close()
        if opener.store is not None:
            opener.store.dispose()
    if opener.error is not None:
        raise opener.error
    return detail
