"""Records the account services and modules return (each becomes a struct on the wire)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Optional


@dataclasses.dataclass
class ApiKeyInfo:
    """One API key as ``auth_get_api_keys`` lists it."""

    key: str
    last_used: Optional[datetime.datetime]
    comment: Optional[str]


@dataclasses.dataclass
class IpRestriction:
    """An address or network allowed to log in, at one gate or (gate null) at all of them."""

    ip: str
    gate: Optional[str]


@dataclasses.dataclass
class LoginRecord:
    """One login attempt: when (UTC), from where, through which gate, how, and whether it worked."""

    at: datetime.datetime
    address: str
    gate: str
    method: str
    success: bool


@dataclasses.dataclass
class UserInfo:
    """An account of a site: its name, role (``site`` or ``user``) and email."""

    username: str
    role: str
    email: Optional[str]


@dataclasses.dataclass
class NewSite:
    """What :meth:`apiserver.accounts.sites.Sites.add_site` made; ``password`` is set only when the
    server generated it; ``site_id`` is the N of ``site<N>``."""

    domain: str
    admin_user: str
    password: Optional[str]
    site_id: Optional[int] = None


@dataclasses.dataclass
class WhoAmI:
    """The caller: role (``appliance``, ``site``, ``user``), username, site (null for the appliance)."""

    role: str
    username: str
    site: Optional[str]
