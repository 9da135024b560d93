"""The seam between a site's service values and what they change on the host: *appliers*.

The lifecycle (:class:`apiserver.lifecycle.service.SiteLifecycle`) stores a site's values, then
hands each change to the applier of every service concerned, in :data:`ORDER`, on the blocking
pool.  An applier makes the host match the values: a group quota for ``diskquota``, a
MariaDB/PostgreSQL user for ``mysql``/``pgsql``, a login shell for ``ssh``, locked system
accounts and database users while the site is suspended.  Its methods, all blocking:

``add(site, values)``            the site was created (its rows and home exist); ``values``
                                 ``{Param: value}`` of every parameter, secrets included
``edit(site, before, values, changed)``  values changed: ``before``/``site`` the records around
                                 the change, ``changed`` ``{Param: new value}`` (secrets included)
``suspend(site)`` / ``activate(site)``  the site was suspended / activated
``delete(site)``                 the site is about to be deleted (its rows and home still exist)

On ``add`` a failure undoes the site (appliers that had run get ``delete``); on ``edit``,
``suspend`` and ``activate`` it is reported to the caller (``Server.Internal``, the values stay
stored, so a second call applies them again); on ``delete`` it stops the deletion unless the
caller passed ``force``.  An applier must therefore be idempotent.

What exists now: none of the services is applied to the host yet — their values are declared,
validated and stored, and the appliers below are :class:`PendingApplier`\\ s that change
nothing.  They are filled in by issue 20's second part (usage, databases) on top of issue 19's
``apiserver/host/`` boundary (system accounts):

* ``accounts``: lock and unlock the site's system accounts (``usermod -L``/``-U``, shell to
  nologin, their processes ended) on suspend/activate; login shell from ``ssh.enabled``;
* ``diskquota``: the group quota of ``admin<N>`` from ``quota``/``units``/``fquota``;
* ``bandwidth``: nothing on the host; the period and threshold are read by the usage seam;
* ``mysql``/``pgsql``: the database user ``dbaseadmin`` limited to ``dbaseprefix``, its
  password written to the administrator's ``.my.cnf``/``.pgpass``, locked while suspended,
  dropped with its databases on delete;
* ``ssh``: the login shell of the site's system users.
"""

from __future__ import annotations

from typing import Iterable, Optional

from twisted.logger import Logger

log = Logger(namespace="apiserver.lifecycle.appliers")

#: The order appliers run in on add, edit, suspend and activate (delete runs it backwards).
ORDER = ("accounts", "diskquota", "bandwidth", "mysql", "pgsql", "ssh", "dav")


class Applier:
    """Base of an applier: every method does nothing.  ``name`` is the service it applies (or
    ``accounts`` for the site's system accounts)."""

    name = ""

    def add(self, site, values: dict) -> None:
        """Blocking.  Make what the new ``site`` needs."""

    def edit(self, site, before, values: dict, changed: dict) -> None:
        """Blocking.  Apply ``changed`` (``{Param: value}``)."""

    def suspend(self, site) -> None:
        """Blocking.  Lock what ``site`` has on the host."""

    def activate(self, site) -> None:
        """Blocking.  Undo :meth:`suspend`."""

    def delete(self, site) -> None:
        """Blocking.  Remove what ``site`` has on the host."""


class PendingApplier(Applier):
    """An applier not written yet: it changes nothing on the host (see the module docstring)."""

    def __init__(self, name: str):
        self.name = name


class Appliers:
    """The appliers of every service, called in :data:`ORDER` (replace one with :meth:`install`)."""

    def __init__(self, appliers: Optional[Iterable[Applier]] = None):
        self._by_name = {name: PendingApplier(name) for name in ORDER}
        for applier in appliers or ():
            self.install(applier)

    def install(self, applier: Applier) -> None:
        """Use ``applier`` for its service from now on."""
        if applier.name not in ORDER:
            raise ValueError(f"no service {applier.name!r} to apply; appliers are {', '.join(ORDER)}")
        self._by_name[applier.name] = applier

    def get(self, name: str) -> Applier:
        return self._by_name[name]

    def in_order(self, reverse: bool = False) -> list:
        names = reversed(ORDER) if reverse else ORDER
        return [self._by_name[name] for name in names]

    def pending(self) -> list:
        """Names of the services whose applier is not written yet."""
        return [name for name in ORDER if isinstance(self._by_name[name], PendingApplier)]

    # --- the lifecycle's calls (blocking) -----------------------------------------------------
    def add(self, site, values: dict) -> None:
        """Run every ``add``; on a failure, ``delete`` of those that ran (newest first), then raise."""
        done = []
        try:
            for applier in self.in_order():
                applier.add(site, values)
                done.append(applier)
        except BaseException:
            for applier in reversed(done):
                try:
                    applier.delete(site)
                except Exception as exc:  # the first failure is the one to report
                    log.error("undoing {name} of {site} failed: {error}", name=applier.name, site=site.domain,
                              error=exc)
            raise

    def edit(self, site, before, values: dict, changed: dict) -> None:
        for applier in self.in_order():
            applier.edit(site, before, values, changed)

    def suspend(self, site) -> None:
        for applier in self.in_order():
            applier.suspend(site)

    def activate(self, site) -> None:
        for applier in self.in_order():
            applier.activate(site)

    def delete(self, site, force: bool = False) -> None:
        """Run every ``delete`` backwards; with ``force`` a failure is logged and the others run."""
        for applier in self.in_order(reverse=True):
            try:
                applier.delete(site)
            except Exception as exc:
                if not force:
                    raise
                log.error("forced deletion of {site}: {name} failed: {error}", site=site.domain, name=applier.name,
                          error=exc)
