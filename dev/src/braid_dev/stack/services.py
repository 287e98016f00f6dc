"""Services and DNS for the real nodes: CoreDNS and kube-proxy as processes of the stack.

kube-proxy's rules live in this machine's iptables, which every stack on the machine shares:
two kube-proxies would rewrite each other's chains. So a stack starts kube-proxy only when
no other one runs here, and ``kube-proxy --cleanup`` removes the rules only once the last
kube-proxy of the machine has stopped.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from braid.logs import log_event
from braid_dev.stack import cluster_render as render
from braid_dev.stack import nodes
from braid_dev.stack import services_render as sr
from braid_dev.stack.ports import free_ports
from braid_dev.stack.processes import ManagedProcess, wait_until

logger = logging.getLogger(__name__)

BINARIES = ("coredns", "kube-proxy")
Launch = Callable[[str, list[str]], ManagedProcess]


@dataclass(frozen=True)
class ServicesLayout:
    root: Path

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"


def services_layout(cluster_root: Path) -> ServicesLayout:
    return ServicesLayout(cluster_root / "services")


def processes(cluster_root: Path) -> dict[int, str]:
    """This stack's CoreDNS and kube-proxy (pid -> name)."""
    root = str(services_layout(cluster_root).root)
    found: dict[int, str] = {}
    for pid in nodes.all_pids():
        argv = nodes.cmdline(pid)
        if argv and Path(argv[0]).name in BINARIES and any(root in a for a in argv[1:]):
            found[pid] = Path(argv[0]).name
    return found


def started(cluster_root: Path) -> list[str]:
    """What ``start`` started for this stack (kube-proxy is skipped beside another stack's)."""
    layout = services_layout(cluster_root)
    return [
        name
        for name, marker in (("coredns", layout.corefile), ("kube-proxy", layout.kube_proxy_config))
        if marker.exists()
    ]


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class StartedServices:
    coredns: ManagedProcess
    kube_proxy: ManagedProcess | None


def start(
    cluster: render.Layout,
    kubeconfig_for: Callable[[str, str], str],
    bin_dir: Path,
    dns_ip: str,
    proxy_hostname: str,
    launch: Launch,
    timeout: float,
) -> StartedServices:
    """CoreDNS on ``dns_ip``:53, and kube-proxy unless another stack's runs on the machine.

    ``kubeconfig_for(cert, user)`` gives the kubeconfig of a certificate of the stack's PKI.
    The ``kube-dns`` Service and its EndpointSlice must exist already (their ClusterIP is
    what pods are told to ask).
    """
    layout = services_layout(cluster.root)
    layout.root.mkdir(parents=True, exist_ok=True)
    ports = sr.ServicePorts(*free_ports(4))
    for cert, user in (("coredns", sr.COREDNS_USER), ("kube-proxy", sr.KUBE_PROXY_USER)):
        layout.kubeconfig(cert).write_text(kubeconfig_for(cert, user))
        layout.kubeconfig(cert).chmod(0o600)
    layout.corefile.write_text(sr.render_corefile(dns_ip, layout.kubeconfig("coredns"), ports))
    coredns = launch("coredns", sr.coredns_argv(bin_dir / "coredns", layout.corefile))
    wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{ports.dns_ready}/ready"),
        "CoreDNS /ready",
        timeout,
        coredns,
        interval=0.25,
    )
    if any(p for p, name in _machine_kube_proxies().items() if name):
        log_event(
            logger,
            "services.kube_proxy_skipped",
            level=logging.WARNING,
            reason="another stack's kube-proxy owns this machine's iptables",
        )
        return StartedServices(coredns, None)
    config = sr.render_kube_proxy_config(layout.kubeconfig("kube-proxy"), proxy_hostname, ports)
    layout.kube_proxy_config.write_text(yaml.safe_dump(config))
    proxy = launch(
        "kube-proxy", sr.kube_proxy_argv(bin_dir / "kube-proxy", layout.kube_proxy_config)
    )
    wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{ports.proxy_healthz}/healthz"),
        "kube-proxy /healthz",
        timeout,
        proxy,
        interval=0.25,
    )
    return StartedServices(coredns, proxy)


def _machine_kube_proxies() -> dict[int, str]:
    found: dict[int, str] = {}
    for pid in nodes.all_pids():
        argv = nodes.cmdline(pid)
        if argv and Path(argv[0]).name == "kube-proxy" and "--cleanup" not in argv:
            found[pid] = " ".join(argv)
    return found


def teardown(cluster_root: Path, bin_dir: Path) -> list[str]:
    """Stop this stack's CoreDNS and kube-proxy; clear kube-proxy's rules if it was the last."""
    running = processes(cluster_root)
    nodes.stop_pids(list(running), 10.0)
    layout = services_layout(cluster_root)
    had_proxy = "kube-proxy" in running.values() or layout.kube_proxy_config.exists()
    if had_proxy and not _machine_kube_proxies() and (bin_dir / "kube-proxy").exists():
        subprocess.run(
            [str(bin_dir / "kube-proxy"), "--cleanup", "--v=0"],
            capture_output=True,
            check=False,
            timeout=60,
        )
    with contextlib.suppress(OSError):
        for path in layout.root.iterdir():
            path.unlink()
        layout.root.rmdir()
    return sorted(running.values())
