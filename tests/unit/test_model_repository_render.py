"""Triton configs rendered from the Block, each parsed by Triton's own model-config schema
(the ``ModelConfig`` protobuf that tritonclient ships)."""

from __future__ import annotations

import itertools

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from braid.api.common import TensorSpec
from braid.api.v1alpha1.block import BlockSpec
from braid.render.model_repository import (
    REPOSITORY_DIR,
    ServedModel,
    instance_group,
    render_block_model_config,
    render_repository_plan,
)

pytestmark = pytest.mark.unit

MODEL = ServedModel(
    name="fmnist-cnn.b0",
    inputs=(TensorSpec(name="INPUT__0", datatype="FP32", shape=[1, 28, 28]),),
    outputs=(TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[32, 14, 14]),),
)


def block(**overrides: object) -> BlockSpec:
    body: dict[str, object] = {
        "modelRef": {"name": "fmnist-cnn"},
        "partitions": {"first": 0, "last": 0},
        "tier": "local",
    }
    body.update(overrides)
    return BlockSpec.model_validate(body)


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


VARIANTS = [
    block(),
    block(triton={"maxBatchSize": 0}),
    block(triton={"maxBatchSize": 64, "instanceCount": 3}),
    block(
        triton={
            "dynamicBatching": {"maxQueueDelayMicroseconds": 500, "preferredBatchSizes": [4, 8]}
        }
    ),
    block(tier="edge", resources={"gpu": 1}),
    block(tier="cloud", resources={"gpu": 4}, triton={"instanceCount": 2, "maxBatchSize": 128}),
]


@pytest.mark.parametrize("spec", VARIANTS)
def test_every_rendered_config_parses_as_a_triton_model_config(spec: BlockSpec) -> None:
    config = parse(render_block_model_config(spec, MODEL))
    assert config.name == MODEL.name
    assert config.max_batch_size == spec.triton.max_batch_size
    assert config.backend == "python"


def test_gpu_pools_get_kind_gpu_on_every_requested_gpu() -> None:
    config = parse(render_block_model_config(VARIANTS[-1], MODEL))
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(group.gpus) == [0, 1, 2, 3]
    assert group.count == 2


def test_cpu_pools_get_kind_cpu() -> None:
    config = parse(render_block_model_config(block(triton={"instanceCount": 3}), MODEL))
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not group.gpus
    assert group.count == 3


def test_batching_follows_the_block() -> None:
    spec = VARIANTS[3]
    config = parse(render_block_model_config(spec, MODEL))
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    off = parse(render_block_model_config(block(triton={"maxBatchSize": 0}), MODEL))
    assert not off.HasField("dynamic_batching")


def test_instance_group_kinds() -> None:
    kinds = {instance_group(spec).kind for spec in VARIANTS}
    assert kinds == {"KIND_CPU", "KIND_GPU"}


def test_the_plan_unpacks_the_repository_then_writes_the_blocks_configs() -> None:
    other = ServedModel(
        "fmnist-cnn.b1",
        (TensorSpec(name="INPUT__0", datatype="FP32", shape=[32, 14, 14]),),
        (TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[64, 7, 7]),),
    )
    spec = VARIANTS[4]
    plan = render_repository_plan(spec, [other, MODEL], "s3://models/fmnist.tar.gz", "a" * 64)
    (artifact,) = plan.artifacts
    assert artifact.unpack
    assert artifact.dest == REPOSITORY_DIR
    assert [c.model for c in plan.configs] == [
        f"{REPOSITORY_DIR}/fmnist-cnn.b0",
        f"{REPOSITORY_DIR}/fmnist-cnn.b1",
    ]
    for config, model in zip(
        plan.configs, sorted([MODEL, other], key=lambda m: m.name), strict=True
    ):
        assert parse(config.config_pbtxt).name == model.name


@pytest.mark.parametrize(
    ("gpus", "kind"), list(itertools.product([(0,), (1, 1), (-1,)], ["KIND_CPU"]))
)
def test_gpus_are_refused_where_they_mean_nothing(gpus: tuple[int, ...], kind: str) -> None:
    from braid.render.triton_config import render_model_config

    with pytest.raises(ValueError, match="gpus"):
        render_model_config("m", MODEL.inputs, MODEL.outputs, 8, instance_kind=kind, gpus=gpus)
