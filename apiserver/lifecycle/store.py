"""Sites' rows as the lifecycle reads and writes them: :class:`SiteRecord` and blocking queries.

A site's service values live in three places: columns of ``sites`` (``domain``, ``plan``,
``invoice``, ``parent_invoice``, the suspension), its administrator's ``users`` row (name,
email) and the JSON column ``sites.services`` for the rest.  :meth:`SiteRecord.value` answers any
``service.param`` from where it lives.  Every function here blocks (database): callers run on
the blocking pool.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from typing import Any, Iterable, Optional

import sqlalchemy as sa

from apiserver.errors import NotFound
from apiserver.lifecycle import services
from apiserver.storage import schema

_sites, _users = schema.sites, schema.users

#: ``site<N>``, the id of a site in every answer.
_SITE_ID = re.compile(r"site([1-9][0-9]{0,17})")
#: Parameters that have a column (or the administrator's row) rather than a key in ``services``.
COLUMNS = {("siteinfo", "domain"), ("siteinfo", "admin_user"), ("siteinfo", "email"), ("siteinfo", "plan"),
           ("billing", "invoice"), ("billing", "parent_invoice"), ("siteinfo", "admin"), ("billing", "ctime"),
           ("rampart", "whitelist")}


@dataclasses.dataclass(frozen=True)
class SiteRecord:
    """One site as stored: its number, names, plan, service values and suspension."""

    id: int
    domain: str
    admin_user: str
    admin_user_id: int
    email: Optional[str]
    plan: Optional[str]
    stored: dict                      # {service: {param: value}} of the JSON column
    invoice: Optional[str]
    parent_invoice: Optional[str]
    created_at: datetime.datetime
    suspended_at: Optional[datetime.datetime]
    suspension_reason: Optional[str]
    whitelist: tuple = ()             # rampart_whitelist entries of the site

    @property
    def site_id(self) -> str:
        """``site<N>``."""
        return f"site{self.id}"

    @property
    def active(self) -> bool:
        return self.suspended_at is None

    def value(self, spec: services.Param) -> Any:
        """The current value of ``spec`` for this site (its built-in default when never set)."""
        key = (spec.service, spec.name)
        if key in COLUMNS:
            return {
                ("siteinfo", "domain"): self.domain, ("siteinfo", "admin_user"): self.admin_user,
                ("siteinfo", "email"): self.email, ("siteinfo", "plan"): self.plan,
                ("billing", "invoice"): self.invoice, ("billing", "parent_invoice"): self.parent_invoice,
                ("siteinfo", "admin"): f"admin{self.id}",
                ("billing", "ctime"): int(self.created_at.replace(tzinfo=datetime.timezone.utc).timestamp()),
                ("rampart", "whitelist"): list(self.whitelist),
            }[key]
        return self.stored.get(spec.service, {}).get(spec.name, spec.default)

    def values(self) -> dict:
        """``{Param: value}`` of every readable parameter."""
        return {spec: self.value(spec) for spec in services.all_params() if not spec.secret}


def stored_json(values: dict) -> str:
    """The ``services`` column for ``{Param: value}`` (parameters with a column, derived ones and
    secrets are left out)."""
    out: dict = {}
    for spec, value in values.items():
        if (spec.service, spec.name) in COLUMNS or spec.secret or not spec.writable:
            continue
        out.setdefault(spec.service, {})[spec.name] = value
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def _select() -> sa.Select:
    return (sa.select(_sites, _users.c.id.label("admin_user_id"), _users.c.username.label("admin_user"),
                      _users.c.email.label("email"))
            .select_from(_sites.join(_users, sa.and_(_users.c.site_id == _sites.c.id, _users.c.role == "site"))))


def _record(row, whitelist: dict) -> SiteRecord:
    try:
        stored = json.loads(row.services) if row.services else {}
    except ValueError:
        stored = {}
    return SiteRecord(id=row.id, domain=row.domain, admin_user=row.admin_user, admin_user_id=row.admin_user_id,
                      email=row.email, plan=row.plan, stored=stored if isinstance(stored, dict) else {},
                      invoice=row.invoice, parent_invoice=row.parent_invoice, created_at=row.created_at,
                      suspended_at=row.suspended_at, suspension_reason=row.suspension_reason,
                      whitelist=tuple(sorted(whitelist.get(row.id, ()))))


def load(conn: sa.Connection, where=None, order_by_domain: bool = True) -> list:
    """Every :class:`SiteRecord` (matching ``where``, a SQLAlchemy condition), by domain."""
    query = _select()
    if where is not None:
        query = query.where(where)
    if order_by_domain:
        query = query.order_by(_sites.c.domain)
    rows = conn.execute(query).all()
    entries = schema.rampart_entries
    whitelist: dict = {}
    if rows:
        listed = sa.select(entries.c.site_id, entries.c.address).where(entries.c.kind == "whitelist",
                                                                        entries.c.site_id.isnot(None))
        if len(rows) <= 500:
            listed = listed.where(entries.c.site_id.in_([row.id for row in rows]))
        for site_id, address in conn.execute(listed):
            whitelist.setdefault(site_id, []).append(address)
    return [_record(row, whitelist) for row in rows]


def site_number(identifier: str) -> Optional[int]:
    """N of ``site<N>`` (any case), or None when ``identifier`` is no site id."""
    match = _SITE_ID.fullmatch(identifier.strip().lower()) if isinstance(identifier, str) else None
    return int(match.group(1)) if match else None


def resolve(conn: sa.Connection, identifier: str) -> list:
    """The sites ``identifier`` names, ApisCP's order: a site id (``site12``), a domain (any case),
    else a billing invoice (every site whose ``invoice`` or ``parent_invoice`` it is: an account
    group).  NotFound when it names none."""
    if not isinstance(identifier, str) or not identifier.strip():
        raise NotFound("no site named by an empty value")
    text = identifier.strip()
    number = site_number(text)
    if number is not None:
        found = load(conn, _sites.c.id == number)
        if found:
            return found
    found = load(conn, _sites.c.domain == text.lower().rstrip("."))
    if found:
        return found
    found = load(conn, sa.or_(_sites.c.invoice == text, _sites.c.parent_invoice == text))
    if found:
        return found
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise NotFound(f"no site {shown!r}: not a site id, domain or billing invoice of this server")


def resolve_many(conn: sa.Connection, identifiers: Iterable[str]) -> list:
    """Every site any of ``identifiers`` names, once each, by domain; names that match nothing
    are skipped (``admin_collect`` answers an empty map for them)."""
    seen: dict = {}
    for identifier in identifiers:
        try:
            for record in resolve(conn, str(identifier)):
                seen[record.id] = record
        except NotFound:
            continue
    return sorted(seen.values(), key=lambda r: r.domain)


def update_site(conn: sa.Connection, site_id: int, **columns) -> None:
    """Set ``sites`` columns of one site (``plan``, ``services``, ``invoice``, ...)."""
    if columns:
        conn.execute(_sites.update().where(_sites.c.id == site_id).values(**columns))


def suspended_sites(conn: sa.Connection) -> dict:
    """``{site id (int): reason or None}`` of every suspended site."""
    rows = conn.execute(sa.select(_sites.c.id, _sites.c.suspension_reason).where(_sites.c.suspended_at.isnot(None)))
    return {row.id: row.suspension_reason for row in rows}


def account_ids(conn: sa.Connection, site_id: int) -> list:
    """The ids of every account of a site (its administrator and users)."""
    return list(conn.execute(sa.select(_users.c.id).where(_users.c.site_id == site_id)).scalars())


def domains(conn: sa.Connection) -> dict:
    """``{N: domain}`` of every site, by domain."""
    return {row.id: row.domain for row in conn.execute(sa.select(_sites.c.id, _sites.c.domain)
                                                       .order_by(_sites.c.domain))}
