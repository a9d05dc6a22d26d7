"""Child processes and ports for the suites that run a server or a client beside the code they measure.

Also the one copy of these helpers the tests use (free ports, polling a condition).

The simulator (and ``pq bench connect``'s bare client) run as child processes, as a plant's server
is a separate program: each gets a core of its own, and the bench process's CPU time and memory stay
those of the code measured. Children find this checkout's packages, listen on a free loopback port,
die with the bench process even when it is killed, and are stopped on every ordinary exit.

Example::

    port = free_port()
    proc = spawn([sys.executable, "-m", "simulators", "serve", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_listening(proc, port, 60)
        ...
    finally:
        stop(proc)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import click

__all__ = ["ROOT", "free_port", "poll_until", "spawn", "wait_listening", "stop", "tail"]

ROOT = Path(__file__).resolve().parent.parent  # the checkout (or site-packages) holding pq and simulators


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_until(pred, timeout_s: float = 60.0, step_s: float = 0.05) -> bool:
    """Poll ``pred`` until it is true (True) or ``timeout_s`` passes (False). Timeouts are generous:
    a loaded 2-core runner is slow, never wrong."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return bool(pred())


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _die_with_parent() -> None:
    """Child pre-exec: SIGTERM when the bench process dies, even by SIGKILL, so no simulator keeps serving."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux/glibc: the children are still stopped in `finally` on every ordinary exit


def spawn(cmd: list[str], **popen) -> subprocess.Popen:
    """``cmd`` in its own session, importing this checkout's packages, ended when the bench process ends."""
    return subprocess.Popen(cmd, env=_child_env(), start_new_session=True, preexec_fn=_die_with_parent, **popen)


def wait_listening(proc: subprocess.Popen, port: int, timeout_s: float, *, what: str = "simulator",
                   log: Path | None = None) -> None:
    """Return once ``port`` accepts connections; a one-line error if ``proc`` exits first or never listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = f": {tail(log)}" if log is not None else ""
            raise click.ClickException(f"{what} exited with {proc.returncode} before listening on port {port}{detail}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise click.ClickException(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen | None) -> None:
    """Terminate ``proc`` (kill it after 10 s) and reap it; nothing to do if it has already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path, n: int = 5) -> str:
    """The last ``n`` lines of a child's log, on one line (empty if it cannot be read)."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""
