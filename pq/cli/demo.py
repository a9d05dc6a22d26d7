"""``pq demo``: the whole product on one machine, from nothing, in one command.

Every step is a real ``pq`` command run as a child process, so the demo exercises exactly what a
plant runs. Part of the composition root: the tag maps come from the simulator's shipped map
(``connectors.tagmap.SIMULATOR_TAGMAP``) and the quality-gate node ids from the simulator itself
(``simulators.signals.gate_node_ids``).

1. ``pq db upgrade`` on the configured store (the embedded SQLite file by default);
2. demo users (printed with their passwords; demo only), on duty for every line and shift (the roster:
   operator, shift lead = engineer, quality engineer = admin) unless a roster is already set;
3. if no model is in production: ``pq simulate history`` → ``pq db load`` → ``pq features backfill``
   → ``pq train`` → ``pq models promote`` (progress shown by each step);
4. the simulator (``pq simulate serve``), one ``pq edge run`` per line, and ``pq ui``;
5. prints the address and credentials, forwards scenario changes requested in the UI to the
   simulator (with the season the robustness report holds that condition out in, see
   :func:`_season_days`), and on Ctrl-C, SIGTERM or the end of ``--duration`` stops every child, process group
   and all, within 10 s, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from sqlalchemy import func, select

__all__ = ["demo", "DEMO_USERS"]

logger = logging.getLogger(__name__)

# Demo only: printed at start. Outside the demo there are no default passwords.
DEMO_USERS = (("operator", "operator", "line-demo-2026"), ("engineer", "engineer", "quality-demo-2026"),
              ("admin", "admin", "setup-demo-2026"))


def _pq(*args: str) -> list[str]:
    return [sys.executable, "-m", "pq.cli", *args]


class _StopRequested(Exception):
    """SIGINT or SIGTERM reached the demo: stop every child, then exit 0."""


def _raise_stop(signum, _frame):
    raise _StopRequested(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the demo dies, even by SIGKILL (Linux only).

    Every child leads its own process group (so a terminal's Ctrl-C reaches only the demo, which then
    stops them in order); this keeps a SIGKILLed demo from leaving orphans behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the demo's own stop path still applies
        pass


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(_pq(*args), env=env, start_new_session=True, preexec_fn=_die_with_parent)


def _run_step(title: str, *args: str, env: dict, children: dict[str, subprocess.Popen]) -> None:
    click.secho(f"\n▶ {title}", bold=True)
    started = time.monotonic()
    name = f"step pq {args[0]}"
    children[name] = proc = _spawn(list(args), env)
    proc.wait()
    del children[name]
    if proc.returncode != 0:
        raise click.ClickException(f"demo step failed: pq {' '.join(args)} (exit {proc.returncode})")
    click.echo(f"  done in {time.monotonic() - started:.0f} s")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_for_port(port: int, timeout_s: float, children: dict) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _port_free(port):
            return
        for name, proc in children.items():
            if proc.poll() is not None:
                raise click.ClickException(f"{name} exited with status {proc.returncode} while starting")
        time.sleep(0.3)
    raise click.ClickException(f"nothing answered on port {port} after {timeout_s:.0f} s")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still there
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop(children: dict[str, subprocess.Popen], grace_s: float = 4.0) -> None:
    """End every child and every process of its group: readers (UI, edges, a running step) first,
    then the simulator they read from. SIGTERM, ``grace_s`` to flush and exit, then SIGKILL; at most
    about 2 x (grace_s + 1) s in all, so a stop request is honoured within 10 s.

    A child's own children share its process group, so waiting on the group (not only its leader)
    is what leaves no process behind."""
    readers = [(n, p) for n, p in children.items() if n != "simulator"]
    sources = [(n, p) for n, p in children.items() if n == "simulator"]
    for group in (readers, sources):
        for _, proc in group:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, proc in group:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s of SIGTERM: killing it", name, grace_s)
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None or _group_alive(proc.pid):
                _signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:  # unkillable (uninterruptible I/O): say so, do not hang
                logger.error("%s (pid %d) survived SIGKILL", name, proc.pid)
    children.clear()


def _ensure_demo_users(store) -> None:
    from pq.auth.roles import Actor
    from pq.auth.users import add_user, get_user_by_name, set_password

    actor = Actor("demo", "admin", client="cli")
    for username, role, password in DEMO_USERS:
        if get_user_by_name(store, username) is None:
            add_user(store, username, password, role, actor=actor)
        else:
            set_password(store, username, password, actor=actor)


def _ensure_demo_roster(store) -> None:
    """Every line and shift gets the demo users on duty (operator, shift lead, quality engineer), so the
    demo's alarms have an owner and escalate; a roster someone already set is left as it is."""
    from pq.alerts.roster_store import list_duties, set_duty
    from pq.auth.roles import Actor

    if list_duties(store):
        return
    actor = Actor("demo", "admin", client="cli")
    for role, username in (("operator", "operator"), ("shift_lead", "engineer"), ("quality_engineer", "admin")):
        set_duty(store, "*", "*", role, username, actor=actor)


def _write_tagmaps(directory: Path, line_ids: list[str], opcua_port: int) -> None:
    """The simulator's shipped tag map is line-1's; other lines differ only in line id and station."""
    from connectors.tagmap import SIMULATOR_TAGMAP

    directory.mkdir(parents=True, exist_ok=True)
    template = SIMULATOR_TAGMAP.read_text().replace("127.0.0.1:4840", f"127.0.0.1:{opcua_port}")
    for line_id in line_ids:
        number = line_id.split("-")[-1]
        text = template.replace("line-1", line_id).replace("IMM-1", f"IMM-{number}").replace(
            "moulding line 1", f"moulding line {number}").replace(
            'name = "simulator"', f'name = "simulator-{line_id}"')  # one spool per connection
        if f'name = "simulator-{line_id}"' not in text:
            raise click.ClickException(f"{SIMULATOR_TAGMAP}: no [connection] name to make unique for {line_id}")
        (directory / f"{line_id}.toml").write_text(text)


def _write_outputs(directory: Path, line_ids: list[str], opcua_port: int) -> None:
    """Each edge writes its verdicts to its line's quality gate on the simulator, as it would to a PLC."""
    from simulators.signals import gate_node_ids

    for line_id in line_ids:
        gate = gate_node_ids(line_id)
        (directory / f"{line_id}.outputs.toml").write_text(
            "# pq demo: every part verdict goes to the simulated PLC's quality gate (docs/alarms.md)\n"
            f'[[opcua]]\nendpoint = "opc.tcp://127.0.0.1:{opcua_port}/pq/sim/"\non = "all"\n[opcua.nodes]\n'
            f'quarantine = "{gate["Quarantine"]}"\nscore = "{gate["RiskScore"]}"\nserial = "{gate["RiskSerial"]}"\n')


def _latest_version(store) -> int:
    from pq.storage import schema

    with store.engine.connect() as conn:
        return conn.execute(select(func.max(schema.model_versions.c.id))).scalar()


def _has_production_model(store) -> bool:
    from pq.storage import schema

    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.model_deployments)).scalar() > 0


def _next_serial(store) -> int:
    """One past the highest part number stored, so live parts never reuse a history serial (a
    reused serial would rewrite that part's record and hide the live one's served features)."""
    from pq.storage import schema

    with store.engine.connect() as conn:
        serials = conn.execute(select(schema.parts.c.serial)).scalars()
        numbers = [int(tail) for tail in (s.rsplit("-", 1)[-1] for s in serials) if tail.isdigit()]
    return max(numbers, default=0) + 1


def _season_days() -> dict[str, float]:
    """{scenario: day of the year whose hall climate the demo line gets}: the robustness protocol's
    (``models.protocol``): trained on January days, heatwave held out in July, humid in September,
    new supplier in March, both in August. A scenario's own offsets on a model trained the days
    before barely move a naive model (measured: 0 of 897 parts diverted in a December heatwave);
    the season *and* the scenario together, as the report measures them, are what fools it. Every
    other scenario (and normal) keeps the training season."""
    from models.protocol import HELD_OUT, TRAIN

    def day(h) -> float:
        return float(h.start.timetuple().tm_yday)

    return {"normal": day(TRAIN)} | {h.scenario: day(h) for h in HELD_OUT}


def _season_day(scenario: str) -> float:
    days = _season_days()
    return days.get(scenario, days["normal"])


def _requested_scenario(store) -> str | None:
    """A scenario an engineer asked for on the UI's Conditions page (component_health 'simulator')."""
    from pq.storage import schema

    with store.engine.connect() as conn:
        row = conn.execute(select(schema.component_health.c.detail).where(
            schema.component_health.c.component == "simulator")).first()
    return (row.detail or {}).get("requested_scenario") if row else None


def _report_scenario(store, scenario: str, endpoint: str, since: datetime) -> None:
    """Tell the UI which scenario the simulator runs and since when (keeping a pending request)."""
    from pq.health import health_row, write_health_now
    from simulators.scenarios import SCENARIOS

    # the scenarios this simulator offers, so the UI (which never imports simulators) lists exactly them
    detail = {"scenario": scenario, "since": since.isoformat(), "endpoint": endpoint,
              "scenarios": [{"name": s.name, "description": s.description} for s in SCENARIOS.values()]}
    requested = _requested_scenario(store)
    if requested and requested != scenario:
        detail["requested_scenario"] = requested
    write_health_now(store, health_row("simulator", scenario, detail=detail))


@click.command()
@click.option("--lines", default=2, show_default=True, type=click.IntRange(1, 10), help="Simulated lines.")
@click.option("--history-days", default=3.0, show_default=True, type=click.FloatRange(3, 30),
              help="Days of history generated for the first model (validation needs 3 production days).")
@click.option("--sample-hz", default=1.0, show_default=True, type=click.FloatRange(0.5, 50),
              help="Sample rate of every signal, in history and live (the model sees the same rate).")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(0.1, 100),
              help="Simulated time per wall-clock second. Above 1 the line's clock runs ahead of the wall "
                   "clock, and once it is PQ_INGEST_MAX_FUTURE_S ahead the store refuses its samples "
                   "(counted): for short runs only.")
@click.option("--scenario", default="normal", show_default=True, help="Simulator scenario at start.")
@click.option("--port", default=8050, show_default=True, help="UI port.")
@click.option("--opcua-port", default=4840, show_default=True, help="Simulator OPC UA port.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--retrain", is_flag=True, help="Generate history and train even if a model is in production.")
def demo(lines, history_days, sample_hz, speed, scenario, port, opcua_port, duration, retrain):
    """One-command demo: simulator, history, first model, edge runtimes and UI.

    Uses the configured store (by default the embedded SQLite file under PQ_DATA_DIR). Prints the
    UI address and the demo users; Ctrl-C stops everything cleanly.
    """
    from pq.cli import get_settings
    from pq.storage import Store, migrate

    settings = get_settings()
    for p in (port, opcua_port):
        if not _port_free(p):
            raise click.ClickException(f"port {p} is in use: choose another with --port / --opcua-port")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("NUMBA_CACHE_DIR", str(Path(settings.data_dir) / "numba-cache"))
    work = Path(settings.data_dir) / "demo"
    work.mkdir(parents=True, exist_ok=True)
    line_ids = [f"line-{i + 1}" for i in range(lines)]

    children: dict[str, subprocess.Popen] = {}
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    store = None
    try:
        store = Store.open(settings)
        migrate.upgrade(store)
        _ensure_demo_users(store)
        _ensure_demo_roster(store)
        if retrain or not _has_production_model(store):
            _first_models(store, work, lines, history_days, sample_hz, env, children)
        _start_line(work, line_ids, lines, speed, sample_hz, scenario, port, opcua_port, _next_serial(store), env,
                    children)
        _supervise(store, scenario, opcua_port, duration, env, children)
    except _StopRequested as stop:
        click.echo(f"\nstopping ({stop}) ...")
    finally:
        for sig in previous:  # a second Ctrl-C must not interrupt the stop itself
            signal.signal(sig, signal.SIG_IGN)
        _stop(children)
        if store is not None:
            store.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("pq demo stopped.")


def _first_models(store, work: Path, lines: int, history_days: float, sample_hz: float, env: dict,
                  children: dict) -> None:
    """History -> store -> features -> the production model and a naive one to compare with."""
    history = work / "history"
    start = datetime.now(timezone.utc) - timedelta(days=history_days)  # conditions like today's
    _run_step(f"Generating {history_days:g} days of history for {lines} line(s)", "simulate", "history",
              "--days", str(history_days), "--lines", str(lines), "--sample-hz", str(sample_hz),
              "--start", start.strftime("%Y-%m-%dT%H:00:00"), "--season-day", f"{_season_day('normal'):g}",
              "--out", str(history), env=env, children=children)
    _run_step("Loading history into the store", "db", "load", str(history), env=env, children=children)
    _run_step("Computing feature vectors (Numba batch path)", "features", "backfill", env=env, children=children)
    _run_step("Training the environment-aware defect model", "train", "--user", "demo", env=env, children=children)
    _run_step("Promoting it to production", "models", "promote", str(_latest_version(store)),
              "--user", "demo", "--reason", "demo: first model", env=env, children=children)
    _run_step("Training a naive model for comparison (process signals only, as pilots do)", "train",
              "--kind", "naive", "--user", "demo", env=env, children=children)


def _start_line(work: Path, line_ids: list[str], lines: int, speed: float, sample_hz: float, scenario: str,
                port: int, opcua_port: int, first_serial: int, env: dict, children: dict) -> None:
    """The simulator, one edge per line and the UI, each in a process group of its own."""
    tagmaps = work / "tagmaps"
    _write_tagmaps(tagmaps, line_ids, opcua_port)
    _write_outputs(tagmaps, line_ids, opcua_port)
    children["simulator"] = _spawn(
        ["simulate", "serve", "--lines", str(lines), "--port", str(opcua_port), "--speed", str(speed),
         "--seed", "1",  # not the history's seed: live parts the model has never seen
         "--sample-hz", str(sample_hz), "--scenario", scenario, "--season-day", f"{_season_day(scenario):g}",
         "--first-serial", str(first_serial)], env)
    _wait_for_port(opcua_port, 120, children)
    for line_id in line_ids:
        children[f"edge {line_id}"] = _spawn(
            ["edge", "run", "--line", line_id, "--tagmap", str(tagmaps / f"{line_id}.toml"),
             "--outputs", str(tagmaps / f"{line_id}.outputs.toml")], env)
    children["ui"] = _spawn(["ui", "--port", str(port)], env)
    _wait_for_port(port, 120, children)

    click.secho(f"\npq demo is running: http://127.0.0.1:{port}/", bold=True, fg="green")
    click.echo("Demo users (demo only; create real ones with `pq users add`):")
    for username, role, password in DEMO_USERS:
        click.echo(f"  {username:<10} password {password:<15} ({role})")
    click.echo("On duty (Roster page): alarms go to operator, escalate to engineer (shift lead) and admin (quality "
               "engineer) when nobody acknowledges them; the Handover page sums up each shift.")
    click.echo("Switch the simulator's scenario on the Conditions page (engineer). Ctrl-C stops everything.")


def _supervise(store, scenario: str, opcua_port: int, duration: float | None, env: dict, children: dict) -> None:
    """Until ``duration`` ends (or a stop signal): watch the children, forward scenario requests."""
    deadline = time.monotonic() + duration if duration else None
    current, since = scenario, datetime.now(timezone.utc)
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/pq/sim/"
    _report_scenario(store, current, endpoint, since)
    while deadline is None or time.monotonic() < deadline:
        for name, proc in children.items():
            if proc.poll() is not None:
                raise click.ClickException(f"{name} stopped unexpectedly (exit {proc.returncode})")
        wanted = _requested_scenario(store)
        if wanted and wanted != current:
            children["step set-scenario"] = setter = _spawn(
                ["simulate", "set-scenario", wanted, "--endpoint", endpoint,
                 "--season-day", f"{_season_day(wanted):g}"], env)
            setter.wait()
            del children["step set-scenario"]
            if setter.returncode == 0:
                click.echo(f"simulator scenario: {current} -> {wanted} (hall climate of day "
                           f"{_season_day(wanted):g} of the year)")
                current, since = wanted, datetime.now(timezone.utc)
            _report_scenario(store, current, endpoint, since)
        time.sleep(1.0)
