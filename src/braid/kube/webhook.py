"""The validating admission webhook the operator serves for braid kinds.

The CRD schema refuses what one object shows; this refuses what needs other objects or the
operator's configuration (``braid.render.admission``): a Block serving another namespace's
Model, a Link without the host's consent or taking a host model's Triton name, a policy
acting on another provider's model, file:// URIs in cluster mode, images outside the
allow-list. The ``ValidatingWebhookConfiguration`` (``braid.render.webhook_config``: ``failurePolicy:
Fail``, so an operator that is down refuses braid objects rather than admit them unchecked;
``sideEffects: None``, so the API server calls it on dry-runs as well) is applied by the
chart or the local stack's rig, not by the operator, whose account keeps least privilege.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from braid.api.common import GROUP
from braid.api.v1alpha1.block import BlockSpec
from braid.api.v1alpha1.link import LinkSpec
from braid.api.v1alpha1.model import ModelSpec
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.kube.client import Kube, default_kube
from braid.kube.errors import SpecError
from braid.kube.reconcile import link_refusals, model_spec, parse_spec
from braid.render.admission import (
    AdmissionConfig,
    block_problems,
    model_problems,
    policy_problems,
)
from braid.render.webhook_config import handler_id
from braid.settings import OperatorSettings

OPERATIONS = ["CREATE", "UPDATE"]


def admission_config(settings: OperatorSettings) -> AdmissionConfig:
    return AdmissionConfig(
        allow_local_paths=settings.allow_local_paths,
        image_prefixes=tuple(settings.image_prefixes),
        fetcher_image=settings.fetcher_image,
        triton_node_selector=dict(settings.triton_node_selector),
        triton_tolerations=tuple(settings.triton_tolerations),
    )


def _refuse(problems: list[str]) -> None:
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


SpecT = TypeVar("SpecT", ModelSpec, BlockSpec, LinkSpec, OffloadPolicySpec)


def _spec(model: type[SpecT], body: kopf.Body) -> SpecT:
    """The spec as the operator will read it; a spec it cannot parse is refused now."""
    try:
        return parse_spec(model, dict(body))
    except SpecError as exc:
        raise kopf.AdmissionError(str(exc), code=422) from exc


def check_model(body: kopf.Body, config: AdmissionConfig) -> None:
    _refuse(model_problems(_spec(ModelSpec, body), config))


def check_block(body: kopf.Body, config: AdmissionConfig, kube: Kube) -> None:
    spec = _spec(BlockSpec, body)
    namespace = body["metadata"]["namespace"]
    model = model_spec(kube, spec.model_ref.namespace or namespace, spec.model_ref.name)
    _refuse(block_problems(namespace, spec, model, config))


def check_link(body: kopf.Body, config: AdmissionConfig, kube: Kube) -> None:
    meta = body["metadata"]
    spec = _spec(LinkSpec, body)
    _refuse(link_refusals(kube, meta.get("name") or "", meta["namespace"], spec, config))


def check_policy(body: kopf.Body, kube: Kube) -> None:
    spec = _spec(OffloadPolicySpec, body)
    namespace = body["metadata"]["namespace"]
    model = model_spec(kube, spec.model_ref.namespace or namespace, spec.model_ref.name)
    _refuse(policy_problems(namespace, spec, model))


# -- kopf handlers: one per kind, registered only when a webhook port is configured ----------


def _unchanged(operation: str | None, body: kopf.Body, old: Any) -> bool:
    """An update that leaves the spec as it was (kopf's annotations, finalizers, owner
    references, a deletion) is admitted: refusing it would leave an object stored before a
    rule existed impossible to finalize or delete."""
    if operation != "UPDATE":
        return False
    if body.get("metadata", {}).get("deletionTimestamp"):
        return True
    return old is not None and dict(old.get("spec") or {}) == dict(body.get("spec") or {})


def register_webhooks(settings: OperatorSettings) -> None:
    """The four validating handlers, and the server kopf announces them with."""
    config = admission_config(settings)
    options: dict[str, Any] = {"operations": OPERATIONS, "ignore_failures": False}

    @kopf.on.startup()
    def serve_webhooks(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = webhook_server(operator_settings)

    operator_settings = settings

    @kopf.on.validate(GROUP, "models", id=handler_id("models"), **options)
    def validate_model(body: kopf.Body, old: Any = None, operation: Any = None, **_: Any) -> None:
        if not _unchanged(operation, body, old):
            check_model(body, config)

    @kopf.on.validate(GROUP, "blocks", id=handler_id("blocks"), **options)
    def validate_block(body: kopf.Body, old: Any = None, operation: Any = None, **_: Any) -> None:
        if not _unchanged(operation, body, old):
            check_block(body, config, default_kube())

    @kopf.on.validate(GROUP, "links", id=handler_id("links"), **options)
    def validate_link(body: kopf.Body, old: Any = None, operation: Any = None, **_: Any) -> None:
        if not _unchanged(operation, body, old):
            check_link(body, config, default_kube())

    @kopf.on.validate(GROUP, "offloadpolicies", id=handler_id("offloadpolicies"), **options)
    def validate_policy(body: kopf.Body, old: Any = None, operation: Any = None, **_: Any) -> None:
        if not _unchanged(operation, body, old):
            check_policy(body, default_kube())


# -- the server: a URL on the local stack, a Service in a cluster ---------------------------


def self_signed_certificate(hostnames: list[str], directory: Path) -> tuple[Path, Path]:
    """A self-signed serving certificate (its own CA) for ``hostnames``; (cert, key) paths.

    kopf's own self-signed flow needs ``certbuilder``; ``cryptography`` is already a
    dependency, so the certificate is made with it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def webhook_server(settings: OperatorSettings) -> kopf.WebhookServer:
    """kopf's HTTPS server on the configured port, with the mounted certificate (the chart's
    Secret, the rig's files) or, without one, a self-signed certificate for ``webhook_host``."""
    host = settings.webhook_host or "127.0.0.1"
    if settings.webhook_cert_dir is not None:
        certfile = settings.webhook_cert_dir / "tls.crt"
        pkeyfile = settings.webhook_cert_dir / "tls.key"
    else:
        certfile, pkeyfile = self_signed_certificate(
            [host], Path(tempfile.mkdtemp(prefix="braid-webhook-"))
        )
    return kopf.WebhookServer(
        addr=settings.webhook_addr,
        port=settings.webhook_port,
        host=host,
        certfile=str(certfile),
        pkeyfile=str(pkeyfile),
    )
