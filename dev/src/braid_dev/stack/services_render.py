"""Pure pieces of Services and DNS for the real nodes: kube-proxy's configuration, CoreDNS's
Corefile and the objects that publish the cluster DNS as a Service.

kube-proxy programs this machine's iptables (every real node shares its network namespace,
so one kube-proxy serves them all). CoreDNS runs as a process of the stack, like the
control plane, because the API server listens on loopback only and pods could not reach
it; it answers on the first real node's IP, and the ``kube-dns`` Service (ClusterIP
``10.96.0.10``, the kubelet's ``clusterDNS``) points there through an EndpointSlice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid_dev.stack.node_render import POD_NETWORK_PREFIX
from braid_dev.stack.pki import CertSpec

#: The tenth address of the Service range, as kubeadm gives the cluster DNS.
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
#: The default ClusterRoleBinding ``system:node-proxier`` names this user.
KUBE_PROXY_USER = "system:kube-proxy"
COREDNS_USER = "braid:coredns"
MANAGED_BY = "braid.dev-local-stack"


def service_cert_specs() -> list[CertSpec]:
    return [
        CertSpec("kube-proxy", KUBE_PROXY_USER, client=True),
        CertSpec("coredns", COREDNS_USER, client=True),
    ]


@dataclass(frozen=True)
class ServicePorts:
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int
    dns_ready: int


def render_kube_proxy_config(
    kubeconfig: Path, hostname: str, ports: ServicePorts
) -> dict[str, Any]:
    """iptables mode, on loopback for its own ports, touching no sysctl it can avoid.

    ``conntrack`` zeros and ``localhostNodePorts: false`` keep kube-proxy from changing the
    machine's conntrack table size, timeouts and ``route_localnet``; the pod range tells it
    which traffic comes from pods (the rest is masqueraded when it reaches a Service).
    """
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": hostname,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "clusterCIDR": f"{POD_NETWORK_PREFIX}.0.0/16",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "nodePortAddresses": ["primary"],
    }


def kube_proxy_argv(binary: Path, config: Path) -> list[str]:
    return [str(binary), f"--config={config}", "--v=1"]


def render_corefile(listen_ip: str, kubeconfig: Path, ports: ServicePorts) -> str:
    """Cluster names from the API server; anything else to this machine's resolver."""
    return f"""\
.:53 {{
    bind {listen_ip}
    errors
    health 127.0.0.1:{ports.dns_health}
    ready 127.0.0.1:{ports.dns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
    reload
    loadbalance
}}
"""


def coredns_argv(binary: Path, corefile: Path) -> list[str]:
    return [str(binary), "-conf", str(corefile)]


def render_dns_objects(listen_ip: str) -> list[dict[str, Any]]:
    """RBAC for CoreDNS and the ``kube-dns`` Service with its EndpointSlice.

    The Service has no selector (CoreDNS is no pod); the EndpointSlice is ours, marked with
    ``managed-by`` so the EndpointSlice controller leaves it alone.
    """
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": COREDNS_USER},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": COREDNS_USER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": COREDNS_USER,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": DNS_SERVICE,
                "namespace": DNS_NAMESPACE,
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": [dict(p, targetPort=53) for p in ports]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{DNS_SERVICE}-local",
                "namespace": DNS_NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": DNS_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [listen_ip], "conditions": {"ready": True}}],
            "ports": ports,
        },
    ]
