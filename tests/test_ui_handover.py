"""The Handover page in the browser: the counts an outgoing operator reads match the alert table, and a
note typed there is stored (audited) and shown on the sheet."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pq.monitoring.handover import handover_summary, notes_for
from pq.shifts import ShiftClock, parse_shift_starts
from tests._ui_helpers import CHROMIUM, add_users, login, running_ui, shot
from tests.test_handover import _seed

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.mark.timeout(300)
def test_handover_page_counts_and_note(sqlite_store, tmp_path, browser):
    store = sqlite_store
    now = datetime.now(timezone.utc)
    _, expected = _seed(store, "line-1", now)
    # A shift clock whose running shift started when the seeded shift did (to the minute).
    start = (now - timedelta(hours=2)).replace(second=0, microsecond=0)
    starts = ",".join(f"{n}={(start + timedelta(hours=8 * k)):%H:%M}" for k, n in enumerate("ABC"))
    shift = ShiftClock(parse_shift_starts(starts)).shift_at(now)
    assert handover_summary(store, "line-1", shift).alarms == expected  # the clock's shift holds the same alarms
    add_users(store)
    with running_ui(store.engine.url.render_as_string(hide_password=False), tmp_path / "var", tmp_path / "ui.log",
                    extra_env={"PQ_SHIFT_STARTS": starts}) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        login(page, base, "op")
        page.goto(f"{base}/handover?line=line-1&shift={shift.key}")
        page.wait_for_selector("#handover-raised", timeout=60_000)
        got = {k: page.inner_text(f"#handover-{k.replace('_', '-')}")
               for k in ("raised", "acknowledged", "escalated", "shelved")}
        assert got == {k: str(expected[k]) for k in got}
        assert page.inner_text("#handover-open") == str(expected["still_open"])
        assert page.inner_text("#handover-diverted") == "4" and page.inner_text("#handover-waiting") == "2"
        watch = page.inner_text("#handover-watch")
        assert "Shelved until" in watch and "sensor being replaced" in watch and "line-h" not in watch
        page.fill("#handover-note", "Lot L1 runs out at 18:00; next lot is from the new supplier")
        page.click("#handover-add-note")
        page.wait_for_function("document.querySelector('#handover-notes') && "
                               "document.querySelector('#handover-notes').innerText.includes('new supplier')",
                               timeout=60_000)
        shot(page, "handover")
        notes = notes_for(store, "line-1", shift)
        assert [(n["author"], n["note"]) for n in notes] == [("op", "Lot L1 runs out at 18:00; next lot is from the new supplier")]
