"""``pq handover``: the shift handover summary per line: print it, or send it through the plant outputs.

``send`` publishes the summary of the shift that just ended through the outputs file (MQTT, webhook:
event ``handover``, the message of :meth:`pq.monitoring.handover.HandoverSummary.message`), so a mail,
Teams or printer gateway can take it. With ``--follow`` it stays running and sends each line's summary
once at every shift change; what it has sent is remembered in ``DATA_DIR/handover_sent.json``, so a
restart neither repeats a summary nor skips the one that came due while it was down.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path

import click

__all__ = ["handover"]

logger = logging.getLogger(__name__)


def _clock():
    from pq.cli import get_settings
    from pq.shifts import ShiftClock

    return ShiftClock.from_settings(get_settings())


def _line_ids(store, line_ids: tuple[str, ...]) -> list[str]:
    from pq.storage.catalog import line_ids as stored_lines

    return list(line_ids) or stored_lines(store)


@click.group()
def handover():
    """Shift handover: what happened on a line during a shift and what the next shift must watch."""


@handover.command()
@click.option("--line", "line_ids", multiple=True, help="Line id (repeatable); default every line.")
@click.option("--shift", "which", type=click.Choice(["current", "previous"]), default="previous", show_default=True,
              help="The running shift (so far) or the one that handed over to it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def show(line_ids, which, as_json):
    """Print the handover summary of each line."""
    from pq.cli import open_store
    from pq.monitoring.handover import handover_summary
    from connectors.outputs.base import to_json

    clock, store = _clock(), open_store()
    now = datetime.now(timezone.utc)
    shift = clock.shift_at(now)
    if which == "previous":
        shift = clock.previous(shift)
    for line_id in _line_ids(store, line_ids):
        s = handover_summary(store, line_id, shift, now=now)
        click.echo(to_json(s.message()).decode() if as_json else s.text() + "\n")


def _sent_file(settings) -> Path:
    return Path(settings.data_dir) / "handover_sent.json"


def _load_sent(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_sent(path: Path, sent: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sent, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash leaves the old record, never half a file


@handover.command()
@click.option("--line", "line_ids", multiple=True, help="Line id (repeatable); default every line.")
@click.option("--outputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Outputs TOML (MQTT, webhook); default PQ_EDGE_OUTPUTS_FILE.")
@click.option("--follow", is_flag=True, help="Keep running: send every line's summary once at each shift change.")
@click.option("--check-every", type=float, default=30.0, show_default=True, help="Seconds between checks with --follow.")
def send(line_ids, outputs, follow, check_every):
    """Send the summary of the shift that just ended through the plant outputs."""
    from connectors.outputs.config import load_outputs
    from pq.cli import get_settings, open_store
    from pq.errors import ConfigError, PQError
    from pq.monitoring.handover import handover_summary
    from sqlalchemy.exc import SQLAlchemyError

    settings = get_settings()
    path = outputs or settings.edge_outputs_file
    if path is None:
        raise ConfigError("no outputs to send through: give --outputs FILE or set PQ_EDGE_OUTPUTS_FILE")
    clock, store = _clock(), open_store()
    lines = _line_ids(store, line_ids)
    outs = {line: load_outputs(Path(path), settings, line) for line in lines}
    sent_path = _sent_file(settings)
    sent = _load_sent(sent_path)
    stop = threading.Event()
    announced = False
    if follow:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while True:
            ended = clock.previous(clock.shift_at(datetime.now(timezone.utc)))
            for line in lines:
                if follow and sent.get(line) == ended.key:
                    continue
                try:
                    summary = handover_summary(store, line, ended)
                except (PQError, SQLAlchemyError) as exc:  # the store went away: say so, try again at the next check
                    logger.warning("handover of %s, shift %s: store unavailable (%s); retrying at the next check", line, ended.name,
                                   type(exc).__name__)
                    continue
                for o in outs[line]:
                    o.on_alert("handover", summary.message())
                sent[line] = ended.key
                _save_sent(sent_path, sent)
                click.echo(f"sent: {summary.headline}")
            if not follow:
                break
            if not announced:
                nxt = clock.shift_at(datetime.now(timezone.utc))
                click.echo(f"following: the next handover goes out when shift {nxt.name} ends at "
                           f"{nxt.end:%Y-%m-%d %H:%M} UTC")
                announced = True
            if stop.wait(check_every):
                break
    finally:
        undelivered = 0
        for line_outs in outs.values():
            for o in line_outs:
                o.close(flush_timeout_s=10.0)
                st = o.status()
                undelivered += int(st.get("queued", 0) or 0)
        if undelivered:
            click.echo(f"{undelivered} message(s) not delivered yet: the output was unreachable (see the log)", err=True)
