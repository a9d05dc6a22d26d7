"""The output contract every ``pq bench`` suite keeps, and the options that go with it.

Figures print one per line for people; with ``--json`` the last line is one JSON object naming its
``suite``, whose keys carry their unit (``rows_per_s``, ``p99_ms``), ``ratio`` = ours / baseline
measured in the same run (higher is better), and ``loss``/``dropped`` where data flows.
``--quick`` runs the same code path at sizes of seconds and prints the same keys.
"""

from __future__ import annotations

import json

import click

__all__ = ["emit", "json_option", "quick_option"]

json_option = click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the figures.")


def quick_option(sizes: dict[str, object]):
    """``--quick``: these options' defaults become ``sizes`` ({flag: value}); options given explicitly win."""

    def use_quick_defaults(ctx: click.Context, _param, quick: bool) -> bool:
        if quick:  # eager, so it runs first; the other options then read their default from default_map
            names = {flag: p.name for p in ctx.command.params for flag in getattr(p, "opts", ())}
            ctx.default_map = {**(ctx.default_map or {}), **{names[f]: v for f, v in sizes.items()}}
        return quick

    shown = " ".join(f"{flag} {value}" for flag, value in sizes.items())
    return click.option("--quick", is_flag=True, is_eager=True, callback=use_quick_defaults,
                        help=f"Small sizes for a run of seconds, same code path and JSON: {shown} "
                             "(options given explicitly still win).")


def emit(suite: str, figures: dict, as_json: bool) -> None:
    """One figure per line under a ``== pq bench SUITE`` heading, then (``as_json``) the JSON line."""
    click.echo(f"== pq bench {suite}")
    for key, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value}"
        click.echo(f"  {key:<32} {shown}")
    if as_json:
        click.echo(json.dumps({"suite": suite, **figures}, default=str))
