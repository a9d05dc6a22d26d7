"""Plant outputs against real endpoints: Mosquitto on 127.0.0.1:1883, a local HTTP server, an asyncua server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest

from benchmarks.processes import free_port, poll_until
from connectors.outputs.config import parse_outputs
from connectors.outputs.mqtt import MqttOutput
from connectors.outputs.webhook import WebhookOutput
from pq.config import load_settings
from pq.errors import ConfigError

ALERT = {"id": "a1", "line_id": "line-1", "state": "active", "title": "Part S1 at risk", "score": float("nan")}


@pytest.mark.timeout(90)
def test_mqtt_publishes_alert_json_to_local_broker():
    topic_root = f"pqtest/{uuid.uuid4().hex[:8]}"
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topic_root}/#", qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()  # SUBACK: the broker will forward from now on
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    try:
        assert subscribed.wait(60), "the broker on 127.0.0.1:1883 did not acknowledge the subscription"
        out = MqttOutput("mqtt", topic=topic_root + "/{line_id}/{event}").start()
        out.on_alert("raised", ALERT)
        assert poll_until(lambda: got), ("the subscriber received nothing", out.status())
        topic, body = got[0]
        assert topic == f"{topic_root}/line-1/raised"
        assert body["event"] == "raised" and body["alert"]["id"] == "a1" and body["alert"]["score"] is None
        # the broker forwards before it acknowledges the publish: wait for the output to count it
        assert poll_until(lambda: out.status()["delivered"] == 1), ("PUBACK not counted as delivered", out.status())
        assert out.status()["failures"] == 0
        out.close()
    finally:
        sub.loop_stop()
        sub.disconnect()


@pytest.mark.timeout(60)
def test_mqtt_broker_down_is_counted_bounded_and_never_blocks():
    port = free_port()  # nothing listens there
    # Offering never waits for delivery: the worker is stuck waiting (30 s) for a broker that never
    # answers, on the first message, and all 20 offers have already returned and been accounted for
    # (the oldest dropped, the queue at its bound), with no delivery attempt finished yet.
    stuck = MqttOutput("mqtt", port=port, queue_max=5, publish_timeout_s=30).start()
    for i in range(20):
        stuck.on_alert("raised", dict(ALERT, id=f"a{i}"))
    st = stuck.status()
    assert (st["queued"], st["dropped"], st["delivered"], st["failures"]) == (5, 15, 0, 0), st
    stuck.close(flush_timeout_s=0.1)  # its worker gives up on its own when the 30 s are over
    # A short publish timeout: the failures are counted, the endpoint reported down, the queue bounded.
    out = MqttOutput("mqtt", port=port, queue_max=5, publish_timeout_s=0.2).start()
    for i in range(20):
        out.on_alert("raised", dict(ALERT, id=f"a{i}"))
    assert poll_until(lambda: out.status()["failures"] >= 1 and out.status()["up"] is False), out.status()
    st = out.status()
    assert st["queued"] <= 5 and st["dropped"] >= 15, st
    out.close(flush_timeout_s=0.1)


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        cls.received.append((dict(self.headers), body))
        self.send_response(400 if b"refuse-me" in body else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.timeout(90)
def test_webhook_signs_retries_and_refuses():
    _Hook.received, _Hook.fail_first = [], 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        out = WebhookOutput("webhook", url=url, secret="s3cret").start()
        out.on_alert("raised", ALERT)
        # The server has the POST before the output has the response: wait for what is asserted below
        # (two 503s retried, then delivered), not for the server's side.
        assert poll_until(lambda: out.status()["delivered"] == 1 and out.status()["up"] is True), out.status()
        assert len(_Hook.received) == 1, _Hook.received
        headers, body = _Hook.received[0]
        expected = "sha256=" + hmac.new(b"s3cret", headers["X-PQ-Timestamp"].encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        assert headers["X-PQ-Signature"] == expected and headers["X-PQ-Event"] == "raised"
        assert json.loads(body)["alert"]["id"] == "a1"
        st = out.status()
        assert st["failures"] == 2 and st["delivered"] == 1 and st["up"] is True, st  # two 503s, retried
        out.on_alert("raised", dict(ALERT, id="refuse-me"))
        assert poll_until(lambda: out.status()["rejected"] == 1), out.status()
        assert "s3cret" not in str(out.status())
        out.close()
    finally:
        server.shutdown()


@pytest.mark.timeout(120)
def test_opcua_writeback_writes_quarantine_flag():
    from asyncua import Server, ua

    port = free_port()
    state: dict = {}
    stop = threading.Event()

    async def serve():
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/pq-test/")
        idx = await server.register_namespace("urn:pq:test")
        obj = await server.nodes.objects.add_object(idx, "Line1")
        q = await obj.add_variable(ua.NodeId("Line1.Quarantine", idx), "Quarantine", False)
        s = await obj.add_variable(ua.NodeId("Line1.RiskScore", idx), "RiskScore", 0.0)
        n = await obj.add_variable(ua.NodeId("Line1.RiskSerial", idx), "RiskSerial", "")
        for v in (q, s, n):
            await v.set_writable()
        state["idx"] = idx
        async with server:
            state["ready"] = True
            while not stop.is_set():
                state["values"] = (await q.read_value(), await s.read_value(), await n.read_value())
                await asyncio.sleep(0.05)

    th = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    th.start()
    try:
        assert poll_until(lambda: state.get("ready")), "the test's OPC UA server did not start"
        idx = state["idx"]
        settings = load_settings(database_url="sqlite:///:memory:")
        text = f"""
[[opcua]]
endpoint = "opc.tcp://127.0.0.1:{port}/pq-test/"
[opcua.nodes]
quarantine = "ns={idx};s={{line_id}}.Quarantine"
score = "ns={idx};s={{line_id}}.RiskScore"
serial = "ns={idx};s={{line_id}}.RiskSerial"
"""
        (out,) = parse_outputs(text, settings, "Line1")
        out.start()
        out.on_decision({"serial": "S42", "decision": "at_risk", "score": 0.93})
        assert poll_until(lambda: state.get("values") == (True, pytest.approx(0.93), "S42")), (state, out.status())
        out.on_decision({"serial": "S43", "decision": "ok", "score": 0.02})
        assert poll_until(lambda: state.get("values") == (False, pytest.approx(0.02), "S43")), (state, out.status())
        # the server holds the values before the client has its write response: wait for the count
        assert poll_until(lambda: out.status()["delivered"] == 2), out.status()
        out.close()
    finally:
        stop.set()
        th.join(10)


@pytest.mark.timeout(10)
def test_outputs_file_errors_are_clear():
    s = load_settings(database_url="sqlite:///:memory:")
    with pytest.raises(ConfigError, match=r"\[\[mqtt\]\] #1: unknown key\(s\) hots"):
        parse_outputs('[[mqtt]]\nhots = "x"\n', s, "line-1", source="out.toml")
    with pytest.raises(ConfigError, match="unknown section"):
        parse_outputs('[kafka]\nx = 1\n', s, "line-1")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        parse_outputs('[[webhook]\n', s, "line-1")
    with pytest.raises(ConfigError, match="scheme 'ftp'"):
        parse_outputs('[[webhook]]\nurl = "ftp://x/y"\n', s, "line-1")
