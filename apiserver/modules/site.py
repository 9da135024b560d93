"""The ``site`` module: a site's own usage figures, as ApisCP's ``site_get_account_quota`` and
``site_get_bandwidth_usage`` answer them (Blesta's statistics tab and WHMCS 1.0.8's usage sync
call them through an ``admin_hijack`` session).  The figures are
:class:`apiserver.lifecycle.reports.SiteReports`'; use not measured yet is null.
"""

from __future__ import annotations

from typing import Optional

from apiserver.hookspecs import hookimpl
from apiserver.module import BuiltinModule, Role, export


class SiteModule(BuiltinModule):
    """The caller's site."""

    name = "site"

    @export(roles=Role.SITE | Role.USER)
    def get_account_quota(self, ctx) -> dict:
        """Storage of the caller's site: {qused, qsoft, qhard, fused, fsoft, fhard} in KB and files."""
        return self.core.site_reports.quota_of(self.core.lifecycle.record_of(ctx.identity))

    @export(roles=Role.SITE | Role.USER)
    def get_bandwidth_usage(self, ctx, type: Optional[str] = None) -> dict:
        """Traffic of the caller's site in the current period: {used, total} in bytes (total null: unlimited).

        TYPE is accepted for ApisCP's signature (the total of every kind is answered).
        """
        return self.core.site_reports.bandwidth_of(self.core.lifecycle.record_of(ctx.identity))


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``site`` module."""
    return [SiteModule]
