"""``pq users``: manage UI users from the command line of the machine that runs pq.

Whoever can run this already holds the database URL, so the CLI acts as an admin; every change is
still audited, as ``cli:<os user>``. Passwords are read from a hidden prompt (or, for scripts, one
line of standard input with ``--password-stdin``), never from an argument that ``ps`` would show.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click

from pq.auth import users as users_mod
from pq.auth.roles import ROLES
from pq.cli import admin_actor, open_store

__all__ = ["users"]




def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group()
def users():
    """Manage UI users and roles (operator, engineer, admin)."""


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
def add(username: str, role: str, password_stdin: bool):
    """Create a user; the password is prompted for (hidden)."""
    user = users_mod.add_user(open_store(), username, _read_password(password_stdin), role, actor=admin_actor())
    click.echo(f"user {user.username} added with role {user.role}")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
def passwd(username: str, password_stdin: bool):
    """Set a user's password (also unlocks a locked account; their open sessions end)."""
    users_mod.set_password(open_store(), username, _read_password(password_stdin), actor=admin_actor())
    click.echo(f"password of {username} changed")


@users.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def role(username: str, role: str):
    """Change a user's role."""
    users_mod.set_role(open_store(), username, role, actor=admin_actor())
    click.echo(f"{username} is now {role}")


@users.command("disable")
@click.argument("username")
def disable(username: str):
    """Disable an account; the user is logged out at their next click."""
    users_mod.set_active(open_store(), username, False, actor=admin_actor())
    click.echo(f"{username} disabled")


@users.command("enable")
@click.argument("username")
def enable(username: str):
    """Enable a disabled (or locked) account again."""
    users_mod.set_active(open_store(), username, True, actor=admin_actor())
    click.echo(f"{username} enabled")


@users.command("list")
def list_():
    """List users with role, state and last login."""
    rows = users_mod.list_users(open_store())
    if not rows:
        click.echo("no users yet: create one with `pq users add NAME --role admin`")
        return
    click.echo(f"{'user':<24} {'role':<9} {'state':<9} last login")
    for u in rows:
        locked = u.locked_until is not None and u.locked_until > datetime.now(timezone.utc)
        state = "disabled" if not u.active else ("locked" if locked else "active")
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if u.last_login_at else "never"
        click.echo(f"{u.username:<24} {u.role:<9} {state:<9} {last}")
