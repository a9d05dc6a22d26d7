"""UI users: create, change password or role, disable, list, and authenticate.

Every change is written with an audit row in the same transaction. Authentication counts
consecutive failures in ``users.failed_logins`` and locks the account (``locked_until``) after
``PQ_UI_LOCKOUT_FAILURES``; a success resets the count. Unknown user names take as long as known
ones (a dummy hash is checked) and get the same message, so the login does not reveal who exists.

Example::

    add_user(store, "ann", "a long passphrase", "operator", actor=Actor("root", "admin"))
    user = authenticate(store, "ann", "a long passphrase", client="10.0.0.7")
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from pq.auth import audit
from pq.errors import InvalidRequest, LoginRefused
from pq.auth.passwords import DUMMY_HASH, check_policy, hash_password, verify_password
from pq.auth.roles import ROLES, Actor, require
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["User", "add_user", "set_password", "set_role", "set_active", "list_users", "get_user",
           "get_user_by_name", "authenticate", "validate_username"]

logger = logging.getLogger(__name__)

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    active: bool
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    password_hash: str  # kept for the session fingerprint; never rendered or logged

    def __repr__(self) -> str:  # keep the hash out of tracebacks and logs
        return f"User(id={self.id}, username={self.username!r}, role={self.role!r}, active={self.active})"


def _user(row) -> User:
    m = row._mapping
    return User(id=m["id"], username=m["username"], role=m["role"], active=bool(m["active"]),
                failed_logins=m["failed_logins"] or 0, locked_until=m["locked_until"],
                last_login_at=m["last_login_at"], created_at=m["created_at"], password_hash=m["password_hash"])


def validate_username(username: str) -> str:
    username = (username or "").strip()
    if not _USERNAME.match(username):
        raise InvalidRequest(
            f"user name must be 2-64 letters, digits or . _ @ - (starting with a letter or digit), got {username!r}"
        )
    return username


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def _min_length(store: Store) -> int:
    return store.settings.ui_password_min_length


def add_user(store: Store, username: str, password: str, role: str, *, actor: Actor) -> User:
    """Create a user (admin only). Raises InvalidRequest for a taken name, bad role or weak password."""
    require(actor, "admin")
    username = validate_username(username)
    _check_role(role)
    check_policy(password, _min_length(store), username)
    now = datetime.now(timezone.utc)
    try:
        with store.engine.begin() as conn:
            conn.execute(schema.users.insert().values(
                username=username, password_hash=hash_password(password), role=role, active=True,
                failed_logins=0, created_at=now,
            ))
            audit.record(conn, username=actor.username, action="user.add", target=f"user:{username}",
                         detail={"role": role}, client=actor.client, at=now)
    except IntegrityError:
        raise InvalidRequest(f"user name {username!r} is already taken") from None
    logger.info("user %r added with role %s by %s", username, role, actor.username)
    return get_user_by_name(store, username)


def _change(store: Store, username: str, values: dict, *, actor: Actor, action: str, detail: dict) -> User:
    with store.engine.begin() as conn:
        changed = conn.execute(
            update(schema.users).where(schema.users.c.username == username).values(**values)
        ).rowcount
        if not changed:
            raise InvalidRequest(f"no user named {username!r}")
        audit.record(conn, username=actor.username, action=action, target=f"user:{username}",
                     detail=detail, client=actor.client)
    logger.info("%s on user %r by %s", action, username, actor.username)
    return get_user_by_name(store, username)


def set_password(store: Store, username: str, password: str, *, actor: Actor) -> User:
    """Set a new password: admins for anyone, every user for themselves. Unlocks the account."""
    if actor.username != username:
        require(actor, "admin")
    check_policy(password, _min_length(store), username)
    return _change(store, username, {"password_hash": hash_password(password), "failed_logins": 0,
                                     "locked_until": None},
                   actor=actor, action="user.passwd", detail={})


def set_role(store: Store, username: str, role: str, *, actor: Actor) -> User:
    require(actor, "admin")
    _check_role(role)
    if username == actor.username and role != "admin":
        raise InvalidRequest("an admin may not remove their own admin role (ask another admin)")
    return _change(store, username, {"role": role}, actor=actor, action="user.role", detail={"role": role})


def set_active(store: Store, username: str, active: bool, *, actor: Actor) -> User:
    """Enable or disable an account (admin only); a disabled user's sessions end at their next request."""
    require(actor, "admin")
    if username == actor.username and not active:
        raise InvalidRequest("an admin may not disable their own account")
    values = {"active": bool(active)} | ({"failed_logins": 0, "locked_until": None} if active else {})
    return _change(store, username, values, actor=actor,
                   action="user.enable" if active else "user.disable", detail={})


def list_users(store: Store) -> list[User]:
    with store.engine.connect() as conn:
        return [_user(r) for r in conn.execute(select(schema.users).order_by(schema.users.c.username))]


def get_user(store: Store, user_id: int) -> User | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.users).where(schema.users.c.id == user_id)).first()
    return _user(row) if row else None


def get_user_by_name(store: Store, username: str) -> User | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.users).where(schema.users.c.username == username)).first()
    return _user(row) if row else None


_REFUSED = "wrong user name or password"


def authenticate(store: Store, username: str, password: str, *, client: str) -> User:
    """The user when name and password match an active, unlocked account; else LoginRefused.

    Failures and successes are audited (``login.failed`` / ``login``) without the password.
    """
    settings = store.settings
    now = datetime.now(timezone.utc)
    username = (username or "").strip()[:100]
    user = get_user_by_name(store, username) if username else None
    if user is None:
        verify_password(DUMMY_HASH, password or "")  # same cost as a real check
        with store.engine.begin() as conn:
            audit.record(conn, username=username or "?", action="login.failed", target=None,
                         detail={"reason": "unknown user"}, client=client, at=now)
        raise LoginRefused(_REFUSED)
    if user.locked_until is not None and user.locked_until > now:
        wait = (user.locked_until - now).total_seconds()
        raise LoginRefused(f"account locked after too many failed logins: try again in {wait / 60:.0f} min "
                           "or ask an admin", retry_after_s=wait)
    ok = verify_password(user.password_hash, password or "")
    if ok and user.active:
        with store.engine.begin() as conn:
            conn.execute(update(schema.users).where(schema.users.c.id == user.id)
                         .values(failed_logins=0, locked_until=None, last_login_at=now))
            audit.record(conn, username=user.username, action="login", target=f"user:{user.username}",
                         client=client, at=now)
        return get_user(store, user.id)
    failures = user.failed_logins + 1
    values: dict = {"failed_logins": failures}
    if failures >= settings.ui_lockout_failures:
        values["locked_until"] = now + timedelta(seconds=settings.ui_lockout_s)
        values["failed_logins"] = 0
        logger.warning("account %r locked for %.0f s after %d failed logins (last from %s)",
                       user.username, settings.ui_lockout_s, failures, client)
    with store.engine.begin() as conn:
        conn.execute(update(schema.users).where(schema.users.c.id == user.id).values(**values))
        audit.record(conn, username=user.username, action="login.failed", target=f"user:{user.username}",
                     detail={"reason": "disabled" if ok and not user.active else "wrong password"},
                     client=client, at=now)
    if ok and not user.active:
        raise LoginRefused("this account is disabled: ask an admin")
    raise LoginRefused(_REFUSED)
