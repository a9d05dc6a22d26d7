"""Command line of the simulator: the ``simulate`` click group (``pq simulate``, ``python -m simulators``).

Owns argument parsing and turning bad input into one-line click errors; the work is done by
:mod:`simulators.server`, :mod:`simulators.history` and :mod:`simulators.describe`. Imports nothing of pq.

Example::

    pq simulate --lines 2 --scenario heatwave            # serve on opc.tcp://127.0.0.1:4840/pq/sim/
    pq simulate history --days 7 --lines 2 --out var/history --scenario normal,5:heatwave
    pq simulate describe
    pq simulate set-scenario humid --endpoint opc.tcp://127.0.0.1:4840
    pq simulate set-source-schema unit_fahrenheit        # melt temperature in °F from now on; `restore` undoes
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from .scenarios import SCENARIOS, SOURCE_CHANGES, parse_schedule
from .signals import CONTINUOUS_SIGNALS

logger = logging.getLogger(__name__)

_SECURITY = ("none", "sign", "encrypt", "all")


def _schedule(ctx, param, value):
    if value is None:
        return value
    try:
        parse_schedule(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _signal_hz(ctx, param, values):
    out = {}
    for item in values:
        name, sep, hz = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=HZ, got {item!r}")
        if name not in CONTINUOUS_SIGNALS:
            raise click.BadParameter(f"{name!r} is not a continuous signal; one of: {', '.join(CONTINUOUS_SIGNALS)}")
        try:
            rate = float(hz)
        except ValueError:
            raise click.BadParameter(f"rate of {name} must be a number, got {hz!r}") from None
        if rate <= 0:
            raise click.BadParameter(f"rate of {name} must be > 0, got {rate:g}")
        out[name] = rate
    return out


def _users(ctx, param, values):
    users = {}
    for item in values:
        name, sep, password = item.partition(":")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME:PASSWORD, got {item!r}")
        users[name] = password
    return users


def _start(ctx, param, value):
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected an ISO date/time like 2025-06-01T00:00:00Z, got {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


_season_help = ("Hall climate of this day of the year (0-366) whatever the clock says (default: the season "
                "follows the clock); a demo can train in January and meet July.")
_scenario_help = f"Scenario ({', '.join(SCENARIOS)}) or schedule 'normal,2:heatwave' (DAY:NAME)."


def _serve_options(f):
    opts = [
        click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on."),
        click.option("--port", type=click.IntRange(0, 65535), default=4840, show_default=True,
                     help="TCP port (0 picks a free one)."),
        click.option("--lines", type=click.IntRange(min=1), default=1, show_default=True, help="Number of lines."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Simulated seconds per wall second (0 = flat out)."),
        click.option("--scenario", default="normal", show_default=True, callback=_schedule, help=_scenario_help),
        click.option("--sample-hz", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
                     help="Sample rate of the continuous process signals."),
        click.option("--signal-hz", multiple=True, callback=_signal_hz, metavar="NAME=HZ",
                     help="Per-signal rate override, repeatable (e.g. vibration_mm_s=50)."),
        click.option("--label-delay", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Cycles between a part and its inspection result."),
        click.option("--security", type=click.Choice(_SECURITY), default="none", show_default=True,
                     help="Endpoints offered: none; sign / encrypt (Basic256Sha256, Aes128_Sha256_RsaOaep, "
                          "Aes256_Sha256_RsaPss); all."),
        click.option("--cert-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Server certificate/key directory (generated if absent)."),
        click.option("--user", "users", multiple=True, callback=_users, metavar="NAME:PASSWORD",
                     help="Require username/password (repeatable); anonymous is then refused."),
        click.option("--start", callback=_start, default=None, help="Simulated clock origin (ISO, default now)."),
        click.option("--first-serial", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Number of each line's first part (continue after the serials already stored)."),
        click.option("--season-day", type=click.FloatRange(0, 366), default=None, help=_season_help),
        click.option("--restart-every", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
                     help="server-restart scenario: seconds between restarts."),
        click.option("--restart-down", type=click.FloatRange(min=0), default=5.0, show_default=True,
                     help="server-restart scenario: seconds the endpoint stays down."),
        click.option("--paused", is_flag=True, help="Start with the clock stopped (write Simulator.Paused=False)."),
        click.option("--source-change", "source_changes", multiple=True,
                     type=click.Choice([c for c in SOURCE_CHANGES if c != "restore"]),
                     help="Start with this change of the address space made (repeatable; see set-source-schema)."),
        click.option("--write-mode", type=click.Choice(["fast", "naive"]), default="fast", hidden=True),
        click.option("--tag-map", "tag_map", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write node id -> tag CSV here."),
        click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="WARNING",
                     show_default=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _serve(host, port, lines, seed, speed, scenario, sample_hz, signal_hz, label_delay, security, cert_dir, users,
           start, first_serial, season_day, restart_every, restart_down, paused, source_changes, write_mode, tag_map,
           log_level) -> None:
    logging.basicConfig(level=getattr(logging, log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level != "DEBUG":
        for noisy in ("asyncua", "asyncua.server", "asyncua.uaprotocol"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, log_level)))
    from .server import SimulatorServer, check_port_free

    if port:
        try:
            check_port_free(host, port)
        except OSError as e:
            raise click.ClickException(str(e)) from None
    try:
        sim = SimulatorServer(lines=lines, seed=seed, speed=speed, scenario=scenario, host=host, port=port,
                              sample_hz=sample_hz, signal_hz=signal_hz or None, label_delay=label_delay,
                              security=security, cert_dir=cert_dir, users=users or None, start=start,
                              restart_every_s=restart_every, restart_down_s=restart_down, paused=paused,
                              write_mode=write_mode, first_serial=first_serial, season_day=season_day)
    except ValueError as e:
        raise click.UsageError(str(e)) from None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                pass
        await sim.start()
        for change in source_changes:
            await sim.set_source_schema(change)
        if tag_map:
            sim.write_tag_map(tag_map)
        click.echo(f"pq simulator: {lines} line(s) on {sim.endpoint} (scenario {sim.scenario}, speed "
                   f"{speed:g}{' = flat out' if speed == 0 else ''}, security {security}, seed {seed})"
                   f"{' [paused]' if paused else ''}", err=False)
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(run())
    except OSError as e:
        raise click.ClickException(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        pass


@click.group("simulate", invoke_without_command=True)
@_serve_options
@click.pass_context
def simulate(ctx, **kwargs):
    """OPC UA production-line simulator. Without a subcommand: serve (same options as `serve`)."""
    if ctx.invoked_subcommand is None:
        _serve(**kwargs)


@simulate.command("serve")
@_serve_options
def serve(**kwargs):
    """Serve simulated injection-moulding lines over OPC UA until Ctrl-C / SIGTERM."""
    _serve(**kwargs)


@simulate.command("history")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Simulated days per line.")
@click.option("--lines", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scenario", default="normal", show_default=True, callback=_schedule, help=_scenario_help)
@click.option("--sample-hz", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--signal-hz", multiple=True, callback=_signal_hz, metavar="NAME=HZ")
@click.option("--label-delay", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--start", callback=_start, default=None, help="Start of the history (ISO, default 2025-01-06 UTC).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for parts/samples/ground_truth Parquet, tags.csv, manifest.json.")
@click.option("--season-day", type=click.FloatRange(0, 366), default=None, help=_season_help)
def history(days, lines, seed, scenario, sample_hz, signal_hz, label_delay, start, out_dir, season_day):
    """Generate history faster than real time (same model as the live server)."""
    from .history import generate_history

    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{out_dir} exists and is not a directory", param_hint="--out")
    with click.progressbar(length=1000, label="simulating", show_eta=True) as bar:
        done = [0]

        def progress(fraction: float, message: str) -> None:
            n = int(fraction * 1000)
            if n > done[0]:
                bar.update(n - done[0])
                done[0] = n

        try:
            res = generate_history(days=days, lines=lines, seed=seed, scenario=scenario, sample_hz=sample_hz,
                                   start=start, out_dir=out_dir, progress=progress, label_delay=label_delay,
                                   signal_hz=signal_hz or None, keep_samples=False, season_day=season_day)
        except (ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
    s = res.stats
    click.echo(f"{s['parts']:,} parts, {s['samples']:,} samples, defect rate {s['defect_rate']:.2%}, "
               f"{s['elapsed_s']:.1f} s ({s['x_realtime']:,.0f}x real time) -> {out_dir}")


@simulate.command("describe")
@click.option("--lines", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", show_default=True,
              help="text: report; csv/json: the signal table with node ids.")
def describe(lines, fmt):
    """Print the address space, signals, scenarios and the hidden defect mechanisms."""
    from .describe import describe_text
    from .signals import signals_frame

    if fmt == "text":
        click.echo(describe_text(lines))
    else:
        frame = signals_frame([f"line-{i + 1}" for i in range(lines)])
        click.echo(frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=1))


def _control_client(endpoint: str, user: str | None, timeout: float):
    """An asyncua client for the simulator's control methods; ``user`` is NAME:PASSWORD when it needs one."""
    from asyncua import Client

    client = Client(endpoint, timeout=timeout)
    if user:
        name, _, password = user.partition(":")
        client.set_user(name)
        client.set_password(password)
    return client


@simulate.command("set-scenario")
@click.argument("name")
@click.option("--endpoint", default="opc.tcp://127.0.0.1:4840/pq/sim/", show_default=True)
@click.option("--line", default=None, help="Only this line (e.g. line-2); '' clears its override.")
@click.option("--user", default=None, help="NAME:PASSWORD if the simulator requires it.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--season-day", type=float, default=None,
              help="Also set every line's hall climate to this day of the year (calls Simulator.SetSeason); "
                   "-1 returns to the clock's season.")
def set_scenario(name, endpoint, line, user, timeout, season_day):
    """Switch a running simulator's scenario (calls Simulator.SetScenario / writes the line's Scenario)."""
    from .scenarios import get_scenario

    if not (line == "" and name == ""):
        try:
            get_scenario(name)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="NAME") from None

    async def run() -> str:
        from asyncua import ua

        from .signals import NAMESPACE_URI

        client = _control_client(endpoint, user, timeout)
        async with client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            if season_day is not None:  # first, so the scenario's first cycle already has its season
                await client.get_node(f"ns={ns};s=Simulator").call_method(
                    f"{ns}:SetSeason", ua.Variant(float(season_day), ua.VariantType.Double))
            if line is None:
                sim = client.get_node(f"ns={ns};s=Simulator")
                await sim.call_method(f"{ns}:SetScenario", ua.Variant(name, ua.VariantType.String))
                return str(await client.get_node(f"ns={ns};s=Simulator.Scenario").read_value())
            node = client.get_node(f"ns={ns};s={line}.Scenario")
            await node.write_value(ua.Variant(name, ua.VariantType.String))
            return name

    try:
        now = asyncio.run(asyncio.wait_for(run(), timeout * 2))
    except Exception as e:  # asyncua raises many types (OSError, UaError, TimeoutError); one line each
        raise click.ClickException(f"could not set scenario on {endpoint}: {type(e).__name__}: {e}") from None
    click.echo(f"scenario on {endpoint}{' ' + line if line else ''}: {now}")


@simulate.command("set-source-schema")
@click.argument("change", type=click.Choice(list(SOURCE_CHANGES)))
@click.option("--endpoint", default="opc.tcp://127.0.0.1:4840/pq/sim/", show_default=True)
@click.option("--user", default=None, help="NAME:PASSWORD if the simulator requires it.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
def set_source_schema(change, endpoint, user, timeout):
    """Change a running simulator's address space under its clients (calls Simulator.SetSourceSchema):
    unit_fahrenheit, remove_tag, add_tag, data_type, eu_range on every line; restore undoes them."""

    async def run() -> None:
        from asyncua import ua

        from .signals import NAMESPACE_URI

        client = _control_client(endpoint, user, timeout)
        async with client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            await client.get_node(f"ns={ns};s=Simulator").call_method(
                f"{ns}:SetSourceSchema", ua.Variant(change, ua.VariantType.String))

    try:
        asyncio.run(asyncio.wait_for(run(), timeout * 2))
    except Exception as e:  # asyncua raises many types (OSError, UaError, TimeoutError); one line each
        raise click.ClickException(f"could not change the source schema on {endpoint}: {type(e).__name__}: {e}") from None
    click.echo(f"source schema on {endpoint}: {change} ({SOURCE_CHANGES[change]})")
