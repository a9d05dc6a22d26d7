"""``pq bench ui``: operator page render time and live-update server time on a large store.

Seeds a fresh database (10 lines, 1M parts with predictions, 100k alerts by default) on the server
of ``PQ_DATABASE_URL`` (a new PostgreSQL database ``pq_bench_ui_*``, dropped afterwards unless
``--keep``; a temporary file for SQLite), signs in as an operator through the real login, and
times, through the real WSGI app (Flask test client, so it is server time without the network):

- page render: the router callback that builds the Lines, Alerts and Alert detail pages;
- live update: the 2-second refresh callbacks of the Lines and Alerts pages (p50/p99), both when
  the content changed (everything re-rendered and sent) and when it did not (``*_idle``: the
  browser's signature matches and nothing is re-sent, the usual tick).

Baseline, measured in the same run: the straightforward status query a first version would use
(group-by over all parts and alerts, no time bounds); ``ratio`` = baseline / ours (higher is better).
Goals: render < 1000 ms, live update < 200 ms. ``--quick``: a small store and few calls, the same
path and JSON keys. The seeded database and the temporary directories are removed afterwards.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import click

from benchmarks.output import json_option, quick_option

__all__ = ["ui"]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _bench_database(settings):
    """(database_url, cleanup) for a fresh database beside the configured one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.drivername.startswith("sqlite"):
        d = tempfile.mkdtemp(prefix="pq-bench-ui-")
        return f"sqlite:///{d}/bench.db", lambda: shutil.rmtree(d, ignore_errors=True)
    url = url.set(drivername="postgresql+psycopg")
    name = f"pq_bench_ui_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def _login(client, username: str, password: str) -> str:
    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    r = client.post("/login", data={"username": username, "password": password, "csrf": token})
    if r.status_code != 302:
        raise click.ClickException(f"bench login failed with HTTP {r.status_code}")
    with client.session_transaction() as s:
        return s["csrf"]


def _route_body(path: str) -> dict:
    return {"output": "page-content.children", "outputs": {"id": "page-content", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": path}],
            "state": [{"id": "url", "property": "search", "value": ""}], "changedPropIds": ["url.pathname"]}


def _refresh_body(app, interval_id: str, extra_inputs: list, state: list) -> dict:
    output = next(k for k, v in app.callback_map.items()
                  if any(i["id"] == interval_id for i in v["inputs"]))
    outs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")]
    return {"output": output, "outputs": outs,
            "inputs": [{"id": interval_id, "property": "n_intervals", "value": 1}] + extra_inputs,
            "state": state, "changedPropIds": [f"{interval_id}.n_intervals"]}


def _time(client, body: dict, token: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code not in (200, 204):
            raise click.ClickException(f"callback {body['output']} answered HTTP {r.status_code}: {r.data[:200]!r}")
    return out


def _baseline(store, n: int) -> list[float]:
    from sqlalchemy import text

    out = []
    for _ in range(n):
        t = time.perf_counter()
        with store.engine.connect() as conn:
            conn.execute(text("SELECT line_id, count(*), max(cycle_end) FROM parts GROUP BY line_id")).all()
            conn.execute(text("SELECT line_id, state, count(*) FROM alerts GROUP BY line_id, state")).all()
            conn.execute(text("SELECT line_id, max(decided_at) FROM predictions GROUP BY line_id")).all()
        out.append((time.perf_counter() - t) * 1000)
    return out


@click.command()
@click.option("--lines", default=10, show_default=True)
@click.option("--parts", default=1_000_000, show_default=True, help="Parts in total (with one prediction each).")
@click.option("--alerts", default=100_000, show_default=True)
@click.option("--repeat", default=100, show_default=True, help="Timed calls per measurement.")
@click.option("--keep", is_flag=True, help="Keep the seeded database (its URL is printed).")
@quick_option({"--lines": 2, "--parts": 2000, "--alerts": 200, "--repeat": 8})
@json_option
def ui(lines: int, parts: int, alerts: int, repeat: int, keep: bool, quick: bool, as_json: bool):
    """Operator page render and live-update server time on a large store."""
    import logging

    from sqlalchemy import text

    from benchmarks.synthetic_store import seed
    from pq.auth.roles import Actor
    from pq.auth.users import add_user
    from pq.cli import get_settings
    from pq.config import load_settings
    from pq.storage import Store, migrate
    from ui.app import create_app

    logging.getLogger("ui").setLevel(logging.WARNING)
    base = get_settings()
    url, cleanup = _bench_database(base)
    data_dir = Path(tempfile.mkdtemp(prefix="pq-bench-ui-var-"))
    store = None
    try:
        settings = load_settings(database_url=url, data_dir=data_dir)
        store = Store.open(settings)
        migrate.upgrade(store)
        click.echo(f"seeding {store.display_url}: {lines} lines, {parts:,} parts + predictions, {alerts:,} alerts ...")
        t = time.perf_counter()
        summary = seed(store, lines=lines, parts_per_line=parts // lines, alerts=alerts, active_alerts=min(30, lines * 3),
                       cycle_s=20.0)
        seed_s = time.perf_counter() - t
        if store.dialect == "postgresql":
            with store.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        rows = summary.parts + summary.predictions + summary.alerts
        click.echo(f"seeded {rows:,} rows in {seed_s:.1f} s ({rows / seed_s:,.0f} rows/s)")
        password = secrets.token_urlsafe(16)  # no fixed password, not even for a bench
        add_user(store, "bench-operator", password, "operator", actor=Actor("bench", "admin"))
        app = create_app(settings, store)
        client = app.server.test_client()
        token = _login(client, "bench-operator", password)
        from ui.queries.alerts import queue

        alert_id = queue(store, limit=1)[0]["id"]
        render = {}
        for name, path in (("lines", "/"), ("alerts", "/alerts"), ("detail", f"/alerts/{alert_id}")):
            _time(client, _route_body(path), token, 2)  # warm caches and the connection pool
            render[name] = _time(client, _route_body(path), token, max(5, repeat // 4))
        overview = _refresh_body(app, "overview-interval", [], [{"id": "overview-signature", "property": "data", "value": ""}])
        alerts_body = _refresh_body(app, "alerts-interval", [
            {"id": "alerts-line", "property": "value", "value": ""},
            {"id": "alerts-changed", "property": "data", "value": 0}],
            [{"id": "alerts-signature", "property": "data", "value": ""}])
        live = {"lines": _time(client, overview, token, repeat), "alerts": _time(client, alerts_body, token, repeat)}
        # The usual 2-second tick: nothing changed, the browser's signature matches, nothing is re-sent.
        for body, sig_id in ((overview, "overview-signature"), (alerts_body, "alerts-signature")):
            r = client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})
            sig = json.loads(r.data)["response"][sig_id]["data"]
            body["state"][0]["value"] = sig
        live["lines_idle"] = _time(client, overview, token, repeat)
        live["alerts_idle"] = _time(client, alerts_body, token, repeat)
        baseline = _baseline(store, max(5, repeat // 4))
    finally:
        if store is not None:
            store.dispose()
        if keep:
            click.echo(f"kept the bench database: {url.split('@')[-1]}")
        else:
            cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
    result = {"suite": "ui", "store": "postgresql" if url.startswith("postgresql") else "sqlite", "lines": lines,
              "parts": summary.parts,
              "alerts": summary.alerts, "seed_rows_per_s": round(rows / seed_s)}
    for name, v in render.items():
        result[f"render_{name}_p50_ms"] = round(statistics.median(v), 1)
        result[f"render_{name}_p99_ms"] = round(_pct(v, 99), 1)
    for name, v in live.items():
        result[f"live_{name}_p50_ms"] = round(statistics.median(v), 1)
        result[f"live_{name}_p99_ms"] = round(_pct(v, 99), 1)
    result["baseline_status_p50_ms"] = round(statistics.median(baseline), 1)
    # from the unrounded medians: a small store's 0.04 ms would round to a ratio of 0
    result["ratio"] = round(statistics.median(baseline) / max(statistics.median(live["lines"]), 1e-6), 3)
    result["render_goal_met"] = all(result[f"render_{n}_p99_ms"] < 1000 for n in render)
    result["live_goal_met"] = all(result[f"live_{n}_p99_ms"] < 200 for n in live)
    click.echo("page render (server, p50/p99 ms): " + ", ".join(
        f"{n} {result[f'render_{n}_p50_ms']}/{result[f'render_{n}_p99_ms']}" for n in render) + "  (goal < 1000)")
    click.echo("live update (server, p50/p99 ms): " + ", ".join(
        f"{n} {result[f'live_{n}_p50_ms']}/{result[f'live_{n}_p99_ms']}" for n in live) + "  (goal < 200)")
    click.echo(f"baseline status query without time bounds: p50 {result['baseline_status_p50_ms']} ms "
               f"-> ratio {result['ratio']}x")
    if as_json:
        click.echo(json.dumps(result))
