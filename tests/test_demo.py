"""`pq demo` from nothing: history, first model, simulator, edge and UI; a browser logs in and sees a
scored part; Ctrl-C stops everything and leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests._ui_helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, SCREENSHOTS, free_port

pytestmark = [pytest.mark.timeout(900), pytest.mark.browser]


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"pq demo exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    pytest.fail(f"no {what} after {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


def _scored_parts(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM predictions WHERE decision IN ('ok', 'at_risk')").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


async def _gate_serial(port: int) -> str:
    from asyncua import Client

    async with Client(f"opc.tcp://127.0.0.1:{port}/pq/sim/", timeout=5) as client:
        return await client.get_node("ns=2;s=line-1.QualityGate.RiskSerial").read_value()


def test_demo_end_to_end(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from pq.demo import DEMO_USERS

    ui_port, opcua_port = free_port(), free_port()
    db = tmp_path / "var" / "pq.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")}
    env |= {"PQ_DATA_DIR": str(tmp_path / "var"), "PQ_DATABASE_URL": f"sqlite:///{db}",
            "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / "var" / "numba-cache"))}
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "pq.cli", "demo", "--lines", "1", "--history-days", "3", "--sample-hz", "1",
             "--speed", "5", "--port", str(ui_port), "--opcua-port", str(opcua_port), "--duration", "600"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        _wait_for(lambda: "pq demo is running" in log.read_text(), 480, "UI", demo, log)
        text = log.read_text()
        assert re.search(r"operator\s+password\s+\S+", text), "the demo prints its users"
        children = psutil.Process(demo.pid).children(recursive=True)
        assert len(children) >= 3, "simulator, edge and UI run as child processes"

        _wait_for(lambda: _scored_parts(db), 120, "scored part", demo, log)
        # the edge wrote its verdict to the simulated PLC's quality gate (OPC UA write-back)
        serial = _wait_for(lambda: asyncio.run(_gate_serial(opcua_port)), 60, "quality-gate write", demo, log)
        assert re.fullmatch(r"L1-\d{6}", serial), serial
        password = dict((u, p) for u, _, p in DEMO_USERS)["operator"]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            base = f"http://127.0.0.1:{ui_port}"
            page.goto(base + "/login")
            page.fill("#login-username", "operator")
            page.fill("#login-password", password)
            page.click("#login-submit")
            page.wait_for_selector("#overview-tile-line-1", timeout=30_000)
            tile = page.inner_text("#overview-tile-line-1")
            assert re.search(r"Parts in the last hour\s+[1-9]", tile), tile
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "demo-overview.png"), full_page=True)
            browser.close()
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            rc = demo.wait(timeout=90)
        except subprocess.TimeoutExpired:
            demo.kill()
            rc = "stuck"
        leftovers = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        for c in leftovers:
            c.kill()
    assert rc == 0, log.read_text()[-3000:]
    assert "pq demo stopped." in log.read_text()
    assert not leftovers, f"orphan processes: {[c.cmdline() for c in leftovers]}"
