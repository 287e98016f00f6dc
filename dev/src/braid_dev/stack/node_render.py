"""Pure pieces of the local stack's real nodes: where each node keeps its files, its network,
and the configuration of its containerd, kubelet and CNI network.

A real node is a kubelet + containerd + runc on this machine, beside the kwok pools: pods
scheduled there run in containers. Everything here is a function of its arguments (no I/O),
so the wiring is unit-tested without starting a node; ``nodes.py`` starts and stops them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid_dev.stack.cluster_render import POOL_LABEL, TIER_LABEL
from braid_dev.stack.pki import CertSpec

#: Every real node carries this label; ``down`` and ``status`` find real nodes by it.
REAL_NODE_LABEL = ("braid.dev/real-node", "true")
#: Until braid's images are built for the real nodes, only pods that tolerate this taint
#: land there; everything else keeps going to the kwok nodes, as before real nodes existed.
REAL_NODE_TAINT = {"key": "braid.dev/real-node", "value": "true", "effect": "NoSchedule"}
#: The node pool (``braid.dev/pool``) of real nodes: a Block with ``nodePool`` set to it, and
#: the real-node taint tolerated (the operator's ``tritonPods.tolerations``), runs its Triton
#: pods in containers; the kwok nodes of the same tier are ``<tier>-pool``.
REAL_POOL_SUFFIX = "-real"
#: Where Debian's containernetworking-plugins puts bridge, host-local and loopback.
CNI_BIN_DIR = Path("/usr/lib/cni")
#: Pod subnets of real nodes are /24s carved from this /16 (kwok's fake pod IPs use
#: 10.244.0.0/16 and Services 10.96.0.0/12, so neither overlaps).
POD_NETWORK_PREFIX = "10.241"
#: The namespace the CRI plugin keeps Kubernetes' images and containers in.
CRI_NAMESPACE = "k8s.io"
#: A unix socket's path must fit ``sun_path`` (108 bytes, with the terminating NUL).
MAX_SOCKET_PATH = 107
#: Where nodes keep what holds unix sockets (containerd's, the kubelet's pod-resources,
#: device-plugin and plugin-registry sockets), its containers and volumes: a short path,
#: because a state dir under a test's tmp_path is too deep for ``sun_path``.
WORK_ROOT = Path("/var/lib/braid/nodes")


def real_node_pod(
    name: str,
    image: str,
    shell: str,
    *,
    labels: Mapping[str, str] | None = None,
    port: int = 8080,
    port_name: str | None = None,
    probe_path: str = "/",
) -> dict[str, Any]:
    """A pod pinned to the real node (its taint tolerated) running ``sh -c shell`` in
    ``image`` (imported into the node: never pulled), Ready once ``probe_path`` answers on
    ``port``."""
    key, value = REAL_NODE_LABEL
    container_port: dict[str, Any] = {"containerPort": port}
    if port_name is not None:
        container_port["name"] = port_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {"app": name})},
        "spec": {
            "nodeSelector": {key: value},
            "tolerations": [{"key": key, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", shell],
                    "ports": [container_port],
                    "readinessProbe": {
                        "httpGet": {"path": probe_path, "port": port},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def real_node_name(tier: str, index: int) -> str:
    return f"braid-{tier}-real-{index}"


@dataclass(frozen=True)
class NodeLayout:
    """Where one real node keeps its files; all of it lives under ``root``."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def containerd_root(self) -> Path:
        return self.work_dir / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.work_dir / "containerd-state"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cluster_root(self) -> Path:
        return self.root.parent.parent

    @property
    def work_dir(self) -> Path:
        """Short, and unique per state dir and node: sockets, containers, volumes, logs."""
        return WORK_ROOT / f"{cluster_tag(self.cluster_root)}-{self.name}"

    @property
    def containerd_socket(self) -> Path:
        return self.work_dir / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        """runc's container state (its default, /run/containerd/runc, is shared)."""
        return self.containerd_state / "runc"

    @property
    def kubelet_root(self) -> Path:
        return self.work_dir / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.work_dir / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        """host-local IPAM's leases (its default, /var/lib/cni, would outlive the node)."""
        return self.work_dir / "cni-ipam"

    @property
    def volume_plugin_dir(self) -> Path:
        return self.work_dir / "volume-plugins"

    @property
    def net_file(self) -> Path:
        """The network the node was given, so ``down`` removes exactly that bridge."""
        return self.root / "net.json"


@dataclass(frozen=True)
class NodeNet:
    """A real node's network: a bridge of its own whose address is the node's IP.

    The kubelet needs a non-loopback node IP, and pods need a bridge; one interface does
    both: the harness creates the bridge with the subnet's first address (the node IP, and
    the pods' gateway), and the CNI bridge plugin attaches pods to it.
    """

    bridge: str
    subnet_index: int

    @property
    def pod_subnet(self) -> str:
        return f"{POD_NETWORK_PREFIX}.{self.subnet_index}.0/24"

    @property
    def node_ip(self) -> str:
        return f"{POD_NETWORK_PREFIX}.{self.subnet_index}.1"

    @property
    def bridge_address(self) -> str:
        return f"{self.node_ip}/24"

    def as_dict(self) -> dict[str, Any]:
        return {"bridge": self.bridge, "subnet_index": self.subnet_index}


def cluster_tag(cluster_root: Path) -> str:
    """Eight hex digits naming one cluster's interfaces (stacks with other state dirs differ)."""
    return hashlib.sha256(str(cluster_root).encode()).hexdigest()[:8]


def bridge_name(cluster_root: Path, index: int) -> str:
    """``brd<tag><index>``: within Linux's 15 characters, and recognisably ours."""
    return f"brd{cluster_tag(cluster_root)}{index}"


def choose_node_net(cluster_root: Path, index: int, taken_subnets: Sequence[int]) -> NodeNet:
    """The node's bridge and a /24 no other interface of this machine uses.

    The start point is drawn from the cluster's root, so two stacks (different state dirs)
    seldom even try the same subnet; ``taken_subnets`` (third octets in use) settles it.
    """
    start = int(cluster_tag(cluster_root), 16) % 250 + index
    taken = set(taken_subnets)
    for step in range(250):
        candidate = (start + step) % 250 + 1
        if candidate not in taken:
            return NodeNet(bridge_name(cluster_root, index), candidate)
    raise ValueError(f"no free /24 left in {POD_NETWORK_PREFIX}.0.0/16")


def node_cert_specs(node_names: Sequence[str]) -> list[CertSpec]:
    """Client certificates the Node authorizer and NodeRestriction recognise as kubelets."""
    return [
        CertSpec(kubelet_cert_name(name), f"system:node:{name}", ("system:nodes",), client=True)
        for name in node_names
    ]


def kubelet_cert_name(node: str) -> str:
    return f"kubelet-{node}"


def _toml_value(value: Any) -> str:
    # JSON's string escapes are valid in TOML basic strings, and its lists of strings are
    # TOML arrays; bools need TOML's lower case, which json.dumps also writes.
    if isinstance(value, bool | int | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML rendering for {type(value).__name__}")


def render_toml(table: Mapping[str, Any], prefix: str = "") -> str:
    """TOML for nested tables of strings, bools, ints and lists (containerd's config).

    A few lines instead of a new dependency: the config has no dates, floats or arrays of
    tables. Keys with dots (plugin ids) are quoted.
    """
    scalars: list[str] = []
    tables: list[str] = []
    for key, value in table.items():
        quoted = json.dumps(key) if "." in key else key
        if isinstance(value, Mapping):
            name = f"{prefix}.{quoted}" if prefix else quoted
            body = render_toml(value, name)
            tables.append(f"[{name}]\n{body}")
        else:
            scalars.append(f"{quoted} = {_toml_value(value)}\n")
    return "".join(scalars) + "".join(tables)


CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def render_containerd_config(layout: NodeLayout, sandbox_image: str) -> dict[str, Any]:
    """One containerd per node: own root, state and socket, the CRI plugin on.

    ``restrict_oom_score_adj``: this machine's root lacks CAP_SYS_RESOURCE, and without it
    every sandbox dies with "can't get final child's PID from pipe: EOF".
    ``netns_mounts_under_state_dir`` keeps pods' network namespaces under the node's state
    dir instead of /var/run/netns, so what tear-down must unmount is all in one place.
    """
    cri = {
        "sandbox_image": sandbox_image,
        "restrict_oom_score_adj": True,
        "netns_mounts_under_state_dir": True,
        # The stream server (exec, attach, port-forward) on a port the kernel picks: the
        # default 10010 would clash between nodes.
        "stream_server_address": "127.0.0.1",
        "stream_server_port": "0",
        "enable_selinux": False,
        "max_container_log_line_size": 16384,
        "cni": {
            "bin_dir": str(CNI_BIN_DIR),
            "conf_dir": str(layout.cni_conf_dir),
            "max_conf_num": 1,
        },
        "containerd": {
            "snapshotter": "overlayfs",
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "options": {"SystemdCgroup": False, "Root": str(layout.runc_root)},
                }
            },
        },
        # Images only ever come from `ctr images import`; nothing is pulled.
        "registry": {"config_path": ""},
    }
    return {
        "version": 2,
        "root": str(layout.containerd_root),
        "state": str(layout.containerd_state),
        # Snapshotters this machine cannot use only log errors at every start.
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ],
        "grpc": {"address": str(layout.containerd_socket)},
        "ttrpc": {"address": f"{layout.containerd_socket}.ttrpc"},
        "debug": {"address": "", "level": "warn"},
        "metrics": {"address": ""},
        "plugins": {CRI_PLUGIN: cri},
    }


def render_cni_conflist(net: NodeNet, layout: NodeLayout) -> dict[str, Any]:
    """The node's pod network: pods on its bridge, addresses from its /24.

    No IP masquerade and no portmap: traffic stays inside this machine, so the plugins add
    no iptables rules that tear-down would have to find again.
    """
    return {
        "cniVersion": "1.0.0",
        "name": net.bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": net.pod_subnet, "gateway": net.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "loopback"},
        ],
    }


@dataclass(frozen=True)
class KubeletPorts:
    port: int
    healthz: int


def render_kubelet_config(
    layout: NodeLayout,
    net: NodeNet,
    ports: KubeletPorts,
    ca_file: Path,
    cluster_dns: Sequence[str] = (),
) -> dict[str, Any]:
    """KubeletConfiguration for a node that shares the machine with others and with kwok.

    cgroupfs (no systemd here), no QoS cgroups and no node-allocatable enforcement (both
    would fight over the machine's root cgroups with the other nodes); swap allowed. Image
    GC is off: images are imported, never pulled, so one collected would be gone for good.
    Eviction thresholds are low for the same reason (a shared disk is no node's to guard).
    """
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": net.node_ip,
        "port": ports.port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.pod_logs),
        "volumePluginDir": str(layout.volume_plugin_dir),
        "registerNode": True,
        "registerWithTaints": [dict(REAL_NODE_TAINT)],
        "clusterDomain": "cluster.local",
        "clusterDNS": list(cluster_dns),
        "resolvConf": "/etc/resolv.conf",
        "maxPods": 110,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": False,
        # How soon a changed ConfigMap reaches a mounted volume (the gateway's routing table,
        # which the path controller changes under load): the kubelet's default of 1 min would
        # hold a switch back for up to a minute on this one-machine stack.
        "syncFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "nodeStatusReportFrequency": "1m",
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }
    return config


def real_pool(tier: str) -> str:
    """The ``braid.dev/pool`` value of a tier's real nodes."""
    return f"{tier}{REAL_POOL_SUFFIX}"


def node_labels(tier: str) -> dict[str, str]:
    """Labels the kubelet registers with: the pool's, plus the real-node marker.

    NodeRestriction lets a kubelet set these (its own prefixes and the well-known topology
    labels); ``type=kwok`` is absent, so kwok neither manages this node nor plays its pods.
    """
    key, value = REAL_NODE_LABEL
    return {
        TIER_LABEL: tier,
        POOL_LABEL: real_pool(tier),
        key: value,
        "node.kubernetes.io/instance-type": f"braid.{tier}-real",
        "topology.kubernetes.io/region": f"braid-{tier}",
    }


def kubelet_argv(
    binary: Path, layout: NodeLayout, net: NodeNet, labels: Mapping[str, str]
) -> list[str]:
    label_text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return [
        str(binary),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--hostname-override={layout.name}",
        f"--node-ip={net.node_ip}",
        f"--node-labels={label_text}",
        "--v=1",
    ]


def containerd_argv(binary: Path, layout: NodeLayout) -> list[str]:
    return [str(binary), f"--config={layout.containerd_config}"]


def ctr_argv(binary: Path, layout: NodeLayout, *args: str) -> list[str]:
    """``ctr`` against the node's containerd, in the CRI's namespace."""
    return [str(binary), f"--address={layout.containerd_socket}", "-n", CRI_NAMESPACE, *args]


def check_socket_path(layout: NodeLayout) -> None:
    """Fail early, with the reason, when the state dir is too deep for a unix socket."""
    longest = f"{layout.containerd_socket}.ttrpc"
    if len(longest) > MAX_SOCKET_PATH:
        raise ValueError(
            f"{longest} is {len(longest)} bytes, over a unix socket's {MAX_SOCKET_PATH}; "
            "use a shorter BRAID_STATE_DIR"
        )
