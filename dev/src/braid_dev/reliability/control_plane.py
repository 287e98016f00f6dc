"""Fault scenarios of the control plane under load: the operator and the API server restarted.

The rig is the whole loop on the local cluster: the synthetic provider pair as custom resources
in two namespaces of their own (Models, Blocks, Links, an OffloadPolicy routed to the cross path
the way the path controller would), an operator of the rig's own watching just those, one
tritonserver per tier standing in for the Block pods, and the gateway whose routing file a
sync loop copies from the operator's routing ConfigMap (as the kubelet does for a mounted
ConfigMap). The scenarios send load through the gateway while they break the control plane:
the data plane must keep serving on the routing it has, and once the control plane is back a
policy change made meanwhile must reach the gateway (the convergence).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from braid.dataplane.server import GatewayThread
from braid.kube.client import Kube
from braid.render.routing import routing_configmap_name
from braid.settings import Settings
from braid_dev import synthetic as syn
from braid_dev.local_runtime import LocalRuntime, start_local_runtime
from braid_dev.reliability.faults import DEFAULT_LOAD, LoadSize, gateway_load, gateway_over, hold
from braid_dev.reliability.load import SERVED, GatewayLoad
from braid_dev.reliability.report import RequestTally
from braid_dev.stack import cluster as devcluster
from braid_dev.stack.operator_process import install_operator_prerequisites, start_operator
from braid_dev.stack.processes import ManagedProcess
from braid_dev.synthetic import SyntheticModels

Progress = Callable[[str], None]
API = "braid.dev/v1alpha1"
POLICY = "toy"
CATALOG_CONFIGMAP = "toy-catalog"
LATENCY_BOUND_US = 500_000
"""L_T of the rig's policy: loose, so the cross path stays within it on a busy machine (these
scenarios are about the control plane; ``slow-host`` is the one about L_T)."""
NAMESPACE_PREFIX = "isolated-faults-"
"""``isolated-*`` namespaces are left alone by the e2e session's operator: the rig runs its own."""


def _quiet(_: str) -> None:
    return None


# -- the provider pair as custom resources ------------------------------------------------------


def _model(models: SyntheticModels, name: str, ns: str, local: bool) -> dict[str, Any]:
    catalog = models.catalog
    provider = next(m for m in catalog.models if m.name == name)
    spec: dict[str, Any] = {
        "artifact": {"uri": f"s3://{ns}/{name}.pt"},
        "input": provider.input.model_dump(by_alias=True),
        "output": provider.output.model_dump(by_alias=True),
        "baselineAccuracy": catalog.baseline_accuracy if local else 0.5,
        "partition": {
            "blocks": [
                {
                    "name": b.name,
                    "firstLayer": b.first_layer,
                    "lastLayer": b.last_layer,
                    "exitHead": local and i == syn.EXIT_BLOCK,
                }
                for i, b in enumerate(provider.partition.blocks)
            ]
        },
    }
    if not local:
        # The host consents to cross links through every block (publish.exposedBlocks).
        spec["publish"] = {
            "taskFamily": "image-classification",
            "architectureFamily": "cnn",
            "exposedBlocks": [b.name for b in provider.partition.blocks],
        }
    if local:
        spec["catalog"] = {"uri": f"configmap://{CATALOG_CONFIGMAP}/{syn.CATALOG_FILE}"}
    return {
        "apiVersion": API,
        "kind": "Model",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _block(name: str, ns: str, model: str, first: int, last: int) -> dict[str, Any]:
    return {
        "apiVersion": API,
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
        "apiVersion": API,
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


def provider_objects(models: SyntheticModels, local: str, host: str) -> list[dict[str, Any]]:
    """Models, Blocks and Links of the synthetic pair (the policy comes separately)."""
    return [
        _model(models, syn.LOCAL, local, local=True),
        _model(models, syn.HOST, host, local=False),
        _block("toy-all", local, syn.LOCAL, 0, 3),
        _block("toyhost-all", host, syn.HOST, 1, 1),
        _link(syn.SKIP_LINK, local, "skip", (syn.LOCAL, None, 0), (syn.LOCAL, None, 2), "toy-all"),
        _link(
            syn.XIN, host, "cross-entry", (syn.LOCAL, local, 0), (syn.HOST, None, 1), "toyhost-all"
        ),
        _link(
            syn.XOUT, host, "cross-exit", (syn.HOST, None, 1), (syn.LOCAL, local, 2), "toyhost-all"
        ),
    ]


def policy_object(local: str, host: str, latency_bound_us: int) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "OffloadPolicy",
        "metadata": {"name": POLICY, "namespace": local},
        "spec": {
            "modelRef": {"name": syn.LOCAL},
            "latencyBoundMicroseconds": latency_bound_us,
            "allowedHosts": [{"namespace": host, "model": syn.HOST}],
            "allPaths": True,
        },
    }


# -- the rig ---------------------------------------------------------------------------------------


@dataclass
class Rig:
    """The provider pair on the cluster, its operator, the Tritons, the gateway and the sync."""

    access: devcluster.ClusterAccess
    kube: Kube
    models: SyntheticModels
    local: str
    host: str
    workdir: Path
    runtime: LocalRuntime
    operator: ManagedProcess
    gateway: GatewayThread
    routing_file: Path
    sync_errors: int = 0
    syncs: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _operators: int = 1

    def apply(self, *objs: dict[str, Any]) -> None:
        self.access.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    def routing_configmap(self) -> dict[str, Any] | None:
        """The routing document the operator published, or None (not yet, or API down)."""
        cm = self.kube.get("v1", "ConfigMap", routing_configmap_name(POLICY), self.local)
        text = ((cm or {}).get("data") or {}).get("routing.json")
        return json.loads(text) if text else None

    def policy_generation(self) -> int:
        policy = self.kube.get(API, "OffloadPolicy", POLICY, self.local)
        assert policy is not None
        return int(policy["metadata"]["generation"])

    def gateway_generation(self) -> int:
        assert self.gateway.gateway is not None
        return self.gateway.gateway.service.executor(syn.LOCAL).table.generation

    def set_latency_bound(self, latency_bound_us: int) -> None:
        """A spec change of the policy (a new generation the gateway must end up with)."""
        self.apply(policy_object(self.local, self.host, latency_bound_us))

    def route_to_cross(self) -> None:
        """What the path controller would write: all traffic on the cross path."""
        self.access.kubectl(
            "patch",
            "offloadpolicy",
            POLICY,
            "-n",
            self.local,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "status": {
                        "activePath": syn.CROSS,
                        "activePaths": [{"id": syn.CROSS, "weight": 1.0}],
                    }
                }
            ),
        )

    def deployments(self, blocks: list[str]) -> int:
        """How many of ``blocks`` have their Triton Deployment."""
        have = {d["metadata"]["name"] for d in self.kube.list("apps/v1", "Deployment", self.local)}
        return sum(1 for b in blocks if f"triton-{b}" in have)

    def blocks_ready(self, blocks: list[str]) -> bool:
        for name in blocks:
            block = self.kube.get(API, "Block", name, self.local) or {}
            conditions = (block.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    def restart_operator(self, kill_first: bool = True) -> None:
        """SIGKILL (no graceful shutdown) the operator, then start a new one."""
        if kill_first:
            self.operator.popen.kill()
        self.operator.stop()
        self._operators += 1
        self.operator = self.start_operator()

    def start_operator(self) -> ManagedProcess:
        return start_operator(
            self.access,
            self.workdir / f"operator-{self._operators}",
            namespaces=[self.local, self.host],
        )

    def sync(self) -> None:
        """Copy routing.json from the ConfigMap to the gateway's file when it changes."""
        while not self._stop.is_set():
            try:
                doc = self.routing_configmap()
                self.syncs += 1
            except Exception:  # the API server is away: keep the file as it is
                self.sync_errors += 1
                doc = None
            if doc is not None:
                text = json.dumps(doc)
                if not self.routing_file.exists() or self.routing_file.read_text() != text:
                    tmp = self.routing_file.with_suffix(".tmp")
                    tmp.write_text(text)
                    tmp.replace(self.routing_file)
            self._stop.wait(0.5)

    def wait(
        self, probe: Callable[[], Any], what: str, timeout_s: float, interval_s: float = 0.5
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(Exception):
                value = probe()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
            time.sleep(interval_s)

    def load(self, size: LoadSize, seed: int = 0) -> GatewayLoad:
        return gateway_load(self.gateway, self.models, size, seed=seed)


@contextlib.contextmanager
def control_plane_rig(
    settings: Settings,
    workdir: Path,
    wait_s: float = 180.0,
    progress: Progress = _quiet,
) -> Iterator[Rig]:
    """Set the rig up on the running cluster (see the module); tear all of it down after."""
    access = devcluster.access(settings)
    kube = Kube.from_kubeconfig(access.kubeconfig)
    models = syn.build_synthetic_repository(workdir / "repo")
    suffix = uuid.uuid4().hex[:6]
    local, host = f"{NAMESPACE_PREFIX}local-{suffix}", f"{NAMESPACE_PREFIX}host-{suffix}"
    progress("rig: CRDs, RBAC, namespaces and the provider pair")
    install_operator_prerequisites(access)
    for ns in (local, host):
        access.kubectl("create", "namespace", ns)
    with contextlib.ExitStack() as stack:
        stack.callback(_delete_namespaces, access, local, host)
        access.kubectl(
            "create",
            "configmap",
            CATALOG_CONFIGMAP,
            "-n",
            local,
            f"--from-file={syn.CATALOG_FILE}={models.catalog_path}",
        )
        progress("rig: tritonservers (local, host) and the operator")
        runtime = start_local_runtime(models.repository, models.catalog, workdir / "runtime")
        stack.callback(runtime.stop)
        operator = start_operator(access, workdir / "operator-1", namespaces=[local, host])
        holder: dict[str, ManagedProcess] = {"operator": operator}
        stack.callback(lambda: holder["operator"].stop())
        objs = [
            *provider_objects(models, local, host),
            policy_object(local, host, LATENCY_BOUND_US),
        ]
        access.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
        stack.callback(_delete_resources, access, local, host)  # runs before the operator stops
        routing_file = workdir / "routing.json"

        def configmap() -> dict[str, Any] | None:
            cm = kube.get("v1", "ConfigMap", routing_configmap_name(POLICY), local)
            text = ((cm or {}).get("data") or {}).get("routing.json")
            return json.loads(text) if text else None

        progress("rig: waiting for the routing ConfigMap")
        _wait(configmap, "the routing ConfigMap", wait_s)
        access.kubectl(
            "patch",
            "offloadpolicy",
            POLICY,
            "-n",
            local,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "status": {
                        "activePath": syn.CROSS,
                        "activePaths": [{"id": syn.CROSS, "weight": 1.0}],
                    }
                }
            ),
        )
        progress("rig: waiting for the operator to route to the cross path")
        doc = _wait(
            lambda: (d := configmap()) and d["paths"][0]["id"] == syn.CROSS and d,
            "a routing ConfigMap on the cross path",
            wait_s,
        )
        routing_file.write_text(json.dumps(doc))
        thread = stack.enter_context(gateway_over(models.catalog, runtime.endpoints, routing_file))
        rig = Rig(
            access, kube, models, local, host, workdir, runtime, operator, thread, routing_file
        )
        sync = threading.Thread(target=rig.sync, name="routing-sync", daemon=True)
        sync.start()

        def stop_sync() -> None:
            rig._stop.set()
            sync.join(30)

        stack.callback(stop_sync)
        # Keep the holder pointing at the rig's current operator (a scenario may replace it).
        stack.callback(lambda: holder.__setitem__("operator", rig.operator))
        yield rig


def _wait(probe: Callable[[], Any], what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            value = probe()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.5)


def _delete_resources(access: devcluster.ClusterAccess, local: str, host: str) -> None:
    """While the operator still runs: the Models carry its finalizer."""
    for ns, kinds in (
        (local, "offloadpolicies,links,blocks,models"),
        (host, "links,blocks,models"),
    ):
        access.kubectl(
            "delete",
            kinds,
            "--all",
            "-n",
            ns,
            "--wait=true",
            "--timeout=60s",
            check=False,
            timeout=90.0,
        )


def _delete_namespaces(access: devcluster.ClusterAccess, local: str, host: str) -> None:
    access.kubectl("delete", "namespace", local, host, "--wait=false", check=False)


# -- 3. the operator restarts mid-reconcile -----------------------------------------------------


def restart_operator(
    rig: Rig,
    size: LoadSize = DEFAULT_LOAD,
    *,
    new_blocks: int = 8,
    progress: Progress = _quiet,
) -> RequestTally:
    """Add ``new_blocks`` Blocks, SIGKILL the operator once it has rendered the first of them
    (mid-reconcile), change the policy while no operator runs; then start a new one.

    The gateway keeps serving on the routing it has while no operator runs; the new operator
    must render every new Block and the policy change (and the gateway run with it).
    """
    notes: dict[str, float | int | str] = {"new_blocks": new_blocks}
    names = [f"toy-extra-{i}" for i in range(new_blocks)]
    converged = False
    with rig.load(size, seed=3) as load:
        progress("restart-operator: load on the cross path")
        load.wait_for(size.before, "requests served by the cross path", size.wait_s, path=syn.CROSS)
        before = rig.policy_generation()
        progress("restart-operator: new Blocks, SIGKILL the operator mid-way, policy change")
        rig.apply(*[_block(n, rig.local, syn.LOCAL, 0, 3) for n in names])
        if names:
            rig.wait(
                lambda: rig.deployments(names) >= 1,
                "the first new Deployment",
                size.wait_s,
                interval_s=0.05,
            )
        rig.operator.popen.kill()
        killed_at = time.monotonic()
        notes["deployments_when_killed"] = rig.deployments(names)
        rig.set_latency_bound(LATENCY_BOUND_US + 100_000)
        target = rig.policy_generation()
        notes["generation_before"], notes["generation_target"] = before, target
        load.wait_for(
            size.during, "requests served without an operator", size.wait_s, since=killed_at
        )
        hold(killed_at, size.hold_s)
        notes["served_without_operator"] = load.count(SERVED, since=killed_at)
        progress("restart-operator: a new operator")
        rig.restart_operator(kill_first=False)
        back_at = time.monotonic()
        try:
            _gateway_follows(rig, load, target, size, notes, since=back_at)
            rig.wait(lambda: rig.blocks_ready(names), "every new Block Ready", size.wait_s)
            doc = rig.routing_configmap()
            converged = (
                doc is not None
                and doc["generation"] == target
                and doc["latency_bound_us"] == LATENCY_BOUND_US + 100_000
                and rig.deployments(names) == len(names)
                and rig.operator.alive()
            )
        except TimeoutError as exc:
            notes["error"] = str(exc)
    return load.tally(
        "restart-operator",
        "OffloadPolicy changed and the operator SIGKILLed mid-reconcile under load, restarted",
        **notes,
        converged=converged,
    )


# -- 4. the API server restarts -----------------------------------------------------------------


def restart_apiserver(
    rig: Rig,
    settings: Settings,
    size: LoadSize = DEFAULT_LOAD,
    *,
    down_s: float = 3.0,
    progress: Progress = _quiet,
) -> RequestTally:
    """Stop the kube-apiserver under load for ``down_s``, start it again in place.

    The gateway keeps serving (the sync loop keeps the last routing file); afterwards the
    operator, which lost its watches, must still act on a policy change.
    """
    notes: dict[str, float | int | str] = {"down_s": down_s}
    converged = False
    with rig.load(size, seed=4) as load:
        progress("restart-apiserver: load on the cross path")
        load.wait_for(size.before, "requests served by the cross path", size.wait_s, path=syn.CROSS)
        errors_before = rig.sync_errors
        progress("restart-apiserver: kube-apiserver down")
        stopped_at, ready_at = devcluster.restart_apiserver(
            settings, down_s=max(down_s, size.hold_s)
        )
        notes["apiserver_away_s"] = round(ready_at - stopped_at, 2)
        notes["served_while_away"] = load.count(SERVED, since=stopped_at)
        notes["sync_errors_while_away"] = rig.sync_errors - errors_before
        load.wait_for(
            size.during, "requests served around the restart", size.wait_s, since=stopped_at
        )
        progress("restart-apiserver: back; a policy change must reach the gateway")

        def change() -> bool:
            rig.set_latency_bound(LATENCY_BOUND_US + 200_000)
            return True

        rig.wait(change, "the policy change applied", size.wait_s)
        target = rig.policy_generation()
        notes["generation_target"] = target
        try:
            _gateway_follows(rig, load, target, size, notes, since=ready_at)
            converged = rig.operator.alive()
        except TimeoutError as exc:
            notes["error"] = str(exc)
    return load.tally(
        "restart-apiserver",
        "kube-apiserver stopped under load and started again in place (same port, certs, etcd)",
        **notes,
        converged=converged,
    )


def _gateway_follows(
    rig: Rig,
    load: GatewayLoad,
    target: int,
    size: LoadSize,
    notes: dict[str, float | int | str],
    since: float,
) -> None:
    """Wait until the gateway serves the policy's ``target`` generation (noting how long
    after ``since``), then for ``size.after`` requests served on it."""
    rig.wait(
        lambda: rig.gateway_generation() == target, "gateway on the changed policy", size.wait_s
    )
    converged_at = time.monotonic()
    notes["converged_after_s"] = round(converged_at - since, 2)
    load.wait_for(size.after, "requests served after", size.wait_s, since=converged_at)
