"""Roles and the one rule that decides what a role may do.

Roles are ordered: operator < engineer < admin; a role may do everything the roles below it may.
Every check goes through :func:`require`, which denies by default (an unknown role may do nothing).

Example::

    require(Actor("ann", "operator"), "engineer")   # raises PermissionDenied
"""

from __future__ import annotations

from dataclasses import dataclass

from pq.errors import PermissionDenied

__all__ = ["ROLES", "Actor", "allows", "require"]

# Ordered lowest first; mirrors pq.storage.schema.USER_ROLES.
ROLES: tuple[str, ...] = ("operator", "engineer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Actor:
    """Who performs an action: a user name, its role, and where the request came from."""

    username: str
    role: str
    client: str = "cli"


def allows(role: str | None, required: str) -> bool:
    """True when ``role`` is ``required`` or above; False for unknown or missing roles."""
    if required not in _RANK:
        raise ValueError(f"required role must be one of {ROLES}, got {required!r}")
    return role in _RANK and _RANK[role] >= _RANK[required]


def require(actor: Actor | None, required: str) -> Actor:
    """Return ``actor`` when its role allows ``required``, else raise PermissionDenied."""
    if actor is None or not allows(actor.role, required):
        who = "anonymous" if actor is None else f"{actor.username!r} (role {actor.role})"
        raise PermissionDenied(f"{who} may not do this: role {required} or above is required")
    return actor
