"""Source schema changes, live: the simulator changes its address space under the real connector.

Each change the simulator can make (``SetSourceSchema``: unit_fahrenheit, remove_tag, add_tag,
data_type, eu_range, restore) is noticed by :class:`connectors.opcua.session.ConnectorSession`
through the server's model change events, becomes a ``source_change`` line event in the store and
a structured notification to the listeners, in plain words. A unit change pauses exactly the
scores that depend on the tag (a real :class:`pq.edge.runtime.LineRuntime` per feature set on the
same connector), and scoring resumes by itself after ``restore``. A change made while the
connection is down is found at the reconnect. Every wait is on a condition with a generous timeout.
"""

from __future__ import annotations

import asyncio
import math
import time
from types import SimpleNamespace

import pytest

from connectors.opcua.session import ConnectorSession
from connectors.tagmap import parse_tagmap
from pq.alerts.episodes import DEFAULT_EPISODE_RULE
from pq.alerts.playbook import PlaybookLoader
from pq.edge.modelwatch import ModelWatcher
from pq.edge.runtime import LineRuntime
from pq.edge.source_changes import SourcePauses
from pq.errors import ConfigError
from pq.features import StreamingFeatures, load_feature_set
from pq.features.spec import parse_feature_set
from pq.health import read_line_events
from pq.monitoring.ingest import ingest_health
from pq.spool import Spool, SpoolDrainer
from ui.pages.monitoring import _ingest_view
from tests.test_connector_sim import WATCHDOG_S, make_sim, sim_tagmap, sim_tagmap_text

LINE = "line-1"
FULL = load_feature_set()  # depends on melt_temp_c
MOULD_ONLY = parse_feature_set({"version": "mould-only", "stats": ["mean"], "signals": [{"tags": ["mould_temp_c"]}]})


async def _until(pred, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{what() if callable(what) else what} (waited {timeout_s:.0f} s)")
        await asyncio.sleep(0.05)


class Changes:
    """A connector listener keeping every source change row it was told."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_source_change(self, changes):
        self.rows.extend(changes)

    def seen(self, kind: str, *, ended: bool = False) -> list[dict]:
        return [r for r in self.rows if r["kind"] == kind and r["ended"] is ended]


# -- every change, detected live, in plain words, stored --------------------------------------------------
@pytest.mark.timeout(240)
def test_each_source_change_detected_live_with_plain_reason_and_stored(sqlite_store, settings_factory, tmp_path):
    settings = settings_factory(connector_flush_interval_ms=50, connector_watchdog_s=WATCHDOG_S)
    store = sqlite_store

    async def scenario():
        async with make_sim(lines=1, seed=5, speed=5) as sim:
            spool = Spool(tmp_path / "connector.sqlite")
            drainer = SpoolDrainer(spool, store).start()
            listener = Changes()
            try:
                async with ConnectorSession(sim_tagmap(sim.endpoint), settings, spool=spool,
                                            listeners=[listener]) as session:
                    await session.wait_connected(60)
                    assert listener.rows == [] and session.source_changes == {}  # as the map expects

                    async def change(name: str, kind: str, *, ended: bool = False) -> dict:
                        n = len(listener.seen(kind, ended=ended))
                        await sim.set_source_schema(name)
                        await _until(lambda: len(listener.seen(kind, ended=ended)) > n, 60,
                                     f"{name}: no {kind} change{' ended' if ended else ''} reported")
                        return listener.seen(kind, ended=ended)[-1]

                    unit = await change("unit_fahrenheit", "unit")
                    assert unit["message"] == "tag melt_temp_c now reported in °F (was °C): scores paused for line-1"
                    assert unit["pauses"] and unit["tag"] == "melt_temp_c"
                    assert not listener.seen("eu_range")  # the converted range is part of the unit change
                    assert session.health_detail()["source_changes"] == [unit["message"]]
                    # the Monitoring page lists it under the ingest table (from the connector's health row)
                    await _until(lambda: any(r["source_changes"] for r in ingest_health(store)), 60,
                                 "a connector health row with the change in the store")
                    page = str(_ingest_view(SimpleNamespace(store=store)))
                    assert f"connector:simulator: {unit['message']}" in page
                    assert (await change("restore", "unit", ended=True))["tag"] == "melt_temp_c"
                    assert session.source_changes == {}

                    gone = await change("remove_tag", "removed")
                    # a real server's last word on a deleted node: a value with status Bad_NodeIdUnknown
                    idx = session.index[(LINE, "screw_speed_rpm")]
                    await _until(lambda: int(session.last_status[idx]) == 0x80340000, 60, "Bad_NodeIdUnknown value")
                    assert session.health_detail()["unknown_nodes"] == {"line-1/screw_speed_rpm": "BadNodeIdUnknown"}
                    assert gone["message"] == ("tag screw_speed_rpm disappeared from the server (BadNodeIdUnknown): "
                                               "scores paused for line-1")
                    await change("restore", "removed", ended=True)
                    # the node is back: its monitored item was created again and good values flow
                    idx = session.index[(LINE, "screw_speed_rpm")]
                    await _until(lambda: int(session.last_status[idx]) == 0, 60, "good screw speed values again")
                    assert "line-1/screw_speed_rpm" not in session.unknown_nodes

                    added = await change("add_tag", "added")
                    assert added["message"] == "new tag under InjectionUnit: barrel_zone4_temp_c (not mapped)"
                    assert not added["pauses"]

                    dtype = await change("data_type", "data_type")
                    assert dtype["message"] == "tag melt_temp_c now delivered as Float (was Double): scores paused for line-1"
                    rng = await change("eu_range", "eu_range")
                    assert rng["message"] == ("tag melt_temp_c range on the server is now 0 to 500 (was 220 to 256): "
                                              "scores paused for line-1")
                    await change("restore", "eu_range", ended=True)
                    assert listener.seen("data_type", ended=True) and session.source_changes == {}
                assert drainer.flush(60), drainer.stats()
            finally:
                drainer.stop(5)
                spool.close()
            # what was seen at the first connect is remembered beside the spool
            return (tmp_path / "connector.source-schema.json").read_text()

    remembered = asyncio.run(scenario())
    assert '"data_type": "Double"' in remembered and "barrel_zone4_temp_c" in remembered
    events = read_line_events(store, LINE, "source_change")
    kinds = sorted(e["detail"]["kind"] for e in events)
    assert kinds == ["added", "data_type", "eu_range", "removed", "unit"], kinds
    assert all(e["ended_at"] is not None for e in events)  # every pause ended with restore; "added" is an instant
    unit_ev = next(e for e in events if e["detail"]["kind"] == "unit")
    assert unit_ev["detail"]["message"].startswith("tag melt_temp_c now reported in °F")


# -- the unit change pauses exactly the scores that depend on it -------------------------------------------
class MeltScorer:
    """P(defect) from the cycle mean of one signal (the LightGBM scorer is tested in models/)."""

    threshold = 0.5
    diversion_threshold = None
    baseline = None
    moving_signals = frozenset()
    episode_rule = DEFAULT_EPISODE_RULE
    feature_ranges: dict = {}

    def __init__(self, fs, signal: str, version_id: int):
        self.feature_set_version, self.feature_names = fs.version, list(fs.feature_names)
        self.signal, self.version_id = signal, version_id

    def score(self, vector, context=None, explain=None, threshold=None):
        m = vector[f"{self.signal}__mean"]
        if math.isnan(m):
            return SimpleNamespace(probability=0.5, threshold=0.5, at_risk=False, contributions=(),
                                   flags=(f"nan_unseen:{self.signal}__mean",))
        return SimpleNamespace(probability=0.1, threshold=0.5, at_risk=False, flags=(), contributions=())


class Decisions:
    name = "decisions"

    def __init__(self):
        self.rows: list[dict] = []

    def on_decision(self, d):
        self.rows.append(dict(d))

    def on_alert(self, event, alert):
        pass

    def status(self):
        return {}

    def describe(self):
        return self.name

    def close(self, flush_timeout_s=2.0):
        pass


def _runtime(settings, fs, signal: str, vid: int, out: Decisions) -> LineRuntime:
    watcher = ModelWatcher(LINE, resolve=lambda product: vid, load=lambda v: MeltScorer(fs, signal, v))
    watcher.poll_once()
    return LineRuntime(LINE, scorers=watcher, sink=None, settings=settings, outputs=[out], playbook=PlaybookLoader(),
                       feature_factory=lambda scorer: StreamingFeatures(fs, None, capacity_s=120, max_rate_hz=20))


@pytest.mark.timeout(300)
def test_unit_change_pauses_exactly_the_dependent_scores_and_restore_resumes(settings_factory):
    settings = settings_factory(connector_watchdog_s=WATCHDOG_S, edge_stale_s=60.0)
    melt_out, mould_out = Decisions(), Decisions()
    melt_rt = _runtime(settings, FULL, "melt_temp_c", 1, melt_out)
    mould_rt = _runtime(settings, MOULD_ONLY, "mould_temp_c", 2, mould_out)

    def scored(out: Decisions) -> list[dict]:
        return [d for d in out.rows if d["decision"] != "not_scored"]

    async def scenario():
        async with make_sim(lines=1, seed=6, speed=20) as sim:
            async with ConnectorSession(sim_tagmap(sim.endpoint), settings, spool=None,
                                        listeners=[melt_rt, mould_rt]) as session:
                await session.wait_connected(60)
                await _until(lambda: len(scored(melt_out)) >= 2 and len(scored(mould_out)) >= 2, 120,
                             lambda: f"parts scored before the change: {[d['reason'] for d in melt_out.rows]}")
                await sim.set_source_schema("unit_fahrenheit")
                await _until(lambda: melt_rt.source_pauses.paused, 60, "the edge never heard of the unit change")
                assert melt_rt.state == "degraded"
                assert melt_rt.state_reason == ("Melt temperature now reported in °F (was °C): scores paused for "
                                                "line-1"), melt_rt.state_reason
                paused_from = len(melt_out.rows)
                mould_from = len(mould_out.rows)
                await _until(lambda: len(melt_out.rows) >= paused_from + 3 and len(mould_out.rows) >= mould_from + 3,
                             120, "three parts decided after the change")
                during = melt_out.rows[paused_from:]
                mould_during = mould_out.rows[mould_from:]
                await sim.set_source_schema("restore")
                await _until(lambda: not melt_rt.source_pauses.paused, 60, "the edge never heard of the restore")
                back_from = len(melt_out.rows)
                await _until(lambda: any(d["decision"] != "not_scored" for d in melt_out.rows[back_from:]), 120,
                             lambda: f"no part scored after restore: {[d['reason'] for d in melt_out.rows[back_from:]]}")
                return during, mould_during, melt_out.rows[back_from:]

    during, mould_during, after = asyncio.run(scenario())
    # every part of the melt model decided while °F was served: not scored, with the plain reason
    assert all(d["decision"] == "not_scored" for d in during), [(d["decision"], d["reason"]) for d in during]
    assert all(d["reason"] == "Melt temperature now reported in °F (was °C): scores paused for line-1"
               for d in during), [d["reason"] for d in during]
    # the model that does not read the melt temperature went on scoring
    assert all(d["decision"] != "not_scored" for d in mould_during), [(d["decision"], d["reason"]) for d in mould_during]
    # after restore: a part that began while °F was still served is not scored either, then scoring resumes
    first_scored = next(i for i, d in enumerate(after) if d["decision"] != "not_scored")
    assert all("changed on the server during this cycle" in d["reason"] or "°F" in d["reason"]
               for d in after[:first_scored]), [d["reason"] for d in after]
    assert melt_rt.state == "scoring"


# -- a change made while the connection is down -----------------------------------------------------------
@pytest.mark.timeout(240)
def test_change_during_outage_detected_at_reconnect(settings_factory, tmp_path):
    settings = settings_factory(connector_reconnect_max_delay_s=1.0, connector_watchdog_s=WATCHDOG_S)

    async def scenario():
        async with make_sim(lines=1, seed=7, speed=5) as sim:
            listener = Changes()
            async with ConnectorSession(sim_tagmap(sim.endpoint), settings, spool=None,
                                        listeners=[listener]) as session:
                await session.wait_connected(60)
                restart = asyncio.ensure_future(sim.restart(down_s=2.0))
                await _until(lambda: not sim.is_up, 30, "the simulator endpoint never went down")
                await sim.set_source_schema("unit_fahrenheit")  # while nobody is connected: no event reaches pq
                await restart
                await _until(lambda: session.reconnects >= 1 and listener.seen("unit"), 120,
                             lambda: f"unit change not found at the reconnect (state {session.state}, rows "
                                     f"{listener.rows})")
                return listener.rows

    rows = asyncio.run(scenario())
    assert rows[0]["message"] == "tag melt_temp_c now reported in °F (was °C): scores paused for line-1"


# -- expectations stated in the tag map ---------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_tag_map_expectations_checked_at_first_connect(settings_factory):
    settings = settings_factory(connector_watchdog_s=WATCHDOG_S)

    async def scenario():
        async with make_sim(lines=1, seed=8, speed=1, paused=True) as sim:
            text = sim_tagmap_text(sim.endpoint).replace(
                'name = "melt_temp_c"\n', 'name = "melt_temp_c"\ndata_type = "Float"\neu_range = [200, 300]\n', 1)
            listener = Changes()
            async with ConnectorSession(parse_tagmap(text, "simulator.toml"), settings, spool=None,
                                        listeners=[listener]) as session:
                await session.wait_connected(60)
                return listener.rows

    rows = asyncio.run(scenario())
    assert sorted(r["message"] for r in rows) == [
        "tag melt_temp_c now delivered as Double (was Float): scores paused for line-1",
        "tag melt_temp_c range on the server is now 220 to 256 (was 200 to 300): scores paused for line-1"]


def test_tag_map_data_type_and_eu_range_validated_with_file_line_key():
    base = '[connection]\nname = "c"\nendpoint = "opc.tcp://h:4840"\nline_id = "line-1"\n\n[[tags]]\n' \
           'node_id = "ns=2;s=A"\nname = "a_c"\n'
    ok = parse_tagmap(base + 'data_type = "Double"\neu_range = [0, 10]\n', "m.toml")
    assert ok.tags[0].data_type == "Double" and ok.tags[0].eu_range == (0.0, 10.0)
    with pytest.raises(ConfigError, match=r"m.toml:9: \[\[tags\]\] #1 key 'data_type': got 'double', expected one of"):
        parse_tagmap(base + 'data_type = "double"\n', "m.toml")
    with pytest.raises(ConfigError, match=r"m.toml:9: \[\[tags\]\] #1 key 'eu_range': got \[10, 0\], expected \[low, high\]"):
        parse_tagmap(base + 'eu_range = [10, 0]\n', "m.toml")


def test_pauses_only_for_dependent_signals_and_only_until_the_server_is_back():
    p = SourcePauses(LINE)
    row = {"line_id": LINE, "tag": "melt_temp_c", "kind": "unit", "pauses": True, "ended": False,
           "what": "now reported in °F (was °C)"}
    assert p.apply([row, {**row, "tag": "barrel_zone4_temp_c", "kind": "added", "pauses": False},
                    {**row, "line_id": "line-2", "tag": "mould_temp_c"}])
    label = lambda s: s.replace("_", " ")  # noqa: E731
    assert p.problems({"mould_temp_c"}, label, 0) == []
    assert p.problems({"melt_temp_c"}, label, 0) == ["melt temp c now reported in °F (was °C): scores paused for line-1"]
    assert p.apply([{**row, "ended": True}], lambda tag: 1000)
    assert "during this cycle" in p.problems({"melt_temp_c"}, label, 999)[0]  # began before the server was back
    assert p.problems({"melt_temp_c"}, label, 1001) == [] and not p.paused
