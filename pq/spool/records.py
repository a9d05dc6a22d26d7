"""Typed spool records and their byte codecs: the same objects flow to the spool and to in-memory listeners.

Owns :class:`SampleBatch` (columnar samples of one connection), the JSON codec used by every other
kind (parts, inspections, health, line events, and kinds the edge runtime adds), and the table of
kinds -> (encode, decode). Must not import connectors, models, ui or simulators.

Samples are keyed by ``(line_id, tag name)`` rather than a database ``tag_id``, so a connector can
start and spool while the database is down; the drainer resolves names to ids when it writes.

Example::

    batch = SampleBatch.from_rows(tags=(("line-1", "melt_temp_c"),), rows=[(0, ts_us, 231.5, 0, ts_us, None)])
    decode("samples", encode("samples", batch)).value
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import numpy as np

__all__ = [
    "TagKey", "SampleBatch", "MISSING_TS", "encode", "decode", "register_codec", "json_dumps", "json_loads",
    "codec_kinds",
]

TagKey = tuple[str, str]  # (line_id, tag name)
MISSING_TS = np.iinfo(np.int64).min  # "no timestamp" in the int64 µs columns (NaT)

_ARRAYS = (("tag", np.int32), ("ts_us", np.int64), ("server_ts_us", np.int64), ("value", np.float64),
           ("status", np.int64))


@dataclass
class SampleBatch:
    """Samples in columns. ``tag[i]`` indexes ``tags``; times are Unix microseconds (UTC).

    ``value`` is NaN where the value is not a number (text, None, NaN/Inf from the server); ``text``
    maps row index -> string for text values (lot ids, product codes). ``status`` is the raw OPC UA
    status code (0 = Good); a Bad or Uncertain sample keeps its value here but is never *good*.
    """

    tags: tuple[TagKey, ...]
    tag: np.ndarray
    ts_us: np.ndarray
    server_ts_us: np.ndarray
    value: np.ndarray
    status: np.ndarray
    text: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tag)

    @classmethod
    def from_rows(cls, tags: tuple[TagKey, ...], rows: Iterable[tuple]) -> "SampleBatch":
        """Rows of (tag index, ts_us, value float|None, status, server_ts_us|None, text|None)."""
        rows = list(rows)
        n = len(rows)
        tag = np.empty(n, np.int32)
        ts = np.empty(n, np.int64)
        sts = np.empty(n, np.int64)
        val = np.empty(n, np.float64)
        st = np.empty(n, np.int64)
        text: dict[int, str] = {}
        for i, (t, ts_us, value, status, server_ts_us, txt) in enumerate(rows):
            tag[i] = t
            ts[i] = ts_us
            sts[i] = MISSING_TS if server_ts_us is None else server_ts_us
            val[i] = np.nan if value is None else value
            st[i] = status
            if txt is not None:
                text[i] = txt
        return cls(tags, tag, ts, sts, val, st, text)

    @classmethod
    def concat(cls, batches: list["SampleBatch"]) -> "SampleBatch":
        """One batch from several (their tag tables are merged)."""
        if len(batches) == 1:
            return batches[0]
        keys: dict[TagKey, int] = {}
        parts: dict[str, list[np.ndarray]] = {name: [] for name, _ in _ARRAYS}
        text: dict[int, str] = {}
        offset = 0
        for b in batches:
            remap = np.array([keys.setdefault(k, len(keys)) for k in b.tags] or [0], dtype=np.int32)
            parts["tag"].append(remap[b.tag] if len(b) else b.tag)
            for name, _ in _ARRAYS[1:]:
                parts[name].append(getattr(b, name))
            text.update({offset + i: s for i, s in b.text.items()})
            offset += len(b)
        cols = {name: np.concatenate(arrs) if arrs else np.empty(0, dt)
                for (name, dt), arrs in zip(_ARRAYS, parts.values())}
        return cls(tuple(keys), text=text, **cols)

    def names(self) -> np.ndarray:
        """Tag name per row (object array), for consumers that want names, not indices."""
        lookup = np.array([name for _, name in self.tags] or [""], dtype=object)
        return lookup[self.tag] if len(self) else np.empty(0, dtype=object)

    # -- bytes -------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = json.dumps({"v": 1, "n": len(self), "tags": [list(k) for k in self.tags],
                             "text": {str(i): s for i, s in self.text.items()}},
                            ensure_ascii=False, separators=(",", ":")).encode()
        body = b"".join(np.ascontiguousarray(getattr(self, name), dtype=dt).tobytes() for name, dt in _ARRAYS)
        return struct.pack("<I", len(header)) + header + body

    @classmethod
    def from_bytes(cls, data: bytes) -> "SampleBatch":
        (hlen,) = struct.unpack_from("<I", data, 0)
        header = json.loads(data[4:4 + hlen])
        n = header["n"]
        pos = 4 + hlen
        cols = {}
        for name, dt in _ARRAYS:
            size = n * np.dtype(dt).itemsize
            cols[name] = np.frombuffer(data, dtype=dt, count=n, offset=pos).copy()
            pos += size
        if pos != len(data):
            raise ValueError(f"samples record: expected {pos} bytes for {n} rows, got {len(data)}")
        return cls(tuple(tuple(k) for k in header["tags"]), text={int(i): s for i, s in header["text"].items()},
                   **cols)


# -- JSON with datetimes ------------------------------------------------------------------------------

def _default(obj: Any):
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            raise ValueError(f"naive datetime {obj!r} in a spool record: pq stores UTC, pass an aware datetime")
        return {"$dt": obj.astimezone(timezone.utc).isoformat()}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"spool record value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _hook(obj: dict):
    if len(obj) == 1 and "$dt" in obj:
        return datetime.fromisoformat(obj["$dt"])
    return obj


def json_dumps(payload: Any) -> bytes:
    """JSON bytes; aware datetimes survive the round trip, NaN becomes null."""
    return json.dumps(_nan_to_none(payload), default=_default, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()


def json_loads(data: bytes) -> Any:
    return json.loads(data, object_hook=_hook)


def _nan_to_none(obj: Any) -> Any:
    # JSON has no NaN; a NaN feature or context value is stored as null (documented in the README).
    if isinstance(obj, float) and obj != obj or isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


# -- kind -> codec -------------------------------------------------------------------------------------

_CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "samples": (SampleBatch.to_bytes, SampleBatch.from_bytes),
}


def register_codec(kind: str, encode_fn: Callable[[Any], bytes] = json_dumps,
                   decode_fn: Callable[[bytes], Any] = json_loads) -> None:
    """Give a kind its own byte codec (JSON is the default for every kind not registered)."""
    _CODECS[kind] = (encode_fn, decode_fn)


def codec_kinds() -> list[str]:
    return sorted(_CODECS)


def encode(kind: str, payload: Any) -> bytes:
    return _CODECS.get(kind, (json_dumps, json_loads))[0](payload)


def decode(kind: str, data: bytes) -> Any:
    return _CODECS.get(kind, (json_dumps, json_loads))[1](data)
