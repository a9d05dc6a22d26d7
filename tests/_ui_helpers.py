"""Helpers for the UI tests: seeded stores, users, and `pq ui` as a subprocess on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.processes import free_port  # noqa: F401 - the UI tests' import of it
from pq.auth import users
from pq.auth.roles import Actor

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORDS = {"op": "operator-pass-123", "eng": "engineer-pass-123", "boss": "admin-pass-12345"}
ROLES = {"op": "operator", "eng": "engineer", "boss": "admin"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def add_users(store) -> None:
    actor = Actor("test-setup", "admin")
    for name, password in PASSWORDS.items():
        users.add_user(store, name, password, ROLES[name], actor=actor)


@contextmanager
def running_ui(database_url: str, data_dir: Path, log_path: Path, extra_env: dict | None = None):
    """Start `python -m pq.cli ui` and yield its base URL once /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")}
    env |= {"PQ_DATABASE_URL": database_url, "PQ_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    env |= extra_env or {}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "pq.cli", "ui", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # process start (Dash, pandas, LightGBM imports) on a busy runner
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pq ui exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pq ui did not answer within 120 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def login(page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("#login-username", username)
    page.fill("#login-password", PASSWORDS[username])
    page.click("#login-submit")
    page.wait_for_selector("#shell-user", timeout=60_000)  # generous: a loaded runner renders slowly


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
