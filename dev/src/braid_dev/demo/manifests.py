"""The demo's resources: ``crds/samples`` adapted to the models actually built.

The samples name the Links and partitions of one particular build; a quick build trains fewer
links and exit heads, so serving the samples verbatim would ask Triton for models that do not
exist. The demo therefore keeps the samples' namespaces, Blocks (placement, resources) and
OffloadPolicy, and derives from the build's catalog what depends on it: each Model's partition
(which blocks carry exit heads), the range of host blocks the host's Block serves, and one
Link per link model of the catalog, named as the Triton model (as the operator expects).
``load_samples`` reads the samples; the rest is pure.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from braid.api.catalog import PathCatalog

LOCAL_NAMESPACE = "provider-a"
HOST_NAMESPACE = "provider-b"
POLICY_NAME = "fmnist-cnn"
CATALOG_CONFIGMAP = "fmnist-cnn-catalog"
API = "braid.dev/v1alpha1"


def _namespace_of(model: str, catalog: PathCatalog) -> str:
    return LOCAL_NAMESPACE if model == catalog.local_model else HOST_NAMESPACE


def _serving_block(blocks: list[dict[str, Any]], model: str, index: int) -> str:
    for b in blocks:
        spec = b["spec"]
        if spec["modelRef"]["name"] == model and (
            spec["partitions"]["first"] <= index <= spec["partitions"]["last"]
        ):
            return str(b["metadata"]["name"])
    raise ValueError(f"no sample Block serves block {index} of {model}")


def _link(
    name: str,
    namespace: str,
    kind: str,
    src: tuple[str, int],
    dst: tuple[str, int],
    catalog: PathCatalog,
    served_by: str,
    repository: Path,
    vector_out: bool,
) -> dict[str, Any]:
    def ref(model: str, block: int) -> dict[str, Any]:
        out: dict[str, Any] = {"name": model}
        if _namespace_of(model, catalog) != namespace:
            out["namespace"] = _namespace_of(model, catalog)
        return {"model": out, "block": block}

    reduction = 4 if name.endswith(".reduced4") else 1
    return {
        "apiVersion": API,
        "kind": "Link",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": kind,
            "from": ref(*src),
            "to": ref(*dst),
            "architecture": {"type": "linear" if vector_out else "conv", "reduction": reduction},
            "artifact": {"uri": f"file://{repository / name / '1' / 'model.onnx'}"},
            "servedBy": {"name": served_by},
        },
    }


def demo_manifests(
    catalog: PathCatalog,
    repository: Path,
    samples: list[dict[str, Any]],
    catalog_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Namespaces, Models, Blocks, Links and the OffloadPolicy for ``catalog``'s build.

    ``catalog_uri`` None keeps the sample's ``configmap://`` catalog reference.
    """
    out: list[dict[str, Any]] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in samples:
        by_kind.setdefault(obj["kind"], []).append(copy.deepcopy(obj))
    out += by_kind.get("Namespace", [])
    providers = {m.name: m for m in catalog.models}
    for model in by_kind.get("Model", []):
        info = providers.get(model["metadata"]["name"])
        if info is None:
            continue
        model["spec"]["partition"] = info.partition.model_dump(by_alias=True)
        if info.accuracy is not None:
            model["spec"]["baselineAccuracy"] = round(info.accuracy, 4)
        if catalog_uri is not None and "catalog" in model["spec"]:
            model["spec"]["catalog"] = {"uri": catalog_uri}
        out.append(model)
    # Host blocks the catalog's paths run: the host's Block serves exactly that range.
    used: dict[str, set[int]] = {}
    for provider in catalog.models:
        names = {b.triton_model: b.index for b in provider.blocks}
        for path in catalog.paths:
            for hop in path.hops:
                if hop.triton_model in names:
                    used.setdefault(provider.name, set()).add(names[hop.triton_model])
    blocks = by_kind.get("Block", [])
    for block in blocks:
        model = block["spec"]["modelRef"]["name"]
        if model != catalog.local_model and used.get(model):
            block["spec"]["partitions"] = {"first": min(used[model]), "last": max(used[model])}
    out += blocks
    links: dict[str, dict[str, Any]] = {}
    for path in catalog.paths:
        link_hops = [h for h in path.hops if h.role == "link"]
        if path.kind.startswith("skip") and link_hops and path.lout is not None:
            assert path.lin is not None
            hop = link_hops[0]
            links[hop.triton_model] = _link(
                hop.triton_model,
                LOCAL_NAMESPACE,
                "skip",
                (catalog.local_model, path.lout),
                (catalog.local_model, path.lin),
                catalog,
                _serving_block(blocks, catalog.local_model, path.lin),
                repository,
                len(hop.output.shape) == 1,
            )
        elif path.kind.startswith("cross") and len(link_hops) == 2:
            host = path.host_model
            lout, lin, hin, hout = path.lout, path.lin, path.hin, path.hout
            if host is None or lout is None or lin is None or hin is None or hout is None:
                raise ValueError(f"cross path {path.id} lacks lout/lin/hin/hout/host_model")
            host_block = _serving_block(blocks, host, hin)
            entry, exit_ = link_hops
            links[entry.triton_model] = _link(
                entry.triton_model,
                HOST_NAMESPACE,
                "cross-entry",
                (catalog.local_model, lout),
                (host, hin),
                catalog,
                host_block,
                repository,
                len(entry.output.shape) == 1,
            )
            links[exit_.triton_model] = _link(
                exit_.triton_model,
                HOST_NAMESPACE,
                "cross-exit",
                (host, hout),
                (catalog.local_model, lin),
                catalog,
                host_block,
                repository,
                len(exit_.output.shape) == 1,
            )
    out += list(links.values())
    out += [demo_policy(p) for p in by_kind.get("OffloadPolicy", [])]
    return out


DEMO_LATENCY_BOUND_US = 200_000
DEMO_C_LOCAL = 1e-4


def demo_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The sample policy with the two figures that describe the machine, not the model.

    The sample is written for a GPU cluster: a 20 ms bound, and local time priced at 1e-6 per
    µs (a point of accuracy is worth half a second of it). On the demo's two shared cores a
    saturated local Triton answers in tens of ms, so under heavy load no path met 20 ms and
    the controller kept the original path by design, and local time stayed too cheap to
    trade any accuracy for. Here local time costs 1e-4 per µs (a point is worth ~5 ms idle,
    ~0.25 ms at 95 % load) and the bound is 200 ms: heavy load makes offloading worth it.
    """
    out = copy.deepcopy(policy)
    out["spec"]["latencyBoundMicroseconds"] = DEMO_LATENCY_BOUND_US
    out["spec"].setdefault("cost", {})["cLocal"] = DEMO_C_LOCAL
    return out


def load_samples() -> list[dict[str, Any]]:
    """Every object of ``crds/samples/*.yaml``."""
    out: list[dict[str, Any]] = []
    for path in sorted((Path(__file__).resolve().parents[4] / "crds" / "samples").glob("*.yaml")):
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out
