"""Services and DNS for the real nodes: kube-proxy's configuration, the Corefile, kube-dns."""

from __future__ import annotations

from pathlib import Path

from braid_dev.stack import cluster_render as render
from braid_dev.stack import services_render as sr

PORTS = sr.ServicePorts(proxy_healthz=1, proxy_metrics=2, dns_health=3, dns_ready=4)


def test_kube_proxy_touches_no_sysctl_it_can_avoid() -> None:
    config = sr.render_kube_proxy_config(Path("/k"), "braid-local-real-0", PORTS)
    assert config["mode"] == "iptables"
    assert config["hostnameOverride"] == "braid-local-real-0"
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["healthzBindAddress"] == "127.0.0.1:1"
    assert config["clusterCIDR"] == "10.241.0.0/16"


def test_corefile_binds_the_dns_address_and_serves_the_cluster_domain() -> None:
    corefile = sr.render_corefile("10.241.3.1", Path("/c.kubeconfig"), PORTS)
    assert "bind 10.241.3.1" in corefile
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
    assert "kubeconfig /c.kubeconfig" in corefile
    assert "ready 127.0.0.1:4" in corefile
    assert corefile.count("{") == corefile.count("}")


def test_kube_dns_service_points_at_coredns_with_a_slice_of_our_own() -> None:
    objects = {o["kind"]: o for o in sr.render_dns_objects("10.241.3.1")}
    service = objects["Service"]
    assert service["spec"]["clusterIP"] == sr.CLUSTER_DNS_IP
    assert "selector" not in service["spec"]
    assert sr.CLUSTER_DNS_IP.startswith(render.SERVICE_CIDR.split(".0.0")[0])
    endpoints = objects["EndpointSlice"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert endpoints["endpoints"][0]["addresses"] == ["10.241.3.1"]
    binding = objects["ClusterRoleBinding"]
    assert binding["subjects"][0]["name"] == sr.COREDNS_USER


def test_kube_proxy_authenticates_as_the_user_node_proxier_binds() -> None:
    names = {spec.name: spec for spec in sr.service_cert_specs()}
    assert names["kube-proxy"].common_name == "system:kube-proxy"
