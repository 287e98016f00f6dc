"""DIMEE deployed through braid's resources on the local cluster, and SST-2 sent through it.

What a user does on a cluster, with the rig standing in where kwok pods run nothing:

- ``braid dimee export`` (the quick profile's fine-tuned model, cached under the braid
  cache) writes the tiers, ``catalog.json`` and ``dimee-pools.tar``; the archive is served
  by a real HTTPS store (Debian's nginx) and named by URI and sha256 in the OffloadPolicy's
  ``dimee.poolsArtifact``.
- A Model, three Blocks (mobile on the local pool, which also loads the full model, the
  original path; edge; cloud) and the OffloadPolicy are applied; the operator renders the
  Triton Deployments, the routing ConfigMap and the gateway's fetch plan
  (``braid-gateway-plan-<policy>``).
- The kwok runtime runs a real tritonserver per Triton Deployment (the kubelet's part).
- The gateway pod's two containers run here as the kubelet would run them: first its init
  container's command (``braid artifacts assemble`` on the operator's plan: fetched over
  HTTPS, sha256 checked, unpacked), then ``braid gateway`` on the routing ConfigMap's files
  with ``--artifacts-dir`` where the init step put the pools.

``send_sentences`` then sends held-out SST-2 test sentences one request at a time, in
order, and ``offline_decisions`` says what the offline evaluation decides for the same
sentences; the e2e test and ``bench/real_cluster.py`` compare the two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
import yaml

from braid.api.catalog import PathCatalog
from braid.api.routing import ROUTING_FILE
from braid.dimee.evaluate import Calibration, serving_calibration
from braid.dimee.export import (
    CATALOG_FILE,
    INPUT,
    MODEL,
    OUTPUT,
    POOLS_ARCHIVE,
    export_repository,
)
from braid.dimee.train import Trained, dimee_cache_dir, train
from braid.kube.client import Kube
from braid.policy.dimee import (
    TIERS,
    CostModel,
    PoolRouter,
    RouterMode,
    Tiers,
    confidences,
    predictions_at,
    tier_exits,
)
from braid.render.block import FETCHER_CONTAINER
from braid.render.routing import (
    ENDPOINTS_FILE,
    GATEWAY_POLICY_LABEL,
    gateway_plan_configmap_name,
    routing_configmap_name,
)
from braid_dev.kwok_runtime import KwokTritonRuntime
from braid_dev.stack import cluster as devcluster
from braid_dev.stack.artifact_servers import HttpsStore, start_https_store
from braid_dev.stack.gateway_process import GatewayProcess, start_gateway_process

API = "braid.dev/v1alpha1"
POLICY = "minilm-dimee"
CATALOG_CONFIGMAP = "minilm-sst2-catalog"
BLOCKS = {"mobile": ("local", 0), "edge": ("edge", 1), "cloud": ("cloud", 2)}
"""Block tier -> (node pool, partition block)."""
SENTENCES = 300
"""Held-out SST-2 test sentences sent per mode: the first ones of the test split, fixed."""


class DimeeDeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class DimeeExport:
    trained: Trained
    calibration: Calibration
    repository: Path
    catalog: PathCatalog

    @property
    def archive(self) -> Path:
        return self.repository / POOLS_ARCHIVE


def cached_export() -> DimeeExport:
    """The quick profile's model (trained once, cached), exported with the pools at Ours-D's
    validation operating point, as ``braid dimee evaluate --export`` does; the export is
    cached beside the model, keyed by it."""
    trained = train("quick")
    cal = serving_calibration(trained, Tiers(mobile=2, edge=4, layers=6), CostModel())
    out = dimee_cache_dir() / f"export-{trained.key}"
    if not (out / POOLS_ARCHIVE).is_file():
        partial = out.with_name(out.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        export_repository(trained, cal, partial)
        shutil.rmtree(out, ignore_errors=True)
        partial.replace(out)
    catalog = PathCatalog.model_validate_json((out / CATALOG_FILE).read_text())
    return DimeeExport(trained, cal, out, catalog)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# -- the resources ------------------------------------------------------------------------------


def dimee_objects(
    export: DimeeExport, namespace: str, pools_uri: str, pools_sha256: str, mode: RouterMode
) -> list[dict[str, Any]]:
    """The catalog ConfigMap, the Model, one Block per tier and the OffloadPolicy."""
    provider = export.catalog.models[0]
    tiers = export.calibration.tiers
    model = {
        "apiVersion": API,
        "kind": "Model",
        "metadata": {"name": MODEL, "namespace": namespace},
        "spec": {
            # The frozen weights' home; the operator never reads it.
            "artifact": {"uri": f"s3://{namespace}/{MODEL}.onnx"},
            "input": provider.input.model_dump(by_alias=True),
            "output": provider.output.model_dump(by_alias=True),
            # The tier models carry their own exits (α is inside the graphs): no exit heads.
            "partition": {
                "blocks": [
                    {"name": b.name, "firstLayer": b.first_layer, "lastLayer": b.last_layer}
                    for b in provider.partition.blocks
                ]
            },
            "baselineAccuracy": round(export.catalog.baseline_accuracy, 6),
            "catalog": {"uri": f"configmap://{CATALOG_CONFIGMAP}/{CATALOG_FILE}"},
        },
    }
    blocks = [
        {
            "apiVersion": API,
            "kind": "Block",
            "metadata": {"name": f"dimee-{tier}", "namespace": namespace},
            "spec": {
                "modelRef": {"name": MODEL},
                "partitions": {"first": index, "last": index},
                "tier": pool,
                "resources": {"cpu": "1", "memory": "2Gi"},
                # The full model rides with the mobile tier: the original path, the
                # gateway's fallback when a host fails.
                **({"extraModels": ["full"]} if tier == "mobile" else {}),
            },
        }
        for tier, (pool, index) in BLOCKS.items()
    ]
    policy = {
        "apiVersion": API,
        "kind": "OffloadPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {
            "modelRef": {"name": MODEL},
            "latencyBoundMicroseconds": 10_000_000,
            "allPaths": True,
            "dimee": {
                "enabled": True,
                "mode": mode,
                "mobileLayers": tiers.mobile,
                "edgeLayers": tiers.edge,
                "poolsArtifact": {"uri": pools_uri, "sha256": pools_sha256},
            },
        },
    }
    catalog = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CATALOG_CONFIGMAP, "namespace": namespace},
        "data": {CATALOG_FILE: (export.repository / CATALOG_FILE).read_text()},
    }
    return [catalog, model, *blocks, policy]


# -- the gateway pod, run as the kubelet would ------------------------------------------------


def run_fetch_step(
    plan_json: str, root: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The gateway's init container: ``braid artifacts assemble`` on the operator's plan."""
    root.mkdir(parents=True, exist_ok=True)
    plan = root.parent / f"{root.name}-plan.json"
    plan.write_text(plan_json)
    argv = [sys.executable, "-m", "braid.cli", "artifacts", "assemble", f"--plan={plan}"]
    argv += [f"--root={root}", f"--termination-log={root.parent / f'{root.name}-termination-log'}"]
    return subprocess.run(
        [*argv, "--attempts=2"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass
class DimeeRig:
    """The deployed resources, the Tritons that serve them and the HTTPS store."""

    kube: Kube
    access: devcluster.ClusterAccess
    namespace: str
    export: DimeeExport
    store: HttpsStore
    runtime: KwokTritonRuntime
    workdir: Path

    def configmap(self, name: str) -> dict[str, Any] | None:
        return self.kube.get("v1", "ConfigMap", name, self.namespace)

    def policy_ready(self) -> dict[str, Any] | None:
        policy = self.kube.get(API, "OffloadPolicy", POLICY, self.namespace) or {}
        conditions = (policy.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c.get("type") == "Ready"), None)

    def set_mode(self, mode: RouterMode) -> None:
        self.access.kubectl(
            "patch", "offloadpolicy", POLICY, "-n", self.namespace, "--type=merge",
            "-p", json.dumps({"spec": {"dimee": {"mode": mode}}}),
        )  # fmt: skip

    def routing(self, mode: RouterMode, timeout: float = 600.0) -> dict[str, Any]:
        """The routing ConfigMap once it has ``mode`` and every hop of every path is served
        by a tritonserver running now with the model loaded."""
        needed = {h.triton_model for p in self.export.catalog.paths for h in p.hops}
        deadline = time.monotonic() + timeout
        last = "no routing ConfigMap yet"
        while time.monotonic() < deadline:
            mine = {k: v for k, v in self.runtime.failures.items() if k[0] == self.namespace}
            if mine:
                raise DimeeDeployError(f"the kwok runtime could not start Triton: {mine}")
            cm = self.configmap(routing_configmap_name(POLICY))
            if cm is not None:
                table = json.loads(cm["data"][ROUTING_FILE])
                models = json.loads(cm["data"][ENDPOINTS_FILE])["models"]
                serving = self.runtime.serving()
                missing = sorted(m for m in needed if (models.get(m), m) not in serving)
                if (table.get("dimee") or {}).get("mode") != mode:
                    last = f"routing.json has DIMEE {table.get('dimee')}"
                elif missing:
                    last = f"no running Triton serves {missing} yet"
                else:
                    return cm
            time.sleep(1.0)
        raise DimeeDeployError(f"the DIMEE routing was not ready after {timeout:.0f} s: {last}")

    @contextlib.contextmanager
    def gateway(self, mode: RouterMode) -> Iterator[GatewayProcess]:
        """The gateway pod: its init step on the operator's plan, then ``braid gateway``."""
        cm = self.routing(mode)
        plan = self.configmap(gateway_plan_configmap_name(POLICY))
        if plan is None:
            raise DimeeDeployError("the operator rendered no gateway fetch plan")
        pod = self.workdir / f"gateway-{mode}"
        shutil.rmtree(pod, ignore_errors=True)
        fetched = run_fetch_step(
            plan["data"]["plan.json"],
            pod / "artifacts",
            {"BRAID_CA_BUNDLE": str(self.store.ca_path)},
        )
        if fetched.returncode != 0:
            raise DimeeDeployError(f"the gateway's fetch step failed: {fetched.stderr[-2000:]}")
        files = pod / "config"
        files.mkdir(parents=True)
        for key in (ROUTING_FILE, ENDPOINTS_FILE):
            (files / key).write_text(cm["data"][key])
        gateway = start_gateway_process(
            self.export.repository / CATALOG_FILE,
            {},
            files / ROUTING_FILE,
            extra=[
                f"--endpoints={files / ENDPOINTS_FILE}",
                f"--artifacts-dir={pod / 'artifacts'}",
                "--max-in-flight-per-hop=1",
            ],
        )
        try:
            yield gateway
        finally:
            gateway.stop()


GATEWAY_POD = "braid-gateway-played"


@contextlib.contextmanager
def gateway_pod_with_failed_fetch(
    rig: DimeeRig, exit_code: int, termination_message: str
) -> Iterator[str]:
    """A gateway pod of the policy whose ``fetch-models`` init container ended as the fetch
    step here did, its status written as a kubelet writes it (kwok pods run nothing, so the
    rig plays the kubelet, as the kwok runtime does for Triton pods). A scheduling gate keeps
    the scheduler and kwok off it. Deleted when the block exits."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": GATEWAY_POD,
            "namespace": rig.namespace,
            "labels": {GATEWAY_POLICY_LABEL: POLICY, "app.kubernetes.io/component": "gateway"},
        },
        "spec": {
            "schedulingGates": [{"name": "braid.dev/played-by-the-rig"}],
            "initContainers": [
                {"name": FETCHER_CONTAINER, "image": "braid-gateway", "command": ["braid"]}
            ],
            "containers": [{"name": "gateway", "image": "braid-gateway"}],
        },
    }
    rig.access.kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        rig.kube.patch_status(
            "v1",
            "Pod",
            GATEWAY_POD,
            rig.namespace,
            {
                "phase": "Pending",
                "initContainerStatuses": [
                    {
                        "name": FETCHER_CONTAINER,
                        "image": "braid-gateway",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 1,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Error",
                                "message": termination_message,
                            }
                        },
                    }
                ],
            },
        )
        yield GATEWAY_POD
    finally:
        rig.access.kubectl(
            "delete", "pod", GATEWAY_POD, "-n", rig.namespace, "--wait=false", check=False
        )


@contextlib.contextmanager
def deploy_dimee(
    access: devcluster.ClusterAccess,
    namespace: str,
    workdir: Path,
    mode: RouterMode = "adaptive",
    export: DimeeExport | None = None,
) -> Iterator[DimeeRig]:
    """Apply the DIMEE resources in ``namespace`` (which must exist, with an operator watching
    it) and keep a tritonserver running per Block until the block exits."""
    export = export or cached_export()
    root = workdir / "store"
    (root / "models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export.archive, root / "models" / POOLS_ARCHIVE)
    store = start_https_store(root, workdir / "nginx")
    kube = Kube.from_kubeconfig(access.kubeconfig)
    runtime = KwokTritonRuntime(kube, export.repository, workdir / "runtime")
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    try:
        objects = dimee_objects(
            export,
            namespace,
            f"{store.url}/models/{POOLS_ARCHIVE}",
            sha256_of(export.archive),
            mode,
        )
        access.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        thread.start()
        yield DimeeRig(kube, access, namespace, export, store, runtime, workdir)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=120)
        store.stop()


# -- sentences through the gateway, and the offline evaluation of the same ones -------------


@dataclass(frozen=True)
class Served:
    paths: list[str]
    predictions: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean())


def send_sentences(grpc_address: str, export: DimeeExport, n: int = SENTENCES) -> Served:
    """The first ``n`` SST-2 test sentences (token ids, as a client tokenises them), one per
    request, in order, to the gateway at ``grpc_address``: Ours-D's centroids move after each
    answer, as offline."""
    test = export.trained.splits["test"]
    ids = test.ids[:n]
    client = grpcclient.InferenceServerClient(grpc_address)
    paths: list[str] = []
    predictions = np.empty(len(ids), dtype=np.int64)
    try:
        for i in range(len(ids)):
            x = grpcclient.InferInput(INPUT.name, [1, ids.shape[1]], INPUT.datatype)
            x.set_data_from_numpy(ids[i : i + 1])
            result = client.infer(MODEL, [x], client_timeout=120)
            params = result.get_response().parameters
            paths.append(params["braid_path"].string_param if "braid_path" in params else "")
            predictions[i] = int(result.as_numpy(OUTPUT.name)[0].argmax())
    finally:
        client.close()
    return Served(paths, predictions, np.asarray(test.labels[:n]))


@dataclass(frozen=True)
class Offline:
    tiers: np.ndarray[Any, Any]
    predictions: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]
    centroids: np.ndarray[Any, Any]
    """The router's centroids after the last sentence (Ours-D moves them)."""

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean())

    def path_ids(self) -> list[str]:
        from braid.dimee.export import tier_path_id

        return [tier_path_id(TIERS[int(k)]) for k in self.tiers]


class Calibrated(Protocol):
    """A trained DIMEE model with its serving calibration (an export, a test's deployment)."""

    @property
    def trained(self) -> Trained: ...

    @property
    def calibration(self) -> Calibration: ...


def offline_decisions(export: Calibrated, mode: RouterMode, n: int = SENTENCES) -> Offline:
    """Tier and prediction of the same sentences as the offline evaluation computes them for
    the method ``mode`` serves (one sample at a time, from the same calibration)."""
    cal = export.calibration
    test = export.trained.splits["test"]
    logits = export.trained.logits["test"][:n]
    conf = confidences(logits)
    router = PoolRouter(cal.centroids, cal.counts, mode=mode, prior_count=100)
    emb = test.embeddings[:n]
    tier_of = (
        router.assign_with_feedback(emb, conf, cal.alpha, cal.tiers)
        if router.feedback
        else router.assign(emb)
    )
    exit_at = tier_exits(conf, tier_of, cal.alpha, cal.tiers)
    return Offline(
        tier_of, predictions_at(logits, exit_at), np.asarray(test.labels[:n]), router.centroids
    )


@dataclass(frozen=True)
class Comparison:
    """One mode's sentences through the deployed gateway beside the offline evaluation."""

    mode: RouterMode
    served: Served
    offline: Offline

    @property
    def same_tiers(self) -> bool:
        return self.served.paths == self.offline.path_ids()

    @property
    def same_decisions(self) -> bool:
        return bool((self.served.predictions == self.offline.predictions).all())

    def summary(self) -> dict[str, Any]:
        return {
            "sentences": len(self.served.predictions),
            "accuracy": self.served.accuracy,
            "offline_accuracy": self.offline.accuracy,
            "same_tiers": self.same_tiers,
            "same_decisions": self.same_decisions,
            "tier_counts": {
                tier: int((self.offline.tiers == k).sum()) for k, tier in enumerate(TIERS)
            },
        }


def compare_with_offline(rig: DimeeRig, mode: RouterMode, n: int = SENTENCES) -> Comparison:
    """Switch the policy to ``mode`` (DIMEE settings take effect when the gateway starts),
    start the gateway pod on what the operator rendered, send ``n`` sentences through it."""
    rig.set_mode(mode)
    with rig.gateway(mode) as gateway:
        served = send_sentences(gateway.grpc_address, rig.export, n)
    return Comparison(mode, served, offline_decisions(rig.export, mode, n))
