"""Render a ``Block`` into the Triton Deployment and Service that serve it. Pure.

One Deployment per Block segment, placed on its tier's node pool; a Service in front of it
exposes HTTP, gRPC and metrics and is annotated for Prometheus scraping. Links served by the
block's pods (cross-connections hosted here) are extra models in the same Triton server, so
the host's own block models stay untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from braid.api.common import API_VERSION, TIER_LABEL, ArtifactRef
from braid.api.v1alpha1.block import BlockSpec
from braid.render.model_repository import (
    PLAN_FILE,
    REPOSITORY_DIR,
    fetched,
    plan_configmap_data,
    render_repository_plan,
)

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
POOL_LABEL = "braid.dev/pool"
MANAGED_BY = "braid-operator"
MODEL_MOUNT = "/models"
FETCHER_CONTAINER = "fetch-models"
"""The init container that fills the model repository; its termination message is the
reason a fetch failed, which the Block's Ready condition carries."""
TRITON_UID = 1000
"""The ``triton-server`` user of NVIDIA's Triton images."""

# Pod Security "restricted": no root, no privilege escalation, no capabilities, the runtime's
# default seccomp profile. The root file system is read-only (scratch goes to emptyDirs).
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": TRITON_UID,
    "runAsGroup": TRITON_UID,
    "fsGroup": TRITON_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class ObjectMeta:
    """Identity of the custom resource being rendered (for names and owner references)."""

    name: str
    namespace: str
    uid: str
    kind: str = "Block"
    generation: int | None = None


@dataclass(frozen=True)
class BlockRender:
    """Everything the Block's objects depend on; same input, same objects."""

    owner: ObjectMeta
    spec: BlockSpec
    model_name: str
    triton_models: Sequence[str]
    link_models: Sequence[str] = field(default_factory=tuple)
    link_artifacts: Mapping[str, ArtifactRef] = field(default_factory=dict)
    """The artifacts of the Links this Block serves (Triton model name to artifact): fetched
    into this Block's pods, and only theirs, when its repository is fetched."""
    allow_local_paths: bool = False
    """Render file:// repositories as hostPath mounts (the local stack only)."""
    fetcher_image: str = "ghcr.io/braid-dev/braid-gateway:0.1.0"
    """The image whose ``braid artifacts assemble`` fills a fetched repository (any braid
    image has the CLI; the operator's setting picks one)."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """Node labels the platform adds to every Triton pod's selector (the operator's setting);
    the Block's tier and pool labels take precedence."""
    tolerations: Sequence[Mapping[str, str]] = field(default_factory=tuple)
    """Tolerations the platform adds to every Triton pod (dedicated nodes' taints)."""


def owner_reference(owner: ObjectMeta) -> dict[str, Any]:
    """Owner reference so Kubernetes' garbage collector deletes what the resource owns."""
    return {
        "apiVersion": API_VERSION,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workload_name(block_name: str) -> str:
    """Name of the Deployment and Service of a Block."""
    return f"triton-{block_name}"[:63].rstrip("-")


def block_labels(r: BlockRender) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": r.owner.name,
        "app.kubernetes.io/component": "block",
        "app.kubernetes.io/part-of": "braid",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "braid.dev/model": r.model_name,
        "braid.dev/block": r.owner.name,
        TIER_LABEL: r.spec.tier,
    }


def selector_labels(r: BlockRender) -> dict[str, str]:
    return {"app.kubernetes.io/name": "triton", "braid.dev/block": r.owner.name}


def plan_configmap_name(block_name: str) -> str:
    return f"{workload_name(block_name)[:58].rstrip('-')}-plan"


def render_block_plan_configmap(r: BlockRender) -> dict[str, Any] | None:
    """The init container's repository plan, for a Block whose repository is fetched."""
    if not fetched(r.spec):
        return None
    served = {n: a for n, a in r.link_artifacts.items() if n in r.link_models}
    plan = render_repository_plan(r.spec, [*r.triton_models, *r.link_models], served)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plan_configmap_name(r.owner.name),
            "namespace": r.owner.namespace,
            "labels": block_labels(r),
            "ownerReferences": [owner_reference(r.owner)],
        },
        "data": plan_configmap_data(plan),
    }


def _fetcher(r: BlockRender) -> dict[str, Any]:
    """The init container that fills ``/models`` from the Block's plan: streamed, digest-
    checked, retried; a failure's reason lands in the pod's status (termination message)."""
    repo = r.spec.model_repository
    assert repo is not None
    container: dict[str, Any] = {
        "name": FETCHER_CONTAINER,
        "image": r.fetcher_image,
        "command": ["braid", "artifacts", "assemble"],
        "args": [f"--plan=/etc/braid/plan/{PLAN_FILE}", f"--root={MODEL_MOUNT}"],
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_MOUNT},
            {"name": "plan", "mountPath": "/etc/braid/plan", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    if repo.credentials_secret:
        # By name only: the kubelet reads the Secret into this container, the operator never.
        container["envFrom"] = [{"secretRef": {"name": repo.credentials_secret}}]
    return container


@dataclass(frozen=True)
class RepositoryMount:
    """Triton's ``--model-repository``, the volumes and mounts it needs, and the init
    containers that fill it."""

    repository: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)


def _model_repository(r: BlockRender) -> RepositoryMount:
    """Where Triton reads its models from.

    s3://, gs:// and https:// are fetched into an emptyDir by an init container (Triton
    never holds storage credentials); a PVC or ConfigMap is mounted; with no repository the
    image's own ``/models`` is used (an image that bakes the models in).
    """
    spec = r.spec
    if spec.model_repository is None:
        return RepositoryMount(MODEL_MOUNT)
    uri = spec.model_repository.uri
    scheme, _, rest = uri.partition("://")
    if ".." in rest.split("/"):
        raise ValueError(f"spec.modelRepository.uri: {uri!r} has a '..' path segment")
    if fetched(spec):
        return RepositoryMount(
            f"{MODEL_MOUNT}/{REPOSITORY_DIR}",
            volumes=[
                {"name": "models", "emptyDir": {}},
                {"name": "plan", "configMap": {"name": plan_configmap_name(r.owner.name)}},
            ],
            mounts=[{"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True}],
            init_containers=[_fetcher(r)],
        )
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        volume = {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount: dict[str, Any] = {"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True}
        if sub:
            mount["subPath"] = sub
        return RepositoryMount(MODEL_MOUNT, [volume], [mount])
    if scheme == "configmap":
        volume = {"name": "models", "configMap": {"name": rest}}
        return RepositoryMount(
            MODEL_MOUNT, [volume], [{"name": "models", "mountPath": MODEL_MOUNT}]
        )
    if scheme == "file":
        if not r.allow_local_paths:
            raise ValueError(
                f"spec.modelRepository.uri: {uri!r}: file:// (a hostPath mount) is refused in "
                "cluster mode"
            )
        volume = {
            "name": "models",
            "hostPath": {"path": "/" + rest.lstrip("/"), "type": "Directory"},
        }
        return RepositoryMount(
            MODEL_MOUNT, [volume], [{"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True}]
        )
    raise ValueError(f"spec.modelRepository.uri: {uri!r}: unknown scheme {scheme!r}")


def triton_args(r: BlockRender, repository: str) -> list[str]:
    """Triton's command line: explicit model control so a pod loads only its own segment."""
    args = [
        "tritonserver",
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
        "--disable-auto-complete-config",
        f"--allow-gpu-metrics={'true' if r.spec.resources.gpu > 0 else 'false'}",
    ]
    args += [f"--load-model={m}" for m in [*r.triton_models, *r.link_models]]
    return args


GENERATION_ANNOTATION = "braid.dev/block-generation"
"""On the Deployment (not its pod template, so it rolls nothing): the Block generation it
was rendered from, which the Deployment's watch events carry back as observedGeneration."""


def render_block_deployment(r: BlockRender) -> dict[str, Any]:
    """The Triton Deployment of one Block, pinned to its tier's node pool."""
    spec = r.spec
    repo = _model_repository(r)
    repository, volumes, mounts = repo.repository, repo.volumes, repo.mounts
    resources: dict[str, Any] = {
        "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
        "limits": {"memory": spec.resources.memory},
    }
    if spec.resources.gpu > 0:
        resources["requests"][GPU_RESOURCE] = str(spec.resources.gpu)
        resources["limits"][GPU_RESOURCE] = str(spec.resources.gpu)
    node_selector: dict[str, str] = {**r.node_selector, TIER_LABEL: spec.tier}
    if spec.node_pool:
        node_selector[POOL_LABEL] = spec.node_pool
    # Edge and cloud nodes carry the GPU taint; a Block placed there is meant to run there.
    tolerations: list[dict[str, str]] = (
        []
        if spec.tier == "local"
        else [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    )
    tolerations += [dict(t) for t in r.tolerations]
    probe_port = {"port": "http"}
    container = {
        "name": "triton",
        "image": spec.triton.image,
        "args": triton_args(r, repository),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", **probe_port},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", **probe_port},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", **probe_port},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "resources": resources,
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
            *mounts,
        ],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": workload_name(r.owner.name),
            "namespace": r.owner.namespace,
            "labels": block_labels(r),
            "ownerReferences": [owner_reference(r.owner)],
            **(
                {"annotations": {GENERATION_ANNOTATION: str(r.owner.generation)}}
                if r.owner.generation is not None
                else {}
            ),
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(r)},
            "template": {
                "metadata": {
                    "labels": block_labels(r),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": tolerations,
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    **({"initContainers": repo.init_containers} if repo.init_containers else {}),
                    "containers": [container],
                    "volumes": [
                        # The Python backend exchanges tensors through /dev/shm.
                        {
                            "name": "dshm",
                            "emptyDir": {"medium": "Memory", "sizeLimit": spec.triton.shm_size},
                        },
                        # The root file system is read-only; Triton and its backends write
                        # scratch files (compiled kernels, the Python stub's sockets) to /tmp.
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        *volumes,
                    ],
                },
            },
        },
    }


def render_block_service(r: BlockRender) -> dict[str, Any]:
    """The Service in front of a Block's pods, annotated so Prometheus finds the metrics.

    Headless: the gateway holds long-lived HTTP/2 channels, and a ClusterIP balances per
    connection, so every call of one gateway would reach the same pod however many replicas
    the Block has. With the pods' own addresses in DNS, the gateway's channel balances per
    call (round robin, see ``braid.dataplane.pool``). It also spares the API server a
    cluster IP allocation per Block.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workload_name(r.owner.name),
            "namespace": r.owner.namespace,
            "labels": block_labels(r),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
            },
            "ownerReferences": [owner_reference(r.owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": selector_labels(r),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def service_endpoint(block_name: str, namespace: str) -> str:
    """The in-cluster gRPC address of a Block's Triton."""
    return f"{workload_name(block_name)}.{namespace}.svc:{GRPC_PORT}"
