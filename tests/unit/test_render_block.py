"""Block -> Triton Deployment + Service, compared as objects without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from braid.api.v1alpha1.block import BlockSpec
from braid.render.block import (
    BlockRender,
    ObjectMeta,
    render_block_deployment,
    render_block_service,
    service_endpoint,
)


def _render(**spec: Any) -> BlockRender:
    base: dict[str, Any] = {
        "modelRef": {"name": "fmnist-cnn"},
        "partitions": {"first": 1, "last": 4},
        "tier": "edge",
        "resources": {"gpu": 1, "cpu": "2", "memory": "4Gi"},
    }
    base.update(spec)
    return BlockRender(
        owner=ObjectMeta(name="fmnist-mid", namespace="provider-a", uid="uid-1"),
        spec=BlockSpec.model_validate(base),
        model_name="fmnist-cnn",
        triton_models=["fmnist-cnn.b1", "fmnist-cnn.b2"],
        link_models=["link-x"],
    )


def test_deployment_is_placed_on_its_tier_with_gpus_counted() -> None:
    dep = render_block_deployment(_render())
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"braid.dev/tier": "edge"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    res = pod["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == "1"
    assert res["limits"]["nvidia.com/gpu"] == "1"


def test_local_tier_has_no_gpu_and_no_toleration() -> None:
    dep = render_block_deployment(_render(tier="local", resources={"gpu": 0}))
    pod = dep["spec"]["template"]["spec"]
    assert pod["tolerations"] == []
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["requests"]


def test_deployment_loads_block_and_link_models_explicitly() -> None:
    args = render_block_deployment(_render())["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-control-mode=explicit" in args
    loads = [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")]
    assert loads == ["fmnist-cnn.b1", "fmnist-cnn.b2", "link-x"]


def test_probes_shm_and_owner() -> None:
    dep = render_block_deployment(_render())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Block", "uid-1", True)


@pytest.mark.parametrize(
    ("uri", "volume_key", "repo_arg"),
    [
        ("pvc://models-claim/fmnist", "persistentVolumeClaim", "/models"),
        ("configmap://fmnist-repo", "configMap", "/models"),
        # Fetched by the init container into an emptyDir: Triton never holds credentials.
        ("s3://bucket/repo.tar.gz", "emptyDir", "/models/repository"),
        ("https://models.example/repo.tar.gz", "emptyDir", "/models/repository"),
    ],
)
def test_model_repository_is_mounted_or_fetched(
    uri: str, volume_key: str | None, repo_arg: str
) -> None:
    dep = render_block_deployment(_render(modelRepository={"uri": uri}))
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert f"--model-repository={repo_arg}" in args
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume_key in models
    assert ("initContainers" in pod) == (volume_key == "emptyDir")


def test_service_exposes_three_ports_and_scrape_annotations() -> None:
    svc = render_block_service(_render())
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http", "grpc", "metrics"]
    # Headless, so the gateway's gRPC channel balances calls over the pods itself.
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert (
        svc["spec"]["selector"]
        == render_block_deployment(_render())["spec"]["selector"]["matchLabels"]
    )
    assert service_endpoint("fmnist-mid", "provider-a") == "triton-fmnist-mid.provider-a.svc:8001"


def test_render_is_deterministic() -> None:
    assert render_block_deployment(_render()) == render_block_deployment(_render())
