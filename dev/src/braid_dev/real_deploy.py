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
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid_dev.stack import braid_images, images, nodes
from braid_dev.stack import node_render as nr
from braid_dev.stack.images import ImageRecipe

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
        for field, item in REAL_TAINT_TOLERATION.items():
            values.append(f"{scope}[0].{field}={item}")
    # A label value is a string even when it reads as a boolean.
    return [
        *(a for v in values for a in ("--set", v)),
        "--set-string",
        f"nodeSelector.{_escape(key)}={value}",
    ]


def place_on_real_pool(
    objs: Sequence[dict[str, Any]],
    tiers: set[str],
    runtime_image: str,
    repository: Mapping[str, str],
    moved: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The manifests with every Block of ``tiers`` on its tier's real pool (pure).

    Those Blocks run the runtime image and fetch ``repository`` (an ``ArtifactRef``: uri,
    sha256, credentialsSecret); other Blocks are left as they are. ``moved`` (Block name to
    tier) first moves Blocks to a tier that has real nodes (a GPU pool's Block, to run it in
    a container on a machine without GPUs)."""
    out = []
    for obj in objs:
        obj = copy.deepcopy(obj)
        spec = obj.get("spec", {})
        if obj.get("kind") == "Block" and obj["metadata"]["name"] in (moved or {}):
            spec["tier"] = (moved or {})[obj["metadata"]["name"]]
        if obj.get("kind") == "Block" and spec.get("tier") in tiers:
            spec["nodePool"] = nr.real_pool(spec["tier"])
            spec.setdefault("triton", {})["image"] = runtime_image
            spec["modelRepository"] = {**repository, "format": "triton-repository"}
            # One replica of what the sample sizes for a GPU-less node of 2 cores.
            spec["resources"] = {"cpu": "250m", "memory": "1Gi", "gpu": 0}
        out.append(obj)
    return out


def write_repository_archive(repository: Path, models: Sequence[str], dest: Path) -> str:
    """A tar.gz of the named models of ``repository`` (a Triton repository) and its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
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
