"""Password notices: whom a password change or reset notifies (the seed's table) and what it says.

=========  ========  ==========
role       changes   notifies
=========  ========  ==========
appliance  self      self
appliance  site      site
appliance  user      site
site       self      self
site       user      user
user       self      self
=========  ========  ==========

A reset notifies the account whose password was reset, if it has an email address.  A notice
names the client address of the change and, when the geolocator can place it, where that
is.  :func:`queue_password_notice` puts it in the outbox (:mod:`apiserver.notices.outbox`) in
the transaction that stores the password; a notice never contains the password.
"""

from __future__ import annotations

import datetime
import email.message
from typing import Optional

import sqlalchemy as sa

from apiserver.context import Identity
from apiserver.geolocation import Location
from apiserver.module import Role
from apiserver.notices.outbox import notice_message, queue_notice
from apiserver.storage import schema


def notice_recipient(target: Identity, actor: Identity, reset: bool) -> tuple[Optional[str], Optional[str]]:
    """Whose address gets the notice: ``(site, username)`` of that account (site None: appliance).

    A reset, a change of one's own password and a change of a subordinate's password notify the
    target, except that the appliance administrator changing a user's password notifies the
    user's site administrator (``username`` None means that site's administrator).
    """
    if not reset and actor.user_id != target.user_id and actor.role is Role.ADMIN and target.role is Role.USER:
        return target.site, None
    return target.site, target.username


def _address_of(conn: sa.Connection, site: Optional[str], username: Optional[str]) -> Optional[str]:
    users, sites = schema.users, schema.sites
    query = sa.select(users.c.email).select_from(users.outerjoin(sites, users.c.site_id == sites.c.id))
    if site is None:
        query = query.where(users.c.site_id.is_(None), users.c.username == username)
    else:
        query = query.where(sites.c.domain == site)
        query = query.where(users.c.role == "site") if username is None else query.where(users.c.username == username)
    return conn.execute(query).scalar()


def compose_notice(settings, clock, target: Identity, actor: Identity, reset: bool, recipient: str,
                   address: Optional[str] = None, location: Optional[Location] = None) -> email.message.EmailMessage:
    """The notice's message (without the password, which only the caller ever sees).

    ``settings`` is the config (``[mail] sender``), ``clock`` dates it; ``address`` is the client
    address of the change, ``location`` where it is (either may be None).
    """
    when = datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)
    account = target.describe()
    if actor.impersonator is not None:  # a hijacked session: the one behind it acted
        by = f"{actor.impersonator.describe()} acting as {actor.describe()}"
    else:
        by = "you" if actor.user_id == target.user_id else actor.describe()
    if address:
        by += f" from {address}" + (f" ({location.describe()})" if location is not None else "")
    if reset:
        subject = f"Password reset: {account}"
        text = (f"The password of {account} was reset by {by} on {when:%Y-%m-%d %H:%M:%S} UTC.\n"
                "The new password was given to whoever reset it; it is not included here.\n")
    else:
        subject = f"Password changed: {account}"
        text = f"The password of {account} was changed by {by} on {when:%Y-%m-%d %H:%M:%S} UTC.\n"
    return notice_message(settings.get("mail", "sender"), recipient, subject, when,
                          text + "If you did not expect this, contact your administrator at once.\n")


def queue_password_notice(settings, clock, conn: sa.Connection, target: Identity, actor: Identity, reset: bool,
                          address: Optional[str] = None, location: Optional[Location] = None) -> Optional[int]:
    """Blocking, in ``conn``'s transaction: queue the notice; its id, or None when the recipient has no address."""
    recipient = _address_of(conn, *notice_recipient(target, actor, reset))
    if not recipient:
        return None
    return queue_notice(conn, clock, "password",
                        compose_notice(settings, clock, target, actor, reset, recipient, address, location))
