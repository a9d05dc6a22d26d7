"""Alert detail in the browser: the trend and the headline an operator reads about one at-risk part.

The store is written the way the edge writes it (``pq.edge.records``: part rows with their served
feature vectors of the default feature set, the alert from ``AlarmBoard`` with its explanation and
title from ``pq.alerts.explain``), then `pq ui` runs as a subprocess and Chromium opens the alert's
page. The trend's figure is read from the plotly graph div in the DOM: for each explained signal a
line over the previous parts of that line, the normal band for today's conditions and this part
marked. Two lines: one whose PLC clock agrees with the edge, one whose clock runs 5 minutes ahead
(part times are the line's own source timestamps; the alert's time is the edge's clock).
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from pq.alerts.discipline import AlarmBoard
from pq.alerts.explain import explain_contributions, title_for
from pq.alerts.playbook import DEFAULT_PLAYBOOK_PATH, load_playbook_file
from pq.edge.records import write_alert_events, write_alerts, write_part_features
from pq.features.spec import load_feature_set
from tests._ui_helpers import CHROMIUM, add_users, login, running_ui, shot

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

CYCLE_S = 18.0
N_BEFORE = 80  # parts of the line before the flagged one (the trend shows the last 60 of them + it)
N_AFTER = 4  # parts made after it, while the operator looks: not part of its trend
# the flagged part's readings and their normal range for today's conditions (as the scorer gives them)
INJECTION = {"signal": "injection_time_s", "value": 1.204, "normal_lo": 1.218, "normal_hi": 1.31,
             "contribution": 0.9, "direction": "low"}
MELT = {"signal": "melt_temp_c", "value": 231.4, "normal_lo": 225.0, "normal_hi": 230.0,
        "contribution": 0.4, "direction": "high"}
# what the previous parts read, per line (different per line: the trend must not mix lines)
TYPICAL = {"line-1": {"injection_time_s__last": 1.265, "melt_temp_c__mean": 227.5},
           "line-2": {"injection_time_s__last": 1.275, "melt_temp_c__mean": 228.5}}


def _vector(names, rng, line_id: str, flagged: bool) -> dict:
    vec = {n: round(rng.uniform(0.0, 1.0), 4) for n in names}
    for name, mid in TYPICAL[line_id].items():
        vec[name] = round(rng.gauss(mid, 0.01 * mid), 4)
    if flagged:
        vec["injection_time_s__last"] = INJECTION["value"]
        vec["melt_temp_c__mean"] = MELT["value"]
    vec["ctx__ambient_temp_c"] = 24.5
    return vec


def _line_with_alert(store, line_id: str, *, end: datetime, clock_ahead_s: float, seed: int) -> tuple[str, str]:
    """N_BEFORE parts, the flagged part, N_AFTER more; the alert raised by the edge on the flagged one.

    ``end`` is the true time the flagged part ended; the line stamps its parts ``clock_ahead_s``
    later, the edge decides 50 ms after the cycle on its own clock. Returns (alert id, serial)."""
    rng = random.Random(seed)
    names = load_feature_set().feature_names
    ahead = timedelta(seconds=clock_ahead_s)
    payloads, flagged_serial = [], None
    for k in range(N_BEFORE + 1 + N_AFTER):
        true_end = end + timedelta(seconds=CYCLE_S * (k - N_BEFORE))
        serial = f"{line_id[-1]}-{k:06d}"
        flagged = k == N_BEFORE
        if flagged:
            flagged_serial = serial
        payloads.append({
            "line_id": line_id, "serial": serial, "cycle_start": true_end + ahead - timedelta(seconds=CYCLE_S * 0.9),
            "cycle_end": true_end + ahead, "product": "HSG-1040", "material_lot": "LOT-4711", "shift": "B",
            "context": {"ambient_temp_c": 24.5, "station": "Press 1"}, "feature_set_version": "default-1",
            "features": _vector(names, rng, line_id, flagged), "reason": "",
            "computed_at": true_end + timedelta(milliseconds=50)})
    write_part_features(store, payloads)

    pb = load_playbook_file(DEFAULT_PLAYBOOK_PATH)
    top = explain_contributions([INJECTION, MELT], pb, top_n=3)
    decided_at = end + timedelta(milliseconds=50)
    board = AlarmBoard(line_id)
    changes = board.on_at_risk(
        pb.cause_for("injection_time_s"), decided_at, severity="high", title=title_for(flagged_serial, 0.87, top),
        serial=flagged_serial, station="Press 1", product="HSG-1040", material_lot="LOT-4711", shift="B",
        score=0.87, action=pb.action_for("injection_time_s", "low", {"serial": flagged_serial}), explanation=top)
    write_alerts(store, [c.alert for c in changes if c.write_alert])
    write_alert_events(store, [c.event_row for c in changes if c.event_row])
    return changes[0].alert["id"], flagged_serial


@pytest.fixture
def ui_alerts(store, tmp_path):
    end = datetime.now(timezone.utc) - timedelta(minutes=3)
    alerts = {"line-1": _line_with_alert(store, "line-1", end=end, clock_ahead_s=0.0, seed=1),
              "line-2": _line_with_alert(store, "line-2", end=end, clock_ahead_s=300.0, seed=2)}
    add_users(store)
    with running_ui(store.engine.url.render_as_string(hide_password=False), tmp_path / "var",
                    tmp_path / "ui.log") as base:
        yield store, base, alerts


# Every trace of the trend figure as plotly.js holds it in the graph div.
_TRACES_JS = """() => {
    const gd = document.querySelector('#detail-trend .js-plotly-plot');
    if (!gd || !gd.data || !gd.data.length) return null;
    const arr = (v) => (v === undefined || v === null) ? [] : Array.from(v);
    return gd.data.map(t => ({name: t.name || null, mode: t.mode || null, fill: t.fill || null,
                              x: arr(t.x), y: arr(t.y), text: arr(t.text),
                              xaxis: t.xaxis || 'x', yaxis: t.yaxis || 'y'}));
}"""

_NUM = r"(-?\d+(?:\.\d+)?)"


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _assert_consistent(sentence: str, side: str, unit: str) -> None:
    """'<gap> <unit> below|above normal ... (now <v> <unit>, normal <lo>–<hi> <unit>)', numbers that add up."""
    u = re.escape(unit)
    m = re.search(rf"{_NUM} {u} {side} normal.*\(now {_NUM} {u}, normal {_NUM}–{_NUM} {u}\)", sentence)
    assert m, f"no '{side} normal (now ..., normal ...)' in {sentence!r}"
    gap, now, lo, hi = m.groups()
    assert len({_decimals(t) for t in (gap, now, lo, hi)}) == 1, f"mixed precisions in {sentence!r}"
    if side == "below":
        assert Decimal(now) < Decimal(lo) and Decimal(lo) - Decimal(now) == Decimal(gap), sentence
    else:
        assert Decimal(now) > Decimal(hi) and Decimal(now) - Decimal(hi) == Decimal(gap), sentence


def _check_trend(traces: list[dict], serial: str, line_id: str) -> None:
    by_axis: dict[str, list[dict]] = {}
    for t in traces:
        by_axis.setdefault(t["yaxis"], []).append(t)
    assert len(by_axis) == 2, f"one chart per explained signal expected, got axes {sorted(by_axis)}"
    # the charts in explanation order: injection time, then melt temperature
    for (axis, ts), reading, key in zip(sorted(by_axis.items()), (INJECTION, MELT),
                                        ("injection_time_s__last", "melt_temp_c__mean")):
        lines = [t for t in ts if t["mode"] and "lines" in t["mode"] and not t["fill"] and t["name"] != "this part"
                 and len(t["x"]) > 2]
        assert len(lines) == 1, f"{key}: one line over the previous parts expected, got {ts}"
        line = lines[0]
        assert len(line["x"]) == len(line["y"]), f"{key}: x and y of the line differ in length"
        values = [y for y in line["y"] if isinstance(y, (int, float))]
        assert len(values) >= 50, f"{key}: the trend line has {len(values)} points ({line['y'][:5]}...)"
        # those parts of this line, ending at the flagged part, oldest first; none made after it
        assert line["text"][-1] == serial and len(line["text"]) == len(line["y"]) <= 61
        assert line["text"] == sorted(line["text"]) and all(s.startswith(f"{line_id[-1]}-") for s in line["text"])
        mid = TYPICAL[line_id][key]
        before = values[:-1]
        assert all(abs(v - mid) < 0.06 * mid for v in before), f"{key}: values not those of {line_id}'s parts"
        assert line["y"][-1] == pytest.approx(reading["value"])
        # the normal band for today's conditions, shaded between lo and hi
        fills = [t for t in ts if t["fill"] == "tonexty"]
        assert len(fills) == 1 and fills[0]["y"] == pytest.approx([reading["normal_hi"]] * 2), f"{key}: band {ts}"
        lo_trace = ts[ts.index(fills[0]) - 1]
        assert lo_trace["y"] == pytest.approx([reading["normal_lo"]] * 2)
        assert min(fills[0]["x"]) <= min(line["x"]) and max(fills[0]["x"]) >= max(line["x"])
        # this part marked, at the end of the line
        marks = [t for t in ts if t["name"] == "this part"]
        assert len(marks) == 1 and marks[0]["y"] == pytest.approx([reading["value"]])
        assert marks[0]["x"] == [line["x"][-1]]


@pytest.mark.timeout(180)
def test_alert_detail_trend_and_headline(ui_alerts, browser):
    store, base, alerts = ui_alerts
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    login(page, base, "op")
    for line_id, (alert_id, serial) in alerts.items():
        page.goto(f"{base}/alerts/{alert_id}")
        page.wait_for_selector("#detail-title", timeout=30_000)
        page.wait_for_selector("#detail-trend .main-svg", timeout=30_000)
        page.wait_for_function(_TRACES_JS, timeout=30_000)
        shot(page, f"operator-alert-detail-trend-{line_id}")
        _check_trend(page.evaluate(_TRACES_JS), serial, line_id)
        # drawn on the screen too: each chart's line is an SVG path through its points
        paths = page.eval_on_selector_all("#detail-trend .scatterlayer path.js-line",
                                          "ps => ps.map(p => p.getAttribute('d') || '')")
        assert sum(d.count("L") >= 50 for d in paths) == 2, f"points per SVG line: {[d.count('L') for d in paths]}"

        # The headline: reading, range and gap with one precision, the reading outside the range.
        title = page.inner_text("#detail-title")
        assert title.startswith(f"Part {serial} at risk (87 %): Injection time ")
        _assert_consistent(title, "below", "s")
        why = page.inner_text("#detail-why")
        rows = {r.split("\t")[0]: r for r in why.splitlines() if "\t" in r}
        for label, reading, side, unit in (("Injection time", INJECTION, "below", "s"),
                                           ("Melt temperature", MELT, "above", "°C")):
            row = rows[label]
            cells = row.split("\t")
            nums = re.findall(_NUM, row)
            assert len({_decimals(t) for t in nums}) == 1, f"why table row mixes precisions: {row!r}"
            now, lo, hi, gap = nums[:4]
            assert cells[1] == f"{now} {unit}" and f"{gap} {unit} {side} normal" in cells[3], row
            if side == "below":
                assert Decimal(now) < Decimal(lo) and Decimal(lo) - Decimal(now) == Decimal(gap), row
            else:
                assert Decimal(now) > Decimal(hi) and Decimal(now) - Decimal(hi) == Decimal(gap), row
    page.close()
