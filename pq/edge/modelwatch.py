"""Model hot reload: which version is in production for this line (per product), polled off the decision path.

Owns :class:`ModelWatcher`, the edge's :class:`~pq.edge.interfaces.ScorerProvider`. A background
thread asks the registry every ``poll_s`` seconds which version serves (line, product), loads a
new one (artifact checked by the loader) and swaps it in with one reference assignment; the
decision path only reads that reference. A promotion or a rollback therefore reaches the edge
within ``poll_s`` plus the load time, without a restart. A version that fails to load is logged
once and the previous one keeps scoring; the status says so. Must not import connectors, models,
ui or simulators: ``resolve`` and ``load`` are handed in by the composition root.

Shadow (champion / challenger): with ``resolve_shadow``, the same poll also asks which version runs
in shadow for (line, product) and loads it; :meth:`challenger_for` hands it out only while its
feature-set version equals production's (the same served vector). A challenger the runtime retires
(:meth:`retire_challenger`: it raised or gave NaN) is not served again at this edge until the
registry names another version.

Example::

    watcher = ModelWatcher("line-1", resolve=lambda product: registry_lookup(product),
                           load=lambda version_id: load_scorer(version_id), poll_s=5).start()
    scorer = watcher.scorer_for("housing-a")
    challenger = watcher.challenger_for("housing-a")    # None unless a version is in shadow
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

__all__ = ["ModelWatcher"]

logger = logging.getLogger(__name__)

_ALL = "\x00all"  # key of the line-wide lookup (product None)
_RETRY_FAILED_S = 60.0


class ModelWatcher:
    def __init__(self, line_id: str, *, resolve: Callable[[str | None], int | None],
                 load: Callable[[int], Any], poll_s: float = 5.0,
                 resolve_shadow: Callable[[str | None], int | None] | None = None,
                 load_shadow: Callable[[int], Any] | None = None):
        self.line_id = line_id
        self._resolve = resolve
        self._resolve_shadow = resolve_shadow
        self._load_shadow = load_shadow or load
        self._challengers: dict[str, Any] = {}  # product key -> challenger scorer (absent: none)
        self._shadow_versions: dict[str, int | None] = {}
        self._retired: dict[int, str] = {}  # challenger version id -> why this edge stopped scoring it
        self._load = load
        self.poll_s = poll_s
        self._scorers: dict[str, Any] = {}  # product key -> scorer (None: no model)
        self._versions: dict[str, int | None] = {}
        self._cache: dict[int, Any] = {}  # version id -> loaded scorer
        self._wanted: set[str] = {_ALL}
        self._failed: dict[int, tuple[str, float]] = {}  # version id -> (load error, when); logged once
        self._resolve_error: str | None = None
        self.last_poll_ok_s: float | None = None
        self.swaps = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- decision path ---------------------------------------------------------------------------
    def scorer_for(self, product: str | None) -> Any:
        """The production scorer for the product (falling back to the line-wide one), or None."""
        key = _ALL if product is None else str(product)
        scorer = self._scorers.get(key)
        if scorer is None and key not in self._wanted:
            self._wanted.add(key)  # first part of a new product: resolve it in the background
            self._wake.set()
        return scorer if scorer is not None else self._scorers.get(_ALL)

    def challenger_for(self, product: str | None) -> Any:
        """The version in shadow for the product (falling back to the line-wide one), or None; never
        one whose feature set differs from the production scorer's, nor one retired at this edge."""
        key = _ALL if product is None else str(product)
        challenger = self._challengers.get(key) or self._challengers.get(_ALL)
        if challenger is None or challenger.version_id in self._retired:
            return None
        prod = self.scorer_for(product)
        if prod is None or prod.version_id == challenger.version_id:
            return None
        if prod.feature_set_version != challenger.feature_set_version:  # the registry refuses this; a later
            self.retire_challenger(challenger.version_id,  # promotion of another feature set can still cause it
                                   f"feature set {challenger.feature_set_version!r} is not production's "
                                   f"{prod.feature_set_version!r}: it cannot be scored on the served vector")
            return None
        return challenger

    def retire_challenger(self, version_id: int, reason: str) -> None:
        """Stop scoring ``version_id`` in shadow at this edge (it raised or returned NaN); logged once."""
        if version_id not in self._retired:
            logger.error("line %s: challenger model %s taken out of shadow at this edge: %s", self.line_id,
                         version_id, reason)
        self._retired[version_id] = reason

    def adopt(self, product: str | None, version_id: int, scorer: Any) -> None:
        """Serve ``scorer`` (e.g. the local copy of the last production model) until the registry
        answers; if the registry then names the same version, it is kept without reloading."""
        key = _ALL if product is None else str(product)
        self._wanted.add(key)
        self._cache[version_id] = scorer
        self._scorers[key], self._versions[key] = scorer, version_id
        logger.info("line %s product %s: model version %s adopted from the local copy", self.line_id,
                    product or "(all)", version_id)

    def wake(self) -> None:
        """Poll now (e.g. the store just became reachable)."""
        self._wake.set()

    # -- background ------------------------------------------------------------------------------
    def start(self) -> "ModelWatcher":
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name=f"pq-modelwatch-{self.line_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.poll_once()

    def poll_once(self) -> bool:
        """Resolve every product seen so far; swap changed versions. True when something changed."""
        changed = False
        for key in sorted(self._wanted):
            product = None if key == _ALL else key
            try:
                version_id = self._resolve(product)
            except Exception as exc:  # noqa: BLE001 - registry unreachable: keep scoring with what we have
                msg = f"cannot ask the registry for the production model ({type(exc).__name__}: {exc})"
                if self._resolve_error is None:
                    logger.warning("line %s: %s; keeping the current model", self.line_id, msg)
                self._resolve_error = msg
                return changed
            if self._resolve_error is not None:
                logger.info("line %s: registry reachable again", self.line_id)
                self._resolve_error = None
            if key in self._versions and self._versions[key] == version_id:
                continue
            if version_id is None:
                if self._scorers.get(key) is not None:
                    logger.warning("line %s product %s: no model in production any more", self.line_id, product)
                self._scorers[key], self._versions[key] = None, None
                changed = True
                continue
            scorer = self._cache.get(version_id)
            if scorer is None:
                failed = self._failed.get(version_id)
                if failed is not None and time.monotonic() - failed[1] < _RETRY_FAILED_S:
                    continue  # logged once; retried now and then in case the cause was transient
                try:
                    scorer = self._load(version_id)
                except Exception as exc:  # noqa: BLE001 - a broken artifact must not stop the line; logged once
                    msg = f"model version {version_id} failed to load: {exc}"
                    if failed is None:
                        logger.error("line %s: %s; still scoring with version %s", self.line_id, msg,
                                     self._versions.get(key))
                    self._failed[version_id] = (msg, time.monotonic())
                    continue
                self._failed.pop(version_id, None)
                self._cache[version_id] = scorer
            old = self._versions.get(key)
            self._scorers[key], self._versions[key] = scorer, version_id
            self.swaps += 1
            changed = True
            logger.info("line %s product %s: model version %s in production (was %s)", self.line_id,
                        product or "(all)", version_id, old)
        if self._resolve_shadow is not None and not self._poll_shadow():
            return changed
        self.last_poll_ok_s = time.time()
        live = set(self._versions.values())
        for vid in [v for v in self._cache if v not in live]:
            del self._cache[vid]  # keep memory bounded across many promotions
        return changed

    def _poll_shadow(self) -> bool:
        """Resolve and load the challenger of every product seen so far; False when the registry is down."""
        for key in sorted(self._wanted):
            try:
                version_id = self._resolve_shadow(None if key == _ALL else key)
            except Exception as exc:  # noqa: BLE001 - the shadow is optional; production's poll reports outages
                logger.debug("line %s: cannot ask the registry for the shadow model: %s", self.line_id, exc)
                return False
            if self._shadow_versions.get(key, -1) == version_id:
                continue
            old = self._shadow_versions.get(key)
            if version_id is None:
                self._challengers.pop(key, None)
                self._shadow_versions[key] = None
                if old is not None:
                    logger.info("line %s product %s: shadow of model version %s ended", self.line_id, key, old)
                continue
            scorer = self._cache.get(version_id)  # production's cache is production's: challengers stay out
            if scorer is None:
                try:
                    scorer = self._load_shadow(version_id)
                except Exception as exc:  # noqa: BLE001 - a broken challenger must not touch production
                    self.retire_challenger(version_id, f"failed to load: {exc}")
                    self._shadow_versions[key] = version_id
                    continue
            self._challengers[key], self._shadow_versions[key] = scorer, version_id
            self._retired.pop(version_id, None)  # named again by the registry after a retirement: try it again
            logger.info("line %s product %s: model version %s in shadow (was %s)", self.line_id,
                        "(all)" if key == _ALL else key, version_id, old)
        return True

    def status(self) -> dict:
        versions = {("*" if k == _ALL else k): v for k, v in self._versions.items()}
        errors = [m for m, _t in list(self._failed.values())[-3:]]
        if self._resolve_error:
            errors.append(self._resolve_error)
        out = {"model_version_id": self._versions.get(_ALL), "versions": versions, "errors": errors,
               "swaps": self.swaps}
        if self._resolve_shadow is not None:
            out["shadow"] = {("*" if k == _ALL else k): v for k, v in self._shadow_versions.items() if v is not None}
            out["shadow_retired"] = {str(k): v for k, v in self._retired.items()}
        return out
