"""Render a Block's model repository plan: what its pods' init container fetches, and how
Triton serves each model (batching, instances) as the Block says. Pure.

The weights and signatures are artifacts (``spec.modelRepository``: a Triton repository
archive from ``braid models build``); what Triton does with them is the Block's to say. So
the plan carries the Block's serving settings, and the init container (``braid artifacts
assemble``) writes them into every served model's ``config.pbtxt`` through Triton's own
model-config schema: ``KIND_GPU`` on the GPUs the pod requests, ``KIND_CPU`` without.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from braid.api.artifact_uri import FETCHED_SCHEMES
from braid.api.repository_plan import PlannedArtifact, RepositoryPlan, ServingSettings
from braid.api.v1alpha1.block import BlockSpec

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


def render_repository_plan(spec: BlockSpec, models: Sequence[str]) -> RepositoryPlan:
    """The init container's plan for a Block whose repository is fetched."""
    repo = spec.model_repository
    if repo is None or not fetched(spec):
        raise ValueError("spec.modelRepository: only s3://, gs:// and https:// are fetched")
    return RepositoryPlan(
        artifacts=[
            PlannedArtifact(uri=repo.uri, sha256=repo.sha256, dest=REPOSITORY_DIR, unpack=True)
        ],
        repository=REPOSITORY_DIR,
        models=sorted(models),
        serving=serving_settings(spec),
    )


def plan_configmap_data(plan: RepositoryPlan) -> dict[str, Any]:
    return {PLAN_FILE: plan.model_dump_json(indent=2) + "\n"}
