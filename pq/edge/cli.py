"""``pq edge``: run the edge runtime of one line (a composition root).

This module wires concrete objects into :class:`~pq.edge.runtime.LineRuntime`: the OPC UA connector
(``connectors``), the production model from the registry (``models``), the streaming features, the
durable spool and its drainer, the plant outputs. Those packages are imported INSIDE the command
function only, so ``pq --help`` stays light and ``pq/`` keeps its import boundary.
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


def _latest_playbook(store):
    from sqlalchemy import select

    from pq.storage import schema

    t = schema.playbook_versions
    with store.engine.connect() as conn:
        row = conn.execute(select(t.c.id, t.c.content).order_by(t.c.id.desc()).limit(1)).first()
    return (row.id, row.content) if row else None


@edge.command()
@click.option("--line", "line_id", required=True, help="Line id this process decides for (one process per line).")
@click.option("--tagmap", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tag map of the line's OPC UA server (default: connectors/tagmaps/simulator.toml).")
@click.option("--outputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Alert outputs TOML (MQTT, webhook, OPC UA write-back); default PQ_EDGE_OUTPUTS_FILE.")
@click.option("--feature-spec", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Feature set TOML the production models use (default: the shipped spec).")
@click.option("--station", default=None, help="Station name shown on alerts (default: the line's station in the store).")
def run(line_id: str, tagmap: Path | None, outputs: Path | None, feature_spec: Path | None, station: str | None):
    """Run the edge of LINE until SIGTERM / Ctrl-C: connector -> features -> model -> alerts -> outputs."""
    from connectors.outputs.config import load_outputs
    from connectors.runner import run_connector
    from connectors.tagmap import load_tagmap
    from models.registry import production_version
    from models.scoring import Scorer
    from pq.alerts.playbook import PlaybookLoader
    from pq.cli import get_settings, open_store
    from pq.edge import records
    from pq.edge.metrics import EdgeMetrics
    from pq.edge.modelwatch import ModelWatcher
    from pq.edge.runtime import LineRuntime
    from pq.errors import ConfigError
    from pq.features import StreamingFeatures, load_feature_set
    from pq.spool import SpoolDrainer, open_spool

    settings = get_settings()
    tm = load_tagmap(str(tagmap or Path(__file__).resolve().parents[2] / "connectors" / "tagmaps" / "simulator.toml"))
    fs = load_feature_set(feature_spec)
    store = open_store()
    records.register()

    def make_features(scorer):
        if scorer.feature_set_version != fs.version:
            raise ConfigError(f"model {scorer.version_id} needs feature set {scorer.feature_set_version!r}, this edge "
                              f"computes {fs.version!r}; start it with --feature-spec for that version")
        return StreamingFeatures(fs, scorer.baseline, capacity_s=settings.edge_feature_capacity_s,
                                 max_rate_hz=settings.edge_max_rate_hz)

    def resolve(product):
        v = production_version(store, line_id, product)
        return v.id if v is not None else None

    watcher = ModelWatcher(line_id, resolve=resolve, load=lambda vid: Scorer.from_version(store, vid),
                           poll_s=settings.edge_model_poll_s).start()
    spool = open_spool(settings, f"edge-{line_id}")
    drainer = SpoolDrainer(spool, store).start()
    outs = load_outputs(outputs or settings.edge_outputs_file, settings, line_id)
    rt = LineRuntime(line_id, scorers=watcher, feature_factory=make_features, sink=spool, settings=settings,
                     outputs=outs, store=store, metrics=EdgeMetrics(), station=station,
                     playbook=PlaybookLoader(settings.edge_playbook_file, latest_stored=lambda: _latest_playbook(store)))
    click.echo(f"edge {line_id}: warming up ({rt.warm_up():.1f} s); model {watcher.status()['model_version_id']}; "
               f"outputs: {', '.join(o.describe() for o in outs) or 'none'}", err=True)

    async def main():
        stop = asyncio.Event()
        hk = asyncio.create_task(rt.housekeeping(stop))
        try:
            await run_connector(tm, settings, open_store=lambda: store, listeners=[rt], stop_event=stop)
        finally:
            stop.set()
            await asyncio.gather(hk, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        rt._set_state("stopped", "edge runtime stopped")
        rt.close()
        for o in outs:
            o.close()
        watcher.stop()
        drainer.stop(flush_timeout_s=10)
        spool.close()
        click.echo(f"edge {line_id}: stopped; decisions {rt.counts}", err=True)
