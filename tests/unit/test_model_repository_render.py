"""A Block's serving settings, written into the configs its repository artifact ships: each
result parsed by Triton's own model-config schema (the ``ModelConfig`` protobuf that
tritonclient ships), the way the init container writes them."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from braid.api.common import TensorSpec
from braid.api.v1alpha1.block import BlockSpec
from braid.artifacts.fetch import FetchError
from braid.artifacts.serving import apply_serving
from braid.render.block import (
    BlockRender,
    ObjectMeta,
    render_block_deployment,
    render_block_plan_configmap,
)
from braid.render.model_repository import REPOSITORY_DIR, render_repository_plan, serving_settings
from braid.render.triton_config import render_model_config

pytestmark = pytest.mark.unit

# What `braid models build` exports: the signature and the runtime, CPU by default.
EXPORTED = render_model_config(
    "fmnist-cnn.b0",
    [TensorSpec(name="INPUT__0", datatype="FP32", shape=[1, 28, 28])],
    [TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[32, 14, 14])],
    16,
    parameters={"torchscript_file": "model.pt"},
)


def block(**overrides: object) -> BlockSpec:
    body: dict[str, object] = {
        "modelRef": {"name": "fmnist-cnn"},
        "partitions": {"first": 0, "last": 0},
        "tier": "local",
        "modelRepository": {"uri": "s3://models/fmnist.tar.gz", "format": "triton-repository"},
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
def test_every_served_config_parses_and_keeps_the_exported_signature(spec: BlockSpec) -> None:
    config = parse(apply_serving(EXPORTED, serving_settings(spec), "b0"))
    exported = parse(EXPORTED)
    assert config.max_batch_size == spec.triton.max_batch_size
    assert config.input == exported.input
    assert config.output == exported.output
    assert config.backend == "python"
    assert config.parameters["torchscript_file"].string_value == "model.pt"


def test_gpu_pools_get_kind_gpu_on_every_requested_gpu() -> None:
    config = parse(apply_serving(EXPORTED, serving_settings(VARIANTS[-1]), "b0"))
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(group.gpus) == [0, 1, 2, 3]
    assert group.count == 2


def test_cpu_pools_get_kind_cpu() -> None:
    config = parse(apply_serving(EXPORTED, serving_settings(VARIANTS[2]), "b0"))
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not group.gpus
    assert group.count == 3


def test_batching_follows_the_block() -> None:
    config = parse(apply_serving(EXPORTED, serving_settings(VARIANTS[3]), "b0"))
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    off = parse(apply_serving(EXPORTED, serving_settings(VARIANTS[1]), "b0"))
    assert not off.HasField("dynamic_batching")


def test_a_config_triton_would_refuse_is_refused_with_its_reason() -> None:
    with pytest.raises(FetchError) as err:
        apply_serving("name: 'x'\nmax_batch_size: banana\n", serving_settings(VARIANTS[0]), "x")
    assert err.value.reason == "InvalidModelConfig"


def _render(spec: BlockSpec, secret: str | None = None) -> BlockRender:
    if secret is not None:
        assert spec.model_repository is not None
        spec = spec.model_copy(
            update={
                "model_repository": spec.model_repository.model_copy(
                    update={"credentials_secret": secret}
                )
            }
        )
    return BlockRender(
        owner=ObjectMeta(name="fmnist-b0", namespace="provider-a", uid="u"),
        spec=spec,
        model_name="fmnist-cnn",
        triton_models=["fmnist-cnn.b0"],
        link_models=["fmnist-cnn.skip.0-2.normal"],
        fetcher_image="registry.example/braid-gateway:1",
    )


def test_a_fetched_repository_gets_an_init_container_and_its_plan() -> None:
    r = _render(VARIANTS[4], secret="s3-credentials")
    pod = render_block_deployment(r)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example/braid-gateway:1"
    assert init["command"] == ["braid", "artifacts", "assemble"]
    # Credentials by reference only: the kubelet reads the Secret, the operator never.
    assert init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert init["securityContext"]["runAsNonRoot"] is True
    triton = pod["containers"][0]
    assert f"--model-repository=/models/{REPOSITORY_DIR}" in triton["args"]
    assert {"name": "models", "emptyDir": {}} in pod["volumes"]
    plan_cm = render_block_plan_configmap(r)
    assert plan_cm is not None
    plan = render_repository_plan(r.spec, [*r.triton_models, *r.link_models])
    assert plan_cm["data"]["plan.json"].strip() == plan.model_dump_json(indent=2)
    assert plan.models == ["fmnist-cnn.b0", "fmnist-cnn.skip.0-2.normal"]
    assert plan.serving is not None
    assert plan.serving.instance_kind == "KIND_GPU"


def test_a_mounted_repository_has_no_fetcher() -> None:
    r = _render(block(modelRepository={"uri": "pvc://models/fmnist"}))
    pod = render_block_deployment(r)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert render_block_plan_configmap(r) is None
