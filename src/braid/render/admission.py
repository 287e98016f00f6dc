"""What admission checks beyond the schema: rules that need other objects or the operator's
configuration. Pure: specs and the objects they refer to in, problems out.

The CRD schema (patterns, lengths, CEL) refuses what one object alone shows. These checks
need the Model a Block serves, the host's consent (``publish.exposedBlocks``), the names a
namespace's Models take in Triton, the operator's image allow-list and whether local paths
are allowed. The validating webhook (``braid.kube.webhook``) runs them at admission, and the
reconcilers run them again (an object stored before the webhook existed, or a cluster
without it, still fails with a reason instead of being served). Every problem starts with
the field it is about and names the offending value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from braid.api.common import LOCAL_URI_SCHEMES, has_parent_segment
from braid.api.v1alpha1.block import BlockSpec
from braid.api.v1alpha1.link import LinkSpec
from braid.api.v1alpha1.model import ModelSpec
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.render.naming import block_model_name, exit_head_model_name


@dataclass(frozen=True)
class AdmissionConfig:
    """The operator's side of admission (``BRAID_OPERATOR_*`` settings)."""

    allow_local_paths: bool = False
    """file:// URIs (hostPath mounts, catalogs read from the operator's disk): the local
    stack only, where the operator, Triton and the user share one machine."""
    image_prefixes: tuple[str, ...] = field(default_factory=tuple)
    """Images a Block may run must start with one of these; empty allows any."""
    fetcher_image: str = "ghcr.io/braid-dev/braid-gateway:0.1.0"
    """The image of the init container that fetches s3/gs/https repositories (the operator
    renders it; tenants do not choose it, so the allow-list does not apply)."""
    triton_node_selector: Mapping[str, str] = field(default_factory=dict)
    """Node labels every Triton pod also selects (the platform's, not the tenant's)."""
    triton_tolerations: Sequence[Mapping[str, str]] = field(default_factory=tuple)
    """Tolerations every Triton pod gets (dedicated nodes' taints)."""


# The condition reason of a refusal, by the field its first problem is about.
_REASONS = (
    ("spec.partitions", "PartitionOutOfRange"),
    ("spec.modelRef.namespace", "OtherNamespace"),
    ("spec.servedBy", "ServedByMismatch"),
    ("spec.triton.image", "ImageNotAllowed"),
    ("metadata.name", "NameTaken"),
)


def refusal_reason(problems: Sequence[str]) -> str:
    """A CamelCase reason for a condition that reports ``problems``."""
    first = problems[0] if problems else ""
    if "refused in cluster mode" in first:
        return "LocalPathRefused"
    if "has not consented" in first:
        return "NoConsent"
    return next((reason for prefix, reason in _REASONS if first.startswith(prefix)), "InvalidSpec")


ModelLookup = Callable[[str, str], ModelSpec | None]
"""(namespace, name) -> the Model's spec, or None when there is no such Model (yet)."""


def uri_problems(field_path: str, uri: str, config: AdmissionConfig) -> list[str]:
    scheme = uri.partition("://")[0]
    out = []
    if scheme in LOCAL_URI_SCHEMES and not config.allow_local_paths:
        out.append(
            f"{field_path}: {uri!r}: {scheme}:// names a path on a node or in the operator; "
            "it is refused in cluster mode (allowed on the local stack only)"
        )
    if has_parent_segment(uri):
        out.append(f"{field_path}: {uri!r} has a '..' path segment")
    return out


def image_problems(field_path: str, image: str, config: AdmissionConfig) -> list[str]:
    if not config.image_prefixes or any(image.startswith(p) for p in config.image_prefixes):
        return []
    return [
        f"{field_path}: image {image!r} is not under an allowed prefix "
        f"({', '.join(config.image_prefixes)})"
    ]


def _own_namespace(field_path: str, ref_namespace: str | None, namespace: str) -> list[str]:
    if ref_namespace is None or ref_namespace == namespace:
        return []
    return [
        f"{field_path}: namespace {ref_namespace!r} is not the object's own namespace "
        f"{namespace!r}; a provider acts only on its own models"
    ]


def model_problems(spec: ModelSpec, config: AdmissionConfig) -> list[str]:
    out = list(spec.partition.problems())
    out += uri_problems("spec.artifact.uri", spec.artifact.uri, config)
    if spec.catalog is not None:
        out += uri_problems("spec.catalog.uri", spec.catalog.uri, config)
    return out


def block_problems(
    namespace: str, spec: BlockSpec, model: ModelSpec | None, config: AdmissionConfig
) -> list[str]:
    """A Block serves a Model of its own namespace, within its partition, from an allowed
    image and repository. ``model`` None (not created yet) skips the partition check: the
    operator reports the missing Model as a condition until it appears."""
    out = _own_namespace("spec.modelRef.namespace", spec.model_ref.namespace, namespace)
    out += image_problems("spec.triton.image", spec.triton.image, config)
    if spec.model_repository is not None:
        out += uri_problems("spec.modelRepository.uri", spec.model_repository.uri, config)
    if model is not None:
        n = len(model.partition.blocks)
        if spec.partitions.last >= n:
            out.append(
                f"spec.partitions.last: {spec.partitions.last} is beyond Model "
                f"{spec.model_ref.name}'s {n} blocks (0..{n - 1})"
            )
    return out


def _block_in_range(field_path: str, index: int, model: str, spec: ModelSpec) -> list[str]:
    n = len(spec.partition.blocks)
    if index < n:
        return []
    return [f"{field_path}: block {index} is beyond Model {model}'s {n} blocks (0..{n - 1})"]


def _consent(field_path: str, index: int, model: str, spec: ModelSpec) -> list[str]:
    """The host consents to a cross link through block ``index`` by publishing it."""
    if index >= len(spec.partition.blocks):
        return []  # reported as out of range
    block = spec.partition.blocks[index].name
    exposed = spec.publish.exposed_blocks if spec.publish is not None else []
    if block in exposed:
        return []
    return [
        f"{field_path}: block {index} ({block}) of host Model {model} is not in its "
        f"spec.publish.exposedBlocks {sorted(exposed)}; the host has not consented"
    ]


def reserved_triton_names(models: Sequence[tuple[str, ModelSpec]]) -> set[str]:
    """Triton model names the namespace's Models serve themselves (blocks and exit heads)."""
    out = set()
    for name, spec in models:
        for i, block in enumerate(spec.partition.blocks):
            out.add(block_model_name(name, block.name))
            out.add(exit_head_model_name(name, i))
    return out


def link_problems(
    name: str,
    namespace: str,
    spec: LinkSpec,
    models: ModelLookup,
    namespace_models: Sequence[tuple[str, ModelSpec]],
    served_by_model: str | None,
    config: AdmissionConfig,
) -> list[str]:
    """Namespaces resolved, indices within the models, the host's consent, no name taken.

    ``served_by_model`` is the Model the serving Block serves (None: no such Block yet).
    """
    out = uri_problems("spec.artifact.uri", spec.artifact.uri, config)
    if spec.artifact.format == "torchscript":
        out.append(
            "spec.artifact.format: 'torchscript': a Link is served by the block runtime, which "
            "runs ONNX; give the onnx file `braid models build` exports (or a triton-repository)"
        )
    ends = {"from": spec.from_, "to": spec.to}
    resolved = {
        end: (ref.model.namespace or namespace, ref.model.name) for end, ref in ends.items()
    }
    if spec.type == "skip":
        for end, (ns, _) in resolved.items():
            if ns != namespace:
                out.append(
                    f"spec.{end}.model.namespace: {ns!r}: a skip link stays inside a model of "
                    f"the Link's own namespace {namespace!r}"
                )
    else:
        host_end = "to" if spec.type == "cross-entry" else "from"
        local_end = "from" if host_end == "to" else "to"
        if resolved[host_end][0] != namespace:
            out.append(
                f"spec.{host_end}.model.namespace: {resolved[host_end][0]!r}: a {spec.type} "
                f"link lives in its host's namespace, so {host_end}.model is there ({namespace!r})"
            )
        if resolved[local_end][0] == namespace:
            out.append(
                f"spec.{local_end}.model.namespace: {resolved[local_end][0]!r}: a {spec.type} "
                f"link connects another provider's model to this namespace's; {local_end}.model "
                "must be in another namespace"
            )
    for end, (ns, model_name) in resolved.items():
        model = models(ns, model_name)
        if model is None:
            continue  # the operator reports it until the Model exists
        index = ends[end].block
        out += _block_in_range(f"spec.{end}.block", index, model_name, model)
        if spec.type != "skip" and ns == namespace:
            out += _consent(f"spec.{end}.block", index, model_name, model)
    if name in reserved_triton_names(namespace_models):
        out.append(
            f"metadata.name: {name!r} is the Triton model of one of namespace {namespace!r}'s "
            "own Models (a block or an exit head); a Link may not take it"
        )
    if spec.served_by is not None:
        out += _own_namespace("spec.servedBy.namespace", spec.served_by.namespace, namespace)
        host_model = resolved["to" if spec.type == "cross-entry" else "from"][1]
        if served_by_model is not None and served_by_model != host_model:
            out.append(
                f"spec.servedBy: Block {spec.served_by.name} serves Model {served_by_model}, "
                f"not {host_model}, whose block the link attaches to"
            )
    return out


def policy_problems(namespace: str, spec: OffloadPolicySpec, model: ModelSpec | None) -> list[str]:
    """The policy acts on its own namespace's Model; its exits sit on exit heads."""
    out = _own_namespace("spec.modelRef.namespace", spec.model_ref.namespace, namespace)
    seen: set[tuple[str, str | None]] = set()
    for i, host in enumerate(spec.allowed_hosts):
        if (host.namespace, host.model) in seen:
            out.append(
                f"spec.allowedHosts[{i}]: {host.namespace}/{host.model or '*'} is listed twice"
            )
        seen.add((host.namespace, host.model))
        if host.namespace == namespace:
            out.append(
                f"spec.allowedHosts[{i}].namespace: {host.namespace!r} is the policy's own "
                "namespace; allowedHosts names other providers"
            )
    if model is None:
        return out
    blocks = model.partition.blocks
    for i, rule in enumerate(spec.early_exits):
        if rule.block >= len(blocks):
            out.append(
                f"spec.earlyExits[{i}].block: {rule.block} is beyond Model "
                f"{spec.model_ref.name}'s {len(blocks)} blocks"
            )
        elif not blocks[rule.block].exit_head:
            out.append(
                f"spec.earlyExits[{i}].block: block {rule.block} ({blocks[rule.block].name}) "
                f"of Model {spec.model_ref.name} has no exit head (exitHead: false)"
            )
    if spec.dimee is not None and spec.dimee.enabled:
        layers = blocks[-1].last_layer + 1
        if spec.dimee.edge_layers > layers:
            out.append(
                f"spec.dimee.edgeLayers: {spec.dimee.edge_layers} exceeds Model "
                f"{spec.model_ref.name}'s {layers} layers"
            )
    return out
