"""Where a client address is: MaxMind's GeoIP2 web service, else an on-premise GeoLite2 City database.

:class:`Geolocator` places the addresses named in authentication access notices.  The web service
is used when ``[geoip] account_id`` and ``license_key`` are set (scope
``auth.geoip-key``; read from the live config on every look-up, so a change applies at once);
otherwise, or when the service fails, the GeoLite2 City database ``[geoip] database`` (relative
to state_dir; no file means no geolocation).  Look-ups block, so they run on the blocking pool.
A failed look-up is logged in one line and gives None: a notice never fails for want of a place.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import threading
from typing import Callable, Optional

import geoip2.database
import geoip2.errors
import geoip2.webservice
from twisted.internet import defer
from twisted.logger import Logger

from apiserver.logs import one_line_error  # geoip2's messages can be long JSON bodies

log = Logger(namespace="apiserver.geolocation")

#: Seconds the web service may take to connect and to answer (a notice waits for it).
SERVICE_TIMEOUT = 10

#: Addresses that no geolocation source knows, never looked up.  Not ``ip_address.is_private``:
#: that also covers the documentation networks (192.0.2.0/24, 2001:db8::/32, ...).
_UNLOCATABLE = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",                                # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",  # private (RFC 1918, ULA)
    "169.254.0.0/16", "fe80::/10",                           # link-local
))


@dataclasses.dataclass(frozen=True)
class Location:
    """A place as geolocation names it; any part may be unknown (None)."""

    city: Optional[str]
    region: Optional[str]
    country: Optional[str]
    country_code: Optional[str]

    def describe(self) -> str:
        """``"Berlin, Germany"``: the city (else the region) and the country (else its code)."""
        return ", ".join(p for p in (self.city or self.region, self.country or self.country_code) if p)


def lookup_address(address: Optional[str]) -> Optional[str]:
    """The address to look up for ``address`` (IPv4-mapped IPv6 unwrapped), or None when it
    is malformed or loopback, private or link-local."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _UNLOCATABLE if net.version == ip.version):
        return None
    return str(ip)


def _location_of(city) -> Optional[Location]:
    """A :class:`Location` from a ``geoip2.models.City``; None when it names no place at all."""
    location = Location(city=city.city.name, region=city.subdivisions.most_specific.name,
                        country=city.country.name, country_code=city.country.iso_code)
    return location if location.describe() else None


class Geolocator:
    """Places client addresses; see the module docstring for which source answers.

    ``settings``: the config (``[geoip]``, read per look-up); ``run_blocking``: where look-ups run.
    """

    def __init__(self, settings, run_blocking: Callable):
        self._settings = settings
        self._run_blocking = run_blocking
        self._lock = threading.Lock()  # the reader is opened, replaced and read under it
        self._reader: Optional[geoip2.database.Reader] = None
        self._reader_stamp = None      # (inode, size, mtime) of the file the reader was opened on

    def locate(self, address: Optional[str]) -> defer.Deferred:
        """A Deferred firing with the :class:`Location` of ``address`` or None; never fails.

        No address, and loopback, private, link-local and malformed ones, give None without a look-up.
        """
        address = lookup_address(address)
        if address is None:
            return defer.succeed(None)
        return self._run_blocking(self.lookup, address)

    def lookup(self, address: str) -> Optional[Location]:
        """Blocking: the web service's answer if configured and it answers, else the database's."""
        config = self._settings
        account_id, license_key = config.get("geoip", "account_id"), config.get("geoip", "license_key")
        if account_id and license_key:
            try:
                with geoip2.webservice.Client(account_id, license_key, host=config.get("geoip", "service_host"),
                                              timeout=SERVICE_TIMEOUT) as client:
                    return _location_of(client.city(address))
            except Exception as exc:  # unreachable, refused credentials, unknown address, bad answer
                log.warn("GeoIP2 web service could not place {address}: {error}", address=address,
                         error=one_line_error(exc))
        return self._database_lookup(address)

    def _database_lookup(self, address: str) -> Optional[Location]:
        path = self._settings.state_path(self._settings.get("geoip", "database"))
        with self._lock:
            reader = self._current_reader(path)
            if reader is None:
                return None
            try:
                return _location_of(reader.city(address))
            except Exception as exc:  # not in the database, or a corrupt record
                log.warn("GeoLite2 database {path} could not place {address}: {error}",
                         path=path, address=address, error=one_line_error(exc))
                return None

    def _current_reader(self, path: str) -> Optional[geoip2.database.Reader]:
        """The reader of ``path``, (re)opened when the file appeared or changed; None if unusable."""
        try:
            st = os.stat(path)
        except OSError:
            stamp = None
        else:
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._reader_stamp:
            return self._reader
        if self._reader is not None:
            self._reader.close()
        self._reader, self._reader_stamp = None, stamp
        if stamp is not None:
            try:
                self._reader = geoip2.database.Reader(path)
            except Exception as exc:  # logged once per version of the file
                log.warn("GeoLite2 database {path} cannot be read: {error}", path=path, error=one_line_error(exc))
        return self._reader


