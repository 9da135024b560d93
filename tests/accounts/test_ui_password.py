"""The UI password kept in a session ([auth] retain_ui_password): AES-256-GCM, tag in the browser only."""

from __future__ import annotations

import base64

import pytest
import redis
import sqlalchemy as sa

from apiserver.accounts.sessions import MemorySessionStore
from apiserver.accounts.ui_password import SealedPassword, UIPasswordCipher
from apiserver.context import Credentials, Gate
from apiserver.errors import AuthenticationFailed
from tests.accounts.support import Harness, wait

PASSWORD = "Sso-passw0rd-ü"
SECRET = b"0123456789abcdef" * 4


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_seal_splits_nonce_ciphertext_and_tag():
    """Nonce is 96 bits, the tag 16 bytes, the ciphertext carries no tag; each seal uses a new nonce."""
    cipher = UIPasswordCipher(SECRET)
    sealed, tag = cipher.seal(PASSWORD, 7)
    again, other_tag = cipher.seal(PASSWORD, 7)
    assert len(sealed.nonce) == 12 and len(_unb64(tag)) == 16
    assert len(sealed.ciphertext) == len(PASSWORD.encode("utf-8"))
    assert sealed.nonce != again.nonce and tag != other_tag
    assert cipher.open(sealed, tag, 7) == PASSWORD
    assert cipher.open(SealedPassword.decode(sealed.encode()), tag, 7) == PASSWORD


def test_wrong_tag_account_or_secret_fails():
    """Another login's tag, a flipped bit, garbage, another account id or another secret open nothing."""
    cipher = UIPasswordCipher(SECRET)
    sealed, tag = cipher.seal(PASSWORD, 7)
    _, other_tag = cipher.seal(PASSWORD, 7)
    flipped = bytearray(_unb64(tag))
    flipped[0] ^= 1
    for bad in (other_tag, base64.urlsafe_b64encode(bytes(flipped)).decode(), "", "!!!", "A" * 22, tag + "AA", None):
        assert cipher.open(sealed, bad, 7) is None
    assert cipher.open(sealed, tag, 8) is None
    assert UIPasswordCipher(b"another secret").open(sealed, tag, 7) is None
    assert SealedPassword.decode("short") is None and SealedPassword.decode(None) is None


def test_repr_shows_no_nonce_ciphertext_tag_or_key():
    """repr and str of the sealed password and the cipher show none of the secret parts."""
    cipher = UIPasswordCipher(SECRET)
    sealed, tag = cipher.seal(PASSWORD, 7)
    shown = repr(sealed) + str(sealed) + repr(cipher) + str(cipher)
    for part in (sealed.nonce.hex(), sealed.encode(), tag, PASSWORD, base64.b64encode(sealed.nonce).decode()):
        assert part not in shown


@pytest.fixture(params=["memory", "db", "redis"])
def backend_harness(request, tmp_path):
    """A real application with the session backend of the parameter, and one site."""
    if request.param == "redis":
        try:
            redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
        except redis.exceptions.ConnectionError as exc:
            pytest.skip(f"Redis is unreachable: {exc}")
    h = Harness(tmp_path / "state", {"session": {"backend": request.param}})
    h.add_site()
    yield h
    h.close()


def _site_login(h):
    credentials = Credentials(username="siteadmin", site="example.com", password="site-password")
    return h.login(credentials, gate=Gate.UI)


def test_ui_session_keeps_only_sealed_password(backend_harness):
    """A UI session on each backend recovers the password with its tag only; the store holds no plaintext."""
    h = backend_harness
    identity = _site_login(h)
    sid, tag = wait(h.app.accounts.start_ui_session(identity, "site-password"))
    session = wait(h.app.run_blocking(h.app.accounts.sessions.lookup, sid))
    assert session.gate == "UI" and session.data and "site-password" not in session.data
    assert "site-password" not in repr(session) and session.data not in repr(session)
    recover = lambda s, t: wait(h.app.run_blocking(h.app.ui_passwords.recover, s, t))  # noqa: E731
    assert recover(sid, tag) == "site-password"
    _, other_tag = wait(h.app.accounts.start_ui_session(identity, "site-password"))
    assert recover(sid, other_tag) is None and recover(sid, None) is None and recover("0" * 64, tag) is None
    assert h.login(Credentials(session_id=sid), gate=Gate.UI).username == "siteadmin"
    with pytest.raises(AuthenticationFailed):  # bound to the UI gate
        h.login(Credentials(session_id=sid), gate=Gate.SOAP)
    wait(h.app.accounts.end_session(sid))
    assert recover(sid, tag) is None


def test_database_rows_hold_no_plaintext(tmp_path):
    """The sessions table keeps nonce and ciphertext only: neither the password nor its tag."""
    h = Harness(tmp_path / "state", {"session": {"backend": "db"}})
    try:
        h.add_site()
        sid, tag = wait(h.app.accounts.start_ui_session(_site_login(h), "site-password"))
        with h.app.storage.read() as conn:
            rows = repr([tuple(r) for r in conn.execute(sa.select(h.app.storage.tables.sessions))])
        assert "site-password" not in rows and tag not in rows and sid not in rows
        assert base64.b64encode(b"site-password").decode() not in rows
    finally:
        h.close()


def test_retain_false_stores_nothing(tmp_path):
    """With retain_ui_password=false the session has no data, there is no tag and nothing to recover."""
    h = Harness(tmp_path / "state", {"auth": {"retain_ui_password": "false"}})
    try:
        h.add_site()
        sid, tag = wait(h.app.accounts.start_ui_session(_site_login(h), "site-password"))
        assert tag is None
        store = h.app.accounts.sessions
        assert isinstance(store, MemorySessionStore) and store.lookup(sid).data is None
        assert h.app.ui_passwords.recover(sid, "A" * 22) is None
    finally:
        h.close()
