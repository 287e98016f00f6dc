"""braid through its chart onto the real nodes: braid's own images run in containers.

What a platform engineer does on a cluster, done on the local stack:

- braid's images (operator, controller, gateway, the Triton runtime) are built from the
  repository's recipes and imported into every real node's containerd (no registry here);
- the model repository is an archive in an S3-compatible store (versitygw) that pods reach
  on the real node's bridge address, with the provider's credentials in a Secret;
- ``helm install`` names those images, pins the chart's pods to the real nodes and tells the
  operator to give Triton pods the real nodes' toleration;
- Blocks of a tier that has real nodes are placed on its real pool (``nodePool``) with the
  runtime image and the archive as ``modelRepository``; the init container fetches it and a
  real tritonserver serves it. Tiers without a real node (the GPU pools here) stay kwok's.

The functions that shape values and objects are pure; the rest does the I/O around them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braid.api.catalog import PathCatalog
from braid.kube.client import Kube
from braid.settings import Settings
from braid_dev.demo.chart import CHART
from braid_dev.demo.manifests import (
    CATALOG_CONFIGMAP,
    HOST_NAMESPACE,
    LOCAL_NAMESPACE,
    POLICY_NAME,
    demo_manifests,
    load_samples,
)
from braid_dev.kwok_runtime import KwokTritonRuntime
from braid_dev.stack import braid_images, cluster, images, nodes
from braid_dev.stack import node_render as nr
from braid_dev.stack.artifact_servers import S3Store
from braid_dev.stack.images import ImageRecipe
from braid_dev.stack.processes import wait_until

REAL_TAINT_TOLERATION = {
    "key": nr.REAL_NODE_TAINT["key"],
    "operator": "Exists",
    "effect": nr.REAL_NODE_TAINT["effect"],
}
REPOSITORY_BUCKET = "models"
REPOSITORY_OBJECT = "repository.tar.gz"
CREDENTIALS_SECRET = "braid-artifacts"


def curl_recipe(cache: Path) -> ImageRecipe:
    """curl on Debian: the chart's ``helm test`` Pod image (upstream: curlimages/curl)."""
    return ImageRecipe(
        name="curl",
        files=(),
        base_layers=(images.debian_rootfs(cache, ["curl", "ca-certificates"]),),
        directories=("/tmp",),
        cmd=("curl", "--version"),
    )


@dataclass(frozen=True)
class NodeImages:
    """The images imported into the real nodes, by role."""

    built: Mapping[str, braid_images.BuiltImage]

    def reference(self, role: str) -> str:
        return self.built[role].recipe.reference

    def tag(self, role: str) -> str:
        return self.built[role].recipe.tag

    def sizes_mb(self) -> dict[str, float]:
        return {b.recipe.reference: b.size_mb for b in self.built.values()}


def import_node_images(cache: Path, bin_dir: Path, cluster_root: Path, repo: Path) -> NodeImages:
    """Build (cached by content) and import braid's images into every real node."""
    built = dict(braid_images.build_all(cache, repo))
    curl = curl_recipe(cache)
    built["curl"] = braid_images.BuiltImage(curl, images.build_image(curl, cache))
    tools = nodes.find_tools(bin_dir)
    for layout in nodes.node_layouts(cluster_root):
        for item in built.values():
            nodes.import_image(tools, layout, item.recipe, cache)
    return NodeImages(built)


def _escape(key: str) -> str:
    """A label key as one ``--set`` path segment (its dots are not nesting)."""
    return key.replace(".", "\\.")


def real_node_helm_args(node_images: NodeImages) -> list[str]:
    """``helm install`` arguments that run the chart's pods in containers on the real nodes
    (pure)."""
    key, value = nr.REAL_NODE_LABEL
    values = [
        f"image.registry={images.REGISTRY}",
        f"operator.image.tag={node_images.tag('operator')}",
        f"controller.image.tag={node_images.tag('controller')}",
        f"gateway.image.tag={node_images.tag('gateway')}",
        f"test.image={node_images.reference('curl')}",
        # braid's runtime beside the chart's default (NGC's Triton, what kwok-played Blocks name).
        f"operator.imagePrefixes={{{images.REGISTRY}/,nvcr.io/nvidia/tritonserver:}}",
    ]
    for scope in ("tolerations", "operator.tritonPods.tolerations"):
        for key_name, item in REAL_TAINT_TOLERATION.items():
            values.append(f"{scope}[0].{key_name}={item}")
    # A label value is a string even when it reads as a boolean.
    return [
        *(a for v in values for a in ("--set", v)),
        "--set-string",
        f"nodeSelector.{_escape(key)}={value}",
    ]


SMALL_BLOCK_RESOURCES: Mapping[str, Any] = {"cpu": "250m", "memory": "1Gi", "gpu": 0}
"""One replica of what the samples size, for a GPU-less node of 2 cores."""


def place_on_real_pool(
    objs: Sequence[dict[str, Any]],
    tiers: set[str],
    runtime_image: str,
    repository: Mapping[str, str],
    moved: Mapping[str, str] | None = None,
    repositories: Mapping[str, Mapping[str, str]] | None = None,
    resources: Mapping[str, Any] = SMALL_BLOCK_RESOURCES,
) -> list[dict[str, Any]]:
    """The manifests with every Block of ``tiers`` on its tier's real pool (pure).

    Those Blocks run the runtime image and fetch ``repository`` (an ``ArtifactRef``: uri,
    sha256, credentialsSecret), or their own entry of ``repositories`` (Block name to
    ``ArtifactRef``); other Blocks are left as they are. ``moved`` (Block name to tier)
    first moves Blocks to a tier that has real nodes (a GPU pool's Block, to run it in a
    container on a machine without GPUs)."""
    out = []
    for obj in objs:
        obj = copy.deepcopy(obj)
        spec = obj.get("spec", {})
        name = obj.get("metadata", {}).get("name")
        if obj.get("kind") == "Block" and name in (moved or {}):
            spec["tier"] = (moved or {})[name]
        if obj.get("kind") == "Block" and spec.get("tier") in tiers:
            spec["nodePool"] = nr.real_pool(spec["tier"])
            spec.setdefault("triton", {})["image"] = runtime_image
            own = (repositories or {}).get(name, repository)
            spec["modelRepository"] = {**own, "format": "triton-repository"}
            spec["resources"] = dict(resources)
        out.append(obj)
    return out


def write_repository_archive(
    repository: Path, models: Sequence[str], dest: Path, compress: bool = True
) -> str:
    """A tar.gz (or a plain tar: ONNX weights barely compress, and gzip at level 9 costs
    minutes for hundreds of MB on a loaded machine) of the named models of ``repository`` (a
    Triton repository), and its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz" if compress else "w") as tar:
        for model in sorted(models):
            tar.add(repository / model, arcname=model, filter=_portable)
    digest = hashlib.sha256()
    with dest.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _portable(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in info.name:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def credentials_secret(namespace: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The provider's object-store credentials, as the fetcher's ``envFrom`` reads them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
        "type": "Opaque",
        "stringData": dict(env),
    }


# -- the whole deployment (the e2e tier's and bench/real_nodes.py's) ---------------------------

RELEASE = "braid-real"
"""Not "braid": the e2e session's process-run operator holds cluster objects named
braid-operator."""
CHART_COMPONENTS = ("operator", "controller", "gateway")
HOST_BLOCK = "mnist-body"
"""The host model's Block (a cloud GPU pool's in the samples)."""
MOVED_BLOCKS = ("fmnist-tail", HOST_BLOCK)
"""The samples' GPU-pool Blocks, moved onto the real node's CPU."""


class DeployError(RuntimeError):
    """A step of the real-node deployment failed; the message says which."""


@dataclass
class RealRelease:
    """braid installed through its chart onto the real nodes, with what it runs on."""

    access: cluster.ClusterAccess
    bin_dir: Path
    catalog: PathCatalog
    images: NodeImages
    runtime: KwokTritonRuntime
    local_namespace: str = LOCAL_NAMESPACE
    host_namespace: str = HOST_NAMESPACE
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def namespaces(self) -> tuple[str, str]:
        return (self.local_namespace, self.host_namespace)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed = self.access.kubectl_json("get", "pods", "-n", namespace, "-l", selector)
        items: list[dict[str, Any]] = listed["items"]
        return items

    def chart_pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/name=braid-{component},app.kubernetes.io/instance={RELEASE}"
        return self.pods(self.local_namespace, selector)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "helm"), *args, f"--kubeconfig={self.access.kubeconfig}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if check and done.returncode != 0:
            raise DeployError(f"helm {args[0]} failed: {done.stderr or done.stdout}")
        return done


def node_ip(access: cluster.ClusterAccess) -> str:
    """The first real node's address: its bridge on this machine, which pods can reach."""
    node = access.kubectl_json("get", "node", nr.real_node_name(nodes.REAL_TIER, 0))
    return str(next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"))


def store_repository(repository: Path, root: Path) -> str:
    """The repository as objects (Links name theirs) and as one archive (what pods fetch);
    returns the archive's SHA-256."""
    bucket = root / REPOSITORY_BUCKET
    models = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())
    for model in models:
        shutil.copytree(repository / model, bucket / model, dirs_exist_ok=True)
    return write_repository_archive(repository, models, bucket / REPOSITORY_OBJECT)


def link_artifacts_in_store(objs: list[dict[str, Any]], repository: Path) -> None:
    """Links name their artifact in the store (the chart's operator refuses file://)."""
    for obj in objs:
        if obj["kind"] == "Link":
            name = obj["metadata"]["name"]
            (artifact,) = (p for p in (repository / name / "1").iterdir() if p.name != "model.py")
            obj["spec"]["artifact"]["uri"] = f"s3://{REPOSITORY_BUCKET}/{name}/1/{artifact.name}"


def rename_namespaces(
    objs: Sequence[dict[str, Any]], names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The manifests with the samples' namespaces renamed (pure): every object's own and
    every reference to them (a cross Link's other end, a policy's host namespaces)."""
    text = json.dumps(list(objs))
    for old, new in names.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    renamed: list[dict[str, Any]] = json.loads(text)
    return renamed


def _wait_gone(access: cluster.ClusterAccess, namespaces: Sequence[str]) -> None:
    """An earlier run's namespaces, still going away: nothing can be created in them."""
    for name in namespaces:
        phase = access.kubectl(
            "get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False
        ).stdout.strip()
        if phase == "Terminating":
            access.kubectl(
                "wait", "--for=delete", f"namespace/{name}", "--timeout=180s", timeout=200
            )


def apply_objects(access: cluster.ClusterAccess, objs: list[dict[str, Any]]) -> None:
    """Server-side apply of ``objs`` as one List (nothing to do for none)."""
    if not objs:
        return
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    access.kubectl("apply", "--server-side", "-f", "-", input=body)


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def runs_in_container(pod: dict[str, Any], node: str | None = None) -> bool:
    """Every container of ``pod`` runs under containerd (a real node's), on ``node`` if named."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return (
        (node is None or pod["spec"].get("nodeName") == node)
        and bool(statuses)
        and all(s.get("containerID", "").startswith("containerd://") for s in statuses)
    )


def fetched_in_container(pod: dict[str, Any]) -> bool:
    """A Triton pod in containers whose ``fetch-models`` init container fetched its artifacts
    and exited 0 (the digest checked) before tritonserver started."""
    inits = pod.get("status", {}).get("initContainerStatuses") or []
    return runs_in_container(pod) and any(
        s["name"] == "fetch-models"
        and s.get("containerID", "").startswith("containerd://")
        and (s.get("state", {}).get("terminated") or {}).get("exitCode") == 0
        for s in inits
    )


def _applied(access: cluster.ClusterAccess, objs: list[dict[str, Any]]) -> bool:
    """Applied, or False while the webhook cannot be called yet (any other error raises)."""
    try:
        apply_objects(access, objs)
    except cluster.ClusterError as exc:
        if "failed calling webhook" in str(exc):
            return False
        raise
    return True


@dataclass(frozen=True)
class Workload:
    """What a release serves beside the chart (the samples, DIMEE's tiers): the objects to
    apply (namespaces already renamed), the local model's catalog as a ConfigMap, the chart
    values that name them, and the repository kwok-played Triton pods serve."""

    objects: list[dict[str, Any]]
    catalog: PathCatalog
    catalog_file: Path
    catalog_configmap: str
    values: list[str]
    kwok_repository: Path
    components: tuple[str, ...] = CHART_COMPONENTS
    """The chart's Deployments this release runs (and waits for)."""


class _Stages:
    """Seconds each deployment stage took (bench/real_nodes.py reports them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.monotonic()

    def mark(self, stage: str) -> None:
        self.seconds[stage] = round(time.monotonic() - self._t, 3)
        self._t = time.monotonic()


@contextmanager
def deployed(
    access: cluster.ClusterAccess,
    settings: Settings,
    repo: Path,
    workdir: Path,
    store: S3Store,
    repository: Path,
    extra_values: Sequence[str] = (),
    namespaces: tuple[str, str] = (LOCAL_NAMESPACE, HOST_NAMESPACE),
) -> Iterator[RealRelease]:
    """braid through its chart onto the real nodes, the demo's models on it; all of it is
    removed again on the way out (objects first, while the operator can drop finalizers).

    ``namespaces`` (local provider's, host's) rename the samples' two: a suite whose own
    operator watches every namespace but ``isolated-*`` gives two of those."""
    local_ns, host_ns = namespaces
    stages = _Stages()
    catalog = PathCatalog.model_validate_json((repository / "catalog.json").read_text())
    node_images = import_node_images(
        settings.cache, settings.bin_dir, cluster.layout_for(settings).root, repo
    )
    stages.mark("images_built_and_imported")
    sha = store_repository(repository, store.root)
    objs = place_on_real_pool(
        demo_manifests(catalog, repository, load_samples()),
        {nodes.REAL_TIER},
        node_images.reference("triton-runtime"),
        {
            "uri": f"s3://{REPOSITORY_BUCKET}/{REPOSITORY_OBJECT}",
            "sha256": sha,
            "credentialsSecret": CREDENTIALS_SECRET,
        },
        # Every Block runs in a container: the GPU pools' ones on the real node's CPU (this
        # machine has no GPU); the host's crash is what the gateway must survive.
        moved={block: nodes.REAL_TIER for block in MOVED_BLOCKS},
    )
    objs = rename_namespaces(objs, {LOCAL_NAMESPACE: local_ns, HOST_NAMESPACE: host_ns})
    link_artifacts_in_store(objs, repository)
    first = catalog.path(catalog.original_path).hops[0].input
    workload = Workload(
        objects=objs,
        catalog=catalog,
        catalog_file=repository / "catalog.json",
        catalog_configmap=CATALOG_CONFIGMAP,
        values=[
            f"policy.name={POLICY_NAME}",
            f"test.model={catalog.local_model}",
            f"test.input.name={first.name}",
            f"test.input.datatype={first.datatype}",
            f"test.input.shape={{{','.join(str(d) for d in [1, *first.shape])}}}",
            *extra_values,
        ],
        kwok_repository=repository,
    )
    with released(access, settings, workdir, store, node_images, workload, namespaces, stages) as r:
        yield r


@contextmanager
def released(
    access: cluster.ClusterAccess,
    settings: Settings,
    workdir: Path,
    store: S3Store,
    node_images: NodeImages,
    workload: Workload,
    namespaces: tuple[str, str],
    stages: _Stages | None = None,
) -> Iterator[RealRelease]:
    """``workload`` applied and the chart installed onto the real nodes (images already
    imported, artifacts already in ``store``); all of it removed again on the way out.

    The order is a platform team's: namespaces with the store's credentials and the catalog,
    ``helm install``, the operator's webhook answering, then Models, Links, Blocks and
    policies, and the chart's pods Ready."""
    local_ns, host_ns = namespaces
    stages = stages or _Stages()
    objs = workload.objects
    _wait_gone(access, namespaces)
    apply_objects(access, [o for o in objs if o["kind"] == "Namespace"])
    for ns in namespaces:
        apply_objects(access, [credentials_secret(ns, store.env())])
        wait_until(
            lambda n=ns: access.kubectl("get", "sa", "default", "-n", n, check=False).stdout != "",  # type: ignore[misc]
            f"the default ServiceAccount of {ns}",
            timeout=60,
        )
    catalog_cm = access.kubectl(
        "create", "configmap", workload.catalog_configmap, "-n", local_ns,
        f"--from-file=catalog.json={workload.catalog_file}", "--dry-run=client", "-o", "json",
    ).stdout  # fmt: skip
    apply_objects(access, [json.loads(catalog_cm)])
    values = [
        "crds.enabled=false",  # applied beforehand, as a platform team manages CRDs
        f"operator.namespaces={{{local_ns},{host_ns}}}",
        f"catalog.configMap={workload.catalog_configmap}",
        *workload.values,
    ]
    runtime = KwokTritonRuntime(
        Kube.from_kubeconfig(access.kubeconfig),
        workload.kwok_repository,
        workdir / "kwok-runtime",
        host=node_ip(access),
        real_pools=frozenset({nr.real_pool(nodes.REAL_TIER)}),
    )
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    release = RealRelease(
        access,
        settings.bin_dir,
        workload.catalog,
        node_images,
        runtime,
        local_ns,
        host_ns,
        stages.seconds,
    )
    try:
        release.helm(
            "upgrade", "--install", RELEASE, str(CHART), "--namespace", local_ns,
            *real_node_helm_args(node_images), *(a for v in values for a in ("--set", v)),
        )  # fmt: skip
        stages.mark("helm_install")
        # The webhook admits braid objects only once the operator's pod answers it (and
        # kube-proxy has programmed its Service); the gateway starts once the operator has
        # written its policy's routing ConfigMap.
        rollout = ["rollout", "status", "-n", local_ns, "--timeout=300s"]
        access.kubectl(*rollout, f"deployment/{RELEASE}-operator", timeout=330)
        stages.mark("operator_ready")
        wait_until(
            lambda: _applied(access, [o for o in objs if o["kind"] == "Model"]),
            "the operator's webhook to answer through its Service",
            timeout=120,
            ignore=(),
        )
        for kind in ("Link", "Block", "OffloadPolicy"):
            apply_objects(access, [o for o in objs if o["kind"] == kind])
        for component in workload.components:
            access.kubectl(*rollout, f"deployment/{RELEASE}-{component}", timeout=330)
        stages.mark("chart_pods_ready")
        yield release
    finally:
        for ns in namespaces:
            access.kubectl(
                "delete", "offloadpolicies,blocks,links,models", "--all", "-n", ns,
                "--wait=true", "--timeout=120s", check=False, timeout=150,
            )  # fmt: skip
        release.helm("uninstall", RELEASE, "--namespace", local_ns, "--wait", check=False)
        stop.set()
        thread.join(timeout=120)
        for ns in namespaces:
            access.kubectl(
                "delete", "namespace", ns, "--wait=true", "--timeout=180s", check=False,
                timeout=200,
            )  # fmt: skip
