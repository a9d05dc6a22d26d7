"""`pq demo` from nothing: history, first model, simulator, edge and UI; a browser logs in and sees a
scored part. Stopping it (Ctrl-C to its process group, SIGTERM, the end of ``--duration``, or a
stop in the middle of setting up) ends every process it started and exits 0.

The tests share one data directory, in order: the first run trains the models, the later ones reuse
them, as a user's second ``scripts/demo.sh`` does.
"""

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

import httpx
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


def _query(db: Path, sql: str):
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute(sql).fetchone()[0]


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


class _Demo:
    """One `pq demo` in a session of its own (as a terminal starts it), and every process it starts."""

    def __init__(self, home: Path, *args: str, script: bool = False):
        self.home, self.log = home, home / f"demo-{time.monotonic_ns()}.log"
        self.ui_port, self.opcua_port = free_port(), free_port()
        self.db = home / "var" / "pq.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")}
        env |= {"PQ_DATA_DIR": str(home / "var"), "PQ_DATABASE_URL": f"sqlite:///{self.db}",
                "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / "var" / "numba-cache"))}
        demo_args = ["--lines", "1", "--history-days", "3", "--sample-hz", "1", "--speed", "2",
                     "--port", str(self.ui_port), "--opcua-port", str(self.opcua_port), *args]
        if script:  # the README's first command, in the virtual environment it made (this one)
            env["PQ_VENV"] = sys.prefix
            command = ["bash", str(ROOT / "scripts" / "demo.sh"), *demo_args]
        else:
            command = [sys.executable, "-m", "pq.cli", "demo", *demo_args]
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(command, cwd=home, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}  # every descendant ever observed, and its process group
        self.groups: set[int] = {self.proc.pid}

    def text(self) -> str:
        return self.log.read_text()

    def observe(self) -> list[psutil.Process]:
        """Record the demo's descendants now (children start and end while it sets up)."""
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self.seen.setdefault(child.pid, child)
            try:
                self.groups.add(os.getpgid(child.pid))
            except ProcessLookupError:
                pass
        return found

    def wait_for(self, predicate, timeout_s: float, what: str):
        def watched():
            self.observe()
            return predicate()
        return _wait_for(watched, timeout_s, what, self.proc, self.log)

    def stop(self, sig: int, *, group: bool, timeout_s: float = 120) -> int | str:
        self.observe()
        if self.proc.poll() is None:
            (os.killpg if group else os.kill)(self.proc.pid, sig)
        return self.finish(timeout_s)

    def finish(self, timeout_s: float) -> int | str:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = "stuck"
        self._out.close()
        return rc

    def leftovers(self) -> list[str]:
        """Processes still alive that the demo started, or that share a process group with them."""
        alive = [p for p in self.seen.values() if _alive(p)]
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid != os.getpid() and os.getpgid(p.pid) in self.groups and _alive(p):
                    alive.append(p)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        described = sorted({f"{p.pid}: {' '.join(_cmdline(p))}" for p in alive})
        for p in alive:  # never leave them to the next test
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        return described


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return ["?"]


def _stopped_cleanly(demo: _Demo, rc) -> None:
    leftovers = demo.leftovers()
    assert rc == 0, demo.text()[-3000:]
    assert "pq demo stopped." in demo.text()
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-home")


def test_demo_end_to_end_and_ctrl_c(demo_home):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from pq.cli.demo import DEMO_USERS

    demo = _Demo(demo_home, "--duration", "900")
    try:
        demo.wait_for(lambda: "pq demo is running" in demo.text(), 600, "UI")
        assert re.search(r"operator\s+password\s+\S+", demo.text()), "the demo prints its users"
        # the demo users are on duty for every line and shift: the demo's alarms have an owner
        roster = _query(demo.db, "SELECT group_concat(duty_role || '=' || username, ',') FROM "
                                 "(SELECT duty_role, username FROM rosters WHERE line_id = '*' AND shift = '*' "
                                 "ORDER BY duty_role)")
        assert roster == "operator=operator,quality_engineer=admin,shift_lead=engineer", roster
        children = demo.observe()
        assert len(children) >= 3, "simulator, edge and UI run as child processes"

        demo.wait_for(lambda: _scored_parts(demo.db), 180, "scored part")
        # the edge wrote its verdict to the simulated PLC's quality gate (OPC UA write-back)
        serial = demo.wait_for(lambda: asyncio.run(_gate_serial(demo.opcua_port)), 120, "quality-gate write")
        assert re.fullmatch(r"L1-\d{6}", serial), serial
        # live parts carry on from the history's serials, so each keeps its own record and the vector
        # the model saw is stored as served (a reused serial rewrote a history part and lost it)
        history_max = _query(demo.db, "SELECT max(p.serial) FROM parts p JOIN part_features f "
                                      "ON f.part_id = p.id WHERE f.source = 'backfill'")
        assert serial > history_max, (serial, history_max)
        demo.wait_for(lambda: _query(demo.db, "SELECT count(*) FROM part_features WHERE source = 'edge'"), 120,
                      "served feature vector in the store")
        password = dict((u, p) for u, _, p in DEMO_USERS)["operator"]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            base = f"http://127.0.0.1:{demo.ui_port}"
            page.goto(base + "/login")
            page.fill("#login-username", "operator")
            page.fill("#login-password", password)
            page.click("#login-submit")
            page.wait_for_selector("#overview-tile-line-1", timeout=60_000)
            tile = page.inner_text("#overview-tile-line-1")
            assert re.search(r"Parts in the last hour\s+[1-9]", tile), tile
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "demo-overview.png"), full_page=True)
            browser.close()
    finally:
        rc = demo.stop(signal.SIGINT, group=True)  # what Ctrl-C in its terminal does
    _stopped_cleanly(demo, rc)


def test_demo_script_runs_for_its_duration_and_stops(demo_home):
    """The README's first command in the venv it creates: the UI answers, and after --duration the
    demo stops by itself. (Reuses the first test's models when it ran: a user's second start.)"""
    if not (Path(sys.prefix) / ".pq-installed-base").exists():
        pytest.skip("not running in a virtual environment made by scripts/lib/venv.sh")
    demo = _Demo(demo_home, "--duration", "60", script=True)
    try:
        demo.wait_for(lambda: "pq demo is running" in demo.text(), 600, "UI")
        login = demo.wait_for(lambda: _get(f"http://127.0.0.1:{demo.ui_port}/login"), 60, "login page")
        assert login.status_code == 200 and "login-username" in login.text
        rc = demo.finish(timeout_s=300)  # --duration ends it, no signal
    finally:
        if demo.proc.poll() is None:
            demo.stop(signal.SIGKILL, group=False)
    _stopped_cleanly(demo, rc)


def test_demo_sigterm_while_setting_up_stops_its_step(tmp_path):
    """SIGTERM (systemd, docker, a supervisor) in the middle of the first step: the step's process
    and everything else ends, and the demo exits 0."""
    demo = _Demo(tmp_path, "--duration", "900")
    try:
        demo.wait_for(lambda: "Generating" in demo.text() and demo.observe(), 300, "history step")
    finally:
        rc = demo.stop(signal.SIGTERM, group=False)
    assert demo.seen, "the history step ran as a child process"
    _stopped_cleanly(demo, rc)


def _get(url: str):
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 200 else None
