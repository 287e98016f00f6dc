"""How the local control plane is wired: command lines, identities, kubeconfigs, node pools."""

from __future__ import annotations

import base64
import socket
from collections import Counter
from pathlib import Path

import pytest

from braid.settings import Settings
from braid_dev.stack import cluster
from braid_dev.stack import cluster_render as render

BIN = Path("/opt/bin")
LAYOUT = render.Layout(Path("/state/cluster"))
PORTS = render.Ports(
    etcd=2379, etcd_peer=2380, apiserver=6443, controller_manager=10257, scheduler=10259
)


def _flags(argv: list[str]) -> dict[str, str]:
    """``--name=value`` flags of a command line as a dict (the binary is argv[0])."""
    flags: dict[str, str] = {}
    for arg in argv[1:]:
        assert arg.startswith("--"), f"flags are written --name=value: {arg}"
        assert "=" in arg, f"flags are written --name=value: {arg}"
        name, value = arg[2:].split("=", 1)
        assert name not in flags, f"flag given twice: {name}"
        flags[name] = value
    return flags


def _spec(name: str) -> render.CertSpec:
    return next(spec for spec in render.cert_specs() if spec.name == name)


def test_every_server_listens_on_loopback_only() -> None:
    argvs = [
        render.etcd_argv(BIN / "etcd", LAYOUT, PORTS),
        render.apiserver_argv(BIN / "kube-apiserver", LAYOUT, PORTS, "192.0.2.2"),
        render.controller_manager_argv(BIN / "kube-controller-manager", LAYOUT, PORTS),
        render.scheduler_argv(BIN / "kube-scheduler", LAYOUT, PORTS),
    ]
    for argv in argvs:
        flags = _flags(argv)
        for name, value in flags.items():
            if name in {"bind-address", "listen-client-urls", "listen-peer-urls"}:
                assert "127.0.0.1" in value, (name, value)


def test_apiserver_runs_like_a_real_cluster() -> None:
    flags = _flags(render.apiserver_argv(BIN / "kube-apiserver", LAYOUT, PORTS, "192.0.2.2"))
    pki = LAYOUT.pki
    assert flags["authorization-mode"] == "Node,RBAC"
    assert "NodeRestriction" in flags["enable-admission-plugins"].split(",")
    assert "disable-admission-plugins" not in flags  # the default set stays on
    assert flags["secure-port"] == "6443"
    assert flags["etcd-servers"] == "https://127.0.0.1:2379"
    assert flags["client-ca-file"] == str(pki.ca_cert)
    assert flags["service-account-key-file"] == str(pki.sa_public)
    assert flags["service-account-signing-key-file"] == str(pki.sa_private)
    assert flags["service-account-issuer"].startswith("https://kubernetes.default.svc")
    assert flags["service-cluster-ip-range"] == render.SERVICE_CIDR
    assert flags["advertise-address"] == "192.0.2.2"
    assert flags["requestheader-allowed-names"] == render.FRONT_PROXY_CLIENT
    assert "insecure-port" not in flags


def test_controller_manager_uses_per_controller_credentials_and_the_cluster_signer() -> None:
    flags = _flags(render.controller_manager_argv(BIN / "kube-controller-manager", LAYOUT, PORTS))
    pki = LAYOUT.pki
    assert flags["use-service-account-credentials"] == "true"
    assert flags["root-ca-file"] == str(pki.ca_cert)
    assert flags["service-account-private-key-file"] == str(pki.sa_private)
    assert flags["cluster-signing-cert-file"] == str(pki.ca_cert)
    assert flags["cluster-signing-key-file"] == str(pki.ca_key)
    kubeconfig = str(LAYOUT.component_kubeconfig("kube-controller-manager"))
    assert flags["kubeconfig"] == flags["authentication-kubeconfig"] == kubeconfig
    assert flags["secure-port"] == "10257"


def test_scheduler_has_its_own_kubeconfig() -> None:
    flags = _flags(render.scheduler_argv(BIN / "kube-scheduler", LAYOUT, PORTS))
    assert flags["kubeconfig"] == str(LAYOUT.component_kubeconfig("kube-scheduler"))
    assert flags["secure-port"] == "10259"


def test_etcd_requires_client_certificates() -> None:
    flags = _flags(render.etcd_argv(BIN / "etcd", LAYOUT, PORTS))
    assert flags["client-cert-auth"] == "true"
    assert flags["peer-client-cert-auth"] == "true"
    assert flags["listen-client-urls"] == "https://127.0.0.1:2379"
    assert flags["data-dir"] == str(LAYOUT.etcd_data)


def test_kwok_manages_only_the_labelled_nodes_with_its_own_config() -> None:
    flags = _flags(render.kwok_argv(BIN / "kwok", LAYOUT))
    assert flags["manage-all-nodes"] == "false"
    assert flags["manage-nodes-with-label-selector"] == "type=kwok"
    assert flags["config"] == str(LAYOUT.kwok_config)
    assert flags["kubeconfig"] == str(LAYOUT.component_kubeconfig("kwok"))
    assert int(flags["node-lease-duration-seconds"]) > 0


def test_every_process_names_the_cluster_root_so_down_can_find_it() -> None:
    argvs = [
        render.etcd_argv(BIN / "etcd", LAYOUT, PORTS),
        render.apiserver_argv(BIN / "kube-apiserver", LAYOUT, PORTS),
        render.controller_manager_argv(BIN / "kube-controller-manager", LAYOUT, PORTS),
        render.scheduler_argv(BIN / "kube-scheduler", LAYOUT, PORTS),
        render.kwok_argv(BIN / "kwok", LAYOUT),
    ]
    for argv in argvs:
        assert any(str(LAYOUT.root) in arg for arg in argv[1:]), argv[0]


def test_identities_match_the_bootstrap_rbac_policy() -> None:
    assert _spec("admin").organizations == ("system:masters",)
    assert _spec("kube-controller-manager").common_name == "system:kube-controller-manager"
    assert _spec("kube-scheduler").common_name == "system:kube-scheduler"
    assert _spec("kwok").organizations == ()  # kwok gets a ClusterRole, not cluster-admin
    assert all(spec.client and not spec.server for spec in map(_spec, ("admin", "kwok")))


def test_apiserver_serving_cert_covers_every_name_clients_use() -> None:
    spec = _spec("kube-apiserver")
    assert spec.server
    assert {"127.0.0.1", render.KUBERNETES_SERVICE_IP} <= set(spec.ip_addresses)
    assert {"localhost", "kubernetes.default.svc", "kubernetes"} <= set(spec.dns_names)


def test_kwok_rbac_binds_the_user_its_certificate_names() -> None:
    role, binding = render.render_kwok_rbac()
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == _spec("kwok").common_name == render.KWOK_USER
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("pods/status", "patch"), ("nodes/status", "patch"), ("leases", "update")} <= granted
    assert not any("*" in rule["verbs"] for rule in role["rules"])


def test_kubeconfig_embeds_the_credentials() -> None:
    config = render.render_kubeconfig("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY", "me")
    cluster_entry = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    assert cluster_entry["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster_entry["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    assert context["context"] == {"cluster": "braid", "user": "me"}


def test_pool_nodes_are_two_per_tier_with_gpus_where_the_design_puts_them() -> None:
    nodes = render.render_pool_nodes()
    assert len(nodes) == 6
    tiers = Counter(n["metadata"]["labels"][render.TIER_LABEL] for n in nodes)
    assert tiers == {"local": 2, "edge": 2, "cloud": 2}
    gpus = {
        n["metadata"]["name"]: int(n["status"]["capacity"].get("nvidia.com/gpu", "0"))
        for n in nodes
    }
    assert gpus == {
        "braid-local-0": 0,
        "braid-local-1": 0,
        "braid-edge-0": 1,
        "braid-edge-1": 1,
        "braid-cloud-0": 4,
        "braid-cloud-1": 4,
    }
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert labels["type"] == "kwok"
        assert labels["node.kubernetes.io/instance-type"]
        assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
        assert node["status"]["capacity"] == node["status"]["allocatable"]
        taints = node["spec"].get("taints", [])
        has_gpu = gpus[node["metadata"]["name"]] > 0
        assert (render.GPU_TAINT in taints) == has_gpu


def test_cloud_nodes_are_bigger_than_edge_nodes() -> None:
    by_tier = {n["metadata"]["labels"][render.TIER_LABEL]: n for n in render.render_pool_nodes()}
    assert int(by_tier["cloud"]["status"]["capacity"]["cpu"]) > int(
        by_tier["edge"]["status"]["capacity"]["cpu"]
    )


def test_cluster_state_round_trips_through_json() -> None:
    state = cluster.ClusterState(
        ports=PORTS,
        pids={"etcd": 1},
        started_at="2026-01-01T00:00:00+00:00",
        up_seconds=9.5,
        phases={"etcd": 1.0},
        versions={"etcd": "v3.6.5"},
        advertise_address="127.0.0.1",
    )
    assert cluster.ClusterState.from_json(state.to_json()) == state


def test_ports_prefer_the_previous_run_and_never_repeat() -> None:
    ports = cluster.choose_ports(Settings(), previous=None)
    assert len(set(ports.as_dict().values())) == 5
    again = cluster.choose_ports(Settings(), previous=ports)
    assert again == ports


def test_a_requested_port_that_is_taken_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        with pytest.raises(cluster.ClusterError, match="BRAID_CLUSTER_APISERVER_PORT"):
            cluster.choose_ports(Settings(cluster_apiserver_port=busy), previous=None)


def test_missing_binaries_are_named_with_how_to_build_them(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(cluster.ClusterError) as info:
        cluster.find_binaries(tmp_path)
    message = str(info.value)
    missing = message.split(": ", 1)[1].split(";")[0].split(", ")
    assert missing == ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
    assert "make install-binaries" in message
