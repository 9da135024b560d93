"""What billing systems read about sites: ``admin_collect``, ``admin_get_domains``,
``admin_get_site_id``, ``admin_get_usage`` and the ``site`` module's figures.

Every answer keyed by data is a plain map (apache ``Map`` in SOAP's RPC dialect, so PHP gets
associative arrays; a struct over XML-RPC): ``admin_collect`` and ``admin_get_usage`` by site id
(``site<N>``), ``admin_get_domains`` by the number N.  Every method blocks (database).
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa

from apiserver.accounts import validation
from apiserver.errors import InvalidArgument, NotFound
from apiserver.lifecycle import services, store, usage
from apiserver.storage import schema


class SiteReports:
    """The read side of the lifecycle.  ``storage``: the rows; ``clock``: the current bandwidth
    period; ``usage_source``: measured use (:class:`apiserver.lifecycle.usage.UsageSource`)."""

    def __init__(self, storage, clock, usage_source: usage.UsageSource):
        self._storage = storage
        self._clock = clock
        self.usage_source = usage_source

    def _records(self, sites: Optional[list]) -> list:
        with self._storage.read() as conn:
            if sites:
                return store.resolve_many(conn, sites)
            return store.load(conn)

    def collect(self, fields: Optional[list], match: Optional[dict], sites: Optional[list]) -> dict:
        """Blocking.  ``{site<N>: {service: {param: value}, active, domain}}`` of the sites
        ``sites`` names (all when none), those whose values equal every entry of ``match``
        (``active`` matches the suspension; null matches unset), with the parameters ``fields``
        names (:func:`apiserver.lifecycle.services.field_list`).  An empty map when none match."""
        wanted = [services.param(service, name) for service, name in services.field_list(fields)]
        conditions = _conditions(match)
        out: dict = {}
        for record in self._records(sites):
            if not all(_matches(record, spec, value) for spec, value in conditions):
                continue
            entry: dict = {}
            for spec in wanted:
                entry.setdefault(spec.service, {})[spec.name] = record.value(spec)
            entry["active"] = record.active
            entry["domain"] = record.domain
            out[record.site_id] = entry
        return out

    def domains(self) -> dict:
        """Blocking.  ``{N: domain}`` of every site, by domain (ApisCP's ``get_domains``)."""
        with self._storage.read() as conn:
            return store.domains(conn)

    def site_id(self, domain: str) -> str:
        """Blocking.  ``site<N>`` of the site whose primary domain is ``domain``; NotFound otherwise."""
        name = validation.normalize_domain(str(domain))
        with self._storage.read() as conn:
            found = store.load(conn, schema.sites.c.domain == name)
        if not found:
            raise NotFound(f"no site {name!r}")
        return found[0].site_id

    def usage(self, field: str, sites: Optional[list]) -> dict:
        """Blocking.  ``{site<N>: figures}``: ``storage`` -> ``{qused, qsoft, qhard, fused, fsoft,
        fhard}`` (KB, inodes), ``bandwidth`` -> ``{sum, threshold, begin, end}`` (bytes, Unix
        seconds); use not measured is null."""
        if field not in usage.FIELDS:
            raise InvalidArgument(f"field must be one of {', '.join(usage.FIELDS)}, got {str(field)[:40]!r}")
        if field == usage.STORAGE and not sites:
            return self._storage_of_every_site()
        records = self._records(sites)
        if field == usage.STORAGE:
            used = self.usage_source.storage(records)
            return {r.site_id: usage.storage_figures(r, used.get(r.id)) for r in records}
        now = self._clock.seconds()
        periods = {r.id: usage.bandwidth_period(r, now) for r in records}
        used = self.usage_source.bandwidth(records, periods)
        return {r.site_id: usage.bandwidth_figures(r, used.get(r.id), periods[r.id]) for r in records}

    def _storage_of_every_site(self) -> dict:
        """Blocking.  The storage answer of every site, by domain, in one query (a billing
        system's sync asks for all sites: no site records are built)."""
        sites, measured = schema.sites, schema.site_usage
        query = (sa.select(sites.c.id, sites.c.services, measured.c.kilobytes, measured.c.files)
                 .select_from(sites.outerjoin(measured, measured.c.site_id == sites.c.id)).order_by(sites.c.domain))
        with self._storage.read() as conn:
            rows = conn.execute(query).all()
        return {f"site{row[0]}": usage.storage_answer(usage.storage_limits_of_stored(row[1]),
                                                      None if row[2] is None else (int(row[2]), int(row[3])))
                for row in rows}

    def quota_of(self, record: store.SiteRecord) -> dict:
        """Blocking.  ``site_get_account_quota``: the storage figures of one site."""
        return usage.storage_figures(record, self.usage_source.storage([record]).get(record.id))

    def bandwidth_of(self, record: store.SiteRecord) -> dict:
        """Blocking.  ``site_get_bandwidth_usage``: ``{used, total}`` bytes of the current period
        (``total`` null: unlimited; ``used`` null: not measured)."""
        period = usage.bandwidth_period(record, self._clock.seconds())
        used = self.usage_source.bandwidth([record], {record.id: period}).get(record.id)
        return {"used": used, "total": usage.bandwidth_threshold(record)}


def _conditions(match: Optional[dict]) -> list:
    """``[(Param or "active", value)]`` of an ``admin_collect`` match map, values validated."""
    conditions = []
    rest = {}
    for key, value in (match or {}).items():
        if str(key).strip() == "active":
            conditions.append(("active", services.as_switch(value, "match.active")))
        else:
            rest[key] = value
    values, _ = services.parse_options(rest, "match")
    for spec, value in values.items():
        if spec.secret:
            raise InvalidArgument(f"{spec.qualified}: a secret cannot be matched")
        conditions.append((spec, None if services.is_null(value) else services.validate(spec, value)))
    return conditions


def _matches(record: store.SiteRecord, spec, value) -> bool:
    if spec == "active":
        return record.active is value
    return record.value(spec) == value
