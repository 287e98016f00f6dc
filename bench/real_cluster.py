"""The real-cluster contract, measured: artifacts by URI, configs from the Block, a stock
Prometheus feeding the controller. Writes ``results/real_cluster.json``.

1. **Artifacts.** The synthetic provider pair's Triton repository is packed as a
   ``.tar.gz``, served by versitygw (``s3://``) and nginx over TLS (``https://``), and
   assembled by the init container's code (``braid.artifacts.plan.assemble``) from the plan
   the operator renders for a GPU Block: digest checked, every served model present, the
   Block's batching and ``KIND_GPU`` instance groups written into each config. Every
   resulting config is parsed by Triton's ``ModelConfig`` protobuf.
2. **Unknown scheme.** A Block whose repository is ``ftp://`` is sent to the real API server
   (server-side dry run) and must be refused naming the field.
3. **Prometheus.** On a cluster with a real node, a Triton-labelled pod runs in a container;
   a stock Prometheus with Kubernetes service discovery and the chart's relabeling scrapes it;
   the controller's role query must find it up.

4. **DIMEE through resources** (``braid_dev.dimee_deploy``, the code path of
   ``tests/e2e/test_dimee_deploy.py``): the quick profile's three tiers as Blocks on the
   local, edge and cloud pools (kwok nodes; a real tritonserver per Triton Deployment), the
   pools archive fetched by URI over HTTPS with its sha256 checked by the gateway's init
   step, and the first SST-2 test sentences through the gateway in Ours-F and Ours-D mode.
   ``dimee_e2e_accuracy`` is Ours-D's (what ``braid dimee evaluate --export`` serves); the
   offline evaluation's accuracy on the same sentences and whether every decision matched
   are beside it.

``gpu_check_ran`` says whether ``hack/gpu-check.sh`` ran on a GPU (it writes
``gpu_check.json`` there).

    python bench/real_cluster.py               # everything
    python bench/real_cluster.py --only-dimee  # step 4 alone, merged into the results file
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from braid.api.v1alpha1.block import BlockSpec
from braid.artifacts.plan import assemble
from braid.controller.metrics import MetricQueries
from braid.dataplane.promql import PrometheusClient
from braid.render.model_repository import REPOSITORY_DIR, render_repository_plan
from braid.settings import Settings, get_settings
from braid_dev import synthetic as syn
from braid_dev.dimee_deploy import compare_with_offline, deploy_dimee
from braid_dev.stack import cluster as devcluster
from braid_dev.stack import prometheus_sd as sd
from braid_dev.stack.artifact_servers import start_https_store, start_s3_store
from braid_dev.stack.operator_process import install_operator_prerequisites, start_operator

ROOT = Path(__file__).resolve().parent.parent
GPU_BLOCK = {
    "modelRef": {"name": syn.LOCAL},
    "partitions": {"first": 0, "last": 0},
    "tier": "edge",
    "resources": {"gpu": 2},
    "triton": {"maxBatchSize": 32, "instanceCount": 2},
}


def _archive(repository: Path, out: Path) -> str:
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(repository.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(repository)))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def artifacts(work: Path, settings: Settings) -> dict[str, Any]:
    built = syn.build_synthetic_repository(work / "export")
    store = work / "store" / "models"
    store.mkdir(parents=True)
    digest = _archive(built.repository, store / "toy.tar.gz")
    models = sorted(p.parent.name for p in built.repository.glob("*/config.pbtxt"))
    s3 = start_s3_store(work / "store", work / "versitygw", settings.bin_dir)
    https = start_https_store(work / "store", work / "nginx")
    delivered, validated = {}, 0
    saved = dict(os.environ)
    try:
        os.environ.update(s3.env())
        os.environ["BRAID_CA_BUNDLE"] = str(https.ca_path)
        for uri in ("s3://models/toy.tar.gz", f"{https.url}/models/toy.tar.gz"):
            spec = BlockSpec.model_validate(
                {
                    **GPU_BLOCK,
                    "modelRepository": {
                        "uri": uri,
                        "format": "triton-repository",
                        "sha256": digest,
                    },
                }
            )
            plan = render_repository_plan(spec, models)
            root = work / "pods" / uri.partition("://")[0]
            assemble(plan, root)
            for model in models:
                text = (root / REPOSITORY_DIR / model / "config.pbtxt").read_text()
                config = text_format.Parse(text, model_config_pb2.ModelConfig())
                (group,) = config.instance_group
                assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
                assert list(group.gpus) == [0, 1]
                validated += 1
            delivered[uri.partition("://")[0]] = True
    finally:
        os.environ.clear()
        os.environ.update(saved)
        s3.stop()
        https.stop()
    return {"delivered_by_scheme": delivered, "models": len(models), "configs_validated": validated}


@contextlib.contextmanager
def namespace_on_a_cluster(
    settings: Settings, namespace: str
) -> Iterator[devcluster.ClusterAccess]:
    """A namespace (with its default ServiceAccount) on the cluster of ``settings``, started
    for it unless one runs; the namespace goes, and a cluster started here stops, after."""
    result = devcluster.up(settings)
    access = devcluster.access(settings)
    try:
        access.kubectl("create", "namespace", namespace, check=False)
        for _ in range(60):
            if access.kubectl(
                "get", "serviceaccount", "default", "-n", namespace, check=False
            ).stdout:
                break
            time.sleep(1)
        yield access
    finally:
        access.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if not result.already_running:
            devcluster.down(settings)


def cluster_checks(work: Path, settings: Settings) -> dict[str, Any]:
    namespace = "real-cluster-bench"
    with namespace_on_a_cluster(settings, namespace) as access:
        block = {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Block",
            "metadata": {"name": "ftp-block", "namespace": namespace},
            "spec": {**GPU_BLOCK, "modelRepository": {"uri": "ftp://models/toy.tar.gz"}},
        }
        access.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        refused = access.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=json.dumps(block), check=False
        )
        unknown_refused = refused.returncode != 0 and "modelRepository" in refused.stderr
        access.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
        access.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(sd.triton_like_pod()))
        access.kubectl(
            "wait", "--for=condition=Ready", f"pod/{sd.POD_NAME}", "-n", namespace, "--timeout=120s"
        )
        prometheus = sd.start_sd_prometheus(
            settings.bin_dir / "prometheus-sd", access.kubeconfig, [namespace], work / "prometheus"
        )
        try:
            targets = prometheus.up_targets()
            queries = MetricQueries(
                model=sd.MODEL,
                window="4s",
                roles={"local": f'braid_model=~"{sd.MODEL}",namespace=~"{namespace}"'},
            )
            with PrometheusClient(prometheus.url) as client:
                up = client.query(queries.tiers_up)
        finally:
            prometheus.stop()
    return {
        "unknown_scheme_refused": unknown_refused,
        "unknown_scheme_message": refused.stderr.strip().splitlines()[-1][:300],
        "prometheus_sd_targets_up": len(targets),
        "controller_role_query_up": [s.value for s in up],
    }


def dimee_e2e(work: Path, settings: Settings) -> dict[str, Any]:
    """Step 4 on a cluster of its own (kwok nodes suffice: the rig runs the Tritons)."""
    namespace = "real-cluster-dimee"
    with namespace_on_a_cluster(settings, namespace) as access:
        install_operator_prerequisites(access)
        operator = start_operator(access, work / "operator", namespaces=[namespace])
        try:
            with deploy_dimee(access, namespace, work / "dimee") as rig:
                modes = {m: compare_with_offline(rig, m).summary() for m in ("fixed", "adaptive")}
        finally:
            operator.stop()
    return {"alpha": rig.export.calibration.alpha, "model_key": rig.export.trained.key, **modes}


def dimee_fields(dimee: dict[str, Any]) -> dict[str, Any]:
    ours_d = dimee["adaptive"]
    return {
        "dimee_e2e_accuracy": ours_d["accuracy"],
        "dimee_e2e_offline_accuracy": ours_d["offline_accuracy"],
        "dimee_e2e_same_decisions": all(
            dimee[m]["same_decisions"] and dimee[m]["same_tiers"] for m in ("fixed", "adaptive")
        ),
        "dimee_e2e": dimee,
    }


def _fetched_in_containers() -> dict[str, Any]:
    """What ``results/real_nodes.json`` recorded of the fetch in real containers."""
    nodes_file = ROOT / "results" / "real_nodes.json"
    if not nodes_file.exists():
        return {"pods": 0, "source": "results/real_nodes.json missing: run bench/real_nodes.py"}
    recorded = json.loads(nodes_file.read_text())
    return {
        "pods": recorded.get("triton_pods_fetched_in_containers", 0),
        "source": f"results/real_nodes.json of {recorded.get('date', '?')}",
    }


def main() -> None:
    out = ROOT / "results" / "real_cluster.json"
    if "--only-dimee" in sys.argv[1:]:
        with tempfile.TemporaryDirectory(prefix="braid-real-cluster-") as tmp:
            work = Path(tmp)
            settings = get_settings().model_copy(update={"state_dir": work / "state"})
            fields = dimee_fields(dimee_e2e(work, settings))
        report = json.loads(out.read_text())
        report.update(fields)
        report["dimee_e2e_date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(fields, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="braid-real-cluster-") as tmp:
        work = Path(tmp)
        settings = get_settings().model_copy(update={"state_dir": work / "state"})
        delivered = artifacts(work, settings)
        checks = cluster_checks(work, settings)
        dimee = dimee_fields(dimee_e2e(work, settings))
    gpu = ROOT / "results" / "gpu_check.json"
    report = {
        "benchmark": "real_cluster",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "artifacts_delivered": int(all(delivered["delivered_by_scheme"].values())),
        "artifacts": delivered,
        # Measured by bench/real_nodes.py, which deploys the chart onto the real node: the
        # Triton pods whose fetch-models init container fetched and checked their archive.
        "artifacts_delivered_to_pods_in_containers": _fetched_in_containers(),
        "triton_configs_validated": delivered["configs_validated"],
        "unknown_scheme_refused": int(checks["unknown_scheme_refused"]),
        "unknown_scheme_message": checks["unknown_scheme_message"],
        "prometheus_sd_targets_up": checks["prometheus_sd_targets_up"],
        "controller_role_query_up": checks["controller_role_query_up"],
        **dimee,
        "gpu_check_ran": bool(gpu.exists() and json.loads(gpu.read_text()).get("gpu")),
        "notes": (
            "Step 1 assembles the artifacts with the init container's code here, for every "
            "scheme; the fetch in real containers is bench/real_nodes.py's (see "
            "artifacts_delivered_to_pods_in_containers). DIMEE's tiers run on kwok pools."
        ),
    }
    out = ROOT / "results" / "real_cluster.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
