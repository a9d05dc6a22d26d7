"""``pq roster``: who is on duty per line and shift (operator, shift lead, quality engineer).

Like ``pq users``, whoever can run this already holds the database URL, so the CLI acts as an admin
(``cli:<os user>``); the role is still checked and every change audited in
``pq.alerts.roster_store``. The edges pick a change up within ``PQ_EDGE_ALERT_SYNC_S``.
"""

from __future__ import annotations


import click

from pq.alerts.roster import DUTY_ROLES
from pq.cli import admin_actor, open_store

__all__ = ["roster"]




@click.group()
def roster():
    """Who is on duty per line and shift: alarms are assigned and escalated to them."""


@roster.command("set")
@click.argument("line_id")
@click.argument("shift")
@click.argument("role", type=click.Choice(DUTY_ROLES))
@click.argument("username")
@click.option("--contact", help="Where a pager/Teams/e-mail gateway reaches them (sent with escalations).")
def set_(line_id: str, shift: str, role: str, username: str, contact: str | None):
    """Put USERNAME on duty as ROLE for LINE_ID and SHIFT (* = every line / shift); replaces who held it."""
    from pq.alerts.roster_store import set_duty

    d = set_duty(open_store(), line_id, shift, role, username, actor=admin_actor(), contact=contact)
    click.echo(f"{d.username} is {role.replace('_', ' ')} for line {d.line_id}, shift {d.shift}")


@roster.command("remove")
@click.argument("line_id")
@click.argument("shift")
@click.argument("role", type=click.Choice(DUTY_ROLES))
def remove(line_id: str, shift: str, role: str):
    """Take whoever is ROLE for LINE_ID and SHIFT off the roster."""
    from pq.alerts.roster_store import remove_duty

    who = remove_duty(open_store(), line_id, shift, role, actor=admin_actor())
    click.echo(f"{who} removed as {role.replace('_', ' ')} for line {line_id}, shift {shift}")


@roster.command("list")
@click.option("--line", "line_id", help="Only this line (and the entries for every line).")
def list_(line_id: str | None):
    """List the roster: line, shift, duty role, user, contact."""
    from pq.alerts.roster_store import list_duties

    rows = list_duties(open_store(), line_id)
    if not rows:
        click.echo("nobody on the roster yet: add someone with `pq roster set LINE SHIFT operator USER`")
        return
    click.echo(f"{'line':<16} {'shift':<6} {'role':<17} {'user':<24} contact")
    for d in rows:
        click.echo(f"{d.line_id:<16} {d.shift:<6} {d.role:<17} {d.username:<24} {d.contact or ''}")
