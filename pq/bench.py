"""Output contract shared by every ``pq bench`` suite.

Figures print one per line for people; with ``--json`` the last line is one JSON object whose keys
carry their unit (``rows_per_s``, ``p99_ms``), ``ratio`` = ours / baseline measured in the same run
(higher is better), and ``loss``/``dropped`` where data flows.
"""

from __future__ import annotations

import json

import click

__all__ = ["emit", "json_option"]

json_option = click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the figures.")


def emit(suite: str, figures: dict, as_json: bool) -> None:
    click.echo(f"== pq bench {suite}")
    for key, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value}"
        click.echo(f"  {key:<32} {shown}")
    if as_json:
        click.echo(json.dumps({"suite": suite, **figures}, default=str))
