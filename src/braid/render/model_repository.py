"""Render a Block's model repository plan: what its pods' init container fetches, and how
Triton serves each model (batching, instances) as the Block says. Pure.

The weights and signatures are artifacts (``spec.modelRepository``: a Triton repository
archive from ``braid models build``); what Triton does with them is the Block's to say. So
the plan carries the Block's serving settings, and the init container (``braid artifacts
assemble``) writes them into every served model's ``config.pbtxt`` through Triton's own
model-config schema: ``KIND_GPU`` on the GPUs the pod requests, ``KIND_CPU`` without.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from braid.api.artifact_uri import FETCHED_SCHEMES
from braid.api.common import ArtifactRef
from braid.api.repository_plan import PlannedArtifact, RepositoryPlan, ServingSettings
from braid.api.v1alpha1.block import BlockSpec

ONNX_FILE = "model.onnx"
"""Where an ONNX link lands in its model's version 1, as ``braid models build`` lays a
Triton model out (braid's onnxruntime runner and Triton's onnxruntime backend read it)."""
REPOSITORY_DIR = "repository"
"""Where the Block's repository archive is unpacked, under the pod's model root."""
PLAN_FILE = "plan.json"


def fetched(spec: BlockSpec) -> bool:
    """Whether the Block's repository is fetched by an init container (not mounted)."""
    repo = spec.model_repository
    return repo is not None and repo.uri.partition("://")[0] in FETCHED_SCHEMES


def serving_settings(spec: BlockSpec) -> ServingSettings:
    """The Block's batching and instances; GPU pools get ``KIND_GPU`` on every GPU the pod
    requests (the device plugin shows them to the container as devices 0..n-1)."""
    batching = spec.triton.dynamic_batching
    gpus = list(range(spec.resources.gpu))
    return ServingSettings(
        max_batch_size=spec.triton.max_batch_size,
        dynamic_batching=batching is not None,
        max_queue_delay_microseconds=batching.max_queue_delay_microseconds if batching else 0,
        preferred_batch_sizes=list(batching.preferred_batch_sizes) if batching else [],
        instance_kind="KIND_GPU" if gpus else "KIND_CPU",
        instance_count=spec.triton.instance_count,
        gpus=gpus,
    )


def link_artifact(name: str, artifact: ArtifactRef, block_secret: str | None) -> PlannedArtifact:
    """Where the init container puts the artifact of a Link the Block serves.

    A ``triton-repository`` artifact is the link's whole Triton model (an archive of
    ``config.pbtxt`` and its version directory), unpacked as the model's directory. A
    ``onnx`` artifact is the link's exported model, placed in version 1 over what the Block's
    repository ships; its config and runner come from there. Either way the Link's artifact
    is what is served, and a link model missing from both stops the pod with a reason.
    """
    field = f"Link {name}: spec.artifact"
    if artifact.uri.partition("://")[0] not in FETCHED_SCHEMES:
        raise ValueError(
            f"{field}.uri: {artifact.uri!r}: the host Block's repository is fetched, so its "
            "links' artifacts are too: only s3://, gs:// and https:// are fetched"
        )
    if artifact.credentials_secret not in (None, block_secret):
        # One fetcher, one environment: two Secrets would set the same keys, and one would
        # silently win.
        raise ValueError(
            f"{field}.credentialsSecret: {artifact.credentials_secret!r} differs from the host "
            f"Block's spec.modelRepository.credentialsSecret {block_secret!r}; the host's pods "
            "fetch every artifact with the Block's credentials"
        )
    if artifact.format == "torchscript":
        raise ValueError(f"{field}.format: 'torchscript' is not served by the block runtime (ONNX)")
    if artifact.format == "triton-repository":
        return PlannedArtifact(
            uri=artifact.uri, sha256=artifact.sha256, dest=f"{REPOSITORY_DIR}/{name}", unpack=True
        )
    return PlannedArtifact(
        uri=artifact.uri,
        sha256=artifact.sha256,
        dest=f"{REPOSITORY_DIR}/{name}/1/{ONNX_FILE}",
    )


def servable_links(
    links: Mapping[str, Mapping[str, Any]], host: BlockSpec
) -> dict[str, ArtifactRef | None]:
    """The Links (Triton model name to ``spec.artifact``) the host Block's pods load, each
    with the artifact they fetch for it.

    A mounted repository holds its links itself (no artifact to fetch: None). A fetched one
    fetches each link's artifact; a Link whose artifact its pods cannot fetch is left out, so
    the host keeps serving, and the Link's own Ready condition says why
    (``link_artifact_problem``).
    """
    if host.model_repository is None or not fetched(host):
        return dict.fromkeys(links)
    out: dict[str, ArtifactRef | None] = {}
    for name, artifact in links.items():
        try:
            ref = ArtifactRef.model_validate(artifact)
            link_artifact(name, ref, host.model_repository.credentials_secret)
        except ValueError:  # pydantic's ValidationError is one
            continue
        out[name] = ref
    return out


def link_artifact_problem(
    link: str, artifact: ArtifactRef, host_block: Mapping[str, Any]
) -> str | None:
    """Why the host Block's pods could not fetch a Link's artifact, or None."""
    try:
        spec = BlockSpec.model_validate(host_block.get("spec") or {})
    except ValidationError:
        return None  # the Block's own reconcile reports its spec
    if spec.model_repository is None or not fetched(spec):
        return None
    try:
        link_artifact(link, artifact, spec.model_repository.credentials_secret)
    except ValueError as exc:
        return str(exc)
    return None


def render_repository_plan(
    spec: BlockSpec,
    models: Sequence[str],
    link_artifacts: Mapping[str, ArtifactRef] | None = None,
) -> RepositoryPlan:
    """The init container's plan for a Block whose repository is fetched: the Block's
    repository first, then the artifact of each Link the Block serves (``link_artifacts``,
    Triton model name to artifact), so a Link's own artifact is what its model serves."""
    repo = spec.model_repository
    if repo is None or not fetched(spec):
        raise ValueError("spec.modelRepository: only s3://, gs:// and https:// are fetched")
    links = sorted((link_artifacts or {}).items())
    return RepositoryPlan(
        artifacts=[
            PlannedArtifact(uri=repo.uri, sha256=repo.sha256, dest=REPOSITORY_DIR, unpack=True),
            *(link_artifact(name, ref, repo.credentials_secret) for name, ref in links),
        ],
        repository=REPOSITORY_DIR,
        models=sorted(models),
        serving=serving_settings(spec),
    )


def plan_configmap_data(plan: RepositoryPlan) -> dict[str, Any]:
    return {PLAN_FILE: plan.model_dump_json(indent=2) + "\n"}
