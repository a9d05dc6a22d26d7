"""`pq features`: show the feature set, backfill vectors from raw samples, warm the Numba cache.

Owns the click group `features` (wired by pq/cli.py as `pq features`). Opens the store through
pq.cli's helpers inside each command; must not import connectors/, models/, ui/ or simulators/.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from pq.cli import iso_time

logger = logging.getLogger(__name__)

__all__ = ["features"]


spec_option = click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, help="Feature spec TOML (default: the shipped default_spec.toml).")


@click.group("features")
def features() -> None:
    """Feature sets: show the spec, backfill vectors from raw samples."""


@features.command("show")
@spec_option
@click.option("--json", "as_json", is_flag=True, help="Print version, fingerprint and names as JSON.")
def show(spec_path: Path | None, as_json: bool) -> None:
    """Print the feature set: version, windows, groups and every feature name in vector order."""
    from pq.features.spec import load_feature_set

    fs = load_feature_set(spec_path)
    if as_json:
        click.echo(json.dumps({"version": fs.version, "fingerprint": fs.fingerprint,
                               "tags": list(fs.tags), "features": list(fs.feature_names)}))
        return
    click.echo(f"feature set {fs.version} ({len(fs.feature_names)} features, fingerprint {fs.fingerprint[:12]})")
    for w in fs.window_list:
        click.echo(f"  window {w.name}: start = cycle_start + {w.start_frac:g}*duration + {w.start_offset_s:g} s, "
                   f"end = cycle_start + {w.end_frac:g}*duration + {w.end_offset_s:g} s")
    for g in fs.groups:
        click.echo(f"  {g.label}: {', '.join(g.stats)} (min_good {g.min_good})")
    for c in fs.context:
        click.echo(f"  context {c.name}: {c.kind}{' ' + c.encoding if c.kind == 'category' else ''}")
    for d in fs.derived:
        click.echo(f"  derived {d.name} = {d.expr}")


@features.command("backfill")
@spec_option
@click.option("--line", "line_id", default=None, help="Only this line (default: all).")
@click.option("--since", default=None, help="Parts whose cycle ended after this ISO time.")
@click.option("--until", default=None, help="Parts whose cycle ended at or before this ISO time.")
@click.option("--baseline", "baseline_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="ContextBaseline JSON (to_dict); without it dev_baseline features are NaN.")
@click.option("--batch-parts", default=5000, show_default=True, help="Parts computed per batch.")
def backfill_cmd(spec_path, line_id, since, until, baseline_path, batch_parts) -> None:
    """Recompute part vectors from raw samples in the store under a (new) feature-set version.

    Rows served by the edge are kept as they are (training uses what the edge saw); backfill rows
    are refreshed, so re-running is safe."""
    from pq.cli import open_store
    from pq.features.backfill import backfill
    from pq.features.baseline import ContextBaseline
    from pq.features.spec import load_feature_set

    fs = load_feature_set(spec_path)
    bl = ContextBaseline.from_dict(json.loads(baseline_path.read_text())) if baseline_path else None
    store = open_store()
    try:
        counts = backfill(store, fs, baseline=bl, line_id=line_id, since=iso_time(since), until=iso_time(until),
                          batch_parts=batch_parts,
                          progress=lambda line, done, total: click.echo(f"  {line}: {done}/{total} parts", err=True))
    finally:
        store.dispose()
    click.echo(f"backfill {fs.version}: {counts['written']} vectors written from {counts['samples']:,} samples "
               f"({counts['incomplete']} incomplete, see reason)")


@features.command("warmup")
def warmup_cmd() -> None:
    """Compile (cold cache) or load the Numba kernels; run at image build or edge start."""
    from pq.features.warmup import warmup

    click.echo(f"numba kernels ready in {warmup():.2f} s")
