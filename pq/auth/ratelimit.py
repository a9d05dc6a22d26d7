"""In-memory login rate limit per (user name, client address), sliding window.

This slows down guessing from one place; the per-account lockout in the users table
(``failed_logins``/``locked_until``) stops a distributed guess at one account. The table of keys is
bounded: when full, the oldest key is dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque

__all__ = ["LoginRateLimiter"]

logger = logging.getLogger(__name__)


class LoginRateLimiter:
    """Allow at most ``max_failures`` failures per key within ``window_s`` seconds."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 10_000, clock=time.monotonic):
        if max_failures <= 0 or window_s <= 0:
            raise ValueError(f"max_failures and window_s must be > 0, got {max_failures}, {window_s}")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self.evicted = 0
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _prune(self, key, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return stamps

    def retry_after_s(self, username: str, client: str) -> float:
        """0 when a login attempt is allowed now, else the seconds to wait."""
        key = (username.lower(), client)
        with self._lock:
            now = self._clock()
            stamps = self._prune(key, now)
            if len(stamps) < self.max_failures:
                return 0.0
            return max(0.0, stamps[0] + self.window_s - now)

    def failed(self, username: str, client: str) -> None:
        key = (username.lower(), client)
        with self._lock:
            now = self._clock()
            self._prune(key, now)
            stamps = self._failures.setdefault(key, deque())
            stamps.append(now)
            self._failures.move_to_end(key)
            if len(stamps) == self.max_failures:
                logger.warning("login rate limit reached for user %r from %s", username, client)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
                self.evicted += 1
                if self.evicted == 1 or self.evicted % 1000 == 0:
                    logger.warning("login rate limiter full (%d keys): %d oldest keys evicted",
                                   self.max_keys, self.evicted)

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop((username.lower(), client), None)
