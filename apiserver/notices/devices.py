"""Unrecognized-device notices: a login from a device the account has not used before is mailed.

How a device is told apart:

* UI (``POST /login``): by the long-lived cookie ``apiserver_device`` (256 random bits, HttpOnly,
  400 days), issued on the first UI login of a browser and kept for every account it logs in to;
* API (SOAP, XML-RPC, cpcmd --url) and DAV: by the client address together with its User-Agent,
  checked when a call authenticated by API key or password is admitted.

Sessions (``esprit_id``, hijacks) and root on the cpcmd socket are no new devices.  An account's
first device sends no notice (its very first login).  Each account's known devices are rows of
``known_devices`` (SHA-256 of the distinguishing value); the look-up runs on the blocking pool
after admission, and each node remembers the last :data:`KNOWN_LIMIT` known (account, device)
pairs in memory (about 100 bytes each), so a repeated call costs one dictionary look-up on the
reactor thread.  The
notice is queued in the transaction that stores the device, so nodes sharing the database
send it once.
"""

from __future__ import annotations

import collections
import datetime
import email.message
import hashlib
import re
import secrets
from typing import Optional

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.context import AuthRequest, Gate, Identity
from apiserver.geolocation import Location, lookup_address
from apiserver.logs import one_line_error as _one_line
from apiserver.notices.outbox import notice_message, queue_notice
from apiserver.storage import schema, utcnow

log = Logger(namespace="apiserver.notices.devices")

DEVICE_COOKIE = "apiserver_device"
COOKIE_MAX_AGE = 400 * 86400  # the longest browsers keep a cookie
#: (account, device) pairs a node remembers as known.
KNOWN_LIMIT = 50_000
#: Longest User-Agent kept in a notice.
AGENT_LIMIT = 200

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_devices, _users = schema.known_devices, schema.users


def device_digest(kind: str, *parts: Optional[str]) -> str:
    """SHA-256 hex of what tells a device apart (``kind`` ``cookie`` or ``client``)."""
    return hashlib.sha256("\0".join([kind, *(p or "" for p in parts)]).encode("utf-8", "replace")).hexdigest()


def printable_agent(user_agent: Optional[str]) -> str:
    """The User-Agent as a notice shows it: printable characters only, at most :data:`AGENT_LIMIT`."""
    text = "".join(c for c in (user_agent or "") if c.isprintable()).strip()
    return text[:AGENT_LIMIT] or "(none sent)"


def compose_device_notice(settings, clock, identity: Identity, recipient: str, address: str,
                          user_agent: Optional[str], gate, location: Optional[Location]) -> email.message.EmailMessage:
    """The notice of a login from a new device: when, from where (and which place), which client."""
    when = datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)
    account = identity.describe()
    place = f" ({location.describe()})" if location is not None else ""
    return notice_message(
        settings.get("mail", "sender"), recipient, f"Login from a new device: {account}", when,
        f"{account} logged in from a device it has not used before.\n\n"
        f"When:   {when:%Y-%m-%d %H:%M:%S} UTC\n"
        f"From:   {address}{place}\n"
        f"Client: {printable_agent(user_agent)}\n"
        f"Gate:   {getattr(gate, 'value', gate)}\n\n"
        "If this was not you, change the password and delete the API keys you do not recognise.\n")


class Devices:
    """Remembers the devices of accounts and queues the notice for a new one (see the module docstring).

    ``storage``: the ``known_devices`` table and the outbox; ``clock``: dates; ``run_blocking``:
    the look-ups off the reactor; ``settings``: the config (``[mail]``, read per use);
    ``geolocator``: places the address of a notice; ``queued()``: called on the reactor thread
    after a notice was queued (the sender sends it at once).
    """

    def __init__(self, storage, clock, run_blocking, settings, geolocator, queued=lambda: None):
        self._storage = storage
        self._clock = clock
        self._run_blocking = run_blocking
        self._settings = settings
        self._geolocator = geolocator
        self._queued = queued
        self._known: collections.OrderedDict = collections.OrderedDict()
        self._checking: set = set()

    # --- reactor thread ---------------------------------------------------------------------
    def admitted(self, identity: Identity, request: AuthRequest) -> None:
        """An API or DAV call was admitted: check its device off the reactor thread unless known."""
        credentials = request.credentials
        if (identity.impersonator is not None or request.gate is Gate.UI or request.gate is Gate.CLI
                or (credentials.api_key is None and credentials.password is None)):
            return
        # The tuple's 64-bit hash (randomised per process) keeps an entry at ~100 bytes.
        key = hash((identity.user_id, request.address, request.user_agent))
        if key in self._known or key in self._checking:
            return
        self._checking.add(key)
        digest = device_digest("client", request.address, request.user_agent)
        d = self._run_blocking(self.remember, identity, digest, request.address, request.user_agent, request.gate)
        d.addCallbacks(self._checked, self._check_failed, callbackArgs=(key,), errbackArgs=(key,))

    def ui_login(self, identity: Identity, cookie: Optional[str], address: str,
                 user_agent: Optional[str]) -> defer.Deferred:
        """A UI login: fires with the device cookie's value to set (the one sent, or a new one)."""
        token = cookie if cookie and _TOKEN.fullmatch(cookie) else secrets.token_urlsafe(32)
        if identity.impersonator is not None:
            return defer.succeed(token)
        d = self._run_blocking(self.remember, identity, device_digest("cookie", token), address, user_agent, Gate.UI)

        def done(queued):
            if queued:
                self._queued()
            return token

        def failed(failure):
            log.error("device check of {account} failed: {error}", account=identity.describe(),
                      error=_one_line(failure.value))
            return token

        return d.addCallbacks(done, failed)

    def forget_users(self, user_ids) -> None:
        """Accounts were deleted: forget every known pair (entries are hashes, so all of them;
        deletions are rare).  SQLite gives a deleted account's id to the next account, which
        must not inherit its devices."""
        self._known.clear()

    def _checked(self, queued: bool, key) -> None:
        self._checking.discard(key)
        self._known[key] = True
        while len(self._known) > KNOWN_LIMIT:
            self._known.popitem(last=False)
        if queued:
            self._queued()

    def _check_failed(self, failure, key) -> None:
        self._checking.discard(key)  # tried again on the next call
        log.error("device check failed: {error}", error=_one_line(failure.value))

    # --- blocking -----------------------------------------------------------------------------
    def remember(self, identity: Identity, digest: str, address: str, user_agent: Optional[str], gate) -> bool:
        """Blocking.  Store the device when it is new; True when that queued a notice."""
        mail = self._settings.get("mail", "enabled")
        with self._storage.read() as conn:
            if conn.execute(sa.select(_devices.c.id).where(
                    _devices.c.user_id == identity.user_id, _devices.c.device == digest)).first() is not None:
                return False
            # Placed before the write transaction (a slow geolocation service must not hold a
            # write lock), and only when a notice will likely go out: the GeoIP2 web service
            # charges per lookup, and an account's first device or one without email gets none.
            will_mail = mail and conn.execute(sa.select(_devices.c.id).where(
                _devices.c.user_id == identity.user_id).limit(1)).first() is not None and conn.execute(
                sa.select(_users.c.email).where(_users.c.id == identity.user_id)).scalar()
        located = lookup_address(address) if will_mail else None
        location = self._geolocator.lookup(located) if located else None
        try:
            with self._storage.write() as conn:
                first = conn.execute(sa.select(_devices.c.id).where(_devices.c.user_id == identity.user_id)
                                     .limit(1)).first() is None
                conn.execute(_devices.insert().values(user_id=identity.user_id, device=digest,
                                                      first_seen=utcnow(self._clock)))
                if first or not mail:
                    return False
                recipient = conn.execute(sa.select(_users.c.email).where(_users.c.id == identity.user_id)).scalar()
                if not recipient:
                    return False
                queue_notice(conn, self._clock, "device", compose_device_notice(
                    self._settings, self._clock, identity, recipient, address, user_agent, gate, location))
                return True
        except sa.exc.IntegrityError:  # another node (or request) stored it first, and sends the notice
            return False
