"""A Block's serving settings, written into the configs its repository artifact ships: each
result parsed by Triton's own model-config schema (the ``ModelConfig`` protobuf that
tritonclient ships), the way the init container writes them."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from braid.api.common import ArtifactRef, TensorSpec
from braid.api.repository_plan import RepositoryPlan
from braid.api.v1alpha1.block import BlockSpec
from braid.artifacts.fetch import FetchError
from braid.artifacts.serving import apply_serving
from braid.render.block import (
    BlockRender,
    ObjectMeta,
    render_block_deployment,
    render_block_plan_configmap,
)
from braid.render.model_repository import (
    REPOSITORY_DIR,
    link_artifact_problem,
    render_repository_plan,
    servable_links,
    serving_settings,
)
from braid.render.triton_config import render_model_config

pytestmark = pytest.mark.unit

# What `braid models build` exports: the signature and the runtime, CPU by default.
EXPORTED = render_model_config(
    "fmnist-cnn.b0",
    [TensorSpec(name="INPUT__0", datatype="FP32", shape=[1, 28, 28])],
    [TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[32, 14, 14])],
    16,
    parameters={"onnx_file": "model.onnx"},
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
    assert config.parameters["onnx_file"].string_value == "model.onnx"


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


# -- Links: their artifacts reach the host Block's pods, and only theirs ----------------------

LINK_ARCHIVE = "s3://provider-b-models/links/mnist-cnn.xin.fmnist-cnn.0-1.tar.gz"
LINK_WEIGHTS = "s3://provider-b-models/links/mnist-cnn.xout.fmnist-cnn.3-5/1/model.onnx"
DIGEST = "ab" * 32


def _host(**links: ArtifactRef) -> BlockRender:
    return BlockRender(
        owner=ObjectMeta(name="mnist-body", namespace="provider-b", uid="u"),
        spec=block(modelRef={"name": "mnist-cnn"}),
        model_name="mnist-cnn",
        triton_models=["mnist-cnn.b0"],
        link_models=sorted(links),
        link_artifacts=links,
    )


def _plan(r: BlockRender) -> RepositoryPlan:
    cm = render_block_plan_configmap(r)
    assert cm is not None
    return RepositoryPlan.model_validate_json(cm["data"]["plan.json"])


def test_the_host_pods_fetch_each_served_links_own_artifact() -> None:
    plan = _plan(
        _host(
            **{
                "mnist-cnn.xin.fmnist-cnn.0-1": ArtifactRef(
                    uri=LINK_ARCHIVE, format="triton-repository", sha256=DIGEST
                ),
                "mnist-cnn.xout.fmnist-cnn.3-5": ArtifactRef(uri=LINK_WEIGHTS),
            }
        )
    )
    repository, archive, weights = plan.artifacts
    assert (repository.dest, repository.unpack) == (REPOSITORY_DIR, True)
    # A triton-repository artifact is the link's whole Triton model: unpacked as its folder.
    assert (archive.uri, archive.dest, archive.unpack, archive.sha256) == (
        LINK_ARCHIVE,
        f"{REPOSITORY_DIR}/mnist-cnn.xin.fmnist-cnn.0-1",
        True,
        DIGEST,
    )
    # A TorchScript artifact is the link's weights, in version 1 of its model.
    assert (weights.uri, weights.dest, weights.unpack) == (
        LINK_WEIGHTS,
        f"{REPOSITORY_DIR}/mnist-cnn.xout.fmnist-cnn.3-5/1/model.onnx",
        False,
    )
    assert "mnist-cnn.xin.fmnist-cnn.0-1" in plan.models


def test_a_block_that_serves_no_link_fetches_no_links_artifact() -> None:
    served = _host(**{"mnist-cnn.xin.fmnist-cnn.0-1": ArtifactRef(uri=LINK_ARCHIVE)})
    # The same artifacts handed to a Block whose links do not include them: not fetched.
    other = BlockRender(
        owner=ObjectMeta(name="mnist-head", namespace="provider-b", uid="v"),
        spec=served.spec,
        model_name="mnist-cnn",
        triton_models=["mnist-cnn.b0"],
        link_artifacts=served.link_artifacts,
    )
    assert [a.uri for a in _plan(other).artifacts] == ["s3://models/fmnist.tar.gz"]
    assert [a.uri for a in _plan(served).artifacts] == ["s3://models/fmnist.tar.gz", LINK_ARCHIVE]


def test_a_link_artifact_the_host_cannot_fetch_is_left_out_and_said_on_the_link() -> None:
    host = block(
        modelRef={"name": "mnist-cnn"},
        modelRepository={"uri": "s3://models/m.tar.gz", "credentialsSecret": "host-s3"},
    )
    links = {
        "ok": {"uri": LINK_WEIGHTS},
        "same-secret": {"uri": LINK_WEIGHTS, "credentialsSecret": "host-s3"},
        "mounted": {"uri": "pvc://links/x"},
        "other-secret": {"uri": LINK_WEIGHTS, "credentialsSecret": "someone-elses"},
    }
    assert sorted(servable_links(links, host)) == ["ok", "same-secret"]
    body = {"spec": host.model_dump(by_alias=True, exclude_none=True)}
    mounted = link_artifact_problem("mounted", ArtifactRef(uri="pvc://links/x"), body)
    assert mounted is not None
    assert "pvc://links/x" in mounted
    assert "only s3://, gs:// and https:// are fetched" in mounted
    secret = link_artifact_problem(
        "other-secret", ArtifactRef(uri=LINK_WEIGHTS, credentials_secret="someone-elses"), body
    )
    assert secret is not None
    assert "someone-elses" in secret
    assert link_artifact_problem("ok", ArtifactRef(uri=LINK_WEIGHTS), body) is None


def test_a_mounted_repository_holds_its_links_itself() -> None:
    host = block(modelRepository={"uri": "pvc://models/fmnist"})
    assert servable_links({"a-link": {"uri": LINK_WEIGHTS}}, host) == {"a-link": None}
