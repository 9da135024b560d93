"""Geolocation: a real GeoLite2-City file, a local HTTPS server answering like the GeoIP2 web service."""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import http.server
import ipaddress
import json
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from twisted.logger import globalLogPublisher

from apiserver.context import CallContext, Gate
from apiserver.geolocation import Location, lookup_address
from tests.accounts.support import Harness, eventually, wait
from tests.notices.test_passwords import smtp  # noqa: F401  (the real SMTP server fixture)

ACCOUNT_ID, LICENSE_KEY = 4711, "Test_Licence-Key"

BERLIN = {
    "city": {"geoname_id": 2950159, "names": {"en": "Berlin", "de": "Berlin"}},
    "country": {"geoname_id": 2921044, "iso_code": "DE", "names": {"en": "Germany", "de": "Deutschland"}},
    "subdivisions": [{"geoname_id": 2950157, "iso_code": "BE", "names": {"en": "Land Berlin"}}],
    "location": {"latitude": 52.52, "longitude": 13.405, "time_zone": "Europe/Berlin"},
}
LYON = {
    "city": {"geoname_id": 2996944, "names": {"en": "Lyon"}},
    "country": {"geoname_id": 3017382, "iso_code": "FR", "names": {"en": "France"}},
    "subdivisions": [{"geoname_id": 11071623, "iso_code": "ARA", "names": {"en": "Auvergne-Rhône-Alpes"}}],
}


def write_city_database(path, records: dict) -> None:
    """A GeoLite2-City-format database (IPv6 tree with IPv4 mapped in, as MaxMind ships it)."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City",
                        languages=["en"], description="apiserver test database")
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))


class LogLines:
    """Twisted log events of the ``apiserver.geolocation`` namespace, as text."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        if event.get("log_namespace") == "apiserver.geolocation":
            self.events.append(event)

    @property
    def lines(self):
        return [event["log_format"].format(**event) for event in self.events]


@pytest.fixture
def geolog():
    """Collects the geolocation module's log lines while a test runs."""
    observer = LogLines()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


# --- a local GeoIP2 web service -------------------------------------------------------------

def _self_signed(directory):
    """(cert_path, key_path) of a throwaway certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "service.crt", directory / "service.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class GeoIP2Service(http.server.ThreadingHTTPServer):
    """Answers ``GET /geoip/v2.1/city/{ip}`` like MaxMind: Basic auth, JSON bodies, JSON errors."""

    def __init__(self, records: dict):
        super().__init__(("127.0.0.1", 0), _ServiceHandler)
        self.records = records   # address -> City body
        self.requests = []       # paths asked for, in order
        self.down = False        # answer 503 to everything


class _ServiceHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        service = self.server
        service.requests.append(self.path)
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_ID}:{LICENSE_KEY}".encode()).decode()
        prefix = "/geoip/v2.1/city/"
        if service.down:
            self._answer(503, "text/plain", b"Service Unavailable")
        elif self.headers.get("Authorization") != expected:
            self._error(401, "AUTHORIZATION_INVALID",
                        "You have supplied an invalid MaxMind account ID and/or license key.")
        elif not self.path.startswith(prefix):
            self._error(404, "PATH_INVALID", "unknown path")
        elif self.path[len(prefix):] not in service.records:
            address = self.path[len(prefix):]
            self._error(404, "IP_ADDRESS_NOT_FOUND", f"The value {address} is not in the database.")
        else:
            body = dict(service.records[self.path[len(prefix):]], traits={"ip_address": self.path[len(prefix):]})
            self._answer(200, "application/vnd.maxmind.com-city+json; charset=UTF-8; version=2.1",
                         json.dumps(body).encode())

    def _error(self, status, code, message):
        self._answer(status, "application/vnd.maxmind.com-error+json; charset=UTF-8; version=2.0",
                     json.dumps({"code": code, "error": message}).encode())

    def _answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def geoip_service(tmp_path, monkeypatch):
    """A local HTTPS GeoIP2 City service knowing 192.0.2.10 as Lyon; requests trusts its certificate."""
    cert_path, key_path = _self_signed(tmp_path)
    service = GeoIP2Service({"192.0.2.10": LYON})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    service.socket = context.wrap_socket(service.socket, server_side=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))  # what requests (geoip2's client) trusts
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    yield service
    service.shutdown()
    service.server_close()
    thread.join()


def _service_config(service, account_id=ACCOUNT_ID, license_key=LICENSE_KEY) -> dict:
    return {"account_id": str(account_id), "license_key": license_key,
            "service_host": f"127.0.0.1:{service.server_address[1]}"}


@pytest.fixture
def make_harness(tmp_path):
    """Builds a Harness with the given ``[geoip]`` keys; closes it afterwards."""
    made = []

    def make(**geoip):
        h = Harness(tmp_path / "state", {"geoip": geoip})
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# --- tests ----------------------------------------------------------------------------------

def test_location_describes_city_and_country():
    """describe() names the city (else the region) and the country (else its code)."""
    assert Location("Berlin", "Land Berlin", "Germany", "DE").describe() == "Berlin, Germany"
    assert Location(None, "Bavaria", None, "DE").describe() == "Bavaria, DE"
    assert Location(None, None, None, None).describe() == ""


def test_only_loopback_private_and_link_local_are_skipped():
    """Loopback, private, link-local and malformed addresses are not looked up; documentation ones are."""
    for address in ("127.0.0.1", "::1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "fd00::1",
                    "169.254.1.1", "fe80::1", "::ffff:127.0.0.1", "not an address", "", None):
        assert lookup_address(address) is None, address
    for address in ("192.0.2.10", "198.51.100.7", "2001:db8::1", "8.8.8.8"):
        assert lookup_address(address) == address
    assert lookup_address("::ffff:192.0.2.10") == "192.0.2.10"


def test_database_gives_the_city(make_harness, tmp_path, geolog):
    """A GeoLite2-City file in state_dir places 192.0.2.10 in Berlin; an unknown address gives None and one log line."""
    h = make_harness()
    write_city_database(tmp_path / "state" / "GeoLite2-City.mmdb", {"192.0.2.0/24": BERLIN})
    location = wait(h.app.geolocator.locate("192.0.2.10"))
    assert location == Location("Berlin", "Land Berlin", "Germany", "DE")
    assert location.describe() == "Berlin, Germany"
    assert wait(h.app.geolocator.locate("::ffff:192.0.2.77")).city == "Berlin"
    assert geolog.lines == []
    assert wait(h.app.geolocator.locate("198.51.100.1")) is None
    assert len(geolog.lines) == 1 and "198.51.100.1" in geolog.lines[0]


def test_absent_database_means_no_geolocation(make_harness, geolog):
    """No database file and no web service: None, and nothing is logged."""
    h = make_harness(database="nowhere/GeoLite2-City.mmdb")
    assert wait(h.app.geolocator.locate("192.0.2.10")) is None
    assert geolog.lines == []


def test_database_reopened_when_the_file_changes(make_harness, tmp_path, geolog):
    """A replaced file is read at the next look-up; a corrupt one is logged once, not on every look-up."""
    h = make_harness(database="geo/City.mmdb")
    path = tmp_path / "state" / "geo" / "City.mmdb"
    path.parent.mkdir()
    write_city_database(path, {"192.0.2.0/24": BERLIN})
    assert wait(h.app.geolocator.locate("192.0.2.10")).city == "Berlin"
    write_city_database(tmp_path / "next.mmdb", {"192.0.2.0/24": LYON})
    os.replace(tmp_path / "next.mmdb", path)
    assert wait(h.app.geolocator.locate("192.0.2.10")).city == "Lyon"
    path.write_bytes(b"not a MaxMind database")
    assert wait(h.app.geolocator.locate("192.0.2.10")) is None
    assert wait(h.app.geolocator.locate("192.0.2.11")) is None
    assert len(geolog.lines) == 1 and "cannot be read" in geolog.lines[0]


def test_loopback_is_never_looked_up(make_harness, geoip_service):
    """Loopback and private addresses give None without asking the service."""
    h = make_harness(**_service_config(geoip_service))
    for address in ("127.0.0.1", "::1", "10.0.0.1", "fe80::1"):
        assert wait(h.app.geolocator.locate(address)) is None
    assert geoip_service.requests == []


def test_web_service_preferred_over_database(make_harness, tmp_path, geoip_service, geolog):
    """With both configured the web service answers (Lyon), over the right path with the credentials."""
    h = make_harness(**_service_config(geoip_service))
    write_city_database(tmp_path / "state" / "GeoLite2-City.mmdb", {"192.0.2.0/24": BERLIN})
    location = wait(h.app.geolocator.locate("192.0.2.10"))
    assert location == Location("Lyon", "Auvergne-Rhône-Alpes", "France", "FR")
    assert geoip_service.requests == ["/geoip/v2.1/city/192.0.2.10"]
    assert geolog.lines == []


def test_scope_change_applies_at_once(make_harness, geoip_service):
    """Credentials set at run time (as scope auth.geoip-key does) are used by the next look-up."""
    h = make_harness(service_host=f"127.0.0.1:{geoip_service.server_address[1]}")
    assert wait(h.app.geolocator.locate("192.0.2.10")) is None
    assert geoip_service.requests == []
    h.app.config.set("geoip", "account_id", str(ACCOUNT_ID))
    h.app.config.set("geoip", "license_key", LICENSE_KEY)
    assert wait(h.app.geolocator.locate("192.0.2.10")).city == "Lyon"


@pytest.mark.parametrize("failure", ["bad credentials", "not found", "service down", "nothing listening"])
def test_web_service_failure_gives_none_and_one_log_line(make_harness, geoip_service, geolog, failure):
    """Refused credentials, an unknown address, a 503 or no server: None and exactly one log line."""
    config = _service_config(geoip_service, license_key="Wrong_Key" if failure == "bad credentials" else LICENSE_KEY)
    address = "198.51.100.1" if failure == "not found" else "192.0.2.10"
    geoip_service.down = failure == "service down"
    if failure == "nothing listening":
        with socket_bound_to_loopback() as port:
            config["service_host"] = f"127.0.0.1:{port}"
            h = make_harness(**config)
            assert wait(h.app.geolocator.locate(address)) is None
    else:
        h = make_harness(**config)
        assert wait(h.app.geolocator.locate(address)) is None
    assert len(geolog.lines) == 1, geolog.lines
    assert address in geolog.lines[0] and "web service" in geolog.lines[0]
    assert LICENSE_KEY not in geolog.lines[0]


def test_web_service_failure_falls_back_to_the_database(make_harness, tmp_path, geoip_service, geolog):
    """When the web service is down the GeoLite2 database still places the address."""
    h = make_harness(**_service_config(geoip_service))
    write_city_database(tmp_path / "state" / "GeoLite2-City.mmdb", {"192.0.2.0/24": BERLIN})
    geoip_service.down = True
    assert wait(h.app.geolocator.locate("192.0.2.10")).city == "Berlin"
    assert len(geolog.lines) == 1


def _body(message: str) -> str:
    return email.message_from_string(message, policy=email.policy.default).get_content()


def _call_from(h, address, identity, name, *args, **named):
    """Call ``name`` as ``identity`` from client ``address`` (as a gate would)."""
    return wait(h.app.call(CallContext(h.app.api, identity, Gate.SOAP, address), name, list(args), named))


def test_password_notice_names_address_and_place(tmp_path, smtp):  # noqa: F811
    """A change from 192.0.2.10 is mailed as "from 192.0.2.10 (Berlin, Germany)"; from loopback, no place."""
    inbox, port = smtp
    h = Harness(tmp_path / "state", {"mail": {"enabled": "true", "smtp_port": str(port)}})
    try:
        write_city_database(tmp_path / "state" / "GeoLite2-City.mmdb", {"192.0.2.0/24": BERLIN})
        h.call(h.admin, "common_set_email", "root@example.net")
        site = h.add_site(email="site@example.com")
        _call_from(h, "192.0.2.10", h.admin, "auth_change_password", "Another-Password-1")
        eventually(lambda: len(inbox.messages) == 1)
        assert "by you from 192.0.2.10 (Berlin, Germany) on " in _body(inbox.messages[0][1])
        _call_from(h, "198.51.100.7", h.admin, "auth_reset_password", None, "example.com")
        eventually(lambda: len(inbox.messages) == 2)
        recipients, text = inbox.messages[1]
        assert recipients == ["site@example.com"] and "Subject: Password reset" in text
        assert "from 198.51.100.7 on " in _body(text)  # not in the database: the address alone
        _call_from(h, "127.0.0.1", site, "auth_change_password", "Another-Password-2")
        eventually(lambda: len(inbox.messages) == 3)
        assert "by you from 127.0.0.1 on " in _body(inbox.messages[2][1])
    finally:
        h.close()


class socket_bound_to_loopback:
    """A port on 127.0.0.1 that is bound but not listening: connections to it are refused."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()
