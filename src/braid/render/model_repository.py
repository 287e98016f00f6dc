"""Render a Block's model repository at deploy time: the Triton configs follow the Block.

The weights are artifacts (fetched by the pod's init container, ``braid artifacts
assemble``); what Triton does with them is the Block's to say. So ``config.pbtxt`` is not
taken from the export but rendered here from ``Block.spec.triton`` (batching, instances) and
the Block's GPUs: ``KIND_GPU`` on the GPUs the pod requests, ``KIND_CPU`` on a pool without
them. Pure: same spec, same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from braid.api.common import TensorSpec
from braid.api.repository_plan import PlannedArtifact, PlannedConfig, RepositoryPlan
from braid.api.v1alpha1.block import BlockSpec
from braid.render.triton_config import render_model_config

# What braid's block runtime (the Python-backend model.py the exporter writes beside each
# TorchScript file) reads from its config.
TORCHSCRIPT_FILE = "model.pt"
RUNTIME_PARAMETERS = {"torch_num_threads": "1", "torchscript_file": TORCHSCRIPT_FILE}
REPOSITORY_DIR = "repository"
"""Where the Block's repository artifact is unpacked, under the pod's model root."""


@dataclass(frozen=True)
class ServedModel:
    """One Triton model a Block's pods load, with its signature (from the path catalog)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class InstanceGroup:
    kind: str
    count: int
    gpus: tuple[int, ...]


def instance_group(spec: BlockSpec) -> InstanceGroup:
    """``KIND_GPU`` on every GPU the Block's pods request, ``KIND_CPU`` without GPUs.

    Triton places ``count`` instances on each listed GPU; the kubelet's device plugin makes
    the pod's GPUs visible as devices 0..n-1, so the ids are the same on every node.
    """
    count = spec.triton.instance_count
    if spec.resources.gpu > 0:
        return InstanceGroup("KIND_GPU", count, tuple(range(spec.resources.gpu)))
    return InstanceGroup("KIND_CPU", count, ())


def render_block_model_config(spec: BlockSpec, model: ServedModel) -> str:
    group = instance_group(spec)
    return render_model_config(
        model.name,
        model.inputs,
        model.outputs,
        spec.triton.max_batch_size,
        backend="python",
        dynamic_batching=spec.triton.dynamic_batching,
        instance_count=group.count,
        instance_kind=group.kind,
        gpus=group.gpus,
        parameters=RUNTIME_PARAMETERS,
    )


def render_repository_plan(
    spec: BlockSpec, models: Sequence[ServedModel], repository_uri: str, sha256: str | None
) -> RepositoryPlan:
    """The init container's plan: unpack the repository artifact, then write every served
    model's config as this Block wants it (over whatever config the export shipped)."""
    return RepositoryPlan(
        artifacts=[
            PlannedArtifact(uri=repository_uri, sha256=sha256, dest=REPOSITORY_DIR, unpack=True)
        ],
        configs=[
            PlannedConfig(
                model=f"{REPOSITORY_DIR}/{m.name}", config_pbtxt=render_block_model_config(spec, m)
            )
            for m in sorted(models, key=lambda m: m.name)
        ],
    )
