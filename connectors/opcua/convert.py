"""One OPC UA DataValue -> one sample row, by fixed, documented rules (the connector's hot path).

Owns :func:`to_row` and the counters of odd input it applies. Rules (also in docs/tag-maps.md):

- ``status`` is the raw OPC UA status code (``StatusCode.value``; 0 = Good). Bad and Uncertain
  values are stored with their status, never turned into good values.
- ``ts`` is the *source* timestamp; a server that sends none gets its server timestamp, and failing
  that the time the notification arrived (counted as ``missing_source_ts``).
- numbers (int, float) -> ``value``; booleans -> 1.0 / 0.0; ``datetime`` -> Unix seconds.
- NaN and +/-Inf -> ``value`` NULL; a Good status becomes BadOutOfRange (0x803C0000), in the
  in-memory stream and in the store (``nonfinite``), so the number is never read as good.
- strings -> ``value_text`` (lot ids, product codes), ``value`` NULL.
- no value (typical with Bad status) -> ``value`` NULL, status kept.
- a status with the Overflow info bit (0x480: the server's queue for the item overflowed and it
  discarded values before this one) is stored as sent and counted (``server_overflow``).
- anything else (arrays, structures, byte strings) -> ``value_text`` = a repr cut to 200 chars and,
  if the status was Good, BadTypeMismatch (0x80740000) (``unsupported_type``).

None of these raises; every odd case is counted in :class:`ConvertCounters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

__all__ = ["to_row", "ConvertCounters", "STATUS_TYPE_MISMATCH", "STATUS_NONFINITE", "dt_to_us", "us_to_dt"]

STATUS_TYPE_MISMATCH = 0x80740000  # BadTypeMismatch
STATUS_NONFINITE = 0x803C0000  # BadOutOfRange (pq.storage.samples applies it to a Good NaN/Inf)
_OVERFLOW = 0x480  # InfoType DataValue + Overflow bit: the server's queue for the item overflowed
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_MIN_VALID_US = -11_644_473_600_000_000 + 86_400_000_000  # OPC UA's "no time" is 1601-01-01


@dataclass
class ConvertCounters:
    missing_source_ts: int = 0
    nonfinite: int = 0
    unsupported_type: int = 0
    not_good: int = 0
    text: int = 0
    server_overflow: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"missing_source_ts": self.missing_source_ts, "nonfinite": self.nonfinite,
                "unsupported_type": self.unsupported_type, "not_good": self.not_good, "text": self.text,
                "server_overflow": self.server_overflow}


def dt_to_us(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # asyncua gives aware UTC; a naive one from elsewhere is UTC by OPC UA rules
        dt = dt.replace(tzinfo=timezone.utc)
    us = (dt - _EPOCH) // _ONE_US
    return us if us > _MIN_VALID_US else None


def us_to_dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def to_row(dv, received_us: int, counters: ConvertCounters) -> tuple[int, float, int, int | None, str | None]:
    """(ts_us, value, status, server_ts_us, text) for an asyncua DataValue; never raises."""
    sc = dv.StatusCode
    status = sc.value if sc is not None else 0
    if status & 0xC0000000:
        counters.not_good += 1
    if status & _OVERFLOW == _OVERFLOW:  # the server discarded values of this tag before this one
        counters.server_overflow += 1
    server_us = dt_to_us(dv.ServerTimestamp)
    ts_us = dt_to_us(dv.SourceTimestamp)
    if ts_us is None:
        counters.missing_source_ts += 1
        ts_us = server_us if server_us is not None else received_us
    variant = dv.Value
    v = variant.Value if variant is not None else None
    t = type(v)
    if t is float:
        if v != v or v in (math.inf, -math.inf):
            counters.nonfinite += 1
            return ts_us, math.nan, status if status & 0xC0000000 else STATUS_NONFINITE, server_us, None
        return ts_us, v, status, server_us, None
    if t is int:
        return ts_us, float(v), status, server_us, None
    if t is bool:
        return ts_us, 1.0 if v else 0.0, status, server_us, None
    if v is None:
        return ts_us, math.nan, status, server_us, None
    if t is str:
        counters.text += 1
        return ts_us, math.nan, status, server_us, v
    if isinstance(v, datetime):
        us = dt_to_us(v)
        return ts_us, (us / 1e6 if us is not None else math.nan), status, server_us, None
    if isinstance(v, (int, float)):  # numpy scalars, IntEnum and friends
        f = float(v)
        if not math.isfinite(f):
            counters.nonfinite += 1
            f = math.nan
            status = status if status & 0xC0000000 else STATUS_NONFINITE
        return ts_us, f, status, server_us, None
    counters.unsupported_type += 1
    if not status & 0xC0000000:
        status = STATUS_TYPE_MISMATCH
    return ts_us, math.nan, status, server_us, repr(v)[:200]
