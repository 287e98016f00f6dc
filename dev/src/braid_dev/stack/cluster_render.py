"""Pure pieces of the local control plane: command lines, certificates to issue, kubeconfigs,
node pools and kwok's configuration.

Everything here is a function of its arguments (no I/O), so how the cluster is wired is
unit-tested without starting it; ``cluster.py`` does the starting and stopping.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braid_dev.stack.pki import CertSpec, Pki

CLUSTER_NAME = "braid"
SERVICE_CIDR = "10.96.0.0/12"
#: First address of SERVICE_CIDR: the ``kubernetes`` Service, and a SAN of the serving cert.
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.1/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOOPBACK = "127.0.0.1"

#: Label kwok selects the nodes it simulates by (``--manage-nodes-with-label-selector``).
KWOK_NODE_LABEL = ("type", "kwok")
TIER_LABEL = "braid.dev/tier"
POOL_LABEL = "braid.dev/pool"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

FRONT_PROXY_CLIENT = "front-proxy-client"

#: The user kwok authenticates as; bound to the ClusterRole kwok's own manifests ask for.
KWOK_USER = "braid:kwok-controller"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the control plane's servers."""

    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its state: PKI, etcd data, kubeconfigs, logs, pid files."""

    root: Path

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def ports_file(self) -> Path:
        """The last ports used; kept across ``down`` so the next ``up`` reuses them."""
        return self.root / "ports.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def admin_kubeconfig(self) -> Path:
        """The kubeconfig handed to people and tests (admin, system:masters)."""
        return self.root / "kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"


#: Start order; ``down`` stops in reverse so no component loses its API server first.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def cert_specs(extra_ips: Sequence[str] = ()) -> list[CertSpec]:
    """Every leaf certificate the cluster needs, as kubeadm would issue them.

    The identities matter: the bootstrap RBAC policy binds ``system:kube-controller-manager``
    and ``system:kube-scheduler`` to their roles; ``system:masters`` is the admin group.
    """
    loopback_names = ("localhost",)
    loopback_ips = (LOOPBACK,)
    return [
        CertSpec(
            "kube-apiserver",
            "kube-apiserver",
            dns_names=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                *loopback_names,
            ),
            ip_addresses=(*loopback_ips, KUBERNETES_SERVICE_IP, *extra_ips),
            server=True,
        ),
        CertSpec(
            "etcd-server",
            "etcd",
            dns_names=loopback_names,
            ip_addresses=loopback_ips,
            server=True,
            client=True,  # also the peer certificate, which acts as both
        ),
        CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True),
        CertSpec("admin", "braid-admin", organizations=("system:masters",), client=True),
        CertSpec("kube-controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("kube-scheduler", "system:kube-scheduler", client=True),
        CertSpec("kwok", KWOK_USER, client=True),
        # What the API server shows kubelets (logs, exec, port-forward on real nodes).
        CertSpec(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        ),
        # The aggregation layer's client: the apiserver presents it to extension API
        # servers (metrics, custom metrics), which trust it through the front-proxy CA.
        CertSpec("front-proxy-client", FRONT_PROXY_CLIENT, client=True, issuer="front-proxy-ca"),
        CertSpec(
            "kube-controller-manager-serving",
            "kube-controller-manager",
            dns_names=loopback_names,
            ip_addresses=loopback_ips,
            server=True,
        ),
        CertSpec(
            "kube-scheduler-serving",
            "kube-scheduler",
            dns_names=loopback_names,
            ip_addresses=loopback_ips,
            server=True,
        ),
    ]


def apiserver_url(ports: Ports) -> str:
    return f"https://{LOOPBACK}:{ports.apiserver}"


def render_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> dict[str, Any]:
    """A kubeconfig with the credentials embedded, so it can be copied anywhere on the host."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [
            {"name": f"{user}@{CLUSTER_NAME}", "context": {"cluster": CLUSTER_NAME, "user": user}}
        ],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }


# Go's collector ran about a quarter of the API server's CPU while 1,000 Blocks rolled out on
# two cores. A dev cluster has memory to spare, so the Go components collect when the heap
# has grown 4x (GOGC=400) instead of 2x, and GOMEMLIMIT caps what that may cost in memory:
# near the limit the collector runs as often as it must.
GO_RUNTIME_ENV = {"GOGC": "400", "GOMEMLIMIT": "1536MiB"}


def etcd_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """A single-member etcd on loopback with mutual TLS for clients and its peer port."""
    pki = layout.pki
    client = f"https://{LOOPBACK}:{ports.etcd}"
    peer = f"https://{LOOPBACK}:{ports.etcd_peer}"
    return [
        str(binary),
        f"--name={CLUSTER_NAME}",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={CLUSTER_NAME}={peer}",
        "--initial-cluster-state=new",
        f"--cert-file={pki.cert('etcd-server')}",
        f"--key-file={pki.key('etcd-server')}",
        f"--trusted-ca-file={pki.ca_cert}",
        "--client-cert-auth=true",
        f"--peer-cert-file={pki.cert('etcd-server')}",
        f"--peer-key-file={pki.key('etcd-server')}",
        f"--peer-trusted-ca-file={pki.ca_cert}",
        "--peer-client-cert-auth=true",
        # The data dir is thrown away on every `up`; durability buys nothing here and fsync
        # latency on a shared disk is what makes a dev etcd slow.
        "--unsafe-no-fsync=true",
        "--snapshot-count=10000",
        "--log-level=warn",
    ]


def apiserver_argv(
    binary: Path,
    layout: Layout,
    ports: Ports,
    advertise_address: str = LOOPBACK,
    pods_reach_it: bool = False,
) -> list[str]:
    """kube-apiserver as kubeadm runs it, bound to loopback.

    ``advertise_address`` fills the ``kubernetes`` Service's endpoints; endpoint validation
    refuses loopback addresses, so a host address is passed when there is one. With real
    nodes (``pods_reach_it``) pods in containers dial that Service (the operator, the
    controller), so the server also listens beyond loopback; clients still need the
    cluster CA's certificates or tokens to get anywhere.
    """
    pki = layout.pki
    return [
        str(binary),
        f"--advertise-address={advertise_address}",
        f"--bind-address={'0.0.0.0' if pods_reach_it else LOOPBACK}",
        f"--secure-port={ports.apiserver}",
        f"--etcd-servers=https://{LOOPBACK}:{ports.etcd}",
        f"--etcd-cafile={pki.ca_cert}",
        f"--etcd-certfile={pki.cert('apiserver-etcd-client')}",
        f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
        f"--tls-cert-file={pki.cert('kube-apiserver')}",
        f"--tls-private-key-file={pki.key('kube-apiserver')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-key-file={pki.sa_public}",
        f"--service-account-signing-key-file={pki.sa_private}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        # Real nodes are reached by their IP; their names resolve nowhere.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--authorization-mode=Node,RBAC",
        # The default plugin set stays on; NodeRestriction is the one kubeadm adds.
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """kube-controller-manager with per-controller service accounts and the cluster signer."""
    pki = layout.pki
    kubeconfig = layout.component_kubeconfig("kube-controller-manager")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={ports.controller_manager}",
        f"--tls-cert-file={pki.cert('kube-controller-manager-serving')}",
        f"--tls-private-key-file={pki.key('kube-controller-manager-serving')}",
        f"--client-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.sa_private}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--cluster-name={CLUSTER_NAME}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # One instance: leader election would only delay start-up (and by a whole lease
        # duration after a crash that left a lease behind).
        "--leader-elect=false",
        # The client's rate limit, not the API server, paced a 1,000-Block rollout: the
        # controller-manager writes ~13 objects per Block (ReplicaSet, Pod, their status
        # updates, Endpoints, EndpointSlice, Events). At the default 20 QPS that is ~11 min;
        # at 200 QPS the last Pod was created 62 s after the first Block, at 1,000 QPS
        # 39 s. Large clusters raise it the same way.
        "--kube-api-qps=1000",
        "--kube-api-burst=2000",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """The real kube-scheduler: it is what proves pool placement, taints and GPU fits."""
    pki = layout.pki
    kubeconfig = layout.component_kubeconfig("kube-scheduler")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={ports.scheduler}",
        f"--tls-cert-file={pki.cert('kube-scheduler-serving')}",
        f"--tls-private-key-file={pki.key('kube-scheduler-serving')}",
        f"--client-ca-file={pki.ca_cert}",
        "--leader-elect=false",
        # One binding and one Event per Pod: the default 50 QPS would take 40 s for 1,000.
        # (Deprecated flags, honoured while no --config file is given.)
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
        "--profiling=false",
        "--v=1",
    ]


def kwok_argv(binary: Path, layout: Layout) -> list[str]:
    """kwok, managing only the nodes labelled ``type=kwok``.

    ``--config`` names our own file so a stray ``~/.kwok/kwok.yaml`` cannot change the
    simulation; the file holds no Stage objects, so kwok uses its built-in default stages
    (node-initialize + heartbeat, pod-ready / pod-complete / pod-delete).
    ``--node-lease-duration-seconds`` makes kwok renew node Leases as a kubelet does; without
    it kwok v0.7 only refreshes node status every ten minutes and the node lifecycle
    controller marks the nodes NotReady.
    """
    key, value = KWOK_NODE_LABEL
    return [
        str(binary),
        f"--config={layout.kwok_config}",
        f"--kubeconfig={layout.component_kubeconfig('kwok')}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-label-selector={key}={value}",
        "--node-lease-duration-seconds=40",
        f"--cidr={POD_CIDR}",
    ]


def render_kwok_config() -> dict[str, Any]:
    """kwok's own configuration file (options only; the default stages apply)."""
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {"enableCRDs": []},
    }


def render_kwok_rbac() -> list[dict[str, Any]]:
    """Least privilege for kwok: what its upstream ClusterRole grants for nodes and pods."""
    rules = [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [""],
            "resources": ["nodes/status", "pods/status"],
            "verbs": ["get", "patch", "update"],
        },
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch", "patch", "update", "delete"],
        },
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["create", "get", "list", "watch", "patch", "update"],
        },
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "braid:kwok-controller"},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "braid:kwok-controller"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "braid:kwok-controller",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KWOK_USER}
            ],
        },
    ]


@dataclass(frozen=True)
class NodePool:
    """A tier's simulated machines: how many, how big, which GPUs."""

    tier: str
    count: int
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str = ""
    instance_type: str = ""
    # kubelet's --max-pods; 250 (as managed clouds allow on big nodes) leaves room for the
    # 1,000-Block scale benchmark on six simulated nodes.
    pods: int = 250
    extra_labels: dict[str, str] = field(default_factory=dict)


#: The three tiers of the design: local (no GPU), edge (1 small GPU), cloud (4 big GPUs).
DEFAULT_POOLS: tuple[NodePool, ...] = (
    NodePool("local", 2, cpu="8", memory="32Gi", instance_type="braid.local-8c32g"),
    NodePool(
        "edge",
        2,
        cpu="16",
        memory="64Gi",
        gpus=1,
        gpu_product="NVIDIA-T4",
        instance_type="braid.edge-16c64g-1xT4",
    ),
    NodePool(
        "cloud",
        2,
        cpu="64",
        memory="512Gi",
        gpus=4,
        gpu_product="NVIDIA-A100-SXM4-80GB",
        instance_type="braid.cloud-64c512g-4xA100",
    ),
)


def node_name(tier: str, index: int) -> str:
    return f"braid-{tier}-{index}"


def render_pool_nodes(pools: Sequence[NodePool] = DEFAULT_POOLS) -> list[dict[str, Any]]:
    """Node objects for kwok to bring to life, with capacity and labels set at creation.

    Nodes accept ``status`` on create, so capacity (including ``nvidia.com/gpu``) is part of
    the manifest; kwok's node-initialize stage keeps what is there and adds the conditions.
    GPU nodes carry the taint the NVIDIA device plugin's users expect, so only pods that
    tolerate it land there.
    """
    key, value = KWOK_NODE_LABEL
    nodes: list[dict[str, Any]] = []
    for pool in pools:
        for index in range(pool.count):
            name = node_name(pool.tier, index)
            labels = {
                key: value,
                TIER_LABEL: pool.tier,
                POOL_LABEL: f"{pool.tier}-pool",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": pool.instance_type or f"braid.{pool.tier}",
                "topology.kubernetes.io/region": f"braid-{pool.tier}",
                "topology.kubernetes.io/zone": f"braid-{pool.tier}-{'abcdefgh'[index % 8]}",
                **pool.extra_labels,
            }
            capacity = {
                "cpu": pool.cpu,
                "memory": pool.memory,
                "pods": str(pool.pods),
                "ephemeral-storage": "100Gi",
            }
            taints: list[dict[str, str]] = []
            if pool.gpus:
                labels[f"{GPU_RESOURCE}.present"] = "true"
                labels[f"{GPU_RESOURCE}.count"] = str(pool.gpus)
                if pool.gpu_product:
                    labels[f"{GPU_RESOURCE}.product"] = pool.gpu_product
                capacity[GPU_RESOURCE] = str(pool.gpus)
                taints.append(dict(GPU_TAINT))
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                    },
                    "spec": {"taints": taints} if taints else {},
                    "status": {
                        "capacity": dict(capacity),
                        "allocatable": dict(capacity),
                        "nodeInfo": {
                            "architecture": "amd64",
                            "operatingSystem": "linux",
                            "osImage": "kwok simulated node",
                        },
                    },
                }
            )
    return nodes
