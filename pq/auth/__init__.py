"""Users, password hashing, roles, login rate limiting and the audit log.

Owns the ``users`` and ``audit_log`` rows written by people. Must not import connectors, models,
ui or simulators.
"""

from pq.errors import AuthError, InvalidRequest, LoginRefused, PermissionDenied
from pq.auth.roles import ROLES, Actor, allows, require

__all__ = ["ROLES", "Actor", "allows", "require", "AuthError", "InvalidRequest", "LoginRefused",
           "PermissionDenied"]
