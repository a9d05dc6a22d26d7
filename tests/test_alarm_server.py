"""connectors.opcua.alarm_server: pq alerts as OPC UA Part 9 conditions, driven by a plain asyncua client.

Alerts are written into the store the way the edge writes them (pq.edge.records), the server runs on a
free loopback port, and the client subscribes to events on the Server object, calls ConditionRefresh,
Acknowledge, TimedShelve, Unshelve. Every check waits on a condition with a bounded timeout."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from sqlalchemy import select

from benchmarks.processes import free_port
from connectors.opcua.alarm_server import CERT_FILE, KEY_FILE, NAMESPACE_URI, AlarmServer, ensure_server_certificate
from connectors.opcua.security import ensure_client_certificate
from pq.alerts import actions
from pq.auth.roles import Actor
from pq.auth.users import add_user
from pq.edge.records import write_alert_events, write_alerts
from pq.storage import schema

ADMIN = Actor("root", "admin")
PASSWORD = "press line passphrase 7"
WAIT_S = 20.0
_O = ua.ObjectIds


def _alert(line_id: str = "line-01", **over) -> dict:
    now = datetime.now(timezone.utc)
    row = {"id": str(uuid.uuid4()), "line_id": line_id, "kind": "episode", "cause": "melt_temp", "state": "active",
           "severity": "high", "serial": "L1-000412", "station": "press-1", "product": "P1", "material_lot": "LOT-7",
           "shift": "A", "score": 0.91,
           "title": "3 of the last 10 parts at risk, same cause: Melt temperature 6 °C above normal",
           "action": "Check the barrel heater zone 3", "explanation": None, "model_version_id": None,
           "repeat_count": 1, "raised_at": now, "updated_at": now, "cleared_at": None}
    return row | over


def _raise(store, **over) -> dict:
    """Write an alert and its 'raised' event as the edge's spool drainer does."""
    row = _alert(**over)
    write_alerts(store, [row])
    write_alert_events(store, [{"id": str(uuid.uuid4()), "alert_id": row["id"], "event": "raised",
                                "at": row["raised_at"], "username": "edge", "detail": None}])
    return row


def _row(store, alert_id: str):
    with store.engine.connect() as conn:
        return conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).one()


def _events(store, alert_id: str) -> list[str]:
    with store.engine.connect() as conn:
        return [r.event for r in conn.execute(select(schema.alert_events.c.event)
                                              .where(schema.alert_events.c.alert_id == alert_id)
                                              .order_by(schema.alert_events.c.at))]


def _audit(store, alert_id: str) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        return [(r.action, r.username, r.client) for r in conn.execute(
            select(schema.audit_log).where(schema.audit_log.c.target == f"alert:{alert_id}")
            .order_by(schema.audit_log.c.id))]


class _Events:
    """Event handler that keeps every notification; ``wait`` returns the first one matching."""

    def __init__(self):
        self.items: list = []

    def event_notification(self, event):
        self.items.append(event)

    async def wait(self, pred, what: str, timeout_s: float = WAIT_S):
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            for ev in reversed(self.items):
                if pred(ev):
                    return ev
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no event {what} within {timeout_s} s; got {len(self.items)} events")
            await asyncio.sleep(0.05)


def _of(alert_id: str):
    return lambda ev: getattr(ev, "AlertId", None) == alert_id


async def _wait(pred, what: str, timeout_s: float = WAIT_S):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await asyncio.to_thread(pred):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _subscribe(client: Client) -> tuple[_Events, object]:
    idx = await client.get_namespace_index(NAMESPACE_URI)
    alarm_type = await client.nodes.base_event_type.get_child(
        ["0:ConditionType", "0:AcknowledgeableConditionType", "0:AlarmConditionType", "0:DiscreteAlarmType",
         "0:OffNormalAlarmType", f"{idx}:PqAlarmType"])
    handler = _Events()
    sub = await client.create_subscription(50, handler)
    await sub.subscribe_events(client.nodes.server, alarm_type)
    # ConditionRefresh: the retained conditions are re-sent to this subscription
    await client.get_node(_O.ConditionType).call_method(ua.NodeId(_O.ConditionType_ConditionRefresh),
                                                        ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
    return handler, sub


def _client(url: str, user: str | None = None) -> Client:
    client = Client(url, timeout=10)
    if user is not None:
        client.set_user(user)
        client.set_password(PASSWORD)
    return client


async def _secure_client(url: str, tmp_path, server: AlarmServer, user: str, *, trusted: bool = True) -> Client:
    cert, key, _ = await ensure_client_certificate(tmp_path / "client" / "cert.der", tmp_path / "client" / "key.pem",
                                                   host="127.0.0.1")
    if trusted:  # what the integrator does once: the HMI's certificate goes into the server's trust list
        server.client_trust.directory.mkdir(parents=True, exist_ok=True)
        (server.client_trust.directory / "hmi.der").write_bytes(cert.read_bytes())
    client = _client(url, user)
    client.application_uri = "urn:pq:connector:127.0.0.1"
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                              server_certificate=str(server.certificate_path),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    return client


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory):
    """One server certificate for the module (an RSA key costs seconds on a loaded machine)."""
    pki = tmp_path_factory.mktemp("alarm-pki")
    asyncio.run(ensure_server_certificate(pki, "127.0.0.1"))
    return pki


@pytest.fixture
def make_server(tmp_path, server_pki):
    """AlarmServer(store, **kw) on a free loopback port, with the module's certificate; returns (server, url)."""
    def make(store, **kw) -> tuple[AlarmServer, str]:
        url = f"opc.tcp://127.0.0.1:{free_port()}/pq/alarms"
        pki = tmp_path / f"pki-{uuid.uuid4().hex[:6]}"
        pki.mkdir()
        for name in (CERT_FILE, KEY_FILE):
            shutil.copy(server_pki / name, pki / name)
        return AlarmServer(store, endpoint=url, pki_dir=pki, poll_s=0.2, **kw), url

    return make


async def _ack(client: Client, ev, comment: str = "seen at the press"):
    return await client.get_node(ev.NodeId).call_method(
        ua.NodeId(_O.AcknowledgeableConditionType_Acknowledge),
        ua.Variant(ev.EventId, ua.VariantType.ByteString), ua.LocalizedText(comment))


def _bad(exc_info) -> int:
    return exc_info.value.code


@pytest.mark.timeout(120)
def test_condition_and_acknowledge_over_basic256sha256(store, tmp_path, make_server):
    """An operator acknowledges from the HMI over SignAndEncrypt: pq's alert is acknowledged by them,
    with an alert event and an audit row, and the client sees AckedState true."""
    add_user(store, "ann", PASSWORD, "operator", actor=ADMIN)
    alert = _raise(store)

    async def scenario():
        server, url = make_server(store, allow_none_policy=False)
        async with server:
            untrusted = await _secure_client(url, tmp_path, server, "ann", trusted=False)
            with pytest.raises(ua.UaStatusCodeError):
                await untrusted.connect()
            await untrusted.disconnect()
            assert list(server.client_trust.rejected_dir.glob("*.der")), "the refused HMI certificate is kept"
            client = await _secure_client(url, tmp_path, server, "ann")
            async with client:
                events, _ = await _subscribe(client)
                ev = await events.wait(_of(alert["id"]), "for the raised alert")
                assert ev.Message.Text == alert["title"]
                assert ev.Severity == 900 and ev.SourceName == "line-01" and ev.ConditionName == "melt_temp"
                assert getattr(ev, "ActiveState/Id") is True and getattr(ev, "AckedState/Id") is False
                assert ev.Retain is True and ev.Serial == "L1-000412"
                assert ev.RecommendedAction == "Check the barrel heater zone 3"
                await _ack(client, ev)  # Good: no exception
                acked = await events.wait(lambda e: _of(alert["id"])(e) and getattr(e, "AckedState/Id"),
                                          "with AckedState true")
                assert acked.ClientUserId == "ann" and acked.Comment.Text == "seen at the press"

    asyncio.run(scenario())
    row = _row(store, alert["id"])
    assert row.state == "acknowledged" and row.acked_by == "ann"
    assert _events(store, alert["id"]) == ["raised", "acknowledged", "comment"]
    assert ("alert.acknowledged", "ann", "opcua:127.0.0.1") in _audit(store, alert["id"])


@pytest.mark.timeout(120)
def test_ui_acknowledgement_reaches_the_client_and_the_second_ack_is_refused(store, make_server):
    add_user(store, "ann", PASSWORD, "operator", actor=ADMIN)
    alert = _raise(store)

    async def scenario():
        server, url = make_server(store)
        async with server, _client(url, "ann") as client:
            events, _ = await _subscribe(client)
            first = await events.wait(_of(alert["id"]), "for the raised alert")
            # the UI's server-side action, as the Alerts page calls it
            await asyncio.to_thread(actions.acknowledge, store, alert["id"], actor=Actor("bob", "operator", "10.0.0.9"))
            acked = await events.wait(lambda e: _of(alert["id"])(e) and getattr(e, "AckedState/Id"),
                                      "with AckedState true after the UI's acknowledgement")
            assert acked.ClientUserId == "bob"
            with pytest.raises(ua.UaStatusCodeError) as exc:
                await _ack(client, first)
            assert _bad(exc) == ua.StatusCodes.BadConditionBranchAlreadyAcked

    asyncio.run(scenario())
    row = _row(store, alert["id"])
    assert row.acked_by == "bob"  # first wins
    audit = _audit(store, alert["id"])
    assert ("alert.acknowledged", "bob", "10.0.0.9") in audit
    assert ("alert.acknowledge_refused", "ann", "opcua:127.0.0.1") in audit


@pytest.mark.timeout(120)
def test_timed_shelve_and_unshelve_from_the_client(store, make_server):
    add_user(store, "ann", PASSWORD, "operator", actor=ADMIN)
    alert = _raise(store)

    async def scenario():
        server, url = make_server(store)
        async with server, _client(url, "ann") as client:
            events, _ = await _subscribe(client)
            ev = await events.wait(_of(alert["id"]), "for the raised alert")
            shelving = client.get_node(ua.NodeId(ev.NodeId.Identifier + "/ShelvingState", ev.NodeId.NamespaceIndex))
            with pytest.raises(ua.UaStatusCodeError) as exc:  # 1 s is below pq's shortest shelve
                await shelving.call_method(ua.NodeId(_O.ShelvedStateMachineType_TimedShelve),
                                           ua.Variant(1000.0, ua.VariantType.Double))
            assert _bad(exc) == ua.StatusCodes.BadShelvingTimeOutOfRange
            before = datetime.now(timezone.utc)
            await shelving.call_method(ua.NodeId(_O.ShelvedStateMachineType_TimedShelve),
                                       ua.Variant(600_000.0, ua.VariantType.Double))
            shelved = await events.wait(
                lambda e: _of(alert["id"])(e) and getattr(e, "ShelvingState/CurrentState").Text == "TimedShelved",
                "shelved")
            assert shelved.SuppressedOrShelved is True and 0 < getattr(shelved, "ShelvingState/UnshelveTime") <= 600_000
            assert shelved.ClientUserId == "ann"  # who made the latest change, though nobody acknowledged
            row = await asyncio.to_thread(_row, store, alert["id"])
            assert row.state == "shelved" and "shelved from the HMI" in row.shelve_reason
            until = row.shelved_until if row.shelved_until.tzinfo else row.shelved_until.replace(tzinfo=timezone.utc)
            assert before + timedelta(seconds=590) <= until <= datetime.now(timezone.utc) + timedelta(seconds=610)
            await shelving.call_method(ua.NodeId(_O.ShelvedStateMachineType_Unshelve))
            await events.wait(
                lambda e: _of(alert["id"])(e) and getattr(e, "ShelvingState/CurrentState").Text == "Unshelved"
                and e.PqState == "active", "unshelved")
            with pytest.raises(ua.UaStatusCodeError) as exc:
                await shelving.call_method(ua.NodeId(_O.ShelvedStateMachineType_Unshelve))
            assert _bad(exc) == ua.StatusCodes.BadConditionNotShelved
            # and the other way: shelved on pq's own page, the HMI shows it shelved with the time left
            await asyncio.to_thread(actions.shelve, store, alert["id"], actor=Actor("bob", "operator", "10.0.0.9"),
                                    reason="sensor being replaced", duration_s=900)
            ui_shelved = await events.wait(
                lambda e: _of(alert["id"])(e) and getattr(e, "ShelvingState/CurrentState").Text == "TimedShelved"
                and e.ClientUserId == "bob", "shelved from the UI")
            assert 0 < getattr(ui_shelved, "ShelvingState/UnshelveTime") <= 900_000

    asyncio.run(scenario())
    assert _events(store, alert["id"]) == ["raised", "shelved", "unshelved", "shelved"]


@pytest.mark.timeout(120)
def test_anonymous_may_watch_but_never_act(sqlite_store, make_server):
    store = sqlite_store
    add_user(store, "otto", PASSWORD, "operator", actor=ADMIN)
    alert = _raise(store)

    async def scenario():
        server, url = make_server(store)
        async with server:
            async with _client(url) as client:
                events, _ = await _subscribe(client)
                ev = await events.wait(_of(alert["id"]), "for the raised alert (anonymous)")
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await _ack(client, ev)
                assert _bad(exc) == ua.StatusCodes.BadUserAccessDenied
                shelving = client.get_node(ua.NodeId(ev.NodeId.Identifier + "/ShelvingState", ev.NodeId.NamespaceIndex))
                with pytest.raises(ua.UaStatusCodeError) as exc:
                    await shelving.call_method(ua.NodeId(_O.ShelvedStateMachineType_TimedShelve),
                                               ua.Variant(600_000.0, ua.VariantType.Double))
                assert _bad(exc) == ua.StatusCodes.BadUserAccessDenied
            bad = _client(url, "otto")
            bad.set_password("not the password at all")
            with pytest.raises(ua.UaStatusCodeError):
                await bad.connect()
            await bad.disconnect()

        closed, url2 = make_server(store, allow_anonymous=False)
        async with closed:
            with pytest.raises(ua.UaStatusCodeError):
                async with _client(url2):
                    pass

    asyncio.run(scenario())
    row = _row(store, alert["id"])
    assert row.state == "active" and row.acked_at is None
    assert _events(store, alert["id"]) == ["raised"]


@pytest.mark.timeout(120)
def test_acknowledging_an_alert_pq_cleared_is_refused(store, make_server):
    add_user(store, "ann", PASSWORD, "operator", actor=ADMIN)
    alert = _raise(store)

    async def scenario():
        server, url = make_server(store)
        async with server, _client(url, "ann") as client:
            events, _ = await _subscribe(client)
            ev = await events.wait(_of(alert["id"]), "for the raised alert")
            now = datetime.now(timezone.utc)
            await asyncio.to_thread(write_alerts, store, [alert | {"state": "cleared", "cleared_at": now,
                                                                   "updated_at": now}])
            gone = await events.wait(lambda e: _of(alert["id"])(e) and e.Retain is False, "with Retain false")
            assert getattr(gone, "ActiveState/Id") is False
            with pytest.raises(ua.UaStatusCodeError) as exc:
                await _ack(client, ev)
            assert _bad(exc) == ua.StatusCodes.BadConditionBranchAlreadyAcked
            with pytest.raises(ua.UaStatusCodeError) as exc:  # an EventId this server never sent
                await client.get_node(ev.NodeId).call_method(
                    ua.NodeId(_O.AcknowledgeableConditionType_Acknowledge),
                    ua.Variant(b"not an event id", ua.VariantType.ByteString), ua.LocalizedText(""))
            assert _bad(exc) == ua.StatusCodes.BadEventIdUnknown

    asyncio.run(scenario())
    row = _row(store, alert["id"])
    assert row.state == "cleared" and row.acked_at is None
    assert ("alert.acknowledge_refused", "ann", "opcua:127.0.0.1") in _audit(store, alert["id"])


@pytest.mark.timeout(120)
def test_updates_confirm_comment_and_refresh_for_a_late_subscriber(sqlite_store, make_server):
    """A repeat written by the edge is an event; Confirm (after the acknowledgement) and AddComment are
    stored as alert events with audit rows; a client subscribing later gets the condition by ConditionRefresh."""
    store = sqlite_store
    add_user(store, "ann", PASSWORD, "engineer", actor=ADMIN)
    alert = _raise(store, severity="medium")

    async def scenario():
        server, url = make_server(store)
        async with server, _client(url, "ann") as client:
            events, _ = await _subscribe(client)
            ev = await events.wait(_of(alert["id"]), "for the raised alert")
            assert ev.Severity == 600
            with pytest.raises(ua.UaStatusCodeError) as exc:  # confirmation follows acknowledgement
                await client.get_node(ev.NodeId).call_method(
                    ua.NodeId(_O.AcknowledgeableConditionType_Confirm),
                    ua.Variant(ev.EventId, ua.VariantType.ByteString), ua.LocalizedText("done"))
            assert _bad(exc) == ua.StatusCodes.BadInvalidState
            later = datetime.now(timezone.utc)
            await asyncio.to_thread(write_alerts, store, [alert | {"repeat_count": 3, "serial": "L1-000415",
                                                                   "severity": "high", "updated_at": later}])
            upd = await events.wait(lambda e: _of(alert["id"])(e) and e.RepeatCount == 3, "for the repeat")
            assert upd.Serial == "L1-000415" and upd.Severity == 900
            line = await client.nodes.objects.get_child(
                ["%d:pq Alarms" % upd.NodeId.NamespaceIndex, "%d:line-01" % upd.NodeId.NamespaceIndex])
            unacked = await line.get_child("%d:UnacknowledgedAlarms" % upd.NodeId.NamespaceIndex)
            assert await unacked.read_value() == 1
            await _ack(client, upd, comment="")
            acked = await events.wait(lambda e: _of(alert["id"])(e) and getattr(e, "AckedState/Id"), "acknowledged")
            await client.get_node(ev.NodeId).call_method(
                ua.NodeId(_O.AcknowledgeableConditionType_Confirm),
                ua.Variant(acked.EventId, ua.VariantType.ByteString), ua.LocalizedText("heater zone 3 replaced"))
            await events.wait(lambda e: _of(alert["id"])(e) and getattr(e, "ConfirmedState/Id"), "confirmed")
            assert await unacked.read_value() == 0  # the data-only view of the same acknowledgement
            highest = await line.get_child("%d:HighestSeverity" % upd.NodeId.NamespaceIndex)
            assert await highest.read_value() == 0
            await client.get_node(ev.NodeId).call_method(
                ua.NodeId(_O.ConditionType_AddComment),
                ua.Variant(acked.EventId, ua.VariantType.ByteString), ua.LocalizedText("watch the next lot"))
            await events.wait(lambda e: _of(alert["id"])(e) and e.Comment.Text == "watch the next lot", "commented")
            with pytest.raises(ua.UaStatusCodeError) as exc:  # refused whole, never cut
                await client.get_node(ev.NodeId).call_method(
                    ua.NodeId(_O.ConditionType_AddComment),
                    ua.Variant(acked.EventId, ua.VariantType.ByteString), ua.LocalizedText("x" * 500))
            assert _bad(exc) == ua.StatusCodes.BadInvalidArgument
            async with _client(url) as late:
                late_events, _ = await _subscribe(late)
                got = await late_events.wait(_of(alert["id"]), "by ConditionRefresh")
                assert getattr(got, "ConfirmedState/Id") is True and got.Retain is True

    asyncio.run(scenario())
    assert _events(store, alert["id"]) == ["raised", "acknowledged", "confirmed", "comment"]
    actions_ = [a for a, _, _ in _audit(store, alert["id"])]
    assert actions_ == ["alert.acknowledged", "alert.confirmed", "alert.comment"]


@pytest.mark.timeout(120)
def test_serves_before_the_store_answers_and_reports_an_outage(sqlite_store, caplog, make_server):
    """Started while the database is down (the CLI hands the store over once it answers), then an unreachable
    store: the server keeps serving, logs the outage and the recovery once each, and mirrors alerts after."""
    from sqlalchemy import create_engine

    from pq.storage.engine import Store

    alert = _raise(sqlite_store)
    down = Store(create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
                               connect_args={"connect_timeout": 2}), sqlite_store.settings)

    async def scenario():
        server, url = make_server(None)
        async with server, _client(url) as client:
            events, _ = await _subscribe(client)
            server.set_store(down)
            await _wait(lambda: "store not reachable" in caplog.text, "the outage logged")
            assert not events.items
            server.set_store(sqlite_store)
            ev = await events.wait(_of(alert["id"]), "once the store answers")
            assert getattr(ev, "ActiveState/Id") is True
            assert "store reachable again" in caplog.text
        down.dispose()

    caplog.set_level("INFO", logger="connectors.opcua.alarm_server")
    asyncio.run(scenario())
    assert caplog.text.count("store not reachable") == 1


@pytest.mark.timeout(120)
def test_cli_serves_while_the_database_is_down_and_stops_cleanly(tmp_path, monkeypatch):
    """`pq alarms serve` with an unreachable database: it listens, says so in one line (no traceback), and
    SIGTERM ends it with exit code 0."""
    import subprocess
    import sys

    from benchmarks.processes import spawn, wait_listening

    port = free_port()
    log = tmp_path / "alarms.log"
    monkeypatch.setenv("PQ_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")  # nothing listens
    monkeypatch.setenv("PQ_DATA_DIR", str(tmp_path / "var"))
    with open(log, "w") as out:
        proc = spawn([sys.executable, "-m", "pq.cli", "alarms", "serve", "--endpoint", f"opc.tcp://127.0.0.1:{port}",
                      "--no-none-policy", "--pki-dir", str(tmp_path / "pki")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listening(proc, port, 90, what="pq alarms serve", log=log)
    finally:
        proc.terminate()
        rc = proc.wait(30)
    text = log.read_text()
    assert rc == 0, text
    assert "not reachable" in text and "Traceback" not in text
    assert (tmp_path / "pki" / "alarm_server_cert.der").exists()
