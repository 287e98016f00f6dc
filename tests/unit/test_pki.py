"""The local cluster's certificate authority: chains, names, reuse and renewal."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from braid_dev.stack import pki

SERVER = pki.CertSpec(
    "server", "kube-apiserver", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True
)
CLIENT = pki.CertSpec("admin", "braid-admin", organizations=("system:masters",), client=True)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _verify(ca_pem: bytes, leaf_pem: bytes) -> None:
    ca, leaf = _cert(ca_pem), _cert(leaf_pem)
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    leaf.verify_directly_issued_by(ca)


def test_leaf_certificates_chain_to_the_ca_and_carry_their_names() -> None:
    ca = pki.generate_ca()
    server = pki.issue_cert(ca, SERVER)
    client = pki.issue_cert(ca, CLIENT)
    _verify(ca.cert_pem, server.cert_pem)
    _verify(ca.cert_pem, client.cert_pem)

    sans = _cert(server.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    subject = _cert(client.cert_pem).subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "braid-admin"


def test_usages_keep_client_and_server_certificates_apart() -> None:
    ca = pki.generate_ca()

    def usages(spec: pki.CertSpec) -> list[x509.ObjectIdentifier]:
        cert = _cert(pki.issue_cert(ca, spec).cert_pem)
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert usages(SERVER) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert usages(CLIENT) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_cert = _cert(ca.cert_pem)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_ensure_pki_reuses_what_matches_and_reissues_what_does_not(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    first = pki.ensure_pki(root, [SERVER, CLIENT])
    ca_before = first.ca_cert.read_bytes()
    assert (first.key("admin").stat().st_mode & 0o777) == 0o600

    pki.ensure_pki(root, [SERVER, CLIENT])
    assert first.ca_cert.read_bytes() == ca_before  # kubeconfigs handed out stay valid

    first.key("server").unlink()  # a crash half-way through
    pki.ensure_pki(root, [SERVER, CLIENT])
    assert first.ca_cert.read_bytes() != ca_before
    _verify(first.ca_cert.read_bytes(), first.cert("server").read_bytes())


def test_a_second_ca_signs_only_the_certificates_that_name_it(tmp_path: Path) -> None:
    proxy = pki.CertSpec("front-proxy-client", "front-proxy-client", client=True, issuer="fp-ca")
    store = pki.ensure_pki(tmp_path, [CLIENT, proxy])
    _verify(store.cert("fp-ca").read_bytes(), store.cert("front-proxy-client").read_bytes())
    _verify(store.ca_cert.read_bytes(), store.cert("admin").read_bytes())
    assert store.cert("fp-ca").read_bytes() != store.ca_cert.read_bytes()


def test_service_account_keys_are_a_matching_pair() -> None:
    pair = pki.generate_service_account_keys()
    assert b"PUBLIC KEY" in pair.cert_pem
    assert b"PRIVATE KEY" in pair.key_pem
