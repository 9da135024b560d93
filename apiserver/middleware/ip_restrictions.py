"""Per-gate IP restrictions: the second factor that ``auth_restrict_ip`` stores, in one component.

All-or-nothing enablement (seed, "Restricting authorization"): an identity without entries
logs in from anywhere; once it has any entry, every gate checks, and a gate admits an address
only when it matches an entry for that gate or an entry with no gate.  A refusal raises
``AuthenticationFailed("ip")``, which the caller sees exactly like a bad password and Anvil
counts as a failed login.

:class:`IPRestrictions` owns everything about them: the rows (:class:`RestrictionRows`, the
``ip_restrictions`` table and the account's ``ip_restriction_count`` and
``ip_restriction_generation``), the cache of compiled entries and the check.  It is built
before the accounts service and the gatekeeper and handed to both (and to the plugin API), so
neither reaches the other through it.

The entries of an account are loaded once (on the blocking pool) and compiled
(:class:`~apiserver.middleware.ip_ranges.CompiledRestrictions`), so a check is a dictionary
look-up and a binary search whatever the number of entries.  Compiled entries are cached per
account (``apiserver.storage.cache``) for ``[auth] ip_restriction_cache_ttl`` seconds.  A
change made on this node shows at once: :meth:`IPRestrictions.add` / :meth:`~IPRestrictions.remove`
change the cached form in place by that one entry after the commit (O(log n): a write costs
about the same however many entries the account has).  A change made on another node shows
after at most the ttl: every change draws a new random ``users.ip_restriction_generation``,
and once the ttl ends one read of that number decides whether the cached entries still hold
(most of the time: then nothing else is read) or must be read again.  Rows written behind this
component draw no number, so the entries are read in full again after
:data:`FULL_RELOAD_SECONDS` regardless, in the background while requests keep using them.

Whose entries are checked: the identity that authenticated.  For a hijacked session that is
the appliance administrator who opened it (``Identity.impersonator``), not the site it acts
as, so a site's restrictions never lock the appliance administrator out.
"""

from __future__ import annotations

import secrets
from typing import Callable, Optional

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.context import Gate, Identity
from apiserver.errors import AuthenticationFailed, Exists, InvalidArgument, NotFound
from apiserver.middleware.ip_ranges import CompiledRestrictions, normalise_entry
from apiserver.storage import schema
from apiserver.storage.cache import MISSING, ReadThroughCache

log = Logger(namespace="apiserver.middleware.ip_restrictions")

#: Most accounts whose compiled entries are cached at once (expired ones go first).
MAX_CACHED_ACCOUNTS = 10_000

#: Cached entries are read again in full (in the background) once this old, or
#: ``ip_restriction_cache_ttl`` when longer, even when their generation shows no change: rows
#: written behind this component (by hand, or by a plugin's own SQL) draw none.
FULL_RELOAD_SECONDS = 60

_users, _restrictions = schema.users, schema.ip_restrictions

# Statements of the hot paths, built once.
_RESTRICTIONS_OF = (sa.select(_restrictions.c.network, _restrictions.c.gate)
                    .where(_restrictions.c.user_id == sa.bindparam("user_id")).order_by(_restrictions.c.id))
_GENERATION_OF = sa.select(_users.c.ip_restriction_generation).where(_users.c.id == sa.bindparam("user_id"))
_COUNT_OF = (sa.select(sa.func.count()).select_from(_restrictions)
             .where(_restrictions.c.user_id == sa.bindparam("user_id")))


def new_generation() -> int:
    """A fresh ``users.ip_restriction_generation``: random, never 0 (the column's default)."""
    return secrets.randbits(62) + 1


class RestrictionRows:
    """The stored entries and their per-account counter and generation.  Every method blocks."""

    def __init__(self, storage):
        self._storage = storage

    def load(self, user_id: int) -> list:
        """``[(network, gate or None), ...]`` of account ``user_id``, in the order they were stored."""
        with self._storage.read() as conn:
            rows = conn.execute(_RESTRICTIONS_OF, {"user_id": user_id}).all()
        return [(row.network, row.gate) for row in rows]

    def generation(self, user_id: int) -> Optional[int]:
        """The number drawn by the last change of ``user_id``'s entries (one row read; None when
        there is no such account).  Read it before the entries: they then hold every change up to it."""
        with self._storage.read() as conn:
            return conn.execute(_GENERATION_OF, {"user_id": user_id}).scalar()

    def add(self, user_id: int, network: str, gate: Optional[str], limit: int) -> tuple:
        """Store one entry; ``(generation before, generation after)``.  Exists if it is stored
        already, InvalidArgument past ``limit`` entries."""
        gate_match = _restrictions.c.gate.is_(None) if gate is None else _restrictions.c.gate == gate
        generation = new_generation()
        with self._storage.write() as conn:
            # Concurrent adds for one account queue on its row (SQLite's BEGIN IMMEDIATE already
            # does), so neither the limit nor an entry for every gate (NULL: no unique index
            # catches it) can be doubled by a race.
            row = conn.execute(sa.select(_users.c.ip_restriction_count, _users.c.ip_restriction_generation)
                               .where(_users.c.id == user_id).with_for_update()).first()
            count, previous = (row.ip_restriction_count, row.ip_restriction_generation) if row else (None, None)
            # One indexed probe (uq_ip_restrictions_entry) and the account's counter: the same
            # cost however many entries it has.
            if conn.execute(sa.select(_restrictions.c.id).where(
                    _restrictions.c.user_id == user_id, _restrictions.c.network == network, gate_match)
                    .limit(1)).first() is not None:
                raise Exists(f"{network} is already allowed{_at(gate)}")
            if count is not None and count >= limit:
                # The counter may be off after rows were edited by hand: count them before refusing.
                count = conn.execute(_COUNT_OF, {"user_id": user_id}).scalar()
                conn.execute(_users.update().where(_users.c.id == user_id).values(ip_restriction_count=count))
                if count >= limit:
                    raise InvalidArgument(f"an account may have at most {limit} IP restrictions "
                                          "([auth] ip_restriction_limit); remove one first")
            conn.execute(_restrictions.insert().values(user_id=user_id, network=network, gate=gate))
            conn.execute(_users.update().where(_users.c.id == user_id)
                         .values(ip_restriction_count=_users.c.ip_restriction_count + 1,
                                 ip_restriction_generation=generation))
        return previous, generation

    def remove(self, user_id: int, network: str, gate: Optional[str]) -> tuple:
        """Remove one entry; ``(generation before, generation after)``.  NotFound if there is none."""
        gate_match = _restrictions.c.gate.is_(None) if gate is None else _restrictions.c.gate == gate
        generation = new_generation()
        with self._storage.write() as conn:
            # Queued on the account's row like adds, so each generation follows exactly one change.
            previous = conn.execute(sa.select(_users.c.ip_restriction_generation)
                                    .where(_users.c.id == user_id).with_for_update()).scalar()
            removed = conn.execute(_restrictions.delete().where(
                _restrictions.c.user_id == user_id, _restrictions.c.network == network, gate_match)).rowcount
            if removed:
                conn.execute(_users.update().where(_users.c.id == user_id)
                             .values(ip_restriction_count=sa.case((_users.c.ip_restriction_count > removed,
                                                                    _users.c.ip_restriction_count - removed), else_=0),
                                     ip_restriction_generation=generation))
        if not removed:
            raise NotFound(f"no IP restriction {network}{_at(gate)}")
        return previous, generation

    def mark_changed(self, user_id: int) -> None:
        """Draw a new generation for ``user_id`` after its rows were changed behind this class,
        so every node reads them again within its ttl."""
        with self._storage.write() as conn:
            conn.execute(_users.update().where(_users.c.id == user_id)
                         .values(ip_restriction_generation=new_generation()))


class IPRestrictions:
    """The IP restrictions of every account: stored, cached, checked; see the module docstring.

    ``rows``: :class:`RestrictionRows` (or anything with its methods); ``clock``: what the cache
    ages by; ``run_blocking``: runs the row reads off the reactor; ``settings``: the config
    (``[auth] ip_restriction_cache_ttl`` and ``ip_restriction_limit``, read per use).
    """

    def __init__(self, rows, clock, run_blocking: Callable, settings):
        self.rows = rows
        self._clock = clock
        self._settings = settings
        self._cache = ReadThroughCache(clock, run_blocking, self._load,
                                       lambda: settings.get("auth", "ip_restriction_cache_ttl"), MAX_CACHED_ACCOUNTS,
                                       revalidate=self._revalidate)
        self._run_blocking = run_blocking

    @staticmethod
    def validate_entry(ip, gate) -> tuple[str, Optional[str]]:
        """``(normalised ip or CIDR, gate name or None)``; InvalidArgument naming the bad value."""
        try:
            normalised = normalise_entry(ip)
        except ValueError:
            raise InvalidArgument(f"{ip!r} is not an IP address or CIDR network") from None
        try:
            parsed_gate = Gate.parse(gate)
        except (ValueError, TypeError):
            raise InvalidArgument(f"unknown gate {gate!r}: expected one of UI, SOAP, DAV, CLI or null") from None
        return normalised, (parsed_gate.value if parsed_gate else None)

    # --- checking (reactor thread) -----------------------------------------------------------
    def check(self, identity: Identity, gate: Gate, address: str) -> defer.Deferred:
        """Fires with None when ``identity`` may log in from ``address`` through ``gate``;
        fails with ``AuthenticationFailed("ip")`` otherwise."""
        while identity.impersonator is not None:
            identity = identity.impersonator
        d = self._cache.get(identity.user_id)
        d.addCallback(self._refreshed_if_old, identity.user_id)
        d.addCallback(self._decide, identity, gate, address)
        return d

    def check_now(self, identity: Identity, gate: Gate, address: str) -> Optional[defer.Deferred]:
        """Like :meth:`check` without a Deferred when the account's entries are cached: None
        when allowed, raises ``AuthenticationFailed("ip")`` when refused, else a Deferred."""
        owner = identity
        while owner.impersonator is not None:
            owner = owner.impersonator
        compiled = self._cache.peek(owner.user_id)
        if compiled is MISSING:
            return self.check(identity, gate, address)
        self._decide(self._refreshed_if_old(compiled, owner.user_id), owner, gate, address)
        return None

    def admits(self, identity: Identity, gate: Gate, address: str) -> defer.Deferred:
        """Fires with whether ``identity``'s entries admit ``address`` at ``gate`` (never fails
        for a refusal): how a login is recorded, as one they refuse is a failed login."""
        return self.check(identity, gate, address).addCallbacks(lambda _: True, _refused)

    def entries(self, user_id: int) -> defer.Deferred:
        """Fires with the stored ``((network, gate or None), ...)`` of account ``user_id`` in their
        order (cached like the checks' entries: no thread when cached)."""
        d = self._cache.get(user_id).addCallback(self._refreshed_if_old, user_id)
        return d.addCallback(lambda compiled: compiled.entries)

    # --- changing -----------------------------------------------------------------------------
    def add(self, identity: Identity, network: str, gate: Optional[str]) -> None:
        """Blocking.  Store an entry validated by :meth:`validate_entry`; enforces ``[auth]
        ip_restriction_limit``.  The cached entries of the account gain it at once."""
        limit = self._settings.get("auth", "ip_restriction_limit")
        generations = self.rows.add(identity.user_id, network, gate, limit)
        self._cache.update(identity.user_id, lambda compiled: compiled.add(network, gate, generations))

    def remove(self, identity: Identity, network: str, gate: Optional[str]) -> None:
        """Blocking.  Remove one entry; NotFound if there is none.  The cached entries lose it at once."""
        generations = self.rows.remove(identity.user_id, network, gate)
        self._cache.update(identity.user_id, lambda compiled: compiled.remove(network, gate, generations))

    def invalidate(self, user_id: int) -> None:
        """Forget the cached entries of ``user_id`` (its account changed or was deleted).  Any thread."""
        self._cache.invalidate(user_id)

    def changed_elsewhere(self, user_id: int) -> defer.Deferred:
        """Reactor thread.  After ``user_id``'s rows were changed behind this component (a plugin's
        own SQL): forget them here at once; fires once a new generation is stored, after which
        every other node reads them within its ttl."""
        self.invalidate(user_id)
        return self._run_blocking(self.rows.mark_changed, user_id)

    # --- internals ---------------------------------------------------------------------------
    def _load(self, user_id: int) -> CompiledRestrictions:
        """Blocking: read and compile (off the reactor thread) the entries of ``user_id``."""
        now = self._clock.seconds()
        generation = self.rows.generation(user_id)  # first: the entries then hold its changes
        return CompiledRestrictions(self.rows.load(user_id), generation, now)

    def _revalidate(self, user_id: int, stale: CompiledRestrictions) -> CompiledRestrictions:
        """Blocking: once the cached entries expire, keep them when the account's generation
        shows no change since (one row read, whatever the number of entries), else read them
        all again.  Entries that are old (see :meth:`_age_limit`) are read again in the
        background by the request that finds them; entries twice that old (an account that
        was idle) are read again before use."""
        if self._clock.seconds() - stale.loaded_at < 2 * self._age_limit() and stale.generation is not None:
            if self.rows.generation(user_id) == stale.generation:
                return stale
        return self._load(user_id)

    def _age_limit(self) -> float:
        """Seconds after which cached entries are read in full again whatever their generation,
        for rows written behind this component (by hand, or a plugin's own SQL), which draw
        none: :data:`FULL_RELOAD_SECONDS`, or the ttl when longer."""
        return max(FULL_RELOAD_SECONDS, self._settings.get("auth", "ip_restriction_cache_ttl"))

    def _refreshed_if_old(self, compiled: CompiledRestrictions, user_id: int) -> CompiledRestrictions:
        """Reactor thread: ``compiled``, read again in the background when it is old (this and
        later requests still decide by it meanwhile, so no request waits for every row)."""
        if self._clock.seconds() - compiled.loaded_at >= self._age_limit():
            self._cache.refresh(user_id)
        return compiled

    @staticmethod
    def _decide(compiled: CompiledRestrictions, identity: Identity, gate: Gate, address: str) -> None:
        if not compiled.allows(gate, address):
            log.info("login of {who} through {gate} refused: {address} is not in its IP restrictions",
                     who=identity.describe(), gate=gate.value, address=address)
            raise AuthenticationFailed("ip")


def _refused(failure) -> bool:
    failure.trap(AuthenticationFailed)  # anything else (a database error) is no refusal
    return False


def _at(gate: Optional[str]) -> str:
    return f" at gate {gate}" if gate else " at every gate"
