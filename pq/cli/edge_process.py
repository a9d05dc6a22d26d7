"""The edge process of one line: the wiring behind ``pq edge run`` (and the end-to-end test).

Owns :class:`EdgeProcess`, which hands the concrete parts to a :class:`~pq.edge.runtime.LineRuntime`
through the edge's interfaces: the OPC UA connector session from the tag map (``connectors``), the
production model from the registry with hot reload (``models``) and the version in shadow beside it
(champion / challenger, picked up by the same poll), the streaming features with the
tag map's limits, the edge spool and its drainer, the plant outputs, the housekeeper, and a local
copy of the last production model so that the edge starts and scores while the database is down.
Part of the composition root: only ``pq edge run`` imports it.

Example::

    proc = EdgeProcess("line-1", tagmap="connectors/tagmaps/simulator.toml", settings=settings,
                       open_store=lambda: Store.open(settings))
    await proc.run(stop_event)      # until stop_event is set (or SIGTERM with signals=True)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pq.config import Settings
from pq.errors import ConfigError, StorageError
from pq.storage.opener import StoreOpener

__all__ = ["EdgeProcess", "ModelCache"]

logger = logging.getLogger(__name__)



class ModelCache:
    """The last production model of a line on local disk (artifact + sha256 + version id).

    The registry lives in the database; without this copy an edge restarted during a database
    outage would have nothing to score with. Written atomically after every successful load, read
    only when the registry cannot be asked.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @property
    def _meta(self) -> Path:
        return self.directory / "model.json"

    @property
    def _blob(self) -> Path:
        return self.directory / "model.bin"

    def save(self, version_id: int, blob: bytes, sha256: str | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path, data in ((self._blob, blob),
                           (self._meta, json.dumps({"version_id": version_id, "sha256": sha256}).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)

    def load(self) -> tuple[int, bytes, str | None] | None:
        try:
            meta = json.loads(self._meta.read_text(encoding="utf-8"))
            blob = self._blob.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("local model copy in %s unreadable (%s); ignoring it", self.directory, exc)
            return None
        sha = meta.get("sha256")
        if sha and hashlib.sha256(blob).hexdigest() != sha:
            logger.warning("local model copy in %s is corrupted (sha256 mismatch); ignoring it", self.directory)
            return None
        return int(meta["version_id"]), blob, sha


class EdgeProcess:
    """Everything one ``pq edge run --line L`` process runs; build it, then ``await run()``.

    ``open_store`` is called at start (and retried in the background while the database is down);
    ``outputs`` are started output objects (default: built from ``outputs_file`` /
    ``PQ_EDGE_OUTPUTS_FILE``); ``metrics`` an :class:`~pq.edge.metrics.EdgeMetrics` (default: one on
    prometheus-client's default registry, served by ``PQ_METRICS_PORT``).
    """

    def __init__(self, line_id: str, *, settings: Settings, open_store: Callable[[], Any],
                 tagmap: Any = None, outputs_file: Path | None = None, outputs: Sequence[Any] | None = None,
                 feature_spec: Path | None = None, station: str | None = None, metrics: Any = None):
        from connectors.tagmap import SIMULATOR_TAGMAP, load_tagmap
        from pq.features import load_feature_set

        self.line_id = line_id
        self.settings = settings
        tm = tagmap if tagmap is not None and not isinstance(tagmap, (str, Path)) else \
            load_tagmap(str(tagmap or SIMULATOR_TAGMAP))
        if line_id not in tm.lines:
            raise ConfigError(f"tag map {tm.path}: no tags for line {line_id!r}, it has {', '.join(tm.lines) or 'none'}")
        self.tagmap = tm
        self.feature_set = load_feature_set(feature_spec)
        # The same limits the training pipeline read from the tag catalog: time_above/below need them.
        self.limits = {t.name: (t.low_limit, t.high_limit) for t in tm.tags if t.line_id == line_id}
        self.station = station or tm.connection.station
        self.outputs_file = outputs_file or settings.edge_outputs_file
        self._given_outputs = list(outputs) if outputs is not None else None
        self.metrics = metrics
        self.model_cache = ModelCache(Path(settings.data_dir) / "edge" / line_id)
        self.store = None
        self.runtime = None
        self.housekeeper = None
        self.watcher = None
        self.outputs: list[Any] = []
        self.spool = None
        self.drainer = None
        self.opener = StoreOpener(open_store, on_open=[self._store_opened], name=f"line {line_id}")
        self.connector_detail: dict | None = None

    # -- store (may be down at start) ------------------------------------------------------------
    def _store_opened(self, store) -> None:
        from pq.spool import SpoolDrainer

        self.store = store
        self.drainer = SpoolDrainer(self.spool, store).start()
        if self.housekeeper is not None:
            self.housekeeper.store = store  # operator actions and open alerts from now on
        if self.watcher is not None:
            self.watcher.wake()
        logger.info("line %s: store %s reachable; draining the edge spool", self.line_id, store.display_url)

    # -- model -------------------------------------------------------------------------------------
    def _resolve(self, product):
        from models.registry import production_version

        store = self.store
        if store is None:
            raise StorageError("store not reachable")
        v = production_version(store, self.line_id, product)
        return v.id if v is not None else None

    def _resolve_shadow(self, product):
        from models.registry import shadow_version

        store = self.store
        if store is None:
            raise StorageError("store not reachable")
        v = shadow_version(store, self.line_id, product)
        return v.id if v is not None else None

    def _load(self, version_id: int):
        from models.registry import load_artifact
        from models.scoring import Scorer

        cached = self.model_cache.load()
        if cached is not None and cached[0] == version_id:
            return Scorer.from_bytes(cached[1], cached[2], version_id)
        if self.store is None:
            raise StorageError(f"model version {version_id}: store not reachable and no local copy")
        v, blob = load_artifact(self.store, version_id)
        scorer = Scorer.from_bytes(blob, v.artifact_sha256, v.id)
        logger.info("line %s: loaded model %s (feature set %s, threshold %.4f)", self.line_id, v.label,
                    scorer.feature_set_version, scorer.threshold)
        try:
            self.model_cache.save(v.id, blob, v.artifact_sha256)
        except OSError as exc:  # the edge still scores; only a restart during an outage would lack the copy
            logger.warning("line %s: cannot keep a local copy of model %s in %s: %s", self.line_id, v.id,
                           self.model_cache.directory, exc)
        return scorer

    def _load_challenger(self, version_id: int):
        """A version for the shadow: from the registry only (the local copy is production's alone)."""
        from models.registry import load_artifact
        from models.scoring import Scorer

        if self.store is None:
            raise StorageError(f"challenger model version {version_id}: store not reachable")
        v, blob = load_artifact(self.store, version_id)
        logger.info("line %s: loaded challenger %s for the shadow", self.line_id, v.label)
        return Scorer.from_bytes(blob, v.artifact_sha256, v.id)

    def _adopt_cached_model(self) -> None:
        from models.scoring import Scorer

        cached = self.model_cache.load()
        if cached is None:
            return
        vid, blob, sha = cached
        try:
            scorer = Scorer.from_bytes(blob, sha, vid)
        except Exception as exc:  # noqa: BLE001 - a bad local copy must not stop the edge; the registry decides
            logger.warning("line %s: local model copy %s cannot be loaded: %s", self.line_id, vid, exc)
            return
        self.watcher.adopt(None, vid, scorer)
        logger.warning("line %s: registry not reachable; scoring with the local copy of model version %s",
                       self.line_id, vid)

    def _make_features(self, scorer):
        from pq.features import StreamingFeatures

        if scorer.feature_set_version != self.feature_set.version:
            raise ConfigError(f"model {scorer.version_id} needs feature set {scorer.feature_set_version!r}, this edge "
                              f"computes {self.feature_set.version!r}; start it with --feature-spec for that version")
        return StreamingFeatures(self.feature_set, scorer.baseline, capacity_s=self.settings.edge_feature_capacity_s,
                                 max_rate_hz=self.settings.edge_max_rate_hz, limits=self.limits)

    def _latest_playbook(self):
        from sqlalchemy import select

        from pq.storage import schema

        store = self.store
        if store is None:
            raise StorageError("store not reachable")
        t = schema.playbook_versions
        with store.engine.connect() as conn:
            row = conn.execute(select(t.c.id, t.c.content).order_by(t.c.id.desc()).limit(1)).first()
        return (row.id, row.content) if row else None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "EdgeProcess":
        """Build everything and warm up (blocking: call before the event loop work starts)."""
        from connectors.outputs.config import load_outputs
        from pq.alerts.playbook import PlaybookLoader
        from pq.edge import records
        from pq.edge.housekeeping import Housekeeper
        from pq.edge.metrics import EdgeMetrics
        from pq.edge.modelwatch import ModelWatcher
        from pq.edge.runtime import LineRuntime
        from pq.spool import open_spool

        s = self.settings
        records.register()
        self.spool = open_spool(s, f"edge-{self.line_id}")
        self.watcher = ModelWatcher(self.line_id, resolve=self._resolve, load=self._load, poll_s=s.edge_model_poll_s,
                                    resolve_shadow=self._resolve_shadow, load_shadow=self._load_challenger)
        if not self.opener.try_once():
            self._adopt_cached_model()
            self.opener.start()
        self.watcher.start()
        self.outputs = self._given_outputs if self._given_outputs is not None else \
            load_outputs(self.outputs_file, s, self.line_id)
        self.runtime = LineRuntime(
            self.line_id, scorers=self.watcher, feature_factory=self._make_features, sink=self.spool, settings=s,
            outputs=self.outputs, metrics=self.metrics if self.metrics is not None else EdgeMetrics(),
            station=self.station, playbook=PlaybookLoader(s.edge_playbook_file, latest_stored=self._latest_playbook))
        self.housekeeper = Housekeeper(self.runtime, self.store)
        took = self.runtime.warm_up()
        logger.info("line %s: edge ready in %.1f s; model %s; outputs: %s", self.line_id, took,
                    self.watcher.status()["model_version_id"],
                    ", ".join(o.describe() for o in self.outputs) or "none")
        return self

    async def run(self, stop: asyncio.Event | None = None, *, signals: bool = False,
                  on_started: Callable[[Any], None] | None = None) -> dict:
        """Run the connector with the runtime as its listener until ``stop`` (or SIGTERM/SIGINT with
        ``signals``); returns the connector's final health detail. Call :meth:`close` afterwards.

        Every listener hook goes straight to the runtime: samples, parts, inspections, the connection's
        state, and source schema changes (``on_source_change``: a tag's unit, type or range changed on
        the server, or it is gone), which pause the scores that depend on the tag."""
        from connectors.runner import run_connector

        if self.runtime is None:
            self.start()
        stop = stop or asyncio.Event()
        hk = asyncio.create_task(self.housekeeper.run(stop))

        def connector_store():
            # The connector's drainer waits for the same store; StorageError makes it retry.
            if self.store is None:
                raise StorageError("store not reachable")
            return self.store

        try:
            self.connector_detail = await run_connector(
                self.tagmap, self.settings, open_store=connector_store, listeners=[self.runtime], stop_event=stop,
                install_signal_handlers=signals, on_started=on_started)
        finally:
            stop.set()
            await asyncio.gather(hk, return_exceptions=True)
        return self.connector_detail

    def close(self, flush_timeout_s: float = 10.0) -> dict:
        """Stop in order: decisions into the spool, outputs flushed, spool drained (what fits in the
        timeout; the rest stays on disk for the next start). Returns the decision counts."""
        self.opener.stop()
        rt = self.runtime
        if rt is not None:
            rt.close(flush_timeout_s)
        deadline = time.monotonic() + flush_timeout_s  # one budget for all outputs, not one each
        for o in self.outputs:
            o.close(max(0.1, deadline - time.monotonic()))
        if self.watcher is not None:
            self.watcher.stop()
        if self.drainer is not None:
            self.drainer.stop(flush_timeout_s=flush_timeout_s)
        elif self.spool is not None and self.spool.depth():
            logger.warning("line %s: store never reachable; %d records wait in %s for the next start",
                           self.line_id, self.spool.depth(), self.spool.path)
        if self.spool is not None:
            self.spool.close()
        if self.store is not None:
            self.store.dispose()
        return dict(rt.counts) if rt is not None else {}
