"""``pq alarms``: serve pq's operator alarms to the plant HMI over OPC UA Alarms & Conditions.

Wires :class:`connectors.opcua.alarm_server.AlarmServer` to the store (imported inside the command,
so ``pq --help`` does not load asyncua). The database may be down at start: the server listens at
once and mirrors alerts from the moment the store answers (:class:`~pq.storage.opener.StoreOpener`
retries and logs the outage and the recovery once each).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

__all__ = ["alarms"]


@click.group()
def alarms():
    """OPC UA Alarms & Conditions server: pq's alarms in the plant HMI (Ignition, WinCC, ...)."""


@alarms.command()
@click.option("--endpoint", default=None, help="Endpoint to listen on (default PQ_ALARMS_ENDPOINT, "
              "opc.tcp://0.0.0.0:4850).")
@click.option("--no-anonymous", is_flag=True, help="Refuse anonymous sessions (by default they may browse and "
              "subscribe, never acknowledge or shelve).")
@click.option("--no-none-policy", is_flag=True, help="Offer only Basic256Sha256 and Aes256_Sha256_RsaPss "
              "with SignAndEncrypt (refuse the unsecured None policy).")
@click.option("--pki-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the server certificate is kept, created on first start (default PQ_PKI_DIR, "
              "else PQ_DATA_DIR/pki).")
def serve(endpoint: str | None, no_anonymous: bool, no_none_policy: bool, pki_dir: Path | None):
    """Serve the store's alerts as OPC UA conditions until SIGTERM / Ctrl-C.

    HMI users log in with their pq user name and password (`pq users add`); acknowledging or
    shelving needs the role operator or above and is recorded as that user, as on the Alerts page.
    An HMI connecting with security is refused until its certificate is moved from
    PKI/alarm-clients/rejected into PKI/alarm-clients/trusted (or PQ_ALARMS_TRUST_UNKNOWN_CLIENTS=true).
    """
    from connectors.opcua.alarm_server import AlarmServer
    from pq.cli import get_settings
    from pq.storage import Store, migrate
    from pq.storage.opener import StoreOpener

    settings = get_settings()
    endpoint = endpoint or settings.alarms_endpoint
    pki = pki_dir or (Path(settings.pki_dir) if settings.pki_dir else Path(settings.data_dir) / "pki")
    server = AlarmServer(None, endpoint=endpoint, pki_dir=pki, poll_s=settings.alarms_poll_s,
                         allow_anonymous=settings.alarms_allow_anonymous and not no_anonymous,
                         allow_none_policy=settings.alarms_allow_none_policy and not no_none_policy,
                         trust_unknown_clients=settings.alarms_trust_unknown_clients,
                         max_shelve_s=settings.ui_shelve_max_h * 3600.0)

    def open_store():  # also called from the opener's thread while the database is down
        store = Store.open(settings, wait=False)
        migrate.check(store)
        return store

    opener = StoreOpener(open_store, on_open=[server.set_store], retry_s=2.0, name="alarms server")
    if not opener.try_once():
        click.echo("alarms: the store is not reachable yet; serving without alarms and retrying every 2 s", err=True)
        opener.start()
    try:
        asyncio.run(_serve(server, opener))
    finally:
        opener.stop()
    click.echo(f"alarms: stopped after {server.events_sent} events", err=True)


async def _serve(server, opener) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {server.endpoint}: {exc.strerror or exc}") from None
    click.echo(f"alarms: serving on {server.endpoint} (certificate {server.certificate_path}); "
               "SIGTERM / Ctrl-C stops", err=True)
    try:
        while not stop.is_set():
            if opener.error is not None:  # a schema to upgrade, a wrong URL: waiting will not help
                raise click.ClickException(f"alarms: cannot use the store: {opener.error}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
    finally:
        await server.stop()
