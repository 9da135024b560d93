"""The HTTPS listener's certificate and TLS policy.

The seed: SSLv2/SSLv3 are never offered and TLS 1.0/1.1 are disabled; TLS 1.2 and 1.3 remain,
with Mozilla's "intermediate" cipher list.  Without a configured certificate a self-signed one
is generated on first start (SANs: the host name, localhost, 127.0.0.1, ::1) and kept in
``state_dir`` with the key readable by the owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from apiserver.config import Config, ConfigError
from apiserver.files import atomic_write

#: Mozilla "intermediate" (server side TLS 5.7) for TLS 1.2; TLS 1.3 suites are OpenSSL's own.
MOZILLA_INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))

CERT_NAME = "tls-selfsigned.crt"
KEY_NAME = "tls-selfsigned.key"
VALIDITY = datetime.timedelta(days=825)
RENEW_BEFORE = datetime.timedelta(days=30)


def ensure_certificate(config: Config) -> tuple[str, str]:
    """The certificate and key files for HTTPS: the configured pair, or the self-signed one.

    A configured pair (``[frontend] tls_certificate`` and ``tls_key``, relative to the config
    file) must both be given, readable and match, else :class:`ConfigError`.  Otherwise the
    self-signed pair in ``state_dir`` is created when missing, unreadable or about to expire.
    """
    cert_setting = config.get("frontend", "tls_certificate")
    key_setting = config.get("frontend", "tls_key")
    if cert_setting or key_setting:
        if not (cert_setting and key_setting):
            missing = "tls_key" if cert_setting else "tls_certificate"
            raise ConfigError("frontend", missing, "tls_certificate and tls_key must be set together")
        cert_path = os.path.join(config.base_dir, cert_setting)
        key_path = os.path.join(config.base_dir, key_setting)
        check_pair(cert_path, key_path)
        return cert_path, key_path
    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
    cert_path, key_path = config.state_path(CERT_NAME), config.state_path(KEY_NAME)
    if not _self_signed_is_usable(cert_path, key_path):
        write_self_signed(cert_path, key_path, _host_names(config))
    return cert_path, key_path


def check_pair(cert_path: str, key_path: str) -> None:
    """Raise ConfigError unless the PEM files exist, parse and belong together."""
    try:
        with open(cert_path, "rb") as fh:
            cert = x509.load_pem_x509_certificates(fh.read())[0]
    except (OSError, ValueError) as exc:
        raise ConfigError("frontend", "tls_certificate",
                          f"cannot read a PEM certificate from {cert_path}: {exc}") from None
    try:
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError("frontend", "tls_key",
                          f"cannot read an unencrypted PEM private key from {key_path}: {exc}") from None
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ConfigError("frontend", "tls_key", f"{key_path} is not the private key of {cert_path}")


def write_self_signed(cert_path: str, key_path: str, names: list[str]) -> None:
    """Generate an RSA-2048 key and a self-signed certificate whose SANs are ``names``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "apiserver self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=True, key_cert_sign=True, content_commitment=False,
            data_encipherment=False, key_agreement=False, crl_sign=False, encipher_only=False,
            decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    atomic_write(key_path, key_pem.decode("ascii"), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), mode=0o644)


def _self_signed_is_usable(cert_path: str, key_path: str) -> bool:
    try:
        check_pair(cert_path, key_path)
        with open(cert_path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
    except (ConfigError, OSError, ValueError):
        return False
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > RENEW_BEFORE


def _host_names(config: Config) -> list[str]:
    names = []
    for name in (socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1", "::1",
                 config.get("frontend", "bind")):
        if name and name not in names and name not in ("0.0.0.0", "::"):
            names.append(name)
    return names


def server_context_factory(config: Config):
    """An ``IOpenSSLServerConnectionCreator`` for the HTTPS listener: TLS 1.2+, intermediate ciphers."""
    from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

    cert_path, key_path = ensure_certificate(config)
    with open(cert_path, "rb") as fh:
        chain = x509.load_pem_x509_certificates(fh.read())
    with open(key_path, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    leaf, *intermediates = chain
    # cryptography objects: pyOpenSSL deprecates its own PKey/X509 wrappers for contexts
    return CertificateOptions(
        privateKey=key,
        certificate=leaf,
        extraCertChain=intermediates or None,
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(MOZILLA_INTERMEDIATE_CIPHERS),
        acceptableProtocols=[b"http/1.1"],
    )
