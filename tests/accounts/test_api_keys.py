"""API keys: format, keyed look-up, encryption at rest, verification cache and write-behind usage."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apiserver.accounts.keys import USAGE_FLUSH_DELAY, KeyCipher, normalize_key
from apiserver.context import Credentials, Gate
from apiserver.errors import AuthenticationFailed, InvalidArgument, NotFound
from tests.accounts.support import wait

KEY = "0123456789abcdef" * 4


class StatementCounter:
    """Counts SQL statements an engine executes (to prove a path touches no database)."""

    def __init__(self, engine):
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args):
        self.count += 1


@pytest.mark.parametrize("raw", [KEY, KEY.upper(), "-".join(KEY[i:i + 8] for i in range(0, 64, 8)),
                                 " ".join(KEY[i:i + 4] for i in range(0, 64, 4)), f"  {KEY}\n"])
def test_keys_are_normalised(raw):
    """Dashes, spaces and upper case are ignored."""
    assert normalize_key(raw) == KEY


@pytest.mark.parametrize("raw", ["", KEY[:-1], KEY + "0", "g" * 64, None, 12345, KEY[:32] + "_" + KEY[33:], "a" * 1000])
def test_malformed_keys_are_refused(raw):
    """Anything that is not 64 hex characters after normalising is no key."""
    assert normalize_key(raw) is None


def test_cipher_hash_is_keyed_and_encryption_round_trips():
    """The look-up hash depends on the secret; encryption is randomised and reversible only with it."""
    one, other = KeyCipher(b"secret one"), KeyCipher(b"secret two")
    assert one.lookup_hash(KEY) == one.lookup_hash(KEY) != other.lookup_hash(KEY)
    blob = one.encrypt(KEY)
    assert blob != one.encrypt(KEY) and KEY not in blob
    assert one.decrypt(blob) == KEY
    with pytest.raises(Exception):
        other.decrypt(blob)


def test_database_holds_no_key_in_clear(harness):
    """Neither the key nor its plain hash is in the api_keys table."""
    key = harness.call(harness.admin, "auth_create_api_key", "ci")
    with harness.app.storage.read() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(harness.app.storage.tables.api_keys)).all()]
    dump = repr(rows)
    assert key not in dump and key.upper() not in dump
    assert harness.call(harness.admin, "auth_get_api_keys")[-1].key == key


def test_key_login_accepts_any_spelling_and_refuses_wrong_keys(harness):
    """The same key works with dashes and in upper case; a wrong or malformed key fails with reason 'key'."""
    key = harness.call(harness.admin, "auth_create_api_key")
    assert harness.login_key("-".join(key[i:i + 16] for i in range(0, 64, 16)).upper()).username == "admin"
    for bad in ("f" * 64, "not a key"):
        with pytest.raises(AuthenticationFailed) as caught:
            harness.login_key(bad)
        assert caught.value.reason == "key"


def test_verified_key_is_cached_for_key_cache_ttl(harness):
    """Within [auth] key_cache_ttl a verified key needs no database statement; after it, one look-up."""
    key = harness.call(harness.admin, "auth_create_api_key")
    harness.login_key(key)
    counter = StatementCounter(harness.app.storage.engine)
    d = harness.app.accounts.authenticate(Credentials(api_key=key), Gate.SOAP, "127.0.0.1")
    assert d.called, "a cached key answers synchronously, on the reactor thread"
    assert counter.count == 0
    wait(d)
    harness.clock.advance(harness.config.get("auth", "key_cache_ttl") + 1)
    harness.login_key(key)
    assert counter.count >= 1


def test_deleted_key_stops_working_at_once(harness):
    """Deleting a cached key invalidates it immediately, not after the cache period."""
    site = harness.add_site()
    key = harness.call(site, "auth_create_api_key")
    assert harness.login_key(key).username == "siteadmin"
    harness.call(site, "auth_delete_api_key", key)
    with pytest.raises(AuthenticationFailed):
        harness.login_key(key)
    with pytest.raises(NotFound):
        harness.call(site, "auth_delete_api_key", key)


def test_last_used_is_written_behind_in_a_batch(harness):
    """A key use is stored on the blocking pool after the flush delay, not during the call."""
    site = harness.add_site()
    key = harness.call(site, "auth_create_api_key")
    api_keys = harness.app.storage.tables.api_keys

    def stored_last_used():
        with harness.app.storage.read() as conn:
            return conn.execute(sa.select(api_keys.c.last_used).where(api_keys.c.user_id == site.user_id)).scalar()

    harness.login_key(key)
    harness.login_key(key)
    assert stored_last_used() is None
    harness.clock.advance(USAGE_FLUSH_DELAY - 0.5)
    wait(harness.app.accounts.keys.flush_timer.idle())
    assert stored_last_used() is None                  # not due yet
    harness.clock.advance(0.5)
    wait(harness.app.accounts.keys.flush_timer.idle())
    assert stored_last_used() is not None
    listed = harness.call(site, "auth_get_api_keys")
    assert listed[0].last_used == stored_last_used()


def test_comments_are_set_cleared_and_bounded(harness):
    """set_api_key_comment replaces or clears a comment; overlong comments are refused."""
    key = harness.call(harness.admin, "auth_create_api_key", "first")
    harness.call(harness.admin, "auth_set_api_key_comment", key, "second")
    assert [k.comment for k in harness.call(harness.admin, "auth_get_api_keys") if k.key == key] == ["second"]
    harness.call(harness.admin, "auth_set_api_key_comment", key, None)
    assert [k.comment for k in harness.call(harness.admin, "auth_get_api_keys") if k.key == key] == [None]
    with pytest.raises(InvalidArgument, match="comment too long"):
        harness.call(harness.admin, "auth_set_api_key_comment", key, "x" * 300)
    with pytest.raises(InvalidArgument, match="64 hexadecimal"):
        harness.call(harness.admin, "auth_set_api_key_comment", "nope", "x")
