"""``pq connect``: browse a server, make a client certificate, check and run a tag map.

The commands read settings through ``pq.cli.get_settings`` and open the store through
``pq.cli.open_store``; asyncio runs only here (``asyncio.run``). Environment variables named by a
tag map (user name, password) are read here, at the entry point, and passed down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import click

logger = logging.getLogger(__name__)

__all__ = ["connect"]


def _pki_dir(settings) -> Path:
    return Path(settings.pki_dir) if settings.pki_dir else Path(settings.data_dir) / "pki"


@click.group()
def connect():
    """OPC UA connector: browse a server, certificates, check and run a tag map."""


@connect.command()
@click.argument("url")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the starter tag map here (default: print it).")
@click.option("--name", default="plant", show_default=True, help="Connection name in the map.")
@click.option("--line-id", default="line-1", show_default=True, help="Line id of the tags.")
@click.option("--lines-from", type=int, default=None,
              help="Take each tag's line id from this level of its browse path (0 = first object under Objects).")
@click.option("--max-nodes", type=int, default=5000, show_default=True, help="Stop browsing after this many nodes.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def browse(url, out, name, line_id, lines_from, max_nodes, overwrite):
    """Walk URL's address space and write a starter tag map (security None for browsing)."""
    from connectors.browse import browse_server, starter_tagmap, write_starter
    from pq.cli import get_settings

    settings = get_settings()
    variables = asyncio.run(browse_server(url, max_nodes=max_nodes, timeout_s=settings.connector_request_timeout_s))
    if not variables:
        raise click.ClickException(f"browse {url}: no variables found under Objects")
    text = starter_tagmap(url, variables, name=name, line_id=line_id, lines_from=lines_from)
    if out is None:
        click.echo(text)
    else:
        write_starter(out, text, overwrite=overwrite)
        click.echo(f"{out}: {len(variables)} tags; check it with `pq connect check {out}`")


@connect.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for client_cert.der and client_key.pem (default PQ_PKI_DIR or PQ_DATA_DIR/pki).")
@click.option("--host", default=None, help="Host name in the certificate (default: this machine's).")
@click.option("--force", is_flag=True, help="Replace an existing certificate and key.")
def cert(out_dir, host, force):
    """Create the connector's self-signed client certificate and key (kept if still valid)."""
    from connectors.opcua.security import application_uri, ensure_client_certificate, fingerprint
    from cryptography import x509
    from pq.cli import get_settings

    pki = out_dir or _pki_dir(get_settings())
    cert_path, key_path, created = asyncio.run(
        ensure_client_certificate(pki / "client_cert.der", pki / "client_key.pem", host=host, force=force))
    (pki / "trusted").mkdir(parents=True, exist_ok=True)
    c = x509.load_der_x509_certificate(cert_path.read_bytes())
    click.echo(f"{'created' if created else 'kept'} {cert_path} (key {key_path}, mode 600)")
    click.echo(f"application URI {application_uri(host)}; valid until {c.not_valid_after_utc:%Y-%m-%d}")
    click.echo(f"SHA-256 {fingerprint(c)}")
    click.echo(f"Give {cert_path} to the server's trust list; put the server's certificate in {pki / 'trusted'}.")


@connect.command()
@click.argument("tagmap", type=click.Path(exists=True, dir_okay=False))
@click.option("--offline", is_flag=True, help="Only validate the file; do not contact the server.")
def check(tagmap, offline):
    """Validate TAGMAP and resolve its node ids on the server (unknown ones are listed by name)."""
    from connectors.tagmap import load_tagmap

    tm = load_tagmap(tagmap)
    click.echo(f"{tagmap}: {len(tm.tags)} tags on lines {', '.join(tm.lines)}, "
               f"{len(tm.part_events)} part event(s), {len(tm.inspections)} inspection block(s)")
    if offline:
        return
    from pq.cli import get_settings

    unknown = asyncio.run(_check_nodes(tm, get_settings()))
    if unknown:
        for key, reason in unknown.items():
            click.echo(f"  unknown: {key}: {reason}", err=True)
        raise click.ClickException(f"{len(unknown)} of {len(tm.tags)} node ids cannot be read on {tm.connection.endpoint}")
    click.echo(f"all {len(tm.tags)} node ids resolve on {tm.connection.endpoint}")


async def _check_nodes(tm, settings) -> dict:
    from connectors.opcua.session import ConnectorSession
    from connectors.tagmap import resolve_credentials

    user, password = resolve_credentials(tm, os.environ)
    return await ConnectorSession(tm, settings, spool=None, username=user, password=password).check_nodes()


@connect.command()
@click.argument("tagmap", type=click.Path(exists=True, dir_okay=False))
@click.option("--flush-timeout", type=float, default=10.0, show_default=True,
              help="Seconds to keep writing the spool to the store after SIGTERM.")
def run(tagmap, flush_timeout):
    """Run TAGMAP's connection until SIGTERM/Ctrl-C (the spool is flushed; what is left stays on disk)."""
    from connectors.runner import run_connector
    from pq.cli import get_settings, open_store

    ctx = click.get_current_context()
    settings = get_settings(ctx)
    detail = asyncio.run(run_connector(tagmap, settings, open_store=lambda: open_store(ctx), environ=os.environ,
                                       flush_timeout_s=flush_timeout))
    summary = {k: detail[k] for k in ("samples_total", "parts_total", "inspections_total", "dropped", "reconnects")}
    click.echo(json.dumps(summary))
