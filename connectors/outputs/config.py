"""The outputs file: which plant systems receive alerts and verdicts (TOML, each section optional).

Owns :func:`load_outputs`, which validates the file and builds started outputs. Secrets do not
belong in this file: the webhook key comes from ``PQ_EDGE_WEBHOOK_SECRET``, the MQTT password from
``PQ_EDGE_MQTT_PASSWORD`` (settings, never logged). ``{line_id}`` in topics and node ids is
replaced by the edge's line. Imports pq only.

Example file::

    [[mqtt]]
    host = "127.0.0.1"
    port = 1883
    topic = "pq/{line_id}/alerts"        # {event} also available
    decisions_topic = "pq/{line_id}/parts"  # optional: every part verdict
    qos = 1

    [[webhook]]
    url = "https://mes.example/pq/alerts"
    timeout_s = 5

    [[opcua]]
    endpoint = "opc.tcp://plc.example:4840"
    on = "all"                            # or "at_risk"
    quarantine_not_scored = false
    [opcua.nodes]
    quarantine = "ns=2;s={line_id}.Quarantine"
    score = "ns=2;s={line_id}.RiskScore"
    serial = "ns=2;s={line_id}.RiskSerial"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pq.config import Settings
from pq.errors import ConfigError

__all__ = ["load_outputs", "parse_outputs"]

_ALLOWED = {
    "mqtt": {"name", "host", "port", "topic", "decisions_topic", "qos", "retain", "client_id", "username", "tls",
             "publish_timeout_s"},
    "webhook": {"name", "url", "timeout_s", "decisions", "verify_tls"},
    "opcua": {"name", "endpoint", "nodes", "on", "quarantine_not_scored", "timeout_s", "username"},
}


def parse_outputs(text: str, settings: Settings, line_id: str, source: str = "<text>") -> list[Any]:
    """Validate the outputs TOML and build the (not yet started) outputs."""
    from connectors.outputs.mqtt import MqttOutput
    from connectors.outputs.opcua_writeback import OpcUaWriteBack
    from connectors.outputs.webhook import WebhookOutput

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"outputs file {source}: TOML syntax error: {exc}") from None
    unknown = sorted(set(doc) - set(_ALLOWED))
    if unknown:
        raise ConfigError(f"outputs file {source}: unknown section(s) {', '.join(unknown)}, "
                          f"expected some of {', '.join(sorted(_ALLOWED))}")
    outputs: list[Any] = []
    qmax = settings.edge_output_queue_max
    for kind, entries in doc.items():
        if isinstance(entries, dict):
            entries = [entries]
        for i, e in enumerate(entries):
            where = f"outputs file {source}: [[{kind}]] #{i + 1}"
            extra = sorted(set(e) - _ALLOWED[kind])
            if extra:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}, expected some of "
                                  f"{', '.join(sorted(_ALLOWED[kind]))}")
            e = {k: (v.replace("{line_id}", line_id) if isinstance(v, str) and k not in ("topic", "decisions_topic")
                     else v) for k, v in e.items()}
            name = e.pop("name", f"{kind}" if i == 0 else f"{kind}-{i + 1}")
            try:
                if kind == "mqtt":
                    pw = settings.edge_mqtt_password.get_secret_value() if settings.edge_mqtt_password else None
                    outputs.append(MqttOutput(name, queue_max=qmax, password=pw, **e))
                elif kind == "webhook":
                    if "url" not in e:
                        raise ConfigError(f"{where}: 'url' is required")
                    secret = settings.edge_webhook_secret.get_secret_value() if settings.edge_webhook_secret else None
                    outputs.append(WebhookOutput(name, queue_max=qmax, secret=secret, **e))
                else:
                    if "endpoint" not in e or not isinstance(e.get("nodes"), dict):
                        raise ConfigError(f"{where}: 'endpoint' and an [opcua.nodes] table are required")
                    e["nodes"] = {k: str(v).replace("{line_id}", line_id) for k, v in e["nodes"].items()}
                    pw = settings.edge_opcua_password.get_secret_value() if settings.edge_opcua_password else None
                    outputs.append(OpcUaWriteBack(name, queue_max=qmax, password=pw, **e))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"outputs file {source}: output names must be unique, got {names}")
    return outputs


def load_outputs(path: Path | None, settings: Settings, line_id: str) -> list[Any]:
    """Outputs from the file (none when ``path`` is None), started."""
    if path is None:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"outputs file {path}: cannot read ({exc.strerror})") from None
    outputs = parse_outputs(text, settings, line_id, source=str(path))
    return [o.start() for o in outputs]
