"""The Helm chart (charts/braid) against Helm and the real API server.

What a user would notice: the chart lints; everything it renders is accepted by the API
server (admission, CRD schemas, RBAC object validation) in a server-side dry run; bad values
are refused at install with a message naming the value; install, upgrade and uninstall work
on the local control plane, with braid's pods scheduled on the CPU (local) pool; and each
ServiceAccount can do what its component needs and nothing with Secrets.

``helm test`` cannot pass here: kwok marks pods Running without running containers, so the
test Pod would never reach the gateway. Its manifest is rendered and validated instead (the
API server accepts it; its request body is a well-formed v2 request of the configured shape).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from braid.render.block import FETCHER_CONTAINER
from braid.render.routing import GATEWAY_POLICY_LABEL, gateway_plan_configmap_name
from braid.tooling.manifests import crd_documents
from braid_dev.reliability.security import ESCALATION_CHECKS
from tests.e2e.conftest import E2ECluster
from tests.e2e.helpers import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "braid"
RELEASE = "braid"  # for rendering; installs are named after their namespace
COMPONENTS = ("operator", "controller", "gateway")


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    from braid.settings import get_settings

    path = get_settings().bin_dir / "helm"
    if not path.exists():
        pytest.fail(f"the chart tests need helm at {path} (make install-binaries)", pytrace=False)
    return path


def helm(
    binary: Path, *args: str, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [str(binary), *args]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {result.stderr.strip()}", pytrace=False)
    return result


def render(binary: Path, namespace: str, *args: str) -> list[dict[str, Any]]:
    out = helm(binary, "template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# --- no cluster needed ---------------------------------------------------------------------


def test_chart_crds_are_the_generated_crds() -> None:
    """One source: `make manifests` writes crds/ and the chart's copy from the API types."""
    chart_copy = {p.name: p.read_text() for p in sorted((CHART / "files" / "crds").glob("*.yaml"))}
    assert chart_copy == crd_documents(), "run `make manifests`"


def test_rendered_crds_are_kept_on_uninstall_and_can_be_left_out(helm_binary: Path) -> None:
    docs = render(helm_binary, "braid-system")
    crds = by_kind(docs, "CustomResourceDefinition")
    expected = {yaml.safe_load(t)["metadata"]["name"] for t in crd_documents().values()}
    assert {c["metadata"]["name"] for c in crds} == expected
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        source = yaml.safe_load(crd_documents()[_crd_file(crd)])
        assert crd["spec"] == source["spec"]
    without = render(helm_binary, "braid-system", "--set", "crds.enabled=false")
    assert not by_kind(without, "CustomResourceDefinition")


def _crd_file(crd: dict[str, Any]) -> str:
    plural, _, group = crd["metadata"]["name"].partition(".")
    return f"{group}_{plural}.yaml"


def test_operator_rules_are_operator_rbac_yaml(helm_binary: Path) -> None:
    """operator/rbac.yaml (used by the local harness) and the chart grant the same rules."""
    manifest = list(yaml.safe_load_all((REPO_ROOT / "operator" / "rbac.yaml").read_text()))
    (harness_role,) = [d for d in manifest if d["kind"] == "ClusterRole"]
    (chart_role,) = by_kind(render(helm_binary, "braid-system"), "ClusterRole")
    assert chart_role["rules"] == harness_role["rules"]


def test_pods_are_restricted_and_on_the_local_pool(helm_binary: Path) -> None:
    docs = render(helm_binary, "braid-system", "--set", "serviceMonitor.enabled=true")
    pods = [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]
    pods += [d["spec"] for d in by_kind(docs, "Pod")]
    assert len(pods) == 4
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["nodeSelector"] == {"braid.dev/tier": "local"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("gateway")]
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc", "metrics"}
    assert not by_kind(render(helm_binary, "braid-system"), "ServiceMonitor")


def test_triton_pods_are_scraped_with_the_labels_the_controller_queries(
    helm_binary: Path,
) -> None:
    from braid.controller.metrics import MODEL_LABEL, NAMESPACE_LABEL
    from braid.render.prometheus_config import render_pod_monitor_relabelings

    docs = render(
        helm_binary,
        "provider-a",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.interval=30s",
        "--set-json",
        'controller.capacity=["local=1","host=4"]',
    )
    (monitor,) = by_kind(docs, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["relabelings"] == render_pod_monitor_relabelings()
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {MODEL_LABEL, NAMESPACE_LABEL} <= targets
    (controller,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("controller")
    ]
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--scrape-interval=30s" in args
    assert not [a for a in args if a.startswith("--window")]
    # The capacity keys are the roles the controller prices; pool names are refused.
    bad = helm(
        helm_binary,
        "template",
        RELEASE,
        str(CHART),
        "--set-json",
        'controller.capacity=["edge=2"]',
        check=False,
    )
    assert bad.returncode != 0
    assert "capacity" in bad.stderr


def test_the_webhook_is_registered_as_the_operator_renders_it(helm_binary: Path) -> None:
    """Fail closed, create and update of every braid kind, dry-runs included; the chart's
    certificate is what the operator mounts and what the API server trusts."""
    from braid.render.webhook_config import render_validating_webhook

    docs = render(helm_binary, "braid-system")
    (config,) = by_kind(docs, "ValidatingWebhookConfiguration")
    want = render_validating_webhook({"service": {"namespace": "x", "name": "y", "port": 1}})
    strip = [{k: v for k, v in w.items() if k != "clientConfig"} for w in config["webhooks"]]
    assert strip == [{k: v for k, v in w.items() if k != "clientConfig"} for w in want["webhooks"]]
    (secret,) = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("tls")]
    for hook in config["webhooks"]:
        service = hook["clientConfig"]["service"]
        assert service["name"] == "braid-operator"
        assert service["path"] == "/braid-" + hook["rules"][0]["resources"][0]
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    env = {
        e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BRAID_OPERATOR_ALLOW_LOCAL_PATHS"] == "false"
    assert json.loads(env["BRAID_OPERATOR_IMAGE_PREFIXES"]) == ["nvcr.io/nvidia/tritonserver:"]
    off = render(helm_binary, "braid-system", "--set", "operator.webhook.enabled=false")
    assert not by_kind(off, "ValidatingWebhookConfiguration")


def test_provider_namespaces_enforce_pod_security(helm_binary: Path) -> None:
    docs = render(
        helm_binary, "braid-system", "--set-json", 'podSecurity.providerNamespaces=["p-a","p-b"]'
    )
    namespaces = by_kind(docs, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == ["p-a", "p-b"]
    for ns in namespaces:
        labels = ns["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_gateway_mounts_the_policys_routing_configmap(helm_binary: Path) -> None:
    docs = render(helm_binary, "ns", "--set", "policy.name=resnet", "--set", "catalog.configMap=c")
    (gateway,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("gateway")
    ]
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["routing"]["configMap"]["name"] == "braid-routing-resnet"
    assert volumes["catalog"]["configMap"]["name"] == "c"
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--routing=/etc/braid/routing/routing.json" in args
    assert "--endpoints=/etc/braid/routing/endpoints.json" in args


def test_a_dimee_gateway_fetches_the_policys_pools_before_it_starts(helm_binary: Path) -> None:
    """The pools archive is fetched like a Block's artifacts: an init container runs
    ``braid artifacts assemble`` on the plan the operator renders for the policy, with the
    Secret by name, and the gateway reads what it fetched from the shared emptyDir."""
    docs = render(
        helm_binary, "ns", "--set", "policy.name=minilm-dimee",
        "--set", "gateway.dimee.enabled=true", "--set", "gateway.dimee.credentialsSecret=s3",
    )  # fmt: skip
    (gateway,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("gateway")
    ]
    pod = gateway["spec"]["template"]
    assert pod["metadata"]["labels"][GATEWAY_POLICY_LABEL] == "minilm-dimee"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["gateway-plan"]["configMap"]["name"] == gateway_plan_configmap_name(
        "minilm-dimee"
    )
    assert volumes["artifacts"] == {"name": "artifacts", "emptyDir": {}}
    (fetcher,) = pod["spec"]["initContainers"]
    assert fetcher["name"] == FETCHER_CONTAINER  # the name the operator reads failures from
    assert fetcher["command"] == ["braid", "artifacts", "assemble"]
    assert fetcher["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert "--root=/var/lib/braid/artifacts" in fetcher["args"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--artifacts-dir=/var/lib/braid/artifacts" in args
    # Without DIMEE the gateway fetches nothing.
    docs = render(helm_binary, "ns")
    (plain,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("gateway")]
    assert "initContainers" not in plain["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("component", "command"), [("gateway", ["gateway"]), ("controller", ["controller", "run"])]
)
def test_container_args_parse_with_the_real_cli(
    helm_binary: Path, component: str, command: list[str]
) -> None:
    """The images' entry points are `braid gateway` and `braid controller run`: the flags the
    chart renders must be ones those commands accept (parsed, not run)."""
    import typer.main

    from braid.cli import app

    docs = render(
        helm_binary,
        "ns",
        "--set-json",
        'controller.capacity=["local=1","host=2"]',
        "--set",
        "gateway.pinCpu=0",
    )
    (deployment,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith(component)
    ]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    # Typer's (vendored) click groups: walk down to the subcommand by name.
    cli: Any = typer.main.get_command(app)
    for name in command:
        cli = cli.commands[name]
    params = cli.make_context(" ".join(command), list(args)).params
    assert str(params["catalog"]) == "/etc/braid/catalog/catalog.json"
    if component == "controller":
        assert params["policy_name"] == "fmnist-cnn"
        assert params["namespace"] == "ns"
        assert list(params["capacity"]) == ["local=1", "host=2"]
        assert params["scrape_interval"] == "15s"
    else:
        assert params["host"] == "0.0.0.0"
        assert str(params["routing"]) == "/etc/braid/routing/routing.json"
        assert params["pin_cpu"] == "0"  # an integer value, rendered (Go templates: 0 is falsy)


def test_operator_env_parses_with_its_settings(
    helm_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from braid.settings import OperatorSettings

    docs = render(helm_binary, "ns", "--set-json", 'operator.namespaces=["provider-*"]')
    (deployment,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        monkeypatch.setenv(var["name"], var["value"])
    settings = OperatorSettings()
    assert settings.namespaces == ["provider-*"]
    assert settings.liveness_endpoint.endswith(":8080/healthz")


def test_dashboard_queries_the_gateways_metrics(helm_binary: Path) -> None:
    from prometheus_client import CollectorRegistry

    from braid.dataplane.metrics import GatewayMetrics

    (cm,) = [
        c
        for c in by_kind(render(helm_binary, "ns"), "ConfigMap")
        if c["metadata"]["name"].endswith("dashboard")
    ]
    dashboard = json.loads(cm["data"]["braid.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    names = {m.name for m in registry.collect()}
    for needed in (
        "braid_gateway_samples",
        "braid_gateway_hop_duration_seconds",
        "braid_gateway_exits",
        "braid_gateway_path_weight",
    ):
        assert needed in names
        assert needed in exprs
    assert "braid_offloadpolicy_path_cost" in exprs


def test_helm_lint(helm_binary: Path) -> None:
    result = helm(helm_binary, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "gateway.httpPort=70000"], "/gateway/httpPort"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "policy.name=Not_A_Name"], "/policy/name"),
        (["--set-json", 'controller.capacity=["gpu=2"]'], "/controller/capacity/0"),
        (["--set", "gateway.replicsa=2"], "replicsa"),
        (["--set", "gateway.pinCpu=all"], "/gateway/pinCpu"),
    ],
)
def test_schema_refuses_bad_values(helm_binary: Path, args: list[str], message: str) -> None:
    result = helm(helm_binary, "template", RELEASE, str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# --- against the real API server -----------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(
    crds: E2ECluster, namespace: str, helm_binary: Path
) -> None:
    docs = render(helm_binary, namespace)
    manifest = yaml.safe_dump_all(docs)
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    for doc in docs:
        assert f"{doc['metadata']['name']} " in out
    assert "(server dry run)" in out


def test_helm_test_pod_is_valid(crds: E2ECluster, namespace: str, helm_binary: Path) -> None:
    """The `helm test` hook (run for real only on a cluster with containers)."""
    docs = render(helm_binary, namespace, "--show-only", "templates/tests/test-inference.yaml")
    (pod,) = by_kind(docs, "Pod")
    (request_cm,) = by_kind(docs, "ConfigMap")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    gateway = f"http://{RELEASE}-gateway.{namespace}.svc:8000"
    assert f"{gateway}/v2/health/ready" in script
    assert f"{gateway}/v2/models/fmnist-cnn/infer" in script
    request = json.loads(request_cm["data"]["request.json"])
    (tensor,) = request["inputs"]
    assert tensor["name"] == "image"
    assert tensor["datatype"] == "FP32"
    assert len(tensor["data"]) == math.prod(tensor["shape"]) == 784
    crds.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))


def _pods_running_on_local_pool(cluster: E2ECluster, namespace: str, count: int) -> bool:
    pods = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={namespace}"
    )["items"]
    if len(pods) != count:
        return False
    nodes = {
        n["metadata"]["name"]: n["metadata"]["labels"]
        for n in cluster.kubectl_json("get", "nodes")["items"]
    }
    return all(
        p["status"].get("phase") == "Running"
        and nodes.get(p["spec"].get("nodeName", ""), {}).get("braid.dev/tier") == "local"
        for p in pods
    )


@pytest.fixture
def release(crds: E2ECluster, namespace: str, helm_binary: Path) -> Iterator[str]:
    """braid installed by Helm into the test's namespace, as a release of the same name (the
    operator's ClusterRole is cluster-wide: a release called braid would collide with the
    harness's operator/rbac.yaml); uninstalled afterwards."""
    # The CRDs belong to the whole suite (server-side applied): this release leaves them out.
    helm(
        helm_binary,
        "install",
        namespace,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "crds.enabled=false",
        # Deployments available: kwok reports the pods Running and Ready on the local pool.
        "--wait",
        "--timeout=120s",
        kubeconfig=crds.access.kubeconfig,
    )
    try:
        yield namespace
    finally:
        helm(
            helm_binary,
            "uninstall",
            namespace,
            "--namespace",
            namespace,
            "--wait",
            kubeconfig=crds.access.kubeconfig,
            check=False,
        )


def test_install_upgrade_uninstall(crds: E2ECluster, release: str, helm_binary: Path) -> None:
    cluster, namespace = crds, release
    kubeconfig = cluster.access.kubeconfig
    deployments = {
        d["metadata"]["name"]: d
        for d in cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]
    }
    assert set(deployments) == {f"{namespace}-braid-{c}" for c in COMPONENTS}
    wait_for(
        lambda: _pods_running_on_local_pool(cluster, namespace, 3),
        "braid's three pods Running on the local pool",
    )
    status = helm(helm_binary, "status", namespace, "-n", namespace, kubeconfig=kubeconfig).stdout
    assert "STATUS: deployed" in status
    assert "helm test" in status  # NOTES tells the next commands

    def ca_bundles() -> set[str]:
        config = cluster.kubectl_json(
            "get", "validatingwebhookconfiguration", f"{namespace}-braid.validate.braid.dev"
        )
        return {w["clientConfig"]["caBundle"] for w in config["webhooks"]}

    before = ca_bundles()
    assert len(before) == 1
    helm(
        helm_binary,
        "upgrade",
        namespace,
        str(CHART),
        "--namespace",
        namespace,
        "--reuse-values",
        "--set",
        "gateway.replicas=2",
        kubeconfig=kubeconfig,
    )
    gateway = cluster.kubectl_json(
        "get", "deployment", f"{namespace}-braid-gateway", "-n", namespace
    )
    assert gateway["spec"]["replicas"] == 2
    # The webhook's certificate survives the upgrade (a new one would fail closed until the
    # operator's mount caught up).
    assert ca_bundles() == before
    wait_for(
        lambda: _pods_running_on_local_pool(cluster, namespace, 4),
        "four pods Running after the upgrade",
    )
    history = helm(helm_binary, "history", namespace, "-n", namespace, kubeconfig=kubeconfig)
    assert "upgrade complete" in history.stdout.lower()

    # Bad values are refused at install, before anything is created.
    refused = helm(
        helm_binary,
        "upgrade",
        namespace,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "gateway.service.type=Ingress",
        kubeconfig=kubeconfig,
        check=False,
    )
    assert refused.returncode != 0
    assert "/gateway/service/type" in refused.stderr

    helm(helm_binary, "uninstall", namespace, "-n", namespace, "--wait", kubeconfig=kubeconfig)
    left = cluster.kubectl(
        "get",
        "deployments,services,serviceaccounts,roles",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={namespace}",
        "-o",
        "name",
    )
    assert left.strip() == ""
    assert cluster.kubectl("get", "clusterrole", f"{namespace}-braid-operator", check=False) == ""
    # The CRDs (and users' resources) are still there.
    cluster.kubectl("get", "crd", "offloadpolicies.braid.dev")


CAN = {
    "operator": [
        ("watch", "models.braid.dev", True),
        ("patch", "offloadpolicies.braid.dev/status", True),
        ("create", "deployments.apps", True),
        ("create", "configmaps", True),
        ("delete", "deployments.apps", False),
        ("create", "pods", False),
    ],
    "controller": [
        ("watch", "offloadpolicies.braid.dev", True),
        ("list", "models.braid.dev", True),
        ("patch", "offloadpolicies.braid.dev/status", True),
        ("get", "configmaps", True),
        ("patch", "offloadpolicies.braid.dev", False),
        ("create", "configmaps", False),
        ("create", "deployments.apps", False),
        # An Event per path change (kubectl describe offloadpolicy tells the story).
        ("create", "events", True),
        ("delete", "events", False),
    ],
    "gateway": [
        ("get", "configmaps", False),
        ("list", "offloadpolicies.braid.dev", False),
    ],
}


def test_service_accounts_have_least_privilege(crds: E2ECluster, release: str) -> None:
    cluster, namespace = crds, release

    def can(component: str, verb: str, resource: str, ns: str = namespace) -> bool:
        account = f"system:serviceaccount:{namespace}:{namespace}-braid-{component}"
        kind, _, subresource = resource.partition("/")
        extra = [f"--subresource={subresource}"] if subresource else []
        answer = cluster.kubectl(
            "auth", "can-i", verb, kind, *extra, "-n", ns, f"--as={account}", check=False
        ).strip()
        return answer == "yes"

    # RBAC caches take a moment to see the new bindings.
    wait_for(lambda: can("operator", "list", "models.braid.dev"), "the operator's binding")
    for component, checks in CAN.items():
        for verb, resource, allowed in checks:
            assert can(component, verb, resource) is allowed, (component, verb, resource)
        for verb in ("get", "list", "watch", "create"):
            assert not can(component, verb, "secrets"), (component, verb, "secrets")
        for verb, resource in ESCALATION_CHECKS:
            assert not can(component, verb, resource), (component, verb, resource)
    # The controller's Role is its namespace's only.
    assert not can("controller", "get", "offloadpolicies.braid.dev", "default")
