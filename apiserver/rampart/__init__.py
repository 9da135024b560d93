"""Rampart: ApisCP's ban API over the jails that refuse addresses.

Jails: ``anvil`` (the server's own brute-force throttle, :mod:`apiserver.middleware.anvil`) and,
when fail2ban runs on the host, each of fail2ban's jails (:mod:`apiserver.rampart.fail2ban`).
:class:`Rampart` answers the ``rampart`` module:

* ``is_banned(ip, jail)``, ``banned_services(ip)``, ``get_jails()``: queries;
* ``unban(ip, jail)``: Anvil forgets the address's failures, fail2ban lifts its bans;
* ``whitelist(ip, mode)``: ``add`` keeps the address (or network) from ever being counted by
  Anvil or banned by fail2ban (its jails' ignore lists), ``remove`` takes the caller's entry away
  (the address stays whitelisted while another entry names it).

The appliance administrator may do all of it.  A site's administrator may query any address,
and may unban or whitelist when its site has ``rampart.enabled``, up to ``rampart.max``
addresses at a time: the addresses it holds on the whitelist plus those it unbanned in the last
24 hours (an address counts once; ``-1`` unlimited, ``0`` none, null: ``[rampart]
delegated_whitelist``).  A site's users may only query.
"""
