"""pq.auth: password policy and hashing, users and lockout, login rate limit, audit rows, CLI."""

from __future__ import annotations


import pytest
from click.testing import CliRunner
from sqlalchemy import select

from pq.auth import users
from pq.errors import InvalidRequest, LoginRefused, PermissionDenied
from pq.auth.passwords import check_policy, hash_password, verify_password
from pq.auth.ratelimit import LoginRateLimiter
from pq.auth.roles import Actor, allows, require
from pq.storage import schema

ADMIN = Actor("root", "admin", client="test")


@pytest.mark.timeout(30)
def test_hash_is_salted_scrypt_and_verifies():
    h1, h2 = hash_password("a long passphrase"), hash_password("a long passphrase")
    assert h1 != h2 and h1.startswith("scrypt:")
    assert verify_password(h1, "a long passphrase") and not verify_password(h1, "a long passphrasE")
    assert not verify_password("not-a-hash", "x")


@pytest.mark.timeout(10)
def test_policy_names_what_is_wrong():
    with pytest.raises(InvalidRequest, match="at least 10 characters, got 5"):
        check_policy("short", 10)
    with pytest.raises(InvalidRequest, match="too common"):
        check_policy("password123", 10)
    with pytest.raises(InvalidRequest, match="user name"):
        check_policy("operator-one", 10, "operator-one")
    check_policy("tea kettle on line 4", 10)


@pytest.mark.timeout(10)
def test_roles_are_ordered_and_deny_by_default():
    assert allows("admin", "engineer") and allows("engineer", "operator") and not allows("operator", "engineer")
    assert not allows(None, "operator") and not allows("superuser", "operator")
    with pytest.raises(PermissionDenied, match="role engineer or above"):
        require(Actor("ann", "operator"), "engineer")


@pytest.mark.timeout(60)
def test_users_lifecycle_and_audit(store):
    u = users.add_user(store, "ann", "a long passphrase", "operator", actor=ADMIN)
    assert u.role == "operator" and u.active and "hash" not in repr(u)
    with pytest.raises(InvalidRequest, match="already taken"):
        users.add_user(store, "ann", "another passphrase", "operator", actor=ADMIN)
    with pytest.raises(PermissionDenied):
        users.add_user(store, "bob", "a long passphrase", "admin", actor=Actor("ann", "operator"))
    with pytest.raises(InvalidRequest, match="role must be one of"):
        users.add_user(store, "bob", "a long passphrase", "root", actor=ADMIN)
    assert users.authenticate(store, "ann", "a long passphrase", client="1.2.3.4").last_login_at is not None
    users.set_role(store, "ann", "engineer", actor=ADMIN)
    # A user may change their own password, not someone else's.
    users.set_password(store, "ann", "new long passphrase", actor=Actor("ann", "engineer"))
    with pytest.raises(PermissionDenied):
        users.set_password(store, "root2", "new long passphrase", actor=Actor("ann", "engineer"))
    users.set_active(store, "ann", False, actor=ADMIN)
    with pytest.raises(LoginRefused, match="disabled"):
        users.authenticate(store, "ann", "new long passphrase", client="1.2.3.4")
    with store.engine.connect() as conn:
        actions = conn.execute(select(schema.audit_log.c.action).order_by(schema.audit_log.c.id)).scalars().all()
        hashes = conn.execute(select(schema.users.c.password_hash)).scalars().all()
    assert actions == ["user.add", "login", "user.role", "user.passwd", "user.disable", "login.failed"]
    assert all(h.startswith("scrypt:") for h in hashes)


@pytest.mark.timeout(60)
def test_lockout_after_consecutive_failures(settings_factory):
    from pq.storage import Store, migrate

    store = Store.open(settings_factory(ui_lockout_failures=3, ui_lockout_s=600))
    migrate.upgrade(store)
    users.add_user(store, "ann", "a long passphrase", "operator", actor=ADMIN)
    for _ in range(3):
        with pytest.raises(LoginRefused, match="wrong user name or password"):
            users.authenticate(store, "ann", "wrong", client="x")
    with pytest.raises(LoginRefused, match="locked") as exc:
        users.authenticate(store, "ann", "a long passphrase", client="x")  # even the right password
    assert exc.value.retry_after_s > 500
    with pytest.raises(LoginRefused, match="wrong user name or password"):  # unknown user: same message
        users.authenticate(store, "nobody", "whatever", client="x")
    users.set_active(store, "ann", True, actor=ADMIN)  # an admin unlocks
    assert users.authenticate(store, "ann", "a long passphrase", client="x").failed_logins == 0


@pytest.mark.timeout(10)
def test_rate_limiter_window_and_bounded_keys():
    t = [0.0]
    rl = LoginRateLimiter(3, 60, max_keys=2, clock=lambda: t[0])
    for _ in range(3):
        assert rl.retry_after_s("ann", "a") == 0
        rl.failed("ann", "a")
    assert rl.retry_after_s("ann", "a") == pytest.approx(60)
    assert rl.retry_after_s("ann", "b") == 0          # another address is not blocked
    t[0] = 61
    assert rl.retry_after_s("ann", "a") == 0          # the window slid
    rl.failed("x", "1"), rl.failed("y", "1"), rl.failed("z", "1")
    assert rl.evicted >= 1                            # bounded, drops counted


@pytest.mark.timeout(60)
def test_users_cli(sqlite_store, monkeypatch):
    from pq.cli import cli

    monkeypatch.setenv("PQ_DATABASE_URL", str(sqlite_store.engine.url))
    runner = CliRunner()
    r = runner.invoke(cli, ["users", "add", "ann", "--role", "engineer", "--password-stdin"], input="a long passphrase\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["users", "add", "bob", "--role", "operator", "--password-stdin"], input="short\n")
    assert r.exit_code == 1 and "at least 10 characters" in r.output and "short" not in r.output.replace("short\n", "")
    r = runner.invoke(cli, ["users", "disable", "ann"])
    assert r.exit_code == 0
    r = runner.invoke(cli, ["users", "list"])
    assert "ann" in r.output and "disabled" in r.output
    with sqlite_store.engine.connect() as conn:
        who = conn.execute(select(schema.audit_log.c.username)).scalars().all()
    assert all(w.startswith("cli:") for w in who)
