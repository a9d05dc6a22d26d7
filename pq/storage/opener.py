"""Opening the store when the database may be down: one retry loop for every process that needs it.

Owns :class:`StoreOpener`. A connector or an edge must start and keep working while the database
is away (data goes to the spool meanwhile), so the store is opened in a background thread that
retries every ``retry_s`` seconds, logs the outage once and the recovery once, and then hands the
store to its ``on_open`` callbacks (start the spool drainer, let the edge read operator actions).
Errors that waiting cannot fix (a schema that needs ``pq db upgrade``, a malformed URL) end the
loop and are kept in :attr:`error` for the caller to report.

Example::

    opener = StoreOpener(lambda: Store.open(settings), on_open=[lambda store: drainer_for(store).start()])
    if not opener.try_once():
        opener.start()            # keeps trying in the background
    ...
    opener.stop()
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

from pq.errors import PQError, SchemaVersionError, StorageError

__all__ = ["StoreOpener"]

logger = logging.getLogger(__name__)


class StoreOpener:
    def __init__(self, open_store: Callable[[], Any], *, on_open: Iterable[Callable[[Any], None]] = (),
                 retry_s: float = 2.0, name: str = "store"):
        self._open_store = open_store
        self._on_open = list(on_open)
        self.retry_s = retry_s
        self.name = name  # who waits for the store, for the log: "line line-1", "connection press-1"
        self.store: Any = None
        self.error: BaseException | None = None  # set when waiting cannot help; the loop has ended
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._warned = False
        self._thread: threading.Thread | None = None

    def try_once(self) -> bool:
        """Open the store now if it answers; True when it is open. Raises what waiting cannot fix."""
        with self._lock:
            if self.store is not None:
                return True
            try:
                store = self._open_store()
            except SchemaVersionError:
                raise  # waiting will not fix it: `pq db upgrade` will
            except StorageError as exc:
                if not self._warned:
                    logger.warning("%s: store not reachable (%s); working from the local spool and retrying every "
                                   "%.0f s", self.name, exc, self.retry_s)
                    self._warned = True
                return False
            self.store = store
        if self._warned:
            logger.info("%s: store reachable again", self.name)
        for callback in self._on_open:
            callback(store)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.try_once():
                    return
            except PQError as exc:  # a schema to upgrade, a wrong URL: reported by the owner, not retried
                logger.error("%s: cannot use the store: %s", self.name, exc)
                self.error = exc
                return
            self._stop.wait(self.retry_s)

    def start(self) -> "StoreOpener":
        """Keep trying in a background thread until the store is open or :meth:`stop` is called."""
        if self.store is None and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"pq-store-open-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
