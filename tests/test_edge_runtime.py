"""Edge runtime: real streaming features, real spool + drainer into the store, real MQTT broker.

The scorer is a small rule model implementing the Scorer interface (the LightGBM scorer is tested in
models/); it lets the test know exactly which parts must alert.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from benchmarks.processes import poll_until
from connectors.outputs.mqtt import MqttOutput
from pq.alerts.episodes import DEFAULT_EPISODE_RULE
from pq.alerts.playbook import PlaybookLoader
from pq.edge import records
from pq.edge.interfaces import PartEvent, Sample
from pq.edge.modelwatch import ModelWatcher
from pq.edge.runtime import LineRuntime
from pq.features import StreamingFeatures, load_feature_set
from pq.spool import Spool, SpoolDrainer
from pq.storage import schema

FS = load_feature_set()
LINE = "line-7"
T0_NS = 1_750_000_000 * 1_000_000_000


class RuleScorer:
    """P(defect) rises steeply once the melt temperature's cycle mean exceeds 240 °C."""

    feature_set_version = FS.version
    threshold = 0.5
    baseline = None
    moving_signals = frozenset()
    episode_rule = DEFAULT_EPISODE_RULE

    def __init__(self, version_id: int, ranges: dict | None = None, diversion_threshold: float | None = None):
        self.version_id = version_id
        self.feature_names = list(FS.feature_names)
        self.feature_ranges = ranges or {}
        self.diversion_threshold = diversion_threshold  # None: a version from before the two decisions

    def score(self, vector, context=None, explain=None, threshold=None):
        thr = self.threshold if threshold is None else threshold
        m = vector["melt_temp_c__mean"]
        if math.isnan(m):
            return SimpleNamespace(probability=0.5, threshold=thr, at_risk=False, flags=("nan_unseen:melt_temp_c__mean",),
                                   contributions=())
        p = 1 / (1 + math.exp(-(m - 240.0)))
        contrib = [SimpleNamespace(signal="melt_temp_c", contribution=m - 235.0, value=m, normal_lo=225.0,
                                   normal_hi=235.0, direction="high"),
                   SimpleNamespace(signal="hold_pressure_bar", contribution=-0.1, value=600.0, normal_lo=550.0,
                                   normal_hi=650.0, direction="normal")]
        return SimpleNamespace(probability=p, threshold=thr, at_risk=p >= thr, flags=(), contributions=contrib)


def _cycle(i: int, melt: float, skip: tuple[str, ...] = (), bad: tuple[str, ...] = ()):
    """One 1-s cycle: 10 Hz samples of every spec tag, then the cycle-complete event."""
    start = T0_NS + i * 1_000_000_000
    items = []
    for tag in FS.tags:
        if tag in skip:
            continue
        for k in range(10):
            v = melt if tag == "melt_temp_c" else 100.0 + k * 0.1
            items.append(Sample(tag, start + k * 100_000_000, v, 0x80000000 if tag in bad else 0))
    ctx = {"product": "housing-a", "material_lot": "L123", "shift": "A", "ambient_temp_c": 24.0}
    items.append(PartEvent(f"S{i:05d}", start, start + 1_000_000_000, time.perf_counter(), ctx))
    return items


def _runtime(settings, watcher, spool, outputs=()):
    return LineRuntime(LINE, scorers=watcher, sink=spool, settings=settings, outputs=outputs,
                       station="press-7", playbook=PlaybookLoader(),
                       feature_factory=lambda scorer: StreamingFeatures(FS, scorer.baseline, capacity_s=30,
                                                                        max_rate_hz=20))


@pytest.mark.timeout(300)
def test_parts_scored_alerted_published_spooled_and_hot_reloaded(sqlite_store, settings_factory, tmp_path):
    settings = settings_factory(edge_stale_s=3.0, edge_clear_after_ok_parts=3)
    records.register()
    promoted = {"v": 1}
    watcher = ModelWatcher(LINE, resolve=lambda product: promoted["v"], load=lambda vid: RuleScorer(vid))
    watcher.poll_once()
    spool = Spool(tmp_path / "edge.sqlite", fsync="normal")

    topic = f"pqtest/{uuid.uuid4().hex[:8]}/alerts"
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()  # SUBACK: the broker forwards from now on
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    assert subscribed.wait(60), "the broker on 127.0.0.1:1883 did not acknowledge the subscription"
    out = MqttOutput("mqtt", topic=topic).start()
    rt = _runtime(settings, watcher, spool, [out])
    rt.warm_up()
    try:
        # The database is not draining yet: decisions must not care.
        defective = {3, 4, 5, 12}
        decisions = []
        for i in range(20):
            if i == 10:  # a promotion reaches the running edge without restart
                promoted["v"] = 2
                assert watcher.poll_once()
            decisions += rt.handle(_cycle(i, 250.0 if i in defective else 230.0))
        verdict = {d.prediction["serial"]: d.decision for d in decisions}
        assert {s for s, v in verdict.items() if v == "at_risk"} == {f"S{i:05d}" for i in defective}
        assert all(v == "ok" for s, v in verdict.items() if int(s[1:]) not in defective)
        assert [d.prediction["model_version_id"] for d in decisions] == [1] * 10 + [2] * 10
        # every decision carries its latency (how fast is `pq bench edge`'s figure, not a test's)
        assert all(math.isfinite(d.latency_ms) and d.latency_ms >= 0 for d in decisions), \
            [d.latency_ms for d in decisions]

        # 3 defective parts in a row -> one alert, updated twice; cleared after 3 OK parts; S00012 raises anew.
        raised = [ch for d in decisions for ch in d.changes if ch.event == "raised"]
        assert [ch.alert["serial"] for ch in raised] == ["S00003", "S00012"]
        alert = raised[0].alert
        assert alert["cause"] == "melt_temp_c" and alert["station"] == "press-7" and alert["material_lot"] == "L123"
        assert alert["title"].startswith("Part S00003 at risk") and "above normal" in alert["title"]
        assert "barrel heater" in alert["action"]
        assert alert["explanation"][0]["normal_hi"] == 235.0 and len(alert["explanation"]) == 1

        # Degraded: melt temperature sensor goes Bad, then silent; no alert is invented; it recovers alone.
        d_bad = rt.handle(_cycle(20, 260.0, bad=("melt_temp_c",)))[0]
        assert d_bad.decision == "not_scored" and "Bad quality" in d_bad.prediction["reason"]
        for i in range(21, 26):
            d = rt.handle(_cycle(i, 260.0, skip=("melt_temp_c",)))[0]
        assert d.decision == "not_scored" and "no good value for" in d.prediction["reason"]
        assert rt.status()["state"] == "degraded" and "Melt temperature" in rt.status()["reason"]
        assert not any(ch.event == "raised" for ch in d.changes)
        d_back = rt.handle(_cycle(26, 230.0))[0]
        assert d_back.decision == "ok" and rt.state == "scoring"

        assert poll_until(lambda: sum(1 for m in got if m["event"] == "raised") == 2, 60), got
        # Now the store comes up: everything decided while it was away arrives, once.
        assert rt.flush(60)
        drainer = SpoolDrainer(spool, sqlite_store).start()
        assert drainer.flush(120), drainer.stats()
        drainer.stop(5)
        with sqlite_store.engine.connect() as conn:
            n_pred = conn.execute(select(func.count()).select_from(schema.predictions)).scalar()
            states = dict(conn.execute(select(schema.alerts.c.serial, schema.alerts.c.state)).all())
            not_scored = conn.execute(select(func.count()).select_from(schema.predictions)
                                      .where(schema.predictions.c.decision == "not_scored")).scalar()
            line_events = conn.execute(select(schema.line_events.c.kind, schema.line_events.c.ended_at)).all()
            health = conn.execute(select(schema.component_health)).one()._mapping
            feats = conn.execute(select(func.count()).select_from(schema.part_features)).scalar()
        assert n_pred == 27 and not_scored == 6 and feats == 27
        assert states == {"S00005": "cleared", "S00012": "cleared"}  # serial = latest part of the alert
        assert ("degraded", None) not in line_events and any(k == "degraded" for k, _ in line_events)
        assert health["component"] == f"edge:{LINE}" and health["state"] == "scoring"
    finally:
        rt.close()
        out.close()
        sub.loop_stop()
        sub.disconnect()
        spool.close()


@pytest.mark.timeout(120)
def test_drift_missing_model_and_broken_model(sqlite_store, settings_factory, tmp_path):
    settings = settings_factory()
    ranges = {"melt_temp_c__mean": [220.0, 245.0]}
    versions = {"v": None}

    def load(vid):
        if vid == 3:
            raise ValueError("artifact sha256 mismatch")
        return RuleScorer(vid, ranges)

    watcher = ModelWatcher(LINE, resolve=lambda product: versions["v"], load=load)
    watcher.poll_once()
    rt = _runtime(settings, watcher, None)
    d = rt.handle(_cycle(0, 230.0))[0]
    assert d.decision == "not_scored" and "No model in production" in d.prediction["reason"] and rt.state == "no_model"
    versions["v"] = 1
    watcher.poll_once()
    assert rt.handle(_cycle(1, 230.0))[0].decision == "ok"
    d = rt.handle(_cycle(2, 300.0))[0]  # far beyond training range: drift, not an alert
    assert d.decision == "not_scored" and "outside what the model was trained on" in d.prediction["reason"]
    assert not d.changes
    versions["v"] = 3  # a version that fails to load: version 1 keeps scoring, status says why
    watcher.poll_once()
    d = rt.handle(_cycle(3, 230.0))[0]
    assert d.decision == "ok" and d.prediction["model_version_id"] == 1
    assert "failed to load" in rt.status()["model"]["errors"][0]


@pytest.mark.timeout(120)
def test_promotion_while_decisions_lag_the_samples(settings_factory):
    """A newly promoted model gets a fresh feature computer, filled from the edge's rings. When the
    decisions lag the samples (a busy machine, or time compressed as in the e2e test), the part about
    to be decided ended long before the newest stamp: its window must still be complete."""
    import pandas as pd

    from pq.features.baseline import ContextBaseline

    settings = settings_factory(edge_feature_capacity_s=5.0)  # 5 s of history: the parts lag by up to 12 s

    def baseline():  # a model's own baseline: another model means another feature computer
        return ContextBaseline().fit(pd.DataFrame({"melt_temp_c__mean": [229.0, 230.0, 231.0, 230.5]}),
                                     pd.DataFrame({"ambient_temp_c": [20.0, 22.0, 24.0, 26.0]}))

    baselines = {1: baseline(), 2: baseline()}
    promoted = {"v": 1}

    def load(vid):
        scorer = RuleScorer(vid)
        scorer.baseline = baselines[vid]
        return scorer

    watcher = ModelWatcher(LINE, resolve=lambda product: promoted["v"], load=load)
    watcher.poll_once()
    rt = _runtime(settings, watcher, None)
    rt.warm_up()
    cycles = [_cycle(i, 230.0) for i in range(12)]
    rt.handle([x for c in cycles for x in c if not isinstance(x, PartEvent)])  # every sample first
    parts = [x for c in cycles for x in c if isinstance(x, PartEvent)]
    decisions = rt.handle(parts[:2])
    promoted["v"] = 2
    assert watcher.poll_once()
    decisions += rt.handle(parts[2:])  # model 2's computer is built for part 2, 9 s behind the newest stamp
    assert [d.prediction["model_version_id"] for d in decisions] == [1] * 2 + [2] * 10
    assert all(d.decision == "ok" for d in decisions), [(d.prediction["serial"], d.prediction["reason"])
                                                       for d in decisions if d.decision != "ok"]


def _melt_profile(n: int, marginal=(), defective=()):
    return [239.0 if i in marginal else 250.0 if i in defective else 230.0 for i in range(n)]


@pytest.mark.timeout(180)
def test_two_decisions_divert_parts_and_call_the_operator_for_episodes(settings_factory):
    """Two decisions (the default): every part above the diversion threshold is diverted and published
    with divert=true, paging nobody; an operator alarm opens when 3 of the last 10 parts are at risk
    with one cause, is updated while the episode lasts and clears when it ends (10 parts without it).
    The same parts in the single-threshold mode alert per part above the alert threshold."""
    topic = f"pqtest/{uuid.uuid4().hex[:8]}"
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topic}/#", qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    sub.on_message = lambda c, u, m: got.append((m.topic.rsplit("/", 1)[1], json.loads(m.payload)))
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    assert subscribed.wait(60), "the broker on 127.0.0.1:1883 did not acknowledge the subscription"
    out = MqttOutput("mqtt", topic=f"{topic}/alerts", decisions_topic=f"{topic}/decisions").start()
    # p = 0.27 at 239 °C (diverted: above 0.2, below the 0.5 alert threshold), 0.99995 at 250 °C
    melts = _melt_profile(40, marginal={2}, defective={5, 20, 21, 22, 23})
    try:
        watcher = ModelWatcher(LINE, resolve=lambda product: 1,
                               load=lambda vid: RuleScorer(vid, diversion_threshold=0.2))
        watcher.poll_once()
        rt = _runtime(settings_factory(), watcher, None, [out])
        decisions = [d for i, m in enumerate(melts) for d in rt.handle(_cycle(i, m))]
        diverted = {d.prediction["serial"] for d in decisions if d.decision == "at_risk"}
        assert diverted == {f"S{i:05d}" for i in (2, 5, 20, 21, 22, 23)}
        assert {d.prediction["threshold"] for d in decisions if d.decision != "not_scored"} == {0.2}
        changes = [(d.prediction["serial"], ch) for d in decisions for ch in d.changes]
        assert [(s, ch.event) for s, ch in changes] == [("S00022", "raised"), ("S00023", "updated"),
                                                       ("S00033", "cleared")]
        alarm = changes[0][1].alert
        assert alarm["kind"] == "episode" and alarm["cause"] == "melt_temp_c"
        assert alarm["title"].startswith("3 of the last 10 parts at risk, same cause") and "S00022" in alarm["title"]
        assert changes[1][1].alert["repeat_count"] == 2 and changes[2][1].event_row["detail"]["episode_ended"]
        # the diverted part carries its reason even though nobody was called
        part2 = next(d for d in decisions if d.prediction["serial"] == "S00002")
        assert part2.prediction["contributions"][0]["signal"] == "melt_temp_c" and not part2.changes

        assert poll_until(lambda: sum(1 for k, _ in got if k == "decisions") == 40 and
                          any(k == "alerts" and m["event"] == "cleared" for k, m in got), 60), got
        published = {m["serial"]: m["divert"] for k, m in got if k == "decisions"}
        assert {s for s, v in published.items() if v} == diverted
        assert [m["event"] for k, m in got if k == "alerts"] == ["raised", "updated", "cleared"]

        # the single-threshold configuration: one alert per part above 0.5, nothing for the marginal part
        rt1 = _runtime(settings_factory(edge_decisions="single"), watcher, None)
        single = [d for i, m in enumerate(melts) for d in rt1.handle(_cycle(i, m))]
        assert {d.prediction["serial"] for d in single if d.decision == "at_risk"} == \
            {f"S{i:05d}" for i in (5, 20, 21, 22, 23)}
        raised = [(d.prediction["serial"], ch.alert["kind"]) for d in single for ch in d.changes if ch.event == "raised"]
        assert raised == [("S00005", "part"), ("S00020", "part")]
    finally:
        out.close()
        sub.loop_stop()
        sub.disconnect()
