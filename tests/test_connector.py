"""The OPC UA connector against a real asyncua server on loopback, writing to real stores.

The server here is a plain asyncua server built in the test (not the simulator): the connector must
work with any compliant server from what its tag map says. Covered: every written value stored
exactly once with its status (Bad kept, NaN flagged, text, wrong types), part and inspection events,
an unknown node reported while the rest runs, a server restart (subscriptions come back by themselves,
the gap recorded), SignAndEncrypt with a trusted server and an untrusted server refused, and tag map
errors naming file, line and key.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asyncua import Server, ua
from sqlalchemy import text

from benchmarks.processes import free_port
from connectors.opcua.session import ConnectorSession
from connectors.tagmap import load_tagmap, parse_tagmap
from pq.errors import ConfigError, ConnectorError
from pq.health import read_health, read_line_events
from pq.spool import Spool, SpoolDrainer

URI = "urn:test:plant"
# asyncua's watchdog probe times out after PQ_CONNECTOR_WATCHDOG_S (default 1 s); with server and client
# in one event loop, a CPU-starved test process would take itself for a hung server and reconnect.
WATCHDOG_S = 5.0


class PlantServer:
    """A small generic OPC UA server: a few variables under Objects/Press, written by the test."""

    NAMES = ("temp", "pressure", "lot", "serial", "end", "insp_serial", "insp_result", "insp_code", "blob")

    def __init__(self, port: int, *, secure_dir: Path | None = None, users: dict | None = None):
        self.port, self.secure_dir, self.users = port, secure_dir, users
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/plant/"
        self.written: dict[str, int] = {n: 0 for n in self.NAMES}
        self.nodes: dict[str, object] = {}
        self.server: Server | None = None

    async def start(self):
        server = Server()
        if self.users:
            from asyncua.crypto.permission_rules import User, UserRole
            from asyncua.server.user_managers import UserManager

            users = self.users

            class _Users(UserManager):
                def get_user(self, iserver, username=None, password=None, certificate=None):
                    if username in users and users[username] == password:
                        return User(role=UserRole.User)
                    return None

            server = Server(user_manager=_Users())
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("test plant")
        if self.secure_dir is not None:
            from asyncua.crypto.cert_gen import setup_self_signed_certificate
            from cryptography.x509.oid import ExtendedKeyUsageOID

            key, cert = self.secure_dir / "server_key.pem", self.secure_dir / "server_cert.der"
            await setup_self_signed_certificate(key, cert, "urn:test:plant:server", "127.0.0.1",
                                                [ExtendedKeyUsageOID.SERVER_AUTH], {})
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt])
            self.cert_path = cert
        idx = await server.register_namespace(URI)
        press = await server.nodes.objects.add_object(ua.NodeId("Press", idx), "Press")
        init = {"temp": 0.0, "pressure": 0.0, "lot": "", "serial": "", "end": datetime(2000, 1, 1, tzinfo=timezone.utc),
                "insp_serial": "", "insp_result": "", "insp_code": "", "blob": 0.0}
        for n in self.NAMES:
            self.nodes[n] = await press.add_variable(ua.NodeId(f"Press.{n}", idx), n, init[n])
        await server.start()
        self.server = server

    async def stop(self):
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def write(self, name: str, value, vtype, ts: datetime, status: int = 0):
        dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(status), SourceTimestamp=ts,
                          ServerTimestamp=datetime.now(timezone.utc))
        await self.server.write_attribute_value(self.nodes[name].nodeid, dv)
        self.written[name] += 1


def tagmap_text(endpoint: str, extra_conn: str = "") -> str:
    """The plant's tag map. keepalive_s 5: asyncua recreates a subscription silent for 1.5 x keep-alive
    (at least 1 s), and a CPU-starved test process (server and client in one event loop) can look
    silent that long although the publish responses are waiting in the socket; recreating then
    drops them. A stopped server is noticed by its closed connection, not by keep-alives."""
    tags = [("temp", "melt_temp_c", "process"), ("pressure", "hold_pressure_bar", "process"),
            ("lot", "material_lot", "context"), ("serial", "part_serial", "part_event"),
            ("end", "cycle_end_time", "part_event"), ("insp_serial", "inspection_serial", "label"),
            ("insp_result", "inspection_result", "label"), ("insp_code", "defect_code", "label"),
            ("blob", "blob_raw", "process"), ("missing", "missing_sensor_c", "process")]
    body = "\n".join(f'[[tags]]\nnode_id = "nsu={URI};s=Press.{n}"\nname = "{name}"\nrole = "{role}"\n'
                     for n, name, role in tags)
    return f"""
[connection]
name = "plant"
endpoint = "{endpoint}"
line_id = "line-1"
publishing_interval_ms = 50
keepalive_s = 5.0
{extra_conn}

{body}
[part_event]
serial = "part_serial"
end = "cycle_end_time"
material_lot = "material_lot"
context = ["material_lot"]

[inspection]
serial = "inspection_serial"
result = "inspection_result"
ok_value = "OK"
defect_code = "defect_code"
"""


async def _wait_for(predicate, timeout_s: float, what: str) -> None:
    """Until ``predicate()`` holds; generous timeouts (a loaded CI runner is slow, not wrong)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


N_KNOWN = len(PlantServer.NAMES)  # nodes that exist: each subscription delivers one initial value of each


async def _produce(srv: PlantServer, t0: datetime, k0: int, n: int):
    """n cycles: 5 temp values (one NaN, one Bad), pressure, a lot, a part, an inspection of an earlier part."""
    D, S = ua.VariantType.Double, ua.VariantType.String
    for k in range(k0, k0 + n):
        base = t0 + timedelta(seconds=k)
        for j in range(5):
            ts = base + timedelta(milliseconds=100 * j)
            if j == 2:
                await srv.write("temp", math.nan, D, ts)
            elif j == 3:
                await srv.write("temp", 0.0, D, ts, status=0x80000000)  # Bad: kept with its status
            else:
                await srv.write("temp", 230.0 + j, D, ts)
        await srv.write("pressure", 500.0 + k, D, base)
        await srv.write("blob", [1.0, 2.0], ua.VariantType.Double, base)  # an array: the wrong type for a sample
        await srv.write("lot", f"LOT-{k // 5}", S, base)
        await srv.write("end", base + timedelta(milliseconds=900), ua.VariantType.DateTime, base)
        await srv.write("serial", f"P-{k:05d}", S, base + timedelta(milliseconds=950))
        if k >= 2:
            await srv.write("insp_result", "NOK" if k % 4 == 0 else "OK", S, base)
            await srv.write("insp_code", "FLASH" if k % 4 == 0 else "", S, base)
            await srv.write("insp_serial", f"P-{k - 2:05d}", S, base + timedelta(milliseconds=960))
        await asyncio.sleep(0.01)


def _store_counts(store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT t.name, COUNT(*) FROM samples s JOIN tags t ON t.id = s.tag_id GROUP BY t.name")).fetchall())


@pytest.mark.timeout(240)
def test_every_value_stored_once_with_status_events_and_unknown_node(store, settings_factory, tmp_path):
    port = free_port()
    srv = PlantServer(port)
    tm = parse_tagmap(tagmap_text(srv.endpoint), "plant.toml")
    settings = settings_factory(connector_flush_interval_ms=50, connector_health_interval_s=0.5,
                                connector_watchdog_s=WATCHDOG_S)
    received = {"parts": [], "batches": 0}

    class Edge:  # the in-memory stream, independent of the database
        def on_samples(self, batch):
            received["batches"] += 1

        def on_part(self, part):
            received["parts"].append(part["serial"])

    async def scenario():
        await srv.start()
        spool = Spool(tmp_path / "spool.sqlite")
        drainer = SpoolDrainer(spool, store).start()
        t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
        try:
            async with ConnectorSession(tm, settings, spool=spool, listeners=[Edge()]) as session:
                await session.wait_connected(60)
                await _wait_for(lambda: session.samples_total >= N_KNOWN, 60, "the initial values")
                initial = session.samples_total
                await _produce(srv, t0, 0, 20)
                await _wait_for(lambda: session.samples_total >= initial + sum(srv.written.values()), 60,
                                "every write received")
                assert session.unknown_nodes == {"line-1/missing_sensor_c": "BadNodeIdUnknown"}
            assert drainer.flush(120), drainer.stats()
        finally:
            drainer.stop(5)
            spool.close()
            await srv.stop()
        return initial, session

    initial, session = asyncio.run(scenario())
    counts = _store_counts(store)
    names = {"temp": "melt_temp_c", "pressure": "hold_pressure_bar", "lot": "material_lot", "serial": "part_serial",
             "end": "cycle_end_time", "insp_serial": "inspection_serial", "insp_result": "inspection_result",
             "insp_code": "defect_code", "blob": "blob_raw"}
    for raw, name in names.items():
        # every write once, plus the initial value each subscription delivers first
        assert counts[name] == srv.written[raw] + 1, (name, counts[name], srv.written[raw])
    assert sum(counts.values()) == sum(srv.written.values()) + initial
    with store.engine.connect() as conn:
        q = lambda sql: conn.execute(text(sql)).scalar()  # noqa: E731
        tid = "(SELECT id FROM tags WHERE name = 'melt_temp_c')"
        assert q(f"SELECT COUNT(*) FROM samples WHERE tag_id = {tid} AND status = {0x80000000}") == 20
        assert q(f"SELECT COUNT(*) FROM samples WHERE tag_id = {tid} AND status = {0x803C0000} AND value IS NULL") == 20
        assert q(f"SELECT COUNT(*) FROM samples WHERE tag_id = {tid} AND status = 0 AND value >= 230") == 60
        blob = "(SELECT id FROM tags WHERE name = 'blob_raw')"
        assert q(f"SELECT COUNT(*) FROM samples WHERE tag_id = {blob} AND status = {0x80740000}") == 20
        assert q("SELECT COUNT(*) FROM samples WHERE value_text LIKE 'LOT-%'") == 20
        assert q("SELECT COUNT(*) FROM parts") == 20
        assert q("SELECT material_lot FROM parts WHERE serial = 'P-00007'") == "LOT-1"
        end = conn.execute(text("SELECT cycle_end FROM parts WHERE serial = 'P-00000'")).scalar()
        assert str(end).startswith(str((datetime.now(timezone.utc) - timedelta(minutes=10)).date()))
        assert q("SELECT COUNT(*) FROM inspections") == 18
        assert q("SELECT COUNT(*) FROM inspections WHERE defect") == sum(1 for k in range(2, 20) if k % 4 == 0)
        assert q("SELECT defect_code FROM inspections WHERE serial = 'P-00002'") == "FLASH"
    assert received["parts"] == [f"P-{k:05d}" for k in range(20)]
    health = read_health(store, "connector:plant")[0]
    assert health["state"] == "stopped"
    assert health["detail"]["unknown_nodes"] == {"line-1/missing_sensor_c": "BadNodeIdUnknown"}
    assert health["detail"]["tags"]["line-1/melt_temp_c"]["last_ts"]
    assert session.counters.unsupported_type == 20 and session.counters.nonfinite == 20


@pytest.mark.timeout(240)
def test_server_restart_subscriptions_return_and_the_gap_is_recorded(sqlite_store, settings_factory, tmp_path):
    port = free_port()
    srv = PlantServer(port)
    tm = parse_tagmap(tagmap_text(srv.endpoint), "plant.toml")
    settings = settings_factory(connector_flush_interval_ms=50, connector_reconnect_max_delay_s=1.0,
                                connector_watchdog_s=WATCHDOG_S)

    async def scenario():
        await srv.start()
        spool = Spool(tmp_path / "spool.sqlite")
        drainer = SpoolDrainer(spool, sqlite_store).start()
        t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
        try:
            async with ConnectorSession(tm, settings, spool=spool) as session:
                await session.wait_connected(60)
                await _produce(srv, t0, 0, 5)
                await srv.stop()
                await _wait_for(lambda: session.state == "lost", 60, "the server's shutdown noticed")
                await asyncio.sleep(2.0)  # the outage: the endpoint stays away for a while
                down_total = session.samples_total  # nothing can arrive while no server runs
                srv.written = {n: 0 for n in srv.NAMES}  # a new server process: count afresh
                srv2 = PlantServer(port)
                await srv2.start()
                await _wait_for(lambda: session.state == "connected", 120, "subscription back after the restart")
                # the recreated subscription delivers one initial value per node first
                await _wait_for(lambda: session.samples_total >= down_total + N_KNOWN, 60,
                                "the initial values after the restart")
                before = session.samples_total
                await _produce(srv2, t0, 100, 5)
                await _wait_for(lambda: session.samples_total >= before + sum(srv2.written.values()), 60,
                                "every write after the restart received")
                after = session.samples_total
                await srv2.stop()
            assert drainer.flush(120), drainer.stats()
        finally:
            drainer.stop(5)
            spool.close()
        return after - before, sum(srv2.written.values()), session

    got, written, session = asyncio.run(scenario())
    assert got == written  # values after the restart all arrive, once
    assert session.reconnects >= 1
    gaps = read_line_events(sqlite_store, "line-1", "gap")
    lost = read_line_events(sqlite_store, "line-1", "connection_lost")
    assert len(gaps) >= 1 and gaps[0]["ended_at"] > gaps[0]["started_at"]
    assert lost and all(e["ended_at"] is not None for e in lost[:1])


@pytest.mark.timeout(240)
def test_sign_and_encrypt_with_trusted_server_and_untrusted_refused(sqlite_store, settings_factory, tmp_path):
    from connectors.opcua.security import ensure_client_certificate

    port = free_port()
    server_dir = tmp_path / "server_pki"
    server_dir.mkdir()
    srv = PlantServer(port, secure_dir=server_dir, users={"operator": "s3cret-pw"})
    pki = tmp_path / "pki"
    security = ('[connection.security]\npolicy = "Basic256Sha256"\nmode = "SignAndEncrypt"\n'
                'username_env = "PQ_TEST_UA_USER"\npassword_env = "PQ_TEST_UA_PASSWORD"\n')
    tm = parse_tagmap(tagmap_text(srv.endpoint, security), "plant.toml")
    settings = settings_factory(pki_dir=pki, connector_watchdog_s=WATCHDOG_S)

    async def scenario():
        await ensure_client_certificate(pki / "client_cert.der", pki / "client_key.pem")
        await srv.start()
        try:
            # 1. the server's certificate is not in the trust list: refused, saved for review
            s1 = ConnectorSession(tm, settings, spool=None, username="operator", password="s3cret-pw")
            async with s1:
                with pytest.raises(ConnectorError, match="not in the trust list"):
                    await s1.wait_connected(60)
            rejected = list((pki / "rejected").glob("*.der"))
            assert len(rejected) == 1
            # 2. the integrator moves it into the trust list: SignAndEncrypt works, user authenticated
            (pki / "trusted").mkdir(parents=True, exist_ok=True)
            rejected[0].rename(pki / "trusted" / rejected[0].name)
            got = []

            class L:
                def on_samples(self, batch):
                    got.append(len(batch))

            async with ConnectorSession(tm, settings, spool=None, listeners=[L()], username="operator",
                                        password="s3cret-pw") as s2:
                await s2.wait_connected(60)
                await _produce(srv, datetime.now(timezone.utc) - timedelta(minutes=1), 0, 2)
                await _wait_for(lambda: sum(got) >= N_KNOWN + sum(srv.written.values()), 60,
                                "initial values and writes over SignAndEncrypt")
                policy = s2._client.security_policy.URI
            assert policy.endswith("Basic256Sha256") and sum(got) > 0
        finally:
            await srv.stop()

    asyncio.run(scenario())


def test_malformed_tag_maps_name_file_line_and_key(tmp_path):
    good = tagmap_text("opc.tcp://127.0.0.1:4840/")
    p = tmp_path / "bad.toml"
    p.write_text(good.replace('name = "hold_pressure_bar"\nrole = "process"', 'name = "hold_pressure_bar"\nrole = "proces"'))
    with pytest.raises(ConfigError) as e:
        load_tagmap(p)
    line = next(i for i, s in enumerate(p.read_text().splitlines(), 1) if 'role = "proces"' in s)
    assert f"bad.toml:{line}" in str(e.value) and "'role'" in str(e.value) and "got 'proces'" in str(e.value)

    p.write_text(good.replace("[part_event]", "[part_event\n"))
    with pytest.raises(ConfigError, match=r"bad.toml:\d+: not valid TOML"):
        load_tagmap(p)
    p.write_text(good.replace('publishing_interval_ms = 50', 'publishing_interval_ms = 50\n[connection.security]\n'
                                                              'password = "hunter2"'))
    with pytest.raises(ConfigError, match="never put a password") as e:
        load_tagmap(p)
    assert "hunter2" not in str(e.value)
    p.write_text(good.replace('serial = "part_serial"', 'serial = "part_serail"'))
    with pytest.raises(ConfigError, match=r"\[part_event\] key 'serial': tag 'part_serail'"):
        load_tagmap(p)
    p.write_text(good.replace('node_id = "nsu=urn:test:plant;s=Press.temp"', 'node_id = "ns=x;q=1"'))
    with pytest.raises(ConfigError, match=r"\[\[tags\]\] #1 key 'node_id'"):
        load_tagmap(p)


def test_shipped_simulator_tag_map_is_valid():
    tm = load_tagmap(Path(__file__).resolve().parents[1] / "connectors" / "tagmaps" / "simulator.toml")
    assert len(tm.tags) >= 30 and tm.part_events and tm.inspections
    assert all(t.node_id.startswith("nsu=") for t in tm.tags)
