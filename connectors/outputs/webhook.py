"""Webhook output: alert changes POSTed as JSON to an MES / andon endpoint, signed, retried.

Owns :class:`WebhookOutput`. Each request carries ``X-PQ-Event``, ``X-PQ-Timestamp`` (Unix s) and,
when a secret is configured (``PQ_EDGE_WEBHOOK_SECRET``), ``X-PQ-Signature: sha256=<hex>`` = HMAC-SHA256
of ``"<timestamp>." + body`` so the receiver can check origin and reject replays. 2xx = delivered;
408, 429 and 5xx or a transport error = retried with backoff; any other 4xx = refused for good
(counted, logged, dropped). The URL's credentials and the secret are never logged. Imports pq only.

Verifying on the receiver (Python)::

    expected = "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, request.headers["X-PQ-Signature"])
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any, Mapping
from urllib.parse import urlsplit

import httpx

from connectors.outputs.base import PermanentDeliveryError, QueuedOutput, to_json

__all__ = ["WebhookOutput", "sign"]

logger = logging.getLogger(__name__)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookOutput(QueuedOutput):
    kind = "webhook"

    def __init__(self, name: str = "webhook", *, url: str, secret: str | None = None, timeout_s: float = 5.0,
                 decisions: bool = False, verify_tls: bool = True, queue_max: int = 1000):
        super().__init__(name, queue_max=queue_max)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url must be http(s)://host/..., got scheme {parts.scheme!r}")
        self.url = url
        self._safe_url = f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        self._secret = secret.encode() if secret else None
        self.decisions = decisions
        self._client = httpx.Client(timeout=timeout_s, verify=verify_tls, follow_redirects=False)

    def describe(self) -> str:
        return f"{self.name} ({self._safe_url})"

    def on_alert(self, event: str, alert: Mapping[str, Any]) -> None:
        self.offer((event, to_json({"event": event, "alert": alert})))

    def on_decision(self, decision: Mapping[str, Any]) -> None:
        if self.decisions:
            self.offer(("decision", to_json({"event": "decision", "decision": decision})))

    def deliver(self, msg: tuple[str, bytes]) -> None:
        event, body = msg
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-PQ-Event": event, "X-PQ-Timestamp": ts,
                   "User-Agent": "pq-edge"}
        if self._secret:
            headers["X-PQ-Signature"] = sign(self._secret, ts, body)
        resp = self._client.post(self.url, content=body, headers=headers)
        code = resp.status_code
        if 200 <= code < 300:
            return
        if code in (408, 429) or code >= 500 or 300 <= code < 400:
            raise ConnectionError(f"HTTP {code} from {self._safe_url}")
        raise PermanentDeliveryError(f"HTTP {code} from {self._safe_url}: {resp.text[:200]!r}")

    def _disconnect(self) -> None:
        self._client.close()
