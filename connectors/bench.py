"""``pq bench connect``: connector throughput, loss and lag against a bare asyncua client.

A publisher subprocess (a plain asyncua server, written in batches, so the connector runs alone
in this process and its CPU is measurable) writes T tags at R Hz with fresh source timestamps for
a fixed time. First a bare asyncua client counts notifications from it (the ceiling: the same
subscription parameters, no conversion, no spool, no store); then the connector runs the same
load into the configured store through the spool. Figures: delivered samples/s, loss (values
written and not stored), p50/p99 lag from source timestamp to committed row, connector CPU (% of
one core) and peak memory, memory growth over the run, and ``ratio`` = connector / bare rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import click
import numpy as np

__all__ = ["connect"]

_PUBLISHER = textwrap.dedent("""
    import asyncio, sys, time
    from datetime import datetime, timezone, timedelta
    from asyncua import Server, ua
    T, R, PORT = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    async def main():
        srv = Server(); await srv.init()
        srv.set_endpoint(f"opc.tcp://127.0.0.1:{PORT}/bench/")
        idx = await srv.register_namespace("urn:pq:bench")
        obj = await srv.nodes.objects.add_object(ua.NodeId("Bench", idx), "Bench")
        nodes = [await obj.add_variable(ua.NodeId(f"Bench.t{i}", idx), f"t{i}", 0.0) for i in range(T)]
        await srv.start()
        print("ready", flush=True)
        written = 0
        go = asyncio.Event()
        loop = asyncio.get_running_loop()
        cmd = asyncio.Queue()
        loop.add_reader(sys.stdin, lambda: cmd.put_nowait(sys.stdin.readline().strip()))
        running = False
        period = 1.0 / R
        nxt = time.monotonic()
        while True:
            try:
                c = cmd.get_nowait()
            except asyncio.QueueEmpty:
                c = None
            if c == "start":
                running, written, nxt = True, 0, time.monotonic()
            elif c == "stop":
                running = False
                print(f"written {written}", flush=True)
            elif c == "quit":
                break
            if running:
                now = datetime.now(timezone.utc)
                for i, n in enumerate(nodes):
                    dv = ua.DataValue(ua.Variant(float(written + i), ua.VariantType.Double), SourceTimestamp=now,
                                      ServerTimestamp=now)
                    await srv.write_attribute_value(n.nodeid, dv)
                written += T
                nxt += period
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            else:
                await asyncio.sleep(0.01)
        await srv.stop()
    asyncio.run(main())
""")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Publisher:
    def __init__(self, tags: int, hz: float):
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(tags), str(hz), str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise click.ClickException(f"bench publisher did not start: {line!r}")
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/bench/"

    def send(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def stop_count(self) -> int:
        self.send("stop")
        line = self.proc.stdout.readline()
        return int(line.split()[1])

    def close(self) -> None:
        try:
            self.send("quit")
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


async def _bare(endpoint: str, tags: int, pub: _Publisher, duration_s: float) -> dict:
    from asyncua import Client, ua

    client = Client(endpoint)
    await client.connect()
    idx = await client.get_namespace_index("urn:pq:bench")
    sub = await client.create_subscription(100, handler=None, queue_maxsize=0)  # unbounded: the ceiling
    await sub.subscribe_data_change([client.get_node(ua.NodeId(f"Bench.t{i}", idx)) for i in range(tags)],
                                    queuesize=100)
    count = 0

    async def consume():
        nonlocal count
        async for _ in sub:
            count += 1

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    initial = count
    pub.send("start")
    t0 = time.monotonic()
    await asyncio.sleep(duration_s)
    written = await asyncio.to_thread(pub.stop_count)
    elapsed = time.monotonic() - t0
    await asyncio.sleep(1.0)
    got = count - initial
    task.cancel()
    await client.disconnect()
    return {"written": written, "received": got, "rate": got / duration_s}


def _tagmap_text(endpoint: str, tags: int) -> str:
    body = "\n".join(f'[[tags]]\nnode_id = "nsu=urn:pq:bench;s=Bench.t{i}"\nname = "t{i}"\n' for i in range(tags))
    return (f'[connection]\nname = "bench"\nendpoint = "{endpoint}"\nline_id = "bench-line"\n'
            f'publishing_interval_ms = 100\n\n[defaults]\nqueue_size = 100\n\n{body}')


async def _connector(settings, store, tagmap, pub: _Publisher, duration_s: float) -> dict:
    import psutil

    from connectors.opcua.session import ConnectorSession
    from connectors.runner import lag_listener
    from pq.spool import Spool, SpoolDrainer

    lags: list = []
    tmp = Path(tempfile.mkdtemp(prefix="pq-bench-connect-"))
    spool = Spool(tmp / "spool.sqlite", max_bytes=int(settings.spool_max_mb * 2**20),
                  full_policy=settings.spool_full_policy, fsync=settings.spool_fsync)
    drainer = SpoolDrainer(spool, store, listeners=(lag_listener("bench", lags),)).start()
    proc = psutil.Process()
    rss: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample_rss():
        while not stop.is_set():
            rss.append((time.monotonic(), proc.memory_info().rss))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    async with ConnectorSession(tagmap, settings, spool=spool) as session:
        await session.wait_connected(15)
        await asyncio.sleep(1.0)
        initial = session.samples_total
        await asyncio.to_thread(drainer.flush, 10)
        lags.clear()
        cpu0 = proc.cpu_times()
        t0 = time.monotonic()
        pub.send("start")
        await asyncio.sleep(duration_s)
        written = await asyncio.to_thread(pub.stop_count)
        await asyncio.sleep(1.0)
    await asyncio.to_thread(drainer.flush, 60)
    elapsed = time.monotonic() - t0
    cpu1 = proc.cpu_times()
    stop.set()
    drainer.stop(5)
    spool.close()
    from sqlalchemy import text

    with store.engine.connect() as conn:
        stored = conn.execute(text(
            "SELECT COUNT(*) FROM samples s JOIN tags t ON t.id = s.tag_id WHERE t.line_id = 'bench-line'")).scalar()
    all_lags = np.concatenate(lags) if lags else np.zeros(1)
    mems = [m for _, m in rss]
    quarter = mems[len(mems) // 4] if mems else 0
    return {
        "written": written, "stored": int(stored) - initial, "initial": initial,
        "rate": (int(stored) - initial) / duration_s,  # same denominator as the bare client
        "p50_lag_ms": float(np.percentile(all_lags, 50) * 1000), "p99_lag_ms": float(np.percentile(all_lags, 99) * 1000),
        "cpu_pct": 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / elapsed,
        "peak_rss_mb": max(mems) / 2**20 if mems else 0.0,
        "rss_growth_mb": (mems[-1] - quarter) / 2**20 if mems else 0.0,
        "dropped": sum(session.dropped.values()),
    }


@click.command()
@click.option("--tags", "tags", type=int, default=200, show_default=True, help="T: tags published.")
@click.option("--hz", type=float, default=10.0, show_default=True, help="R: values per tag per second.")
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds of publishing per run.")
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object with the figures.")
def connect(tags, hz, duration, as_json):
    """Connector: delivered samples/s, loss, lag vs a bare client."""
    from connectors.tagmap import parse_tagmap
    from pq.cli import get_settings, open_store
    from pq.storage import migrate

    settings = get_settings()
    store = open_store(check_schema=False)
    migrate.upgrade(store)
    with store.engine.begin() as conn:  # a fresh run: earlier bench samples would hide loss
        from sqlalchemy import text

        conn.execute(text("DELETE FROM samples WHERE tag_id IN (SELECT id FROM tags WHERE line_id = 'bench-line')"))
    pub = _Publisher(tags, hz)
    try:
        bare = asyncio.run(_bare(pub.endpoint, tags, pub, duration))
        tm = parse_tagmap(_tagmap_text(pub.endpoint, tags), "<bench>")
        ours = asyncio.run(_connector(settings, store, tm, pub, duration))
    finally:
        pub.close()
    loss = ours["written"] - ours["stored"]
    result = {
        "tags": tags, "hz": hz, "duration_s": duration, "store": store.dialect,
        "offered_samples_per_s": round(tags * hz, 1),
        "bare_samples_per_s": round(bare["rate"], 1), "bare_loss": bare["written"] - bare["received"],
        "samples_per_s": round(ours["rate"], 1), "loss": loss, "dropped": ours["dropped"],
        "p50_lag_ms": round(ours["p50_lag_ms"], 1), "p99_lag_ms": round(ours["p99_lag_ms"], 1),
        "cpu_pct": round(ours["cpu_pct"], 1), "peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "rss_growth_mb": round(ours["rss_growth_mb"], 1),
        "ratio": round(ours["rate"] / bare["rate"], 3) if bare["rate"] else None,
    }
    click.echo(f"publisher: {tags} tags x {hz:g} Hz = {tags * hz:,.0f} values/s for {duration:g} s ({store.dialect} store)")
    click.echo(f"bare asyncua client : {bare['rate']:,.0f} notifications/s, missed {result['bare_loss']}")
    click.echo(f"pq connector        : {ours['rate']:,.0f} samples/s committed, loss {loss}, dropped {ours['dropped']}")
    click.echo(f"lag source->commit  : p50 {result['p50_lag_ms']} ms, p99 {result['p99_lag_ms']} ms")
    click.echo(f"connector process   : CPU {result['cpu_pct']} % of a core, peak RSS {result['peak_rss_mb']} MB, "
               f"growth after warm-up {result['rss_growth_mb']} MB")
    click.echo(f"ratio (ours / bare) : {result['ratio']}")
    if as_json:
        click.echo(json.dumps(result))
