"""OffloadPolicy -> the gateway's routing ConfigMap, resolved against real Blocks and Links.

Uses the synthetic provider pair (``braid_dev.synthetic``): a local model ``toy`` with a
skip link, an exit head and a cross-connection through the host model ``toyhost``, whose
catalog is published in a ConfigMap as a provider would.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from braid.api.catalog import PathCatalog
from braid.api.common import API_VERSION
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec
from braid.controller.policy_sink import PolicyStatusSink
from braid.controller.status import policy_status
from braid.kube.client import Kube
from braid.kube.policy_status import read_policy
from braid.policy.decision import Metrics, PolicyState, TierMetrics, choose_paths
from braid.render.conditions import set_condition
from braid_dev import synthetic
from braid_dev.kwok_runtime import KwokTritonRuntime
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for


def _model(name: str, ns: str, catalog: PathCatalog, with_catalog: bool) -> dict[str, Any]:
    provider = next(m for m in catalog.models if m.name == name)
    spec: dict[str, Any] = {
        "artifact": {"uri": f"s3://{ns}/{name}.pt"},
        "input": provider.input.model_dump(by_alias=True),
        "output": provider.output.model_dump(by_alias=True),
        "baselineAccuracy": catalog.baseline_accuracy if with_catalog else 0.5,
        "partition": {
            "blocks": [
                {
                    "name": b.name,
                    "firstLayer": b.first_layer,
                    "lastLayer": b.last_layer,
                    "exitHead": with_catalog and i == synthetic.EXIT_BLOCK,
                }
                for i, b in enumerate(provider.partition.blocks)
            ]
        },
    }
    if not with_catalog:
        # The host consents to cross links through every block (publish.exposedBlocks).
        spec["publish"] = {
            "taskFamily": "image-classification",
            "architectureFamily": "cnn",
            "exposedBlocks": [b.name for b in provider.partition.blocks],
        }
    if with_catalog:
        spec["catalog"] = {"uri": "configmap://toy-catalog/catalog.json"}
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _block(name: str, ns: str, model: str, first: int, last: int) -> dict[str, Any]:
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Block",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "modelRef": {"name": model},
            "partitions": {"first": first, "last": last},
            "tier": "local",
        },
    }


def _link(
    name: str,
    ns: str,
    type_: str,
    src: tuple[str, str | None, int],
    dst: tuple[str, str | None, int],
    served_by: str,
) -> dict[str, Any]:
    def end(ref: tuple[str, str | None, int]) -> dict[str, Any]:
        model: dict[str, Any] = {"name": ref[0]}
        if ref[1]:
            model["namespace"] = ref[1]
        return {"model": model, "block": ref[2]}

    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Link",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": type_,
            "from": end(src),
            "to": end(dst),
            "architecture": {"type": "conv"},
            "artifact": {"uri": f"s3://{ns}/{name}.pt"},
            "servedBy": {"name": served_by},
        },
    }


@dataclass(frozen=True)
class Providers:
    local: str
    host: str
    catalog: PathCatalog
    models: synthetic.SyntheticModels


@pytest.fixture
def providers(cluster: E2ECluster, operator: ManagedProcess, tmp_path: Path) -> Iterator[Providers]:
    models = synthetic.build_synthetic_repository(tmp_path / "repo")
    catalog = models.catalog
    suffix = uuid.uuid4().hex[:6]
    local, host = f"e2e-toy-local-{suffix}", f"e2e-toy-host-{suffix}"
    for ns in (local, host):
        cluster.kubectl("create", "namespace", ns, check=False)
    cluster.kubectl(
        "create",
        "configmap",
        "toy-catalog",
        "-n",
        local,
        f"--from-file=catalog.json={tmp_path / 'repo' / synthetic.CATALOG_FILE}",
    )
    objs = [
        _model(synthetic.LOCAL, local, catalog, with_catalog=True),
        _model(synthetic.HOST, host, catalog, with_catalog=False),
        _block("toy-all", local, synthetic.LOCAL, 0, 3),
        _block("toyhost-all", host, synthetic.HOST, 1, 1),
        _link(
            synthetic.SKIP_LINK,
            local,
            "skip",
            (synthetic.LOCAL, None, 0),
            (synthetic.LOCAL, None, 2),
            "toy-all",
        ),
        _link(
            synthetic.XIN,
            host,
            "cross-entry",
            (synthetic.LOCAL, local, 0),
            (synthetic.HOST, None, 1),
            "toyhost-all",
        ),
        _link(
            synthetic.XOUT,
            host,
            "cross-exit",
            (synthetic.HOST, None, 1),
            (synthetic.LOCAL, local, 2),
            "toyhost-all",
        ),
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    try:
        yield Providers(local, host, catalog, models)
    finally:
        cluster.kubectl(
            "delete",
            "offloadpolicies,links,blocks,models",
            "--all",
            "-n",
            local,
            "--wait=true",
            "--timeout=45s",
            check=False,
        )
        cluster.kubectl(
            "delete",
            "links,blocks,models",
            "--all",
            "-n",
            host,
            "--wait=true",
            "--timeout=45s",
            check=False,
        )


def _policy(ns: str, host_ns: str, **spec: Any) -> str:
    body = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "OffloadPolicy",
        "metadata": {"name": "toy", "namespace": ns},
        "spec": {
            "modelRef": {"name": synthetic.LOCAL},
            "latencyBoundMicroseconds": 50000,
            "allowedHosts": [{"namespace": host_ns, "model": synthetic.HOST}],
            "earlyExits": [{"block": synthetic.EXIT_BLOCK, "confidence": 0.8}],
            **spec,
        },
    }
    return yaml.safe_dump(body)


def _configmap(cluster: E2ECluster, ns: str) -> dict[str, Any] | None:
    out = cluster.kubectl(
        "get", "configmap", "braid-routing-toy", "-n", ns, "-o", "json", check=False
    )
    return json.loads(out) if out else None


def test_policy_renders_routing_and_endpoints_for_every_path(
    cluster: E2ECluster, providers: Providers
) -> None:
    local, host, catalog = providers.local, providers.host, providers.catalog
    cluster.kubectl("apply", "-f", "-", input=_policy(local, host, allPaths=True))

    def complete() -> dict[str, Any] | None:
        cm = _configmap(cluster, local)
        if cm is None:
            return None
        endpoints = json.loads(cm["data"]["endpoints.json"])["models"]
        needed = {h.triton_model for p in catalog.paths for h in p.hops}
        return cm if needed <= set(endpoints) else None

    cm = wait_for(complete, "a routing ConfigMap that resolves every hop of every path")
    routing = json.loads(cm["data"]["routing.json"])
    assert routing["paths"] == [{"id": catalog.original_path, "weight": 1.0}]
    assert routing["fallback_path"] == catalog.original_path
    assert routing["exits"] == [{"block": synthetic.EXIT_BLOCK, "confidence": 0.8}]
    assert routing["latency_bound_us"] == 50000
    endpoints = json.loads(cm["data"]["endpoints.json"])["models"]
    # Host-side models are served by the host's Block, local ones by the local Block.
    assert endpoints[synthetic.XIN] == f"triton-toyhost-all.{host}.svc:8001"
    assert endpoints[synthetic.SKIP_LINK] == f"triton-toy-all.{local}.svc:8001"
    assert endpoints[synthetic.EXIT_HEAD] == f"triton-toy-all.{local}.svc:8001"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "OffloadPolicy"

    policy = wait_for(
        lambda: (
            (
                p := json.loads(
                    cluster.kubectl("get", "offloadpolicy", "toy", "-n", local, "-o", "json")
                )
            )
            .get("status", {})
            .get("candidatePaths")
            and p
        ),
        "policy status",
    )
    assert policy["status"]["candidatePaths"] == len(catalog.paths)
    # The exit head is loaded by the local Block's Triton, next to its block models.
    dep = cluster.kubectl_json("get", "deployment", "triton-toy-all", "-n", local)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--load-model={synthetic.EXIT_HEAD}" in args


def test_unknown_candidate_path_is_reported(cluster: E2ECluster, providers: Providers) -> None:
    local, host, catalog = providers.local, providers.host, providers.catalog
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=_policy(local, host, candidatePaths=[catalog.original_path, "toy/nope"]),
    )

    def reported() -> dict[str, Any] | None:
        p = json.loads(cluster.kubectl("get", "offloadpolicy", "toy", "-n", local, "-o", "json"))
        ready = next(
            (c for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
            None,
        )
        return ready if ready and ready["reason"] == "UnknownPaths" else None

    ready = wait_for(reported, "Ready=False UnknownPaths")
    assert ready["status"] == "False"
    assert "toy/nope" in ready["message"]


def test_kwok_runtime_serves_each_block_and_paths_run_end_to_end(
    cluster: E2ECluster, providers: Providers, tmp_path: Path
) -> None:
    """Real tritonservers stand in for the kwok pods; every path chained over the addresses
    the operator published gives the in-process result."""
    local, host, catalog = providers.local, providers.host, providers.catalog
    cluster.kubectl("apply", "-f", "-", input=_policy(local, host, allPaths=True))
    kube = Kube.from_kubeconfig(cluster.access.kubeconfig)
    runtime = KwokTritonRuntime(kube, providers.models.repository, tmp_path / "runtime")
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    try:

        def loopback_endpoints() -> dict[str, str] | None:
            assert not runtime.failures, runtime.failures
            cm = _configmap(cluster, local)
            models = json.loads(cm["data"]["endpoints.json"])["models"] if cm else {}
            needed = {h.triton_model for p in catalog.paths for h in p.hops}
            # Only servers running now that have the model loaded: a rendering from before a
            # restart would point at a port some other process may hold by now, and a Link's
            # endpoint is published before the host's server restarts with the link loaded.
            serving = runtime.serving()
            ok = needed <= set(models) and all((models[m], m) in serving for m in needed)
            return models if ok else None

        endpoints = wait_for(
            loopback_endpoints, "endpoints served by local tritonservers", timeout=180
        )
        assert not runtime.failures
        x = np.random.default_rng(0).standard_normal((4, *synthetic.INPUT_SHAPE)).astype(np.float32)
        for path in catalog.paths:
            t = x
            for hop in path.hops:
                with grpcclient.InferenceServerClient(endpoints[hop.triton_model]) as client:
                    inp = grpcclient.InferInput(hop.input.name, list(t.shape), hop.input.datatype)
                    inp.set_data_from_numpy(t)
                    result = client.infer(hop.triton_model, [inp])
                    t = result.as_numpy(hop.output.name)
            expected = providers.models.run_hops([h.triton_model for h in path.hops], x)
            np.testing.assert_allclose(t, expected, rtol=1e-4, atol=1e-5, err_msg=path.id)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not runtime.servers, "the runtime stops every server it started"


def test_model_reports_its_paths_and_partition_mismatches(
    cluster: E2ECluster, providers: Providers
) -> None:
    local, catalog = providers.local, providers.catalog

    def model_status() -> dict[str, Any]:
        model = json.loads(
            cluster.kubectl("get", "model", synthetic.LOCAL, "-n", local, "-o", "json")
        )
        return model.get("status") or {}

    status = wait_for(lambda: (s := model_status()).get("paths") and s, "Model status.paths")
    assert status["paths"] == len(catalog.paths)
    # A partition that is not the one the catalog was built from: named block, layers, shapes.
    patch = {
        "spec": {
            "partition": {
                "blocks": [
                    {"name": "b0", "firstLayer": 0, "lastLayer": 1},
                    {"name": "b1", "firstLayer": 2, "lastLayer": 2},
                    {"name": "b2", "firstLayer": 3, "lastLayer": 3},
                ]
            }
        }
    }
    cluster.kubectl(
        "patch", "model", synthetic.LOCAL, "-n", local, "--type=merge", "-p", json.dumps(patch)
    )

    def mismatch() -> dict[str, Any] | None:
        ready = next(
            (c for c in model_status().get("conditions") or [] if c["type"] == "Ready"), None
        )
        return ready if ready and ready["status"] == "False" else None

    ready = wait_for(mismatch, "Ready=False for a partition the catalog was not built with")
    assert ready["reason"] == "InvalidPartition"
    assert "spec.partition.blocks" in ready["message"]
    assert "4" in ready["message"]  # the catalog's block count


def _traded_off(catalog: PathCatalog) -> PathCatalog:
    """The synthetic catalog's paths all score the same; give them the usual trade-off, so
    idle the original wins and a busy local tier sends traffic through the host."""
    accuracy = {synthetic.SKIP: 0.49, synthetic.EXIT: 0.4}
    paths = [
        p.model_copy(
            update={"metrics": p.metrics.model_copy(update={"accuracy": accuracy.get(p.id, 0.5)})}
        )
        for p in catalog.paths
    ]
    return catalog.model_copy(update={"paths": paths})


def test_the_controllers_status_and_events_read_back_from_the_api_server(
    cluster: E2ECluster, providers: Providers
) -> None:
    """What the controller writes is what ``kubectl`` shows: every cost term (nothing pruned),
    the load it priced at, conditions with real transition times, an Event per switch."""
    local, host = providers.local, providers.host
    catalog = _traded_off(providers.catalog)
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=_policy(
            local,
            host,
            allPaths=True,
            cost={"cLocal": 1e-3, "cHost": 1e-3},
            hysteresis={"costMargin": 0.1, "minDwellSeconds": 0},
        ),
    )
    kube = Kube.from_kubeconfig(cluster.access.kubeconfig)
    stored = read_policy("toy", local, kube)
    spec = OffloadPolicySpec.model_validate(stored["spec"])
    generation = stored["metadata"]["generation"]
    sink = PolicyStatusSink("toy", local, kube)
    now = time.time()

    def tiers(local_busy: float) -> dict[str, TierMetrics]:
        return {"local": TierMetrics(busy=local_busy), "host": TierMetrics(busy=0.05)}

    idle = choose_paths(catalog, Metrics(at=now, tiers=tiers(0.05)), spec, PolicyState())
    assert idle.primary == catalog.original_path
    first = policy_status(idle, None, now=now, generation=generation)
    sink(idle, first)
    sent = first.model_dump(by_alias=True, exclude_none=True, mode="json")

    def status() -> dict[str, Any]:
        obj = cluster.kubectl_json("get", "offloadpolicy", "toy", "-n", local)
        return obj.get("status") or {}

    back = wait_for(lambda: (s := status()).get("costs") and s, "the controller's status")
    # Every candidate with all six terms, the stretch and the load, exactly as sent.
    assert back["costs"] == sent["costs"]
    assert {c["id"] for c in back["costs"]} == {p.id for p in catalog.paths}
    for cost in back["costs"]:
        assert set(cost["terms"]) == {
            "accuracy",
            "communication",
            "localCompute",
            "hostCompute",
            "localParams",
            "hostParams",
        }
        assert sum(cost["terms"].values()) == pytest.approx(cost["cost"], rel=1e-3)
    assert back["load"] == sent["load"]
    assert back["activePath"] == catalog.original_path
    chosen = {c["type"]: c for c in back["conditions"]}
    for kind in ("PathsChosen", "Degraded"):
        assert chosen[kind]["lastTransitionTime"] > "2020", chosen[kind]
        assert chosen[kind]["observedGeneration"] == generation
    assert chosen["Degraded"]["message"] != chosen["PathsChosen"]["message"]

    # The local tier fills up: the controller moves to the cross path, and says so.
    busy = choose_paths(catalog, Metrics(at=now + 1, tiers=tiers(0.9)), spec, idle.state)
    assert busy.changed
    assert busy.primary == synthetic.CROSS
    sink(busy, policy_status(busy, first, now=now + 1, generation=generation))
    assert sink.event_writes == 1

    def switched() -> dict[str, Any] | None:
        events = cluster.kubectl_json(
            "get", "events", "-n", local, "--field-selector", "involvedObject.name=toy"
        )["items"]
        return next((e for e in events if e["reason"] == "PathChanged"), None)

    event = wait_for(switched, "a PathChanged Event")
    assert f"{catalog.original_path} (F=" in event["message"]
    assert f"-> {synthetic.CROSS} (F=" in event["message"]
    assert event["involvedObject"]["kind"] == "OffloadPolicy"
    describe = cluster.kubectl("describe", "offloadpolicy", "toy", "-n", local)
    assert "PathChanged" in describe
    assert wait_for(
        lambda: status().get("activePath") == synthetic.CROSS, "the switch in the status"
    )
    # The printer columns: the active path, F rounded, the runner-up; the margin with -o wide.
    table = cluster.kubectl("get", "offloadpolicy", "toy", "-n", local)
    header, row = table.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "READY", "MODEL", "ACTIVE-PATH", "F", "RUNNER-UP"]
    # Columns by their header's offsets: a column can be blank (READY before the operator
    # has written its condition), which splitting on whitespace would shift.
    starts = [header.index(name) for name in header.split()]
    cells = {
        name: row[start:end].strip()
        for name, start, end in zip(header.split(), starts, [*starts[1:], None], strict=True)
    }
    assert cells["ACTIVE-PATH"] == synthetic.CROSS
    assert len(cells["F"].replace(".", "").lstrip("0")) <= 4, row
    wide = cluster.kubectl("get", "offloadpolicy", "toy", "-n", local, "-o", "wide")
    assert "MARGIN" in wide.splitlines()[0]


def test_a_status_write_raced_by_another_writer_is_built_again_on_the_new_version(
    cluster: E2ECluster, providers: Providers
) -> None:
    """The operator and the controller both write the policy's conditions list, and a merge
    patch replaces the whole list. A write is made on the version it was built from: when
    another writer gets in between (here, inside the first build), the API server refuses it
    and it is built again, so neither writer's condition is lost."""
    local, host = providers.local, providers.host
    cluster.kubectl("apply", "-f", "-", input=_policy(local, host, allPaths=True))
    kube = Kube.from_kubeconfig(cluster.access.kubeconfig)
    stamp = "2026-01-01T00:00:00Z"
    builds: list[dict[str, Any]] = []

    def ours(stored: dict[str, Any]) -> dict[str, Any]:
        builds.append(stored)
        conditions = stored.get("conditions") or []
        if len(builds) == 1:
            # The other writer lands between this read and this write.
            theirs = set_condition(conditions, "PathsChosen", True, "Raced", "the other", stamp)
            kube.patch_status(API_VERSION, "OffloadPolicy", "toy", local, {"conditions": theirs})
        return {"conditions": set_condition(conditions, "Degraded", False, "Fresh", "ours", stamp)}

    kube.update_status(API_VERSION, "OffloadPolicy", "toy", local, ours)
    assert len(builds) >= 2  # the first write was refused
    stored = read_policy("toy", local, kube)["status"]["conditions"]
    reasons = {c["type"]: c["reason"] for c in stored}
    assert reasons["Degraded"] == "Fresh"
    # The other writer's condition survived (the operator's timer may have written since;
    # it keeps PathsChosen as stored too).
    assert reasons["PathsChosen"] == "Raced"
