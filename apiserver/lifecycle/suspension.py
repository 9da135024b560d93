"""Which sites are suspended, for the gates: every login of a suspended site's account is refused.

:class:`SuspendedSites` keeps ``{site number: reason}`` of every suspended site (a few rows) read
through a :class:`~apiserver.storage.cache.ReadThroughCache`: answered on the reactor thread,
read again after ``[auth] account_cache_ttl`` seconds (other nodes' suspensions show within
that), dropped at once by this node's own suspensions and activations.  The gatekeeper asks it
after the credentials and IP restrictions passed, so only a caller who proved who it is learns
that the site is suspended (:class:`~apiserver.errors.SiteSuspended`); a wrong password gets the
usual answer.  The appliance administrator acting as the site (``admin_hijack``, ``cpcmd -d``)
is let through.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer

from apiserver.context import Identity
from apiserver.errors import SiteSuspended
from apiserver.lifecycle import store
from apiserver.module import Role
from apiserver.storage.cache import MISSING, ReadThroughCache

_ALL = "suspended"


def visible_reason(reason: Optional[str]) -> str:
    """The suspension reason without its hidden lines (those starting with ``#`` or ``;``, which
    only ``admin_delete_site``'s ``match`` sees, as in ApisCP)."""
    lines = [line.strip() for line in (reason or "").splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("#", ";")))


class SuspendedSites:
    """The suspended sites (see the module docstring).  ``storage``: the rows; ``clock``,
    ``run_blocking``: the cache's; ``settings``: ``[auth] account_cache_ttl`` and ``[auth]
    show_suspension_reason``, read per use."""

    def __init__(self, storage, clock, run_blocking: Callable, settings):
        self._storage = storage
        self._settings = settings
        self._cache = ReadThroughCache(clock, run_blocking, self._load,
                                       lambda: settings.get("auth", "account_cache_ttl"), max_entries=1)

    def _load(self, _key) -> dict:
        with self._storage.read() as conn:
            return store.suspended_sites(conn)

    def check(self, identity: Identity) -> Optional[defer.Deferred]:
        """None when ``identity`` may go on; raises :class:`SiteSuspended` when its site is
        suspended; a Deferred (None or that failure) when the set must be read first."""
        if identity.site_id is None or _appliance_acting(identity):
            return None
        known = self._cache.peek(_ALL)
        if known is not MISSING:
            return self._decide(known, identity)
        return self._cache.get(_ALL).addCallback(self._decide, identity)

    def suspended(self, site_id: int) -> defer.Deferred:
        """Reactor thread: fires with whether site ``site_id`` is suspended."""
        return self._cache.get(_ALL).addCallback(lambda known: site_id in known)

    def changed(self) -> None:
        """After this node suspended or activated a site (any thread)."""
        self._cache.invalidate(_ALL)

    def _decide(self, known: dict, identity: Identity) -> None:
        if identity.site_id not in known:
            return None
        message = f"site {identity.site} is suspended: logins are refused until it is activated"
        reason = visible_reason(known[identity.site_id]) if self._settings.get("auth", "show_suspension_reason") \
            else ""
        raise SiteSuspended(f"{message} ({reason[:200]})" if reason else message)


def _appliance_acting(identity: Identity) -> bool:
    impersonator = identity.impersonator
    while impersonator is not None:
        if impersonator.role is Role.ADMIN:
            return True
        impersonator = impersonator.impersonator
    return False
