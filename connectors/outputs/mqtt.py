"""MQTT output: alert changes (and optionally every part decision) published as JSON.

Owns :class:`MqttOutput`: paho-mqtt 2.x with its own network thread and automatic reconnect;
messages are queued by :class:`~connectors.outputs.base.QueuedOutput` and published with QoS 1 by
default, so the broker acknowledges each. Topics are templates: ``{line_id}`` and ``{event}``.
Imports pq only.

Example::

    out = MqttOutput("mqtt", host="127.0.0.1", port=1883, topic="pq/{line_id}/alerts").start()
    out.on_alert("raised", alert_dict)
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

import paho.mqtt.client as mqtt

from connectors.outputs.base import QueuedOutput, to_json

__all__ = ["MqttOutput"]

logger = logging.getLogger(__name__)


class MqttOutput(QueuedOutput):
    kind = "mqtt"

    def __init__(self, name: str = "mqtt", *, host: str = "127.0.0.1", port: int = 1883,
                 topic: str = "pq/{line_id}/alerts", decisions_topic: str | None = None, qos: int = 1,
                 retain: bool = False, client_id: str | None = None, username: str | None = None,
                 password: str | None = None, tls: bool = False, publish_timeout_s: float = 5.0,
                 queue_max: int = 1000):
        super().__init__(name, queue_max=queue_max)
        if qos not in (0, 1, 2):
            raise ValueError(f"mqtt qos must be 0, 1 or 2, got {qos}")
        self.host, self.port, self.topic, self.decisions_topic = host, port, topic, decisions_topic
        self.qos, self.retain, self.publish_timeout_s = qos, retain, publish_timeout_s
        self._connected = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                   protocol=mqtt.MQTTv311)
        if username:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._loop_started = False

    def describe(self) -> str:
        return f"{self.name} (mqtt://{self.host}:{self.port})"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            return
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()

    def start(self) -> "MqttOutput":
        if not self._loop_started:
            self._loop_started = True
            self._client.connect_async(self.host, self.port, keepalive=30)
            self._client.loop_start()
        return super().start()

    def on_alert(self, event: str, alert: Mapping[str, Any]) -> None:
        topic = self.topic.format(line_id=alert.get("line_id", ""), event=event)
        self.offer((topic, to_json({"event": event, "alert": alert})))

    def on_decision(self, decision: Mapping[str, Any]) -> None:
        if self.decisions_topic:
            self.offer((self.decisions_topic.format(line_id=decision.get("line_id", ""), event="decision"),
                        to_json(decision)))

    def deliver(self, msg: tuple[str, bytes]) -> None:
        if not self._connected.wait(timeout=self.publish_timeout_s):
            raise ConnectionError(f"not connected to broker {self.host}:{self.port}")
        topic, payload = msg
        info = self._client.publish(topic, payload, qos=self.qos, retain=self.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if self.qos > 0:
            info.wait_for_publish(timeout=self.publish_timeout_s)
            if not info.is_published():
                raise TimeoutError(f"broker did not acknowledge {topic} within {self.publish_timeout_s} s")

    def _disconnect(self) -> None:
        if self._loop_started:
            self._client.disconnect()
            self._client.loop_stop()
