"""Built-in plugin: mail a notice whenever a password changes or is reset (the seed's table).

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
names the client address of the change and, when ``app.geolocator`` can place it, where that
is.  Mail goes through ``[mail]``'s SMTP relay on the blocking pool; a notice never contains the
password, and a failure to send is logged, never raised into the call that changed the password.
"""

from __future__ import annotations

import datetime
import email.message
import email.utils
import smtplib
import ssl
from typing import Optional

import sqlalchemy as sa
from twisted.logger import Logger

from apiserver.context import Identity
from apiserver.geolocation import Location
from apiserver.hookspecs import hookimpl
from apiserver.module import Role
from apiserver.storage import schema

log = Logger(namespace="apiserver.notifications")

SMTP_TIMEOUT = 30


def notice_recipient(target: Identity, actor: Identity, reset: bool) -> tuple[Optional[str], Optional[str]]:
    """Whose address gets the notice: ``(site, username)`` of that account (site None: appliance).

    A reset, a change of one's own password and a change of a subordinate's password notify the
    target, except that the appliance administrator changing a user's password notifies the
    user's site administrator (``username`` None means that site's administrator).
    """
    if not reset and actor.user_id != target.user_id and actor.role is Role.ADMIN and target.role is Role.USER:
        return target.site, None
    return target.site, target.username


def _address_of(app, site: Optional[str], username: Optional[str]) -> Optional[str]:
    users, sites = schema.users, schema.sites
    query = sa.select(users.c.email).select_from(users.outerjoin(sites, users.c.site_id == sites.c.id))
    if site is None:
        query = query.where(users.c.site_id.is_(None), users.c.username == username)
    else:
        query = query.where(sites.c.domain == site)
        query = query.where(users.c.role == "site") if username is None else query.where(users.c.username == username)
    with app.storage.read() as conn:
        return conn.execute(query).scalar()


def compose_notice(app, target: Identity, actor: Identity, reset: bool, recipient: str,
                   address: Optional[str] = None, location: Optional[Location] = None) -> email.message.EmailMessage:
    """The notice's message (without the password, which only the caller ever sees).

    ``address`` is the client address of the change, ``location`` where it is (either may be None).
    """
    when = datetime.datetime.fromtimestamp(app.clock.seconds(), datetime.timezone.utc)
    account = target.describe()
    if actor.impersonator is not None:  # a hijacked session: the one behind it acted
        by = f"{actor.impersonator.describe()} acting as {actor.describe()}"
    else:
        by = "you" if actor.user_id == target.user_id else actor.describe()
    if address:
        by += f" from {address}" + (f" ({location.describe()})" if location is not None else "")
    message = email.message.EmailMessage()
    message["From"] = app.config.get("mail", "sender")
    message["To"] = recipient
    message["Date"] = email.utils.format_datetime(when)
    message["Message-ID"] = email.utils.make_msgid(domain="apiserver")
    if reset:
        message["Subject"] = f"Password reset: {account}"
        text = (f"The password of {account} was reset by {by} on {when:%Y-%m-%d %H:%M:%S} UTC.\n"
                "The new password was given to whoever reset it; it is not included here.\n")
    else:
        message["Subject"] = f"Password changed: {account}"
        text = f"The password of {account} was changed by {by} on {when:%Y-%m-%d %H:%M:%S} UTC.\n"
    message.set_content(text + "If you did not expect this, contact your administrator at once.\n")
    return message


def send_notice(app, target: Identity, actor: Identity, reset: bool, address: Optional[str] = None,
                location: Optional[Location] = None) -> Optional[str]:
    """Blocking: look up the recipient and mail the notice; returns the address used, or None."""
    recipient = _address_of(app, *notice_recipient(target, actor, reset))
    if not recipient:
        return None
    message = compose_notice(app, target, actor, reset, recipient, address, location)
    config = app.config
    with smtplib.SMTP(config.get("mail", "smtp_host"), config.get("mail", "smtp_port"), timeout=SMTP_TIMEOUT) as smtp:
        if config.get("mail", "starttls"):
            smtp.starttls(context=ssl.create_default_context())
        if config.get("mail", "username"):
            smtp.login(config.get("mail", "username"), config.get("mail", "password"))
        smtp.send_message(message)
    return recipient


@hookimpl
def apiserver_password_changed(app, target, actor, reset, address):
    """Place ``address`` and mail the notice, both on the blocking pool, when ``[mail] enabled``.

    Returns the Deferred of the sending (fires with the recipient or None; never fails) so
    callers that care, such as tests, can wait for it.
    """
    if not app.config.get("mail", "enabled"):
        return None
    d = app.geolocator.locate(address)
    d.addCallback(lambda location: app.run_blocking(send_notice, app, target, actor, reset, address, location))

    def failed(failure):
        if failure.check(OSError, smtplib.SMTPException):  # the relay is absent or refuses: one line
            log.warn("password notice for {account} not sent: SMTP relay {relay} failed: {error}",
                     account=target.describe(), relay=f"{app.config.get('mail', 'smtp_host')}:{app.config.get('mail', 'smtp_port')}",
                     error=f"{type(failure.value).__name__}: {failure.value}"[:300])
            return None
        log.failure("password notice for {account} could not be sent", failure, account=target.describe())

    return d.addErrback(failed)
