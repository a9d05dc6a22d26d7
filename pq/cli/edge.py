"""``pq edge``: run the edge runtime of one line (a composition root).

This module wires concrete objects into :class:`~pq.edge.runtime.LineRuntime`: the OPC UA connector
(``connectors``), the production model from the registry (``models``), the streaming features, the
durable spool and its drainer, the plant outputs (the wiring itself is :class:`pq.cli.edge_process.EdgeProcess`).
Those packages are imported INSIDE functions only, so ``pq --help`` stays light and ``pq/`` keeps its
import boundary.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

__all__ = ["edge"]

logger = logging.getLogger(__name__)


@click.group()
def edge():
    """Edge runtime: score parts as they are made, raise explained alerts."""


@edge.command()
@click.option("--line", "line_id", required=True, help="Line id this process decides for (one process per line).")
@click.option("--tagmap", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tag map of the line's OPC UA server (default: connectors/tagmaps/simulator.toml).")
@click.option("--outputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Alert outputs TOML (MQTT, webhook, OPC UA write-back); default PQ_EDGE_OUTPUTS_FILE.")
@click.option("--feature-spec", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Feature set TOML the production models use (default: the shipped spec).")
@click.option("--station", default=None, help="Station name shown on alerts (default: the tag map's connection station).")
def run(line_id: str, tagmap: Path | None, outputs: Path | None, feature_spec: Path | None, station: str | None):
    """Run the edge of LINE until SIGTERM / Ctrl-C: connector -> features -> model -> alerts -> outputs."""
    from pq.cli import get_settings
    from pq.cli.edge_process import EdgeProcess
    from pq.storage import Store, migrate

    settings = get_settings()

    def open_store():  # also called from a background thread while the database is down: no click context
        store = Store.open(settings)
        migrate.check(store)
        return store

    proc = EdgeProcess(line_id, settings=settings, open_store=open_store, tagmap=tagmap, outputs_file=outputs,
                       feature_spec=feature_spec, station=station)
    proc.start()
    st = proc.watcher.status()
    click.echo(f"edge {line_id}: model {st['model_version_id'] or 'none'}; outputs: "
               f"{', '.join(o.describe() for o in proc.outputs) or 'none'}; SIGTERM / Ctrl-C stops", err=True)
    try:
        asyncio.run(proc.run(signals=True))
    finally:
        counts = proc.close()
        click.echo(f"edge {line_id}: stopped; decisions {counts}", err=True)
