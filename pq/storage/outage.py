"""Which store errors mean "the database is away now": the one place that knows the drivers' errors.

Owns :func:`is_outage`. SQLAlchemy, psycopg and sqlite3 each report an unreachable or locked
database their own way; everything above storage (the spool drainer, the edge, the connector)
asks this function instead of catching driver exceptions itself. An outage is retried and waited
out; any other error is a bad record or a bug and is reported as such.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, TimeoutError as PoolTimeout

from pq.errors import StorageError

__all__ = ["is_outage"]


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean "the store is not reachable now", as opposed to a bad record.

    >>> is_outage(StorageError("connection refused")), is_outage(ValueError("bad value"))
    (True, False)
    """
    if isinstance(exc, (OperationalError, DisconnectionError, PoolTimeout, StorageError, ConnectionError,
                        TimeoutError, OSError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return True
    except ImportError:  # SQLite-only installs
        pass
    return isinstance(exc, sqlite3.OperationalError)  # locked / disk I/O: transient
