"""The durable store-and-forward spool between live sources (connector, edge runtime) and the store.

Public API: :class:`Spool` (append / peek / ack, bounded, fsync policy), :class:`SpoolDrainer` (the
thread that writes records to the store idempotently), :func:`register_writer` (kind -> writer
table), :class:`SampleBatch` (the columnar samples record, also what in-memory listeners receive),
:func:`open_spool` (a spool configured from settings). See ``pq/spool/README.md``.

Must not import connectors, models, ui or simulators.
"""

from __future__ import annotations

from pathlib import Path

from pq.spool.drain import SpoolDrainer, drain_once
from pq.spool.records import MISSING_TS, SampleBatch, TagKey, register_codec
from pq.errors import SpoolError, SpoolFull
from pq.spool.spool import Spool, SpoolRecord
from pq.spool.writers import TagResolver, register_writer, writer_kinds

__all__ = ["Spool", "SpoolError", "SpoolFull", "SpoolRecord", "SpoolDrainer", "drain_once", "SampleBatch",
           "TagKey", "MISSING_TS", "register_writer", "register_codec", "writer_kinds", "TagResolver",
           "open_spool", "spool_path"]


def spool_path(settings, name: str) -> Path:
    """Where the spool called ``name`` lives: ``PQ_SPOOL_DIR`` or ``PQ_DATA_DIR/spool``."""
    base = settings.spool_dir if settings.spool_dir is not None else Path(settings.data_dir) / "spool"
    return Path(base) / f"{name}.sqlite"


def open_spool(settings, name: str) -> Spool:
    """The spool ``name`` with the size bound, full policy and fsync policy from settings."""
    return Spool(spool_path(settings, name), max_bytes=int(settings.spool_max_mb * 2**20),
                 full_policy=settings.spool_full_policy, fsync=settings.spool_fsync,
                 block_timeout_s=settings.spool_block_timeout_s, name=name)
