"""The ``pq`` command: the composition root.

This package alone wires ``connectors``, ``models``, ``ui`` and ``simulators`` together: every
command lives here (one module per command group, loaded when used), and imports the wings inside
the command that needs them, so ``pq --help`` stays fast and a plant machine that only runs an edge
process never imports Dash. The rest of ``pq/`` imports no wing (``tests/test_layering.py``). Every :class:`~pq.errors.PQError` becomes one line on
stderr and exit status 1; a bad setting is reported the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from pq import __version__
from pq.config import Settings, load_settings
from pq.errors import PQError

__all__ = ["main", "cli", "get_settings", "open_store", "admin_actor", "iso_time", "simulator_history"]

logger = logging.getLogger(__name__)


class LazyGroup(click.Group):
    """A group whose subcommands live in other packages and are imported only when used.

    ``lazy`` maps a command name to ("module:attribute", short help); the help text is given here so
    that listing the commands does not import LightGBM, Dash or asyncua.
    """

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            target = self.lazy[name][0]
            module, attr = target.split(":")
            try:
                command = getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                raise click.ClickException(f"command {name!r} is not available: {exc}") from None
            command.name = name
            return command
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=formatter.width - 6)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class RootGroup(LazyGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PQError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def get_settings(ctx: click.Context | None = None) -> Settings:
    """The settings of this invocation, loaded once (a bad value is one clear line)."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "settings" not in root.obj:
        root.obj["settings"] = load_settings()
        logging.getLogger().setLevel(root.obj["settings"].log_level)
    return root.obj["settings"]


def iso_time(value: str | None) -> datetime | None:
    """A command-line time (ISO 8601; UTC when no offset is given), or a one-line usage error."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected an ISO date or time such as 2025-03-01T06:00Z, got {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def simulator_history():
    """The simulator's history generator (``simulators.history.generate_history``), handed from the
    composition root to commands of packages that must not import the simulator (the robustness
    protocol in models/)."""
    from simulators.history import generate_history

    return generate_history


def admin_actor():
    """Who acts for commands that administer pq (users, rosters): whoever can run them already holds
    the database URL, so they act as an admin, audited as ``cli:<os user>``."""
    import getpass

    from pq.auth.roles import Actor

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(f"cli:{who}", "admin", client="cli")


def open_store(ctx: click.Context | None = None, *, check_schema: bool = True):
    """Open the configured store (retrying an unreachable database) and check its schema version."""
    from pq.storage import Store, migrate

    store = Store.open(get_settings(ctx))
    if check_schema:
        migrate.check(store)
    return store


@click.group(
    cls=RootGroup,
    lazy={
        "simulate": ("simulators.cli:simulate", "Run the OPC UA production-line simulator; generate history."),
        "connect": ("pq.cli.connect:connect", "OPC UA connector: browse a server, certificates, run a tag map."),
        "features": ("pq.cli.features:features", "Feature sets: show the spec, backfill vectors from raw samples."),
        "train": ("pq.cli.models:train", "Train a defect model on the store's history."),
        "models": ("pq.cli.models:models", "Model registry: list, compare, shadow, promote, roll back, scheduled retraining."),
        "report": ("pq.cli.models:report", "Reports: robustness per environmental regime."),
        "import": ("pq.cli.models:import_history", "Import a part-level history (CSV/Parquet) into the store."),
        "edge": ("pq.cli.edge:edge", "Edge runtime: score parts as they are made, raise explained alerts."),
        "ui": ("pq.cli.ui:ui", "Serve the operator and engineer web UI."),
        "users": ("pq.cli.users:users", "Manage UI users and roles."),
        "handover": ("pq.cli.handover:handover", "Shift handover: summary per line and shift; send it to the plant."),
        "roster": ("pq.cli.roster:roster", "Who is on duty per line and shift: alarm owners and escalation."),
        "alarms": ("pq.cli.alarms:alarms", "OPC UA Alarms & Conditions server: pq's alarms in the plant HMI."),
        "demo": ("pq.cli.demo:demo", "One-command demo: simulator, history, model, edge and UI."),
    },
)
@click.version_option(__version__, prog_name="pq")
def cli():
    """pq: industrial predictive quality.

    Scores every part while it is made, explains at-risk parts in operator language, and keeps
    the alarm load honest. Settings come from PQ_* environment variables or pq.toml.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("alembic", "asyncua", "werkzeug"):  # their INFO lines drown pq's own
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # asyncua logs every failed publish during a server restart as an ERROR with a traceback; the
    # connector reports the connection state itself, once per change (lost / recovered).
    logging.getLogger("asyncua.client.ua_session").setLevel(logging.CRITICAL)


# -- pq db ---------------------------------------------------------------------------------------

@cli.group()
def db():
    """Create, upgrade and inspect the store."""


@db.command()
def upgrade():
    """Create or upgrade the database schema (and TimescaleDB hypertables where installed)."""
    from pq.storage import migrate

    store = open_store(check_schema=False)
    version = migrate.upgrade(store)
    click.echo(f"{store.display_url}: schema version {version}")


@db.command()
def info():
    """Print the store, TimescaleDB edition, schema version and row counts."""
    from pq.storage import info as store_info

    store = open_store(check_schema=False)
    for key, value in store_info.describe(store).items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k:<20} {v}")
        else:
            click.echo(f"{key:<22} {value}")


@db.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def load(directory: Path):
    """Load a history directory (tags, parts with labels, raw samples) into the store.

    DIRECTORY is what `pq simulate history --out DIR` writes, or a historian export of that shape.
    Loading twice stores everything once.
    """
    from pq.storage.history import load_history_dir

    store = open_store()
    with click.progressbar(length=1000, label="loading history", show_eta=True) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.label = message
            bar.update(int(fraction * 1000) - bar.pos)

        result = load_history_dir(store, directory, progress=progress)
    click.echo(f"{result.parts:,} parts, {result.inspections:,} inspections, {result.written:,} samples written "
               f"({result.duplicates:,} already stored, {result.rejected_total:,} rejected: {result.rejected or 'none'})")


@db.command()
def retention():
    """Drop raw samples older than PQ_RETENTION_DAYS (drop_chunks on TimescaleDB)."""
    from pq.storage import timescale

    store = open_store()
    removed = timescale.apply_retention(store)
    click.echo(f"removed {removed} {'chunks' if store.timescale_edition else 'rows'}")


# -- pq bench ------------------------------------------------------------------------------------

_BENCH_EXTRA = "pip install -e '.[bench]'"


class BenchGroup(LazyGroup):
    """The suites live in the ``benchmarks`` package and need its extra's dependencies (psutil);
    without them a suite says how to install them instead of failing on an import deep inside."""

    requires = ("benchmarks", "psutil")

    def get_command(self, ctx, name):
        if name in self.lazy:
            missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
            if missing:
                raise click.ClickException(
                    f"pq bench needs the bench extra ({', '.join(missing)} not installed): {_BENCH_EXTRA}")
        return super().get_command(ctx, name)


@cli.group(
    cls=BenchGroup,
    lazy={
        "ingest": ("benchmarks.ingest:ingest", "Ingest rows/s: pq's idempotent path vs raw COPY and executemany."),
        "simulate": ("benchmarks.simulate:simulate", "Simulator values/s delivered to a subscriber, 1/10/50 lines."),
        "features": ("benchmarks.features:features", "Feature windows: Numba batch vs pandas; streaming p99."),
        "connect": ("benchmarks.connect:connect", "Connector: delivered samples/s, loss, lag vs a bare client."),
        "train": ("benchmarks.train:train", "Training time: 100k x 200 and the simulator's default history."),
        "score": ("benchmarks.score:score", "Scoring with explanations: p50/p99 latency and throughput."),
        "edge": ("benchmarks.edge:edge", "Edge decision and commit latency for L lines x T tags x R Hz."),
        "ui": ("benchmarks.ui:ui", "Operator page render and live-update server time on a large store."),
    },
)
def bench():
    """Benchmarks: figures and the ratio against a baseline measured in the same run.

    With --json the last line printed is one JSON object. The suites come with the bench extra:
    pip install -e '.[bench]'.
    """


def main() -> None:
    cli(prog_name="pq")
