"""The demo's braid release: ``helm install`` of ``charts/braid`` and a real ``helm test``.

On kwok the chart's Pods are scheduled and made Running but run nothing, so the demo runs the
operator and the controller as local processes *as the chart's ServiceAccounts* (bound tokens
from ``kubectl create token``): what they are allowed to do is exactly what the chart's RBAC
grants. The gateway needs no API access and runs as a process too. ``helm test`` creates the
chart's test Pod; ``braid_dev.chart_test_pods`` runs its script here against the local gateway and
reports the exit code as the Pod's phase, which is what helm waits for.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from braid.api.catalog import PathCatalog
from braid.kube.client import Kube
from braid_dev.chart_test_pods import ChartChartTestPodRunner
from braid_dev.stack import cluster
from braid_dev.stack.operator_process import REPO_ROOT, service_account_kubeconfig

CHART = REPO_ROOT / "charts" / "braid"
RELEASE = "braid"
"""Release name; with the chart named braid too, objects are ``braid-operator`` etc."""
HELM_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    crds_from_chart: bool

    def account(self, component: str) -> str:
        return f"{self.name}-{component}"

    def service(self, component: str, port: int) -> str:
        """The ``name.namespace:port`` a Pod would dial for one of the release's Services."""
        return f"{self.name}-{component}.{self.namespace}:{port}"


class HelmError(RuntimeError):
    pass


def helm(settings_bin: Path, access: cluster.ClusterAccess, *args: str) -> str:
    argv = [str(settings_bin / "helm"), *args, f"--kubeconfig={access.kubeconfig}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise HelmError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def _crds_owned_by_someone_else(access: cluster.ClusterAccess) -> bool:
    """CRDs applied with kubectl (an earlier run, `make cluster-up` users) are not helm's:
    installing the chart's copy over them would fail, so the release leaves them alone."""
    found = access.kubectl(
        "get", "crd", "offloadpolicies.braid.dev", "-o", "name", "--ignore-not-found", check=False
    ).stdout
    if not found.strip():
        return False
    managed = access.kubectl(
        "get",
        "crd",
        "offloadpolicies.braid.dev",
        "-o",
        "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}",
        check=False,
    ).stdout
    return str(managed).strip() != "Helm"


def install_release(
    bin_dir: Path,
    access: cluster.ClusterAccess,
    catalog: PathCatalog,
    namespace: str,
    policy: str,
    watched: list[str],
) -> Release:
    """``helm upgrade --install`` braid into ``namespace``, waiting for its Pods."""
    first = catalog.path(catalog.original_path).hops[0].input
    crds_from_chart = not _crds_owned_by_someone_else(access)
    values = [
        f"crds.enabled={str(crds_from_chart).lower()}",
        f"operator.namespaces={{{','.join(watched)}}}",
        # The operator runs as a process here (kwok runs no containers), so the chart's
        # webhook registration would point at a pod nobody answers in and, failing closed,
        # refuse every braid object. The local stack's rig registers its own when wanted.
        "operator.webhook.enabled=false",
        f"policy.name={policy}",
        f"test.model={catalog.local_model}",
        f"test.input.name={first.name}",
        f"test.input.datatype={first.datatype}",
        f"test.input.shape={{{','.join(str(d) for d in [1, *first.shape])}}}",
    ]
    helm(
        bin_dir,
        access,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--wait",
        "--timeout=3m",
        *(arg for value in values for arg in ("--set", value)),
    )
    return Release(RELEASE, namespace, crds_from_chart)


def account_kubeconfig(
    access: cluster.ClusterAccess, release: Release, component: str, workdir: Path
) -> Path:
    """A kubeconfig that is the release's ServiceAccount for ``component``."""
    return service_account_kubeconfig(
        access,
        workdir / f"{component}.kubeconfig",
        namespace=release.namespace,
        account=release.account(component),
    )


@dataclass(frozen=True)
class HelmTestResult:
    passed: bool
    output: str
    exit_codes: list[int]


def run_helm_test(
    bin_dir: Path,
    access: cluster.ClusterAccess,
    release: Release,
    gateway_http: str,
    http_port: int,
    workdir: Path,
) -> HelmTestResult:
    """``helm test`` with its test Pod's script run here against the local gateway."""
    runner = ChartChartTestPodRunner(
        Kube.from_kubeconfig(access.kubeconfig),
        release.namespace,
        {release.service("gateway", http_port): gateway_http.removeprefix("http://")},
        workdir,
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        output = helm(
            bin_dir, access, "test", release.name, "--namespace", release.namespace, "--timeout=3m"
        )
        passed = True
    except HelmError as exc:
        output, passed = str(exc), False
    finally:
        stop.set()
        thread.join(timeout=30)
    return HelmTestResult(passed, output, list(runner.results.values()))


def uninstall_release(bin_dir: Path, access: cluster.ClusterAccess, release: Release) -> None:
    helm(bin_dir, access, "uninstall", release.name, "--namespace", release.namespace, "--wait")
