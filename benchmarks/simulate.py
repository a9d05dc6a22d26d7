"""``pq bench simulate``: values per second a plain subscribing client actually receives.

For each line count it starts ``python -m simulators serve`` in a child process (so the server and
the client each get a core), paused and flat out (``--speed 0``); a plain asyncua client subscribes
to every variable of every line, un-pauses the clock for ``--duration`` seconds, pauses it again,
waits for the last notifications and compares what it received with the server's
``Simulator.ValuesPublished`` counter (loss). The same is measured for a naive server that writes
each value with ``Node.write_value`` (asyncua's deep-copying path) as the baseline.

Output contract: human-readable lines; with ``--json`` the last stdout line is one JSON object
(``suite``, ``loss``, ``ratio`` = ours / naive values/s, the smallest over the points). ``--quick``:
one line for one second, same path and keys.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import click

from benchmarks.output import json_option, quick_option
from benchmarks.processes import free_port, spawn, stop, wait_listening
from simulators.signals import NAMESPACE_URI, SIGNALS, line_id


async def _measure_client(endpoint: str, lines: int, duration: float, publishing_ms: float) -> dict:
    from asyncua import Client, ua
    from asyncua.common.subscription import Subscription

    received = [0]
    last_at = [0.0]

    class CountingSubscription(Subscription):
        """Counts data-change notifications as they arrive, without building per-value events."""

        async def publish_callback(self, publish_result: ua.PublishResult) -> None:
            self.last_publish_at = time.monotonic()
            data = publish_result.NotificationMessage.NotificationData
            if not data:
                return
            n = 0
            for notif in data:
                if isinstance(notif, ua.DataChangeNotification):
                    n += len(notif.MonitoredItems)
            if n:
                received[0] += n
                last_at[0] = time.monotonic()

    # asyncua 2.x probes the server every watchdog_intervall (1 s by default) and, without
    # auto_reconnect, gives the client up when one probe is late: a server that a loaded machine
    # starves for a second is slow, not gone, and this client has no reconnect to fall back on.
    client = Client(endpoint, timeout=30, watchdog_intervall=30)
    async with client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms, RequestedLifetimeCount=10000,
            RequestedMaxKeepAliveCount=10, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        sub = CountingSubscription(client.uaclient.session, params, handler=object())
        await sub.init()
        nodes = [client.get_node(f"ns={ns};s={s.node_id_string(line_id(i))}") for i in range(lines) for s in SIGNALS]
        for k in range(0, len(nodes), 500):
            await sub.subscribe_data_change(nodes[k:k + 500], queuesize=0)
        published = client.get_node(f"ns={ns};s=Simulator.ValuesPublished")
        paused = client.get_node(f"ns={ns};s=Simulator.Paused")
        await asyncio.sleep(1.0)  # initial values arrive
        base_pub = await published.read_value()
        received[0] = 0
        t0 = time.monotonic()
        cpu0 = time.process_time()
        await paused.write_value(ua.Variant(False, ua.VariantType.Boolean))
        await asyncio.sleep(duration)
        await paused.write_value(ua.Variant(True, ua.VariantType.Boolean))
        t_pause = time.monotonic()
        # drain: until no notification for 1.5 s (the server also refreshes its counter every 0.5 s)
        while time.monotonic() - max(last_at[0], t_pause) < 1.5:
            await asyncio.sleep(0.1)
        pub = await published.read_value() - base_pub
        elapsed = max(last_at[0], t_pause) - t0
        client_cpu = (time.process_time() - cpu0) / max(time.monotonic() - t0, 1e-9)
        await sub.delete()
    got = received[0]
    return {"received": got, "published": int(pub), "loss": max(0, int(pub) - got),
            "values_per_s": got / elapsed if elapsed > 0 else 0.0, "elapsed_s": elapsed,
            "items": len(nodes), "client_cpu": client_cpu}


def _run_point(lines: int, duration: float, mode: str, publishing_ms: float, sample_hz: float) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "simulators", "serve", "--lines", str(lines), "--port", str(port), "--speed", "0",
           "--paused", "--seed", "1", "--sample-hz", str(sample_hz), "--write-mode", mode, "--log-level", "ERROR"]
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(proc, port, 60)
        return asyncio.run(_measure_client(f"opc.tcp://127.0.0.1:{port}/pq/sim/", lines, duration, publishing_ms))
    finally:
        stop(proc)


@click.command("simulate")
@click.option("--lines", "line_counts", default="1,10,50", show_default=True, help="Comma-separated line counts.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds of publishing per point.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also measure a naive write_value server for the ratio.")
@click.option("--publishing-ms", type=click.FloatRange(min=0), default=100.0, show_default=True,
              help="Subscription publishing interval.")
@click.option("--sample-hz", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@quick_option({"--lines": "1", "--duration": 1.0})
@json_option
def simulate(line_counts, duration, baseline, publishing_ms, sample_hz, quick, as_json):
    """Simulator values/s delivered to a subscriber, 1/10/50 lines, against a naive asyncua server."""
    try:
        counts = [int(x) for x in line_counts.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {line_counts!r}", param_hint="--lines")
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"line counts must be >= 1, got {line_counts!r}", param_hint="--lines")
    result: dict = {"suite": "simulate", "duration_s": duration}
    total_loss = 0
    ratios = []
    for n in counts:
        r = _run_point(n, duration, "fast", publishing_ms, sample_hz)
        key = f"{n}_line" if n == 1 else f"{n}_lines"
        result[f"values_per_s_{key}"] = round(r["values_per_s"], 1)
        result[f"loss_{key}"] = r["loss"]
        total_loss += r["loss"]
        click.echo(f"{n:>3} line(s), {r['items']:>5} items: {r['values_per_s']:>9,.0f} values/s received "
                   f"({r['received']:,} of {r['published']:,} published, loss {r['loss']}; client CPU {r['client_cpu']:.0%})")
        if baseline:
            b = _run_point(n, duration, "naive", publishing_ms, sample_hz)
            result[f"naive_values_per_s_{key}"] = round(b["values_per_s"], 1)
            result[f"naive_loss_{key}"] = b["loss"]
            ratio = r["values_per_s"] / b["values_per_s"] if b["values_per_s"] else None  # no baseline: no ratio
            ratios.append(ratio)
            click.echo(f"{'':>3}   naive write_value server: {b['values_per_s']:>9,.0f} values/s "
                       f"(loss {b['loss']}) -> ratio {'n/a' if ratio is None else f'{ratio:.2f}x'}")
    result["loss"] = total_loss
    if ratios:
        result["ratio"] = None if None in ratios else round(min(ratios), 2)
    if as_json:
        click.echo(json.dumps(result))
