"""The ban API of the ``rampart`` module: :class:`Rampart` (the package docstring says what it does)."""

from __future__ import annotations

import ipaddress
from typing import Callable, Optional

from apiserver.context import Identity
from apiserver.errors import Denied, InvalidArgument
from apiserver.module import Role
from apiserver.rampart.entries import Whitelist
from apiserver.rampart.fail2ban import Fail2ban

ANVIL = "anvil"
MODES = ("add", "remove")


def address_of(text, where: str = "ip") -> str:
    """The canonical text of one IP address; InvalidArgument otherwise."""
    try:
        ip = ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise InvalidArgument(f"{where}: invalid IP address {str(text)[:60]!r}") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def network_of(text, where: str = "ip") -> str:
    """The canonical text of an IP address or CIDR network; InvalidArgument otherwise."""
    try:
        network = ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise InvalidArgument(f"{where}: invalid IP address or network {str(text)[:60]!r}") from None
    return str(network.network_address) if network.num_addresses == 1 else str(network)


class Rampart:
    """The ban API (see the module docstring).

    ``anvil``: :class:`~apiserver.middleware.anvil.Anvil`; ``fail2ban``:
    :class:`~apiserver.rampart.fail2ban.Fail2ban`; ``whitelist``:
    :class:`~apiserver.rampart.entries.Whitelist`; ``run_blocking``: fail2ban and the rows off the
    reactor; ``site_values(identity)``: Blocking, the caller's site's ``(rampart.enabled,
    rampart.max)``; ``settings``: ``[rampart] delegated_whitelist``.
    """

    def __init__(self, anvil, fail2ban: Fail2ban, whitelist: Whitelist, run_blocking: Callable,
                 site_values: Callable, settings):
        self._anvil = anvil
        self._fail2ban = fail2ban
        self.whitelist_entries = whitelist
        self._run_blocking = run_blocking
        self._site_values = site_values
        self._settings = settings

    async def jails(self) -> list:
        """``anvil`` and fail2ban's jails."""
        return [ANVIL] + await self._run_blocking(self._fail2ban.jails)

    async def _jail(self, jail: Optional[str]) -> Optional[str]:
        if jail is None or jail == "":
            return None
        jails = await self.jails()
        if jail not in jails:
            raise InvalidArgument(f"jail: no jail {str(jail)[:60]!r}; jails are {', '.join(jails)}")
        return jail

    async def banned_services(self, ip: str) -> list:
        """The jails that refuse ``ip`` now (plain names: ``anvil``, ``sshd``)."""
        address = address_of(ip)
        found = [ANVIL] if await self._anvil.blocked(address) else []
        return found + await self._run_blocking(self._fail2ban.banned_in, address)

    async def is_banned(self, ip: str, jail: Optional[str] = None) -> bool:
        """Whether ``jail`` (None: any jail) refuses ``ip`` now."""
        address = address_of(ip)
        jail = await self._jail(jail)
        if jail == ANVIL:
            return await self._anvil.blocked(address)
        if jail is None and await self._anvil.blocked(address):
            return True
        banned = await self._run_blocking(self._fail2ban.banned_in, address)
        return jail in banned if jail else bool(banned)

    async def unban(self, ip: str, jail: Optional[str], actor: Identity) -> bool:
        """Lift ``ip``'s ban in ``jail`` (None: every jail); true even when it had none."""
        address = address_of(ip)
        jail = await self._jail(jail)
        site_id = await self._run_blocking(self._allow, actor, address)
        if jail in (None, ANVIL):
            await self._anvil.unblock(address)
        if jail != ANVIL:
            await self._run_blocking(self._fail2ban.unban, address, jail)
        if site_id is not None:
            await self._run_blocking(self.whitelist_entries.note_unban, site_id, address)
        return True

    async def whitelist(self, ip: str, mode: str, actor: Identity) -> bool:
        """``add`` ``ip`` (address or network) to the whitelist, or ``remove`` the caller's entry."""
        mode = (mode or "add").strip().lower()
        if mode not in MODES:
            raise InvalidArgument(f"mode must be add or remove, got {str(mode)[:20]!r}")
        network = network_of(ip)
        entries = self.whitelist_entries
        if mode == "add":
            site_id = await self._run_blocking(self._allow, actor, network)
            await self._run_blocking(entries.add, site_id, network)
            await self._run_blocking(self._fail2ban.ignore, network, True)
            return True
        if actor.role is Role.USER:
            raise Denied("a site's users may only query rampart; ask the site's administrator")
        site_id = None if actor.role is Role.ADMIN else actor.site_id
        removed = await self._run_blocking(entries.remove, site_id, network)
        if removed and not await self._run_blocking(entries.referenced, network):
            await self._run_blocking(self._fail2ban.ignore, network, False)
        return True

    def _allow(self, actor: Identity, address: str) -> Optional[int]:
        """Blocking.  None for the appliance administrator; the site number of a site administrator
        allowed to act on one more address; Denied otherwise."""
        if actor.role is Role.ADMIN:
            return None
        if actor.role is not Role.SITE:
            raise Denied("a site's users may only query rampart; ask the site's administrator")
        enabled, limit = self._site_values(actor)
        if not enabled:
            raise Denied("rampart is not enabled for this site (rampart.enabled): only queries are allowed")
        if limit is None:
            limit = self._settings.get("rampart", "delegated_whitelist")
        if limit < 0:
            return actor.site_id
        counted = self.whitelist_entries.counted(actor.site_id)
        if address not in counted and len(counted) >= limit:
            raise Denied(f"this site may act on at most {limit} address(es) at a time (rampart.max): its "
                         "whitelist entries and what it unbanned in the last 24 hours; remove an entry first")
        return actor.site_id
