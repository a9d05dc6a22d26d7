"""Errors of authentication and authorisation (interim home: to move into pq/errors.py).

Hierarchy (under :class:`pq.errors.PQError`)::

    AuthError
    ├── PermissionDenied   the user's role does not allow the action (the UI answers 403)
    ├── LoginRefused       wrong user name / password, disabled or locked account, rate limit
    └── InvalidRequest     a user-supplied value is unacceptable (short password, empty reason ...)

Messages never contain a password or a password hash.
"""

from pq.errors import PQError

__all__ = ["AuthError", "PermissionDenied", "LoginRefused", "InvalidRequest"]


class AuthError(PQError):
    """Base class of login, role and user-input errors."""


class PermissionDenied(AuthError):
    """The acting user's role does not allow this action."""


class LoginRefused(AuthError):
    """A login attempt was refused; ``retry_after_s`` is set when waiting helps."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidRequest(AuthError):
    """A value typed by a user is unacceptable (the message says which and what is expected)."""
