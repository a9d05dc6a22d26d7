"""A subscriber on the local Mosquitto (127.0.0.1:1883) for tests that check what pq published."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt


def subscriber(topic: str):
    """(client, received JSON payloads); returns once the broker acknowledged the subscription."""
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    assert subscribed.wait(60), "the broker on 127.0.0.1:1883 did not acknowledge the subscription"
    return sub, got
