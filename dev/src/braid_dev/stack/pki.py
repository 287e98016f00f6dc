"""A small certificate authority for the local control plane.

The local cluster runs with TLS and client-certificate authentication everywhere, like a
kubeadm cluster, so RBAC, the Node authorizer and service-account tokens behave as they do in
production. ``cryptography`` makes the keys and certificates; nothing shells out to openssl.

Keys are ECDSA P-256: generating one takes microseconds (RSA 2048 takes tens of
milliseconds on a busy 2-core machine) and every component here accepts them, including the
service-account signer (ES256).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from braid.logs import log_event

logger = logging.getLogger(__name__)

#: Bumped whenever the set of certificates or their contents change, so old PKI is replaced.
PKI_SCHEMA = 1
CERT_VALIDITY = dt.timedelta(days=365)
#: Certificates closer than this to expiry are reissued on the next ``up``.
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertSpec:
    """One leaf certificate to issue: who it names and what it may be used for."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    #: Which CA signs it: "ca" (the cluster CA) or another CA name, e.g. "front-proxy-ca".
    issuer: str = "ca"


@dataclass(frozen=True)
class KeyPair:
    """PEM bytes of a certificate and its private key."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_ca(common_name: str = "braid-local-ca") -> KeyPair:
    """A self-signed CA that signs every serving and client certificate of the cluster."""
    key = _new_key()
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Back-dated a little: clock skew between issuing and a component's first check.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY * 2)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_cert(ca: KeyPair, spec: CertSpec) -> KeyPair:
    """A leaf certificate for ``spec`` signed by ``ca``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the braid CA key must be an ECDSA key")
    key = _new_key()
    now = _now()
    usages: list[x509.ObjectIdentifier] = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate_service_account_keys() -> KeyPair:
    """The key pair that signs and verifies service-account tokens.

    Returned as (public key PEM, private key PEM) in a :class:`KeyPair` so the apiserver can
    be given the public half for verification and the private half for signing.
    """
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public, _key_pem(key))


def cert_expires(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write then rename, so a crash never leaves half a certificate behind."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Pki:
    """Where the cluster's CA, leaf certificates and service-account keys live on disk."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def front_proxy_ca_cert(self) -> Path:
        """The CA the apiserver trusts for request-header (aggregation layer) identities."""
        return self.cert("front-proxy-ca")

    @property
    def sa_public(self) -> Path:
        return self.root / "sa.pub"

    @property
    def sa_private(self) -> Path:
        return self.root / "sa.key"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def read(self, name: str) -> KeyPair:
        return KeyPair(self.cert(name).read_bytes(), self.key(name).read_bytes())

    def read_ca(self) -> KeyPair:
        return KeyPair(self.ca_cert.read_bytes(), self.ca_key.read_bytes())


def _ca_names(specs: Sequence[CertSpec]) -> list[str]:
    """The CAs ``specs`` need; the cluster CA ("ca") always exists."""
    return sorted({"ca", *(spec.issuer for spec in specs)})


def _fingerprint(specs: Sequence[CertSpec]) -> str:
    return json.dumps(
        {"schema": PKI_SCHEMA, "certs": [spec.__dict__ for spec in specs]},
        sort_keys=True,
        default=list,
    )


def _current(pki: Pki, specs: Sequence[CertSpec]) -> bool:
    """Whether the PKI on disk is complete, matches ``specs`` and is not about to expire."""
    try:
        if pki.manifest.read_text() != _fingerprint(specs):
            return False
        paths = [pki.sa_public, pki.sa_private]
        for ca in _ca_names(specs):
            paths += [pki.cert(ca), pki.key(ca)]
        for spec in specs:
            paths += [pki.cert(spec.name), pki.key(spec.name)]
        if not all(p.is_file() and p.stat().st_size > 0 for p in paths):
            return False
        horizon = _now() + RENEW_BEFORE
        names = [spec.name for spec in specs] + _ca_names(specs)
        return all(cert_expires(pki.cert(name).read_bytes()) > horizon for name in names)
    except (OSError, ValueError):
        return False


def ensure_pki(root: Path, specs: Sequence[CertSpec]) -> Pki:
    """Reuse the PKI under ``root`` when it matches ``specs``; otherwise issue all of it anew.

    Reuse keeps kubeconfigs handed out earlier valid across ``down``/``up``. Anything
    incomplete (a crash mid-way), stale (other SANs, e.g. a new host address) or close to
    expiry is replaced as a whole, so the CA and its leaves never disagree. The manifest is
    written last: its presence means the rest is complete.
    """
    pki = Pki(root)
    if _current(pki, specs):
        log_event(logger, "pki.reused", root=root)
        return pki
    root.mkdir(parents=True, exist_ok=True)
    pki.manifest.unlink(missing_ok=True)
    cas: dict[str, KeyPair] = {}
    for name in _ca_names(specs):
        cas[name] = generate_ca(f"braid-{name}")
        _write_atomic(pki.cert(name), cas[name].cert_pem, 0o644)
        _write_atomic(pki.key(name), cas[name].key_pem, 0o600)
    sa = generate_service_account_keys()
    _write_atomic(pki.sa_public, sa.cert_pem, 0o644)
    _write_atomic(pki.sa_private, sa.key_pem, 0o600)
    for spec in specs:
        pair = issue_cert(cas[spec.issuer], spec)
        _write_atomic(pki.cert(spec.name), pair.cert_pem, 0o644)
        _write_atomic(pki.key(spec.name), pair.key_pem, 0o600)
    _write_atomic(pki.manifest, _fingerprint(specs).encode(), 0o644)
    log_event(logger, "pki.issued", root=root, certs=len(specs))
    return pki
