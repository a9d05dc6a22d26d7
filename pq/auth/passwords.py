"""Password hashing and the password policy.

Hashes come from werkzeug.security (scrypt, salted, constant-time comparison): no crypto of our
own. The policy is a minimum length (``PQ_UI_PASSWORD_MIN_LENGTH``) and a short list of passwords
nobody should use. Passwords never appear in logs or messages.

Example::

    h = hash_password("correct horse battery")
    verify_password(h, "correct horse battery")  # True
"""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

from pq.errors import InvalidRequest

__all__ = ["hash_password", "verify_password", "check_policy", "DUMMY_HASH"]

_METHOD = "scrypt"
_FORBIDDEN = {"password", "passwort", "123456789", "1234567890", "qwertyuiop", "changeme", "admin"}


def check_policy(password: str, min_length: int, username: str | None = None) -> None:
    """Raise InvalidRequest when ``password`` is too short, common, or the user name itself."""
    if not isinstance(password, str) or len(password) < min_length:
        got = 0 if not isinstance(password, str) else len(password)
        raise InvalidRequest(f"password must be at least {min_length} characters, got {got}")
    lowered = password.lower()
    if lowered in _FORBIDDEN or lowered.rstrip("0123456789!") in _FORBIDDEN:
        raise InvalidRequest("password is too common: choose a longer phrase")
    if username and lowered == username.lower():
        raise InvalidRequest("password must not be the user name")


def hash_password(password: str) -> str:
    """A salted scrypt hash in werkzeug's self-describing format."""
    return generate_password_hash(password, method=_METHOD)


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a malformed hash."""
    try:
        return check_password_hash(password_hash, password)
    except ValueError:  # a hash from an unknown scheme: refuse rather than crash the login
        return False


# Verified against when the user name is unknown, so that the answer takes as long as for a known
# user and does not reveal which user names exist.
DUMMY_HASH = generate_password_hash("pq-timing-equaliser", method=_METHOD)
