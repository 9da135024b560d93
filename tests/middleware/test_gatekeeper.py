"""GateKeeper: admission through Anvil, authentication and IP restrictions; HTTP checks; the toggle."""

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from apiserver.context import AuthRequest, CallContext, Credentials, Gate
from apiserver.errors import ApiDisabled, AuthenticationFailed, Throttled
from apiserver.middleware import HttpRefusal
from apiserver.middleware.toggle import DISABLED_MESSAGE
from tests.middleware.support import ADMIN, GOOD_KEY, SITE_ADMIN, has_fired, result_of

REMOTE = "192.0.2.20"
BAD_KEY = "b" * 64


def keeper(node):
    return node.gatekeeper()


def attempt(gatekeeper, key=GOOD_KEY, address=REMOTE, gate=Gate.SOAP, session=None):
    credentials = Credentials(api_key=key, session_id=session) if session is None else Credentials(session_id=session)
    return gatekeeper.admit(AuthRequest(gate=gate, address=address, credentials=credentials))


def error_of(d):
    with pytest.raises(Exception) as raised:
        result_of(d)
    return raised.value


def settle(d, clock, step=0.25, limit=60.0):
    """Advance the clock until ``d`` fires (Anvil delays), then give its result."""
    waited = 0.0
    while not has_fired(d) and waited < limit:
        clock.advance(step)
        waited += step
    return d


def burst(node, gatekeeper, count):
    """``count`` bad-key attempts in flight at once: their Deferreds, and the held-open
    authentications (Deferreds) the test fires in the order it likes."""
    pending = []
    node.accounts.authenticate = lambda *a: pending.append(defer.Deferred()) or pending[-1]
    return [attempt(gatekeeper, BAD_KEY) for _ in range(count)], pending


def test_admit_gives_call_context(node_factory):
    """A good key from an unrestricted account gives its identity, gate and address."""
    gatekeeper = keeper(node_factory())
    ctx = result_of(attempt(gatekeeper))
    assert isinstance(ctx, CallContext)
    assert (ctx.identity, ctx.gate, ctx.client_address, ctx.session_id) == (ADMIN, Gate.SOAP, REMOTE, None)


def test_admit_with_session_keeps_session_id(node_factory):
    """A live esprit_id is admitted and the context carries the session id."""
    gatekeeper = keeper(node_factory())
    ctx = result_of(attempt(gatekeeper, session="live-session"))
    assert ctx.identity == SITE_ADMIN and ctx.session_id == "live-session"


def test_bad_key_is_counted(node_factory):
    """A bad key fails with AuthenticationFailed and Anvil counts it, reason 'key'."""
    node = node_factory()
    gatekeeper = keeper(node)
    assert isinstance(error_of(attempt(gatekeeper, BAD_KEY)), AuthenticationFailed)
    assert result_of(gatekeeper.anvil.status(REMOTE)).count == 1
    assert node.recorder.failed == [(REMOTE, Gate.SOAP, "key")]


def test_forged_session_is_counted(node_factory):
    """An esprit_id naming no live session (session fixation) counts as a failure."""
    node = node_factory()
    gatekeeper = keeper(node)
    assert isinstance(error_of(attempt(gatekeeper, session="forged")), AuthenticationFailed)
    assert node.recorder.failed == [(REMOTE, Gate.SOAP, "session")]


def test_refused_address_looks_like_bad_password_and_counts(node_factory):
    """A good key from an address outside the restrictions fails exactly like a bad key, and counts."""
    node = node_factory()
    node.accounts.restrictions[ADMIN.user_id] = [("198.51.100.0/24", None)]
    gatekeeper = keeper(node)
    refused = error_of(attempt(gatekeeper, GOOD_KEY))
    bad = error_of(attempt(gatekeeper, BAD_KEY))
    assert type(refused) is type(bad) and str(refused) == str(bad) and refused.code == bad.code
    assert [reason for _, _, reason in node.recorder.failed] == ["ip", "key"]
    assert result_of(gatekeeper.anvil.status(REMOTE)).count == 2
    assert result_of(attempt(gatekeeper, GOOD_KEY, address="198.51.100.7")).identity == ADMIN


@pytest.mark.parametrize("gate", list(Gate))
def test_nineteen_pass_twentieth_blocks_correct_key_refused_until_ttl(node_factory, clock, gate):
    """Every gate: 19 failures answered as failures, the 20th Throttled, a good key refused, back after ttl."""
    gatekeeper = keeper(node_factory())
    errors = [error_of(settle(attempt(gatekeeper, BAD_KEY, gate=gate), clock)) for _ in range(20)]
    assert all(type(e) is AuthenticationFailed for e in errors[:19])
    assert isinstance(errors[19], Throttled)
    blocked = error_of(attempt(gatekeeper, GOOD_KEY, gate=gate))
    assert isinstance(blocked, Throttled) and 0 < blocked.retry_after <= 900
    clock.advance(900)
    assert result_of(attempt(gatekeeper, GOOD_KEY, gate=gate)).identity == ADMIN


def test_blocked_address_does_not_reach_authentication(node_factory, clock):
    """While blocked, credentials are not even looked at."""
    node = node_factory({"anvil": {"limit": "2", "min_attempts": "5"}})
    gatekeeper = keeper(node)
    for _ in range(2):
        error_of(attempt(gatekeeper, BAD_KEY))
    calls = []
    node.accounts.authenticate = lambda *a: calls.append(a) or defer.succeed(ADMIN)
    assert isinstance(error_of(attempt(gatekeeper)), Throttled)
    assert calls == []


def test_blocked_dav_attempts_count_again_without_extending_the_block(node_factory, clock):
    """At gate DAV each attempt refused while blocked counts (reason "blocked"); the block still ends at ttl."""
    node = node_factory({"anvil": {"limit": "2", "min_attempts": "5", "ttl": "900"}})
    gatekeeper = keeper(node)
    for _ in range(2):
        error_of(attempt(gatekeeper, BAD_KEY, gate=Gate.DAV))
    calls = []
    node.accounts.authenticate = lambda *a: calls.append(a) or defer.succeed(ADMIN)
    clock.advance(100)
    for expected in (3, 4):
        refused = error_of(attempt(gatekeeper, gate=Gate.DAV))
        assert isinstance(refused, Throttled) and refused.retry_after == 800
        assert result_of(gatekeeper.anvil.status(REMOTE)).count == expected
    assert calls == [] and [r for _, _, r in node.recorder.failed] == ["key", "key", "blocked", "blocked"]
    error_of(attempt(gatekeeper, gate=Gate.SOAP))  # other gates: refused, not counted
    assert result_of(gatekeeper.anvil.status(REMOTE)).count == 4
    clock.advance(800)
    assert result_of(attempt(gatekeeper, gate=Gate.DAV)).identity == ADMIN


def test_a_dav_attempt_blocked_during_its_delay_counts(node_factory, clock):
    """A DAV attempt waiting out its delay whose address gets blocked meanwhile is refused and counted."""
    node = node_factory({"anvil": {"limit": "3", "min_attempts": "1", "base_delay": "1000"}})
    gatekeeper = keeper(node)
    error_of(attempt(gatekeeper, BAD_KEY, gate=Gate.DAV))
    waiting = attempt(gatekeeper, gate=Gate.DAV)  # delayed 1 s before its credentials are looked at
    for _ in range(2):
        result_of(gatekeeper.anvil.fail(REMOTE, Gate.SOAP, "key"))  # blocked meanwhile
    assert isinstance(error_of(settle(waiting, clock)), Throttled)
    assert result_of(gatekeeper.anvil.status(REMOTE)).count == 4


def test_success_does_not_erase_failures(node_factory, clock):
    """A good login between failures leaves the count as it was."""
    gatekeeper = keeper(node_factory())
    for _ in range(5):
        error_of(settle(attempt(gatekeeper, BAD_KEY), clock))
    assert result_of(settle(attempt(gatekeeper), clock)).identity == ADMIN
    assert result_of(gatekeeper.anvil.status(REMOTE)).count == 5


def test_delay_comes_before_authentication(node_factory, clock):
    """Past min_attempts even a good key waits out the delay before it is checked."""
    node = node_factory()
    gatekeeper = keeper(node)
    for _ in range(3):
        error_of(attempt(gatekeeper, BAD_KEY))
    calls = []
    real = node.accounts.authenticate
    node.accounts.authenticate = lambda *a: calls.append(a) or real(*a)
    pending = attempt(gatekeeper)
    assert not has_fired(pending) and calls == []
    assert result_of(attempt(gatekeeper, address="198.51.100.1")).identity == ADMIN  # others not held up
    clock.advance(0.25)
    assert result_of(pending).identity == ADMIN


def test_fifty_concurrent_failures_all_counted(node_factory):
    """50 failures in flight at once (slow hashing) are each counted."""
    node = node_factory({"anvil": {"limit": "100"}})
    gatekeeper = keeper(node)
    attempts, pending = burst(node, gatekeeper, 50)
    assert len(pending) == 50
    for d in pending:
        d.errback(AuthenticationFailed("password"))
    assert all(isinstance(error_of(d), AuthenticationFailed) for d in attempts)
    assert result_of(gatekeeper.anvil.status(REMOTE)).count == 50
    assert len(node.recorder.failed) == 50


def test_concurrent_failures_past_limit_block_once_and_refuse_a_late_success(node_factory):
    """A burst crossing the limit starts one block; later answers are Throttled, even the right password
    (else a burst, which passes the first check all at once, could test any number of passwords)."""
    node = node_factory()
    gatekeeper = keeper(node)
    attempts, pending = burst(node, gatekeeper, 30)
    for d in pending[:-1]:
        d.errback(AuthenticationFailed("password"))
    pending[-1].callback(ADMIN)  # the right password, tried in the same burst
    errors = [error_of(d) for d in attempts]
    assert [type(e).__name__ for e in errors] == ["AuthenticationFailed"] * 19 + ["Throttled"] * 11
    assert len(node.recorder.blocked) == 1 and len(node.recorder.failed) == 29


def test_burst_success_before_the_block_is_admitted(node_factory):
    """In a burst, a success that finishes while the address is below the limit is admitted."""
    node = node_factory()
    gatekeeper = keeper(node)
    attempts, pending = burst(node, gatekeeper, 30)
    for d in pending[:5]:
        d.errback(AuthenticationFailed("password"))
    pending[5].callback(ADMIN)
    assert result_of(attempts[5]).identity == ADMIN
    for d in pending[6:]:
        d.errback(AuthenticationFailed("password"))
    assert all(isinstance(error_of(d), (AuthenticationFailed, Throttled)) for d in attempts[:5] + attempts[6:])


def test_whitelisted_address_is_never_throttled(node_factory):
    """Failures from the whitelist (127.0.0.1 by default) are never counted or throttled."""
    gatekeeper = keeper(node_factory())
    for _ in range(30):
        assert isinstance(error_of(attempt(gatekeeper, BAD_KEY, address="127.0.0.1")), AuthenticationFailed)
    assert result_of(attempt(gatekeeper, address="127.0.0.1")).identity == ADMIN


def test_other_errors_are_not_counted(node_factory):
    """A server error during authentication propagates as itself and is not a failed login."""
    node = node_factory()
    gatekeeper = keeper(node)
    node.accounts.authenticate = lambda *a: defer.fail(RuntimeError("database down"))
    assert isinstance(error_of(attempt(gatekeeper)), RuntimeError)
    assert result_of(gatekeeper.anvil.status(REMOTE)) is None and node.recorder.failed == []


def test_toggle_refuses_soap_gate_and_comes_back(node_factory):
    """[soap] enabled=false refuses the SOAP gate with Client.Disabled; true again admits, no restart."""
    node = node_factory({"soap": {"enabled": "false"}})
    gatekeeper = keeper(node)
    refused = error_of(attempt(gatekeeper))
    assert isinstance(refused, ApiDisabled) and str(refused) == DISABLED_MESSAGE
    assert result_of(attempt(gatekeeper, gate=Gate.CLI)).identity == ADMIN  # the CLI socket is not the API
    node.config.set("soap", "enabled", "true")
    assert gatekeeper.api_enabled()
    assert result_of(attempt(gatekeeper)).identity == ADMIN


def http_request(peer="127.0.0.1", secure=False, forwarded=()):
    request = DummyRequest([b"soap"])
    request.path = b"/soap"
    request.client = IPv4Address("TCP", peer, 40000)
    request.isSecure = lambda: secure
    for value in forwarded:
        request.requestHeaders.addRawHeader(b"X-Forwarded-For", value)
    return request


def test_check_http_toggle_answers_403_with_reason(node_factory):
    """With the API off every API request gets 403 naming [soap] enabled=false; None when on."""
    node = node_factory()
    gatekeeper = keeper(node)
    assert gatekeeper.check_http(http_request()) is None
    node.config.set("soap", "enabled", "false")
    refusal = gatekeeper.check_http(http_request())
    assert refusal == HttpRefusal(403, DISABLED_MESSAGE, {})
    assert "disabled by configuration" in refusal.message and "[soap] enabled=false" in refusal.message
    node.config.set("soap", "enabled", "true")
    assert gatekeeper.check_http(http_request()) is None


def test_check_http_https_only_comes_first(node_factory):
    """Remote plain HTTP under https_only is refused for that reason before the toggle is asked."""
    node = node_factory({"frontend": {"https_only": "true"}, "soap": {"enabled": "false"},
                       "core": {"http_trusted_forward": "127.0.0.1"}})
    gatekeeper = keeper(node)
    refusal = gatekeeper.check_http(http_request(forwarded=[b"192.0.2.5"]))
    assert refusal.status == 403 and "https_only" in refusal.message
    assert gatekeeper.check_http(http_request(secure=True, forwarded=[b"192.0.2.5"])).message == DISABLED_MESSAGE


def test_check_http_ui_gate_ignores_the_toggle_but_not_https_only(node_factory):
    """The UI login is not the API: [soap] enabled=false leaves it open, https_only still refuses it."""
    node = node_factory({"frontend": {"https_only": "true"}, "soap": {"enabled": "false"},
                       "core": {"http_trusted_forward": "127.0.0.1"}})
    gatekeeper = keeper(node)
    assert gatekeeper.check_http(http_request(secure=True, forwarded=[b"192.0.2.5"]), Gate.UI) is None
    assert gatekeeper.check_http(http_request(), Gate.UI) is None  # loopback plain HTTP
    refusal = gatekeeper.check_http(http_request(forwarded=[b"192.0.2.5"]), Gate.UI)
    assert refusal.status == 403 and "https_only" in refusal.message


def test_client_address_uses_live_trusted_proxies(node_factory):
    """client_address believes X-Forwarded-For only from [core] http_trusted_forward, read live."""
    node = node_factory()
    gatekeeper = keeper(node)
    request = http_request(forwarded=[b"192.0.2.5"])
    assert gatekeeper.client_address(request) == "127.0.0.1"
    node.config.set("core", "http_trusted_forward", "127.0.0.1")
    assert gatekeeper.client_address(request) == "192.0.2.5"
