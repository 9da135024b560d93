"""HTTPS certificate handling and the TLS policy, checked with a real listener and openssl s_client."""

import datetime
import ipaddress
import os
import shutil
import stat
import tempfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor, ssl, utils
from twisted.trial import unittest
from twisted.web import resource, server

from apiserver.config import ConfigError, load_config
from apiserver.transport.tls import (
    CERT_NAME, KEY_NAME, MOZILLA_INTERMEDIATE_CIPHERS, ensure_certificate, server_context_factory, write_self_signed,
)

OPENSSL = shutil.which("openssl")


class Ok(resource.Resource):
    """Answers every GET with ``ok``."""

    isLeaf = True

    def render_GET(self, request):
        return b"ok"


def make_config(directory, **frontend):
    """A config file in ``directory`` with state in ``directory/state`` and ``frontend`` keys."""
    lines = ["[core]", "state_dir = state", "[frontend]"] + [f"{k} = {v}" for k, v in frontend.items()]
    path = os.path.join(str(directory), "config.ini")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return load_config(path)


def load_cert(path) -> x509.Certificate:
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def test_self_signed_certificate_has_sans_and_private_key(tmp_path):
    """First start generates a certificate for the host name, localhost, 127.0.0.1 and ::1; key 0600."""
    config = make_config(tmp_path)
    cert_path, key_path = ensure_certificate(config)
    assert (cert_path, key_path) == (config.state_path(CERT_NAME), config.state_path(KEY_NAME))
    sans = load_cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    ips = sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in dns
    assert __import__("socket").gethostname() in dns
    assert ipaddress.ip_address("127.0.0.1") in ips and ipaddress.ip_address("::1") in ips
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(config.state_dir).st_mode) == 0o700


def test_existing_certificate_is_kept(tmp_path):
    """A second start reuses the generated pair instead of making a new one."""
    config = make_config(tmp_path)
    cert_path, _ = ensure_certificate(config)
    serial = load_cert(cert_path).serial_number
    ensure_certificate(config)
    assert load_cert(cert_path).serial_number == serial


def test_damaged_or_expiring_certificate_is_replaced(tmp_path):
    """A corrupt key or a certificate about to expire is generated again."""
    config = make_config(tmp_path)
    cert_path, key_path = ensure_certificate(config)
    serial = load_cert(cert_path).serial_number
    with open(key_path, "w") as fh:
        fh.write("not a key")
    ensure_certificate(config)
    assert load_cert(cert_path).serial_number != serial
    import apiserver.transport.tls as tls

    original = tls.VALIDITY
    tls.VALIDITY = datetime.timedelta(days=10)
    try:
        write_self_signed(cert_path, key_path, ["localhost"])
    finally:
        tls.VALIDITY = original
    short = load_cert(cert_path).serial_number
    ensure_certificate(config)
    assert load_cert(cert_path).serial_number != short


def test_configured_pair_is_used_and_checked(tmp_path):
    """A configured certificate/key pair is used as is; a half pair or a wrong key stops start-up."""
    other = tmp_path / "other"
    other.mkdir()
    write_self_signed(str(tmp_path / "site.crt"), str(tmp_path / "site.key"), ["api.example.com"])
    write_self_signed(str(other / "o.crt"), str(other / "o.key"), ["other.example.com"])
    config = make_config(tmp_path, tls_certificate="site.crt", tls_key="site.key")
    assert ensure_certificate(config) == (str(tmp_path / "site.crt"), str(tmp_path / "site.key"))
    assert not os.path.exists(config.state_path(CERT_NAME))
    with pytest.raises(ConfigError, match="must be set together"):
        ensure_certificate(make_config(tmp_path, tls_certificate="site.crt"))
    with pytest.raises(ConfigError, match="is not the private key of"):
        ensure_certificate(make_config(tmp_path, tls_certificate="site.crt", tls_key="other/o.key"))
    with pytest.raises(ConfigError, match="cannot read a PEM certificate"):
        ensure_certificate(make_config(tmp_path, tls_certificate="nothere.crt", tls_key="site.key"))


@pytest.mark.skipif(OPENSSL is None, reason="openssl command line tool not installed")
class TlsListenerTests(unittest.TestCase):
    """A real HTTPS listener on 127.0.0.1 probed with openssl s_client."""

    def setUp(self):
        directory = tempfile.mkdtemp(prefix="apiserver-tls-")  # trial's mktemp would write into the work tree
        self.addCleanup(shutil.rmtree, directory, True)
        self.config = make_config(directory)

    def listen(self, context_factory) -> int:
        port = reactor.listenSSL(0, server.Site(Ok()), context_factory,
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def handshake(self, port: int, *flags: str) -> tuple[bool, str]:
        """Run s_client with ``flags``; (handshake completed, output).  The client itself allows
        every protocol and cipher (SECLEVEL=0) unless ``flags`` says otherwise, so a refusal is the server's."""
        args = ["s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *flags]
        if "-cipher" not in flags:
            args += ["-cipher", "ALL:@SECLEVEL=0"]
        # stdin from /dev/null: s_client ends right after the handshake instead of waiting for input
        out, err, code = await utils.getProcessOutputAndValue(
            "/bin/sh", ["-c", 'exec "$0" "$@" </dev/null', OPENSSL, *args], env=os.environ)
        text = (out + err).decode("utf-8", "replace")
        return code == 0 and "Cipher is (NONE)" not in text, text

    async def test_tls12_and_tls13_accepted_with_intermediate_ciphers(self):
        """TLS 1.2 and 1.3 complete; TLS 1.2 negotiates a cipher of the intermediate list."""
        port = self.listen(server_context_factory(self.config))
        ok, text = await self.handshake(port, "-tls1_2")
        self.assertTrue(ok, text)
        cipher = text.split("Cipher is ", 1)[1].split()[0]
        self.assertIn(cipher, MOZILLA_INTERMEDIATE_CIPHERS.split(":"))
        ok, text = await self.handshake(port, "-tls1_3")
        self.assertTrue(ok, text)
        self.assertIn("TLSv1.3", text)

    async def test_tls10_tls11_and_weak_ciphers_refused(self):
        """TLS 1.0/1.1 and a TLS 1.2 cipher outside the list are refused by the server."""
        port = self.listen(server_context_factory(self.config))
        for flag in ("-tls1", "-tls1_1"):
            ok, text = await self.handshake(port, flag)
            self.assertFalse(ok, f"{flag} was accepted:\n{text}")
            self.assertIn("alert protocol version", text)
        ok, text = await self.handshake(port, "-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0")
        self.assertFalse(ok, text)

    async def test_probe_detects_a_permissive_server(self):
        """Control: the same probe completes TLS 1.1 against a server that allows it, so the refusal above is real."""
        cert_path, key_path = ensure_certificate(self.config)
        with open(cert_path, "rb") as c, open(key_path, "rb") as k:
            cert, key = x509.load_pem_x509_certificate(c.read()), serialization.load_pem_private_key(k.read(), None)
        permissive = ssl.CertificateOptions(
            privateKey=key, certificate=cert,
            insecurelyLowerMinimumTo=ssl.TLSVersion.TLSv1_0)
        permissive.getContext().set_cipher_list(b"ALL:@SECLEVEL=0")  # OpenSSL 3 needs level 0 for TLS 1.1
        port = self.listen(permissive)
        ok, text = await self.handshake(port, "-tls1_1")
        self.assertTrue(ok, text)
