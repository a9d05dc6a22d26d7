"""The live simulator through a plain asyncua client on 127.0.0.1 (free ports, in-process server).

pytest-asyncio is not installed: each test runs its coroutine with asyncio.run().
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from asyncua import Client as _Client
from asyncua import ua

from simulators.history import generate_history
from simulators.server import SimulatorServer, free_port
from simulators.signals import NAMESPACE_URI, SIGNALS

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2025, 6, 2, 8, tzinfo=timezone.utc)


def Client(url: str, **kw) -> _Client:  # noqa: N802 - stands in for asyncua's Client
    """asyncua's Client with a patient watchdog: it reads the server state every ``watchdog_intervall``
    seconds with that as the timeout (default 1 s) and, without auto-reconnect, gives the session up
    when one read is late. Server and client share this process's event loop, so a CPU-starved test
    would lose its subscription that way ("Publish iteration crashed") and miss values."""
    kw.setdefault("watchdog_intervall", 30.0)
    return _Client(url, **kw)


class Recorder:
    """Subscription handler keeping every DataValue per node id string."""

    def __init__(self) -> None:
        self.values: dict[str, list[ua.DataValue]] = defaultdict(list)
        self.status_changes: list = []

    def datachange_notification(self, node, val, data) -> None:
        self.values[node.nodeid.Identifier].append(data.monitored_item.Value)

    def status_change_notification(self, status) -> None:  # a lost session says so here
        self.status_changes.append(status)

    def of(self, line: str, tag: str) -> list[ua.DataValue]:
        spec = next(s for s in SIGNALS if s.name == tag)
        return self.values[spec.node_id_string(line)]


async def _until(pred, timeout_s: float, what: str) -> None:
    """Wait until ``pred()`` (a plain or async callable) holds; generous timeouts, a failure names ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok = pred()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _subscribe_all(client: Client, sim: SimulatorServer, rec: Recorder, period_ms: float = 50):
    sub = await client.create_subscription(period_ms, rec)
    nodes = [client.get_node(sim.node_id(line, s.name)) for line in sim.line_ids for s in SIGNALS]
    await sub.subscribe_data_change(nodes, queuesize=0)
    return sub


@pytest.mark.timeout(180)
def test_browse_subscribe_parts_inspections_and_exactly_once():
    async def main():
        async with SimulatorServer(lines=2, seed=7, speed=60, port=0, start=START, label_delay=3,
                                   paused=True) as sim:
            async with Client(sim.endpoint) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                assert ns == sim.namespace_index
                objects = client.nodes.objects
                names = {(await n.read_browse_name()).Name for n in await objects.get_children()}
                assert {"line-1", "line-2", "Simulator"} <= names
                # every signal is there, browsable under its object, with units where it has one
                line1 = await objects.get_child(f"{ns}:line-1")
                for s in SIGNALS:
                    node = await line1.get_child([f"{ns}:{s.folder}", f"{ns}:{s.name}"])
                    assert node.nodeid == ua.NodeId(s.node_id_string("line-1"), ns)
                    if s.unit:
                        eu = await node.get_child("0:EngineeringUnits")
                        assert (await eu.read_value()).DisplayName.Text == s.unit
                rec = Recorder()
                sub = await _subscribe_all(client, sim, rec)
                every = Recorder()  # StatusValueTimestamp: every write, also a repeated OK
                sub2 = await client.create_subscription(50, every)
                await sub2._subscribe(
                    [client.get_node(sim.node_id(line, t)) for line in sim.line_ids
                     for t in ("inspection_result", "defect_code", "inspection_serial")],
                    mfilter=ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp))
                n_nodes = len(sim.line_ids) * len(SIGNALS)
                await _until(lambda: len(rec.values) == n_nodes and len(every.values) == 3 * len(sim.line_ids),
                             60, "an initial value (no source timestamp yet) of every node")
                sim.resume()
                await sim.wait_parts(12, timeout=120)
                sim.pause()
                labels = ("inspection_result", "defect_code", "inspection_serial")

                def delivered() -> bool:  # the last publish: every value the server counts has arrived
                    pub, wr = sim.published_counts(), sim.written_counts()
                    return all(sum(1 for dv in rec.of(line, s.name) if dv.SourceTimestamp) == pub[(line, s.name)]
                               for line in sim.line_ids for s in SIGNALS) and \
                        all(sum(1 for dv in every.of(line, t) if dv.SourceTimestamp) == wr[(line, t)]
                            for line in sim.line_ids for t in labels)

                try:
                    await _until(delivered, 60, "every published value received")
                except AssertionError:
                    pass  # the checks below name the node that is short
                await sub.delete()
                counts = sim.published_counts()
                written = sim.written_counts()
        return sim, rec, every, counts, written

    sim, rec, every, counts, written = asyncio.run(main())
    for line in ("line-1", "line-2"):
        # values change and carry source timestamps in simulated time
        melt = [dv for dv in rec.of(line, "melt_temp_c") if dv.SourceTimestamp]
        assert len({dv.Value.Value for dv in melt}) > 50
        ts = [dv.SourceTimestamp for dv in melt]
        assert ts == sorted(ts) and ts[0] >= START
        # part serials increase; cycle window is written before the serial with the same timestamp
        serials = [dv.Value.Value for dv in rec.of(line, "part_serial") if dv.Value.Value]
        assert len(serials) >= 12 and serials == sorted(serials) and len(set(serials)) == len(serials)
        ends = [dv.Value.Value for dv in rec.of(line, "cycle_end_time") if dv.SourceTimestamp]
        assert len(ends) == len(serials)
        counters = [dv.Value.Value for dv in rec.of(line, "part_counter") if dv.SourceTimestamp]
        assert counters == list(range(1, len(serials) + 1))
        # every part but the last label_delay ones has its inspection, OK/NOK + code
        inspected = [dv.Value.Value for dv in rec.of(line, "inspection_serial") if dv.Value.Value]
        assert inspected == serials[: len(serials) - 3]
        results = [dv.Value.Value for dv in every.of(line, "inspection_result") if dv.SourceTimestamp]
        codes = [dv.Value.Value for dv in every.of(line, "defect_code") if dv.SourceTimestamp]
        assert set(results) <= {"OK", "NOK"} and len(results) == len(codes) == len(inspected)
        assert all((r == "NOK") == bool(c) for r, c in zip(results, codes))
        assert len(results) == written[(line, "inspection_result")]
        truth = sim.ground_truth().set_index("serial")
        assert [truth.loc[x, "defect"] for x in inspected] == [r == "NOK" for r in results]
        # exactly once: what the server counts as published is what a subscriber received
        for s in SIGNALS:
            got = [dv for dv in rec.of(line, s.name) if dv.SourceTimestamp]
            assert len(got) == counts[(line, s.name)], (line, s.name)
    gt = sim.ground_truth()
    assert {"line_id", "serial", "mechanism", "defect_prob", "defect", "defect_code"} <= set(gt.columns)
    assert len(gt) >= 24


@pytest.mark.timeout(180)
def test_live_data_equals_history_for_the_same_seed():
    async def main():
        # paused until the subscription is in place: at speed 80 the first values would otherwise
        # be written before the client listens (a race, not a difference between live and history)
        async with SimulatorServer(lines=1, seed=21, speed=80, port=0, start=START, paused=True) as sim:
            async with Client(sim.endpoint) as client:
                rec = Recorder()
                await _subscribe_all(client, sim, rec)
                sim.resume()
                await sim.wait_parts(4, timeout=120)
                # the 4th serial is written after its cycle's values: with it, everything before is in
                await _until(lambda: sum(1 for dv in rec.of("line-1", "part_serial") if dv.Value.Value) >= 4, 60,
                             "the first 4 part serials received")
        return rec

    rec = asyncio.run(main())
    hist = generate_history(days=0.02, lines=1, seed=21, start=START)
    s = hist.samples
    for tag in ("melt_temp_c", "injection_pressure_bar", "ambient_temp_c", "cushion_mm"):
        live = [(dv.SourceTimestamp, dv.Value.Value) for dv in rec.of("line-1", tag) if dv.SourceTimestamp][:30]
        h = s[s.tag == tag]
        # a default (StatusValue) subscription reports a value only when it changes
        h = h[h.value.ne(h.value.shift()) | h.status.ne(h.status.shift())].head(len(live))
        assert [t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t for t, _ in live] == \
            [t.to_pydatetime() for t in h.ts]
        np.testing.assert_allclose([v for _, v in live], h.value.to_numpy())
    live_serials = [dv.Value.Value for dv in rec.of("line-1", "part_serial") if dv.Value.Value]
    assert live_serials == hist.parts.serial.head(len(live_serials)).tolist()


@pytest.mark.timeout(180)
def test_scenario_switch_live_and_bad_status_codes():
    async def main():
        async with SimulatorServer(lines=2, seed=3, speed=60, port=0) as sim:
            async with Client(sim.endpoint) as client:
                ns = sim.namespace_index
                scen = client.get_node(f"ns={ns};s=Simulator.Scenario")
                await scen.write_value(ua.Variant("bad-quality", ua.VariantType.String))
                await _until(lambda: sim.scenario == "bad-quality", 60, "the scenario write applied")
                # a bad name is refused: the method raises, a plain write is rolled back
                with pytest.raises(ua.UaStatusCodeError):
                    await client.get_node(f"ns={ns};s=Simulator").call_method(
                        f"{ns}:SetScenario", ua.Variant("sunny", ua.VariantType.String))
                await scen.write_value(ua.Variant("sunny", ua.VariantType.String))
                async def rolled_back() -> bool:
                    return await scen.read_value() == "bad-quality"

                await _until(rolled_back, 60, "the refused write rolled back")
                assert sim.scenario == "bad-quality"
                # another season's hall climate on every line (a demo's January-trained line meeting July)
                sim_node = client.get_node(f"ns={ns};s=Simulator")
                await sim_node.call_method(f"{ns}:SetSeason", ua.Variant(188.0, ua.VariantType.Double))
                assert {m.season_day for m in sim.models} == {188.0}
                await sim_node.call_method(f"{ns}:SetSeason", ua.Variant(-1.0, ua.VariantType.Double))
                assert {m.season_day for m in sim.models} == {None}
                # per-line override
                await client.get_node(f"ns={ns};s=line-2.Scenario").write_value(
                    ua.Variant("heatwave", ua.VariantType.String))
                await _until(lambda: sim.line_scenario("line-2") == "heatwave", 60, "the per-line override applied")
                assert sim.line_scenario("line-1") == "bad-quality"
                rec = Recorder()
                await _subscribe_all(client, sim, rec)
                await sim.wait_parts(8, timeout=120)

                def seen_bad_and_good() -> bool:
                    statuses = {dv.StatusCode.value for dv in rec.of("line-1", "vibration_mm_s")}
                    return ua.StatusCodes.BadSensorFailure in statuses and 0 in statuses

                await _until(seen_bad_and_good, 60, "line-1's vibration sensor both failing and good")
                sim.set_scenario("normal")
                assert sim.line_scenario("line-2") == "normal"
        return rec

    rec = asyncio.run(main())
    statuses = {dv.StatusCode.value for dv in rec.of("line-1", "vibration_mm_s")}
    assert ua.StatusCodes.BadSensorFailure in statuses and 0 in statuses
    bad = [dv for dv in rec.of("line-1", "vibration_mm_s") if dv.StatusCode.value == ua.StatusCodes.BadSensorFailure]
    assert all(dv.Value is None or dv.Value.Value is None for dv in bad)
    assert {dv.StatusCode.value for dv in rec.of("line-2", "vibration_mm_s")} == {0}  # line-2 runs heatwave


@pytest.mark.timeout(180)
def test_thousands_of_items_and_abrupt_disconnect():
    async def main():
        async with SimulatorServer(lines=30, seed=1, speed=1, port=0) as sim:
            # a client with ~3000 monitored items that vanishes without closing its session
            rude = Client(sim.endpoint, timeout=20)
            await rude.connect()
            sub = await rude.create_subscription(100, Recorder())
            nodes = [rude.get_node(sim.node_id(line, s.name)) for line in sim.line_ids for s in SIGNALS]
            for _ in range(3):
                for k in range(0, len(nodes), 500):
                    await sub.subscribe_data_change(nodes[k:k + 500])
            await asyncio.sleep(1.0)  # serve them a while
            rude.uaclient.protocol.transport.abort()
            await asyncio.sleep(0.5)
            before = sim.stats()["values_written"]
            await _until(lambda: sim.stats()["values_written"] > before + 1000, 60,
                         "the line producing on after the abrupt disconnect")
            async with Client(sim.endpoint) as client:  # still serving
                v = await client.get_node(sim.node_id("line-30", "melt_temp_c")).read_value()
                assert 200 < v < 280

    asyncio.run(main())


@pytest.mark.timeout(180)
def test_restart_comes_back_on_the_same_endpoint():
    async def main():
        async with SimulatorServer(lines=1, seed=1, speed=40, port=0) as sim:
            await sim.wait_parts(2, timeout=120)
            port = sim.port
            async with Client(sim.endpoint) as client:
                first = await client.get_node(sim.node_id("line-1", "part_serial")).read_value()
            task = asyncio.create_task(sim.restart(down_s=3.0))
            await _until(lambda: not sim.is_up, 30, "the endpoint going down")
            refused = None
            while refused is None and not task.done():  # until the listener is really closed
                try:
                    async with Client(sim.endpoint, timeout=1):
                        pass
                except (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError) as exc:
                    refused = exc
                else:
                    await asyncio.sleep(0.05)
            assert refused is not None, "the endpoint kept answering during the restart"
            await task
            assert sim.is_up and sim.port == port
            n = len(sim.ground_truth())
            await sim.wait_parts(n + 2, timeout=120)
            async with Client(sim.endpoint) as client:
                later = await client.get_node(sim.node_id("line-1", "part_serial")).read_value()
            assert later > first
            stats = sim.stats()
            assert stats["restarts"] == 1 and stats["downtime_skipped"] > 0

    asyncio.run(main())


def _client_cert(tmp_path: Path) -> tuple[Path, Path]:
    import socket

    from cryptography.x509.oid import ExtendedKeyUsageOID

    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    cert, key = tmp_path / "client_cert.der", tmp_path / "client_key.pem"
    asyncio.run(setup_self_signed_certificate(key, cert, "urn:pq:test:client", socket.gethostname(),
                                              [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "pq test client"}))
    return cert, key


@pytest.mark.timeout(180)
def test_security_encrypt_with_password(tmp_path):
    cert, key = _client_cert(tmp_path)

    async def main():
        async with SimulatorServer(lines=1, seed=1, speed=20, port=0, security="all", cert_dir=tmp_path / "srv",
                                   users={"operator": "s3cret"}) as sim:
            assert sim.server_certificate_path.exists()
            eps = await Client(sim.endpoint).connect_and_get_server_endpoints()
            policies = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode.name) for e in eps}
            for p in ("Basic256Sha256", "Aes256_Sha256_RsaPss", "Aes128_Sha256_RsaOaep"):
                assert {(p, "Sign"), (p, "SignAndEncrypt")} <= policies
            assert ("None", "None_") in policies
            for policy in ("Basic256Sha256", "Aes256Sha256RsaPss", "Aes128Sha256RsaOaep"):
                client = Client(sim.endpoint)
                await client.set_security_string(f"{policy},SignAndEncrypt,{cert},{key},{sim.server_certificate_path}")
                client.set_user("operator")
                client.set_password("s3cret")
                async with client:
                    await client.get_node(sim.node_id("line-1", "melt_temp_c")).read_data_value(
                        raise_on_bad_status=False)
            wrong = Client(sim.endpoint)
            await wrong.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key},{sim.server_certificate_path}")
            wrong.set_user("operator")
            wrong.set_password("nope")
            with pytest.raises(ua.UaError):
                await wrong.connect()
            anonymous = Client(sim.endpoint)
            with pytest.raises(ua.UaError):
                await anonymous.connect()

    asyncio.run(main())


@pytest.mark.timeout(180)
def test_python_m_simulators_serves_in_a_subprocess(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "serve", "--port", str(port), "--lines", "2",
                             "--speed", "30", "--tag-map", str(tmp_path / "tags.csv")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"opc.tcp://127.0.0.1:{port}/pq/sim/" in line, (line, proc.stderr.read() if proc.poll() else "")

        async def read():
            async with Client(f"opc.tcp://127.0.0.1:{port}/pq/sim/") as c:
                node = c.get_node("ns=2;s=line-2.InjectionUnit.melt_temp_c")

                async def written() -> bool:  # the initial value has no source timestamp
                    return (await node.read_data_value(raise_on_bad_status=False)).SourceTimestamp is not None

                await _until(written, 60, "a first melt temperature written on line-2")
                return await node.read_value()

        assert 200 < asyncio.run(read()) < 280
        # the same port again is a clear one-line error
        busy = subprocess.run([sys.executable, "-m", "simulators", "--port", str(port)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert busy.returncode != 0 and "Traceback" not in busy.stderr and str(port) in busy.stderr
        assert "line-2.Cycle.part_serial" in (tmp_path / "tags.csv").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
