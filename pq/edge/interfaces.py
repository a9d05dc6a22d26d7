"""The small interfaces the edge runtime is built on, so pq/edge imports no connector or model.

The composition root (``pq/cli``; tests and benchmarks likewise) hands the runtime concrete
objects that fit these shapes: the connector's in-memory stream, the features' streaming path,
the model registry's scorer, the durable spool and the plant outputs.
Must not import connectors, models, ui or simulators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

__all__ = ["Sample", "PartEvent", "FeatureComputer", "FeatureFactory", "ScoreLike", "Scorer",
           "ScorerProvider", "Sink", "Output", "is_bad", "is_good"]


class Sample(NamedTuple):
    """One value of one tag: source timestamp in ns since the epoch, OPC UA status code (0 = Good)."""

    tag: str
    ts_ns: int
    value: float
    status: int = 0


def is_bad(status: int) -> bool:
    """OPC UA severity bits 10 = Bad (Uncertain, 01, is still used but flagged by the features)."""
    return (int(status) & 0xC0000000) == 0x80000000


def is_good(status: int) -> bool:
    return (int(status) & 0xC0000000) == 0


@dataclass
class PartEvent:
    """A cycle-complete notification: the part's serial, its window and its context.

    ``received_s`` is ``time.perf_counter()`` when the notification reached this process (set by the
    connector); decision latency is measured from it.
    """

    serial: str
    cycle_start_ns: int
    cycle_end_ns: int
    received_s: float
    context: Mapping[str, Any] = field(default_factory=dict)  # product, material_lot, shift, station, ...


class FeatureComputer(Protocol):
    """The streaming feature path of one feature set (``pq.features.StreamingFeatures``)."""

    feature_names: Sequence[str]
    tags: Sequence[str]  # the signals the vector is computed from: the key signals of a part

    def push_many(self, tag: str, ts_ns: np.ndarray, values: np.ndarray, statuses: np.ndarray) -> None: ...

    def vector(self, cycle_start_ns: int, cycle_end_ns: int, context: Mapping[str, Any]) -> tuple[np.ndarray, str]:
        """The part's feature vector (NaN where missing) and a plain reason for what is missing."""
        ...


class FeatureFactory(Protocol):
    def __call__(self, scorer: "Scorer") -> FeatureComputer: ...


class ScoreLike(Protocol):
    probability: float
    threshold: float
    at_risk: bool
    flags: Sequence[str]
    contributions: Sequence[Any]  # objects with signal, contribution, value, normal_lo, normal_hi, direction


class Scorer(Protocol):
    """A production model (``models.scoring.Scorer``) as the edge uses it.

    ``baseline``: the fitted context baseline the feature computer needs (or None); ``feature_ranges``:
    {feature: (min, max)} seen in training (the drift check; empty to skip it); ``moving_signals``:
    signals that moved in every training cycle (the stuck-sensor check); ``threshold``: the alert
    threshold of the single-threshold mode; ``diversion_threshold`` (None: the version predates the
    two decisions) and ``episode_rule`` (a ``pq.alerts.episodes.EpisodeRule``): the two decisions."""

    feature_names: Sequence[str]
    feature_set_version: str
    threshold: float
    diversion_threshold: float | None
    episode_rule: Any
    version_id: int | None
    baseline: Any
    feature_ranges: Mapping[str, Sequence[float]]
    moving_signals: frozenset[str]

    def score(self, vector: Mapping[str, float], context: Mapping[str, Any] | None = None,
              explain: bool | None = None, threshold: float | None = None) -> ScoreLike: ...


class ScorerProvider(Protocol):
    """Hands out the production scorer for a product; swapping it is the provider's business.

    Champion / challenger (optional: a provider without these methods has no shadow): ``challenger_for``
    is the version in shadow for the product (same feature set as production's, or None), scored after
    production's decision and never acted on; ``retire_challenger`` takes it out of shadow at this edge."""

    def scorer_for(self, product: str | None) -> Scorer | None: ...

    def challenger_for(self, product: str | None) -> Scorer | None: ...

    def retire_challenger(self, version_id: int, reason: str) -> None: ...

    def status(self) -> dict: ...


class Sink(Protocol):
    """The durable spool (``pq.spool.Spool``): never blocks on the database."""

    def append_many(self, items: Iterable[tuple[str, Any]]) -> Any: ...

    def depth(self) -> int: ...


class Output(Protocol):
    """An alert output into a plant system; both calls return at once (queued, retried, counted)."""

    name: str

    def on_alert(self, event: str, alert: Mapping[str, Any]) -> None: ...

    def on_decision(self, decision: Mapping[str, Any]) -> None: ...

    def status(self) -> dict: ...

    def describe(self) -> str: ...

    def close(self, flush_timeout_s: float = 2.0) -> None: ...
