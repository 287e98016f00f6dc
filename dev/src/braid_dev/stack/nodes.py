"""The local stack's real nodes: a containerd + runc and a kubelet per node, on a bridge of
its own, so pods scheduled there run in real containers beside the kwok pools.

Start-up order per node: its bridge (the node IP), its containerd, the images it needs
(``ctr images import``: nothing is pulled), then its kubelet, which registers the node.

Tear-down must leave nothing behind even after a crash, so it does not trust the processes
it stops: it finds the node's kubelet, containerd, shims and container processes in /proc,
kills them, unmounts whatever is mounted under the node's directory (container root
filesystems, network namespaces, volumes), deletes the bridge and the veths on it, removes
the cgroups the containers had, and finally the directory itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from braid.logs import log_event
from braid_dev.stack import cluster_render as render
from braid_dev.stack import images
from braid_dev.stack import node_render as nr
from braid_dev.stack.ports import free_ports
from braid_dev.stack.processes import ManagedProcess, pid_alive, start_process, wait_until

logger = logging.getLogger(__name__)

#: The tier whose pool gets real nodes: the only one without GPUs (the others stay kwok).
REAL_TIER = "local"
SHIM = "containerd-shim-runc-v2"
SYSTEM_TOOLS = ("containerd", "ctr", "runc", SHIM, "ip", "umoci")
CNI_PLUGINS = ("bridge", "host-local", "loopback")


class NodeError(RuntimeError):
    """A real node could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class NodeTools:
    kubelet: Path
    pause: Path
    containerd: Path
    ctr: Path


def missing_prerequisites(bin_dir: Path) -> list[str]:
    """What this machine lacks to run a real node (empty when it can)."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (containerd, runc and the kubelet need it)")
    for name in ("kubelet", "pause", "kube-proxy", "coredns"):
        if not os.access(bin_dir / name, os.X_OK):
            missing.append(f"{bin_dir / name} (`make install-binaries`)")
    for tool in SYSTEM_TOOLS:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (`make install-system`)")
    for plugin in CNI_PLUGINS:
        if not os.access(nr.CNI_BIN_DIR / plugin, os.X_OK):
            missing.append(f"{nr.CNI_BIN_DIR / plugin} (`make install-system`)")
    if not os.access(images.BUSYBOX, os.X_OK):
        missing.append(f"{images.BUSYBOX} (`make install-system`)")
    return missing


def find_tools(bin_dir: Path) -> NodeTools:
    missing = missing_prerequisites(bin_dir)
    if missing:
        raise NodeError("a real node needs: " + "; ".join(missing))
    containerd, ctr = shutil.which("containerd"), shutil.which("ctr")
    if containerd is None or ctr is None:
        raise NodeError("containerd or ctr vanished from PATH")
    return NodeTools(bin_dir / "kubelet", bin_dir / "pause", Path(containerd), Path(ctr))


def nodes_root(cluster_root: Path) -> Path:
    return cluster_root / "nodes"


def node_layouts(cluster_root: Path) -> list[nr.NodeLayout]:
    """Every real node this cluster has a directory for (running or left by a crash)."""
    root = nodes_root(cluster_root)
    if not root.is_dir():
        return []
    return [nr.NodeLayout(path) for path in sorted(root.iterdir()) if path.is_dir()]


# ---------------------------------------------------------------------------------------------
# The machine's state: processes, mounts, interfaces


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def node_processes(layout: nr.NodeLayout) -> dict[int, str]:
    """The node's kubelet, containerd, shims and the containers' processes (pid -> role).

    kubelet and containerd name the node's directory on their command line; a shim names
    the node's containerd socket; container processes are the shims' descendants.
    """
    root = str(layout.root)
    socket = str(layout.containerd_socket)
    found: dict[int, str] = {}
    parents: dict[int, int] = {}
    me = os.getpid()
    for pid in all_pids():
        if pid == me:
            continue
        argv = cmdline(pid)
        parent = _ppid(pid)
        if parent is not None:
            parents[pid] = parent
        if not argv:
            continue
        name = Path(argv[0]).name
        if name in ("kubelet", "containerd") and any(root in arg for arg in argv[1:]):
            found[pid] = name
        elif name == SHIM and socket in argv:
            found[pid] = "shim"
    shims = {pid for pid, role in found.items() if role == "shim"}
    changed = True
    while changed:  # descendants of the shims, however deep
        changed = False
        for pid, parent in parents.items():
            if pid not in found and (parent in shims or found.get(parent) == "container"):
                found[pid] = "container"
                changed = True
    return found


def is_node_process(pid: int, layout: nr.NodeLayout, role: str) -> bool:
    """Whether ``pid`` is the node's ``role`` (kubelet or containerd); guards pid reuse."""
    argv = cmdline(pid)
    return bool(argv) and Path(argv[0]).name == role and any(str(layout.root) in a for a in argv)


def kubelet_healthy(layout: nr.NodeLayout) -> bool | None:
    """The kubelet's /healthz (None when its configuration is gone)."""
    try:
        config = yaml.safe_load(layout.kubelet_config.read_text())
        port = int(config["healthzPort"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def _mount_points() -> list[str]:
    points: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4:
                # mountinfo escapes spaces and the like as octal (\040).
                points.append(fields[4].encode().decode("unicode_escape"))
    return points


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    return [p for p in _mount_points() if p.startswith(prefix) or p == str(path)]


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _unmount_all(path: Path) -> None:
    """Unmount everything under ``path``, deepest first; lazily, so a busy one goes too."""
    for _attempt in range(3):
        points = sorted(set(mounts_under(path)), key=lambda p: -p.count("/"))
        if not points:
            return
        for point in points:
            _libc.umount2(point.encode(), MNT_DETACH)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def interfaces() -> list[str]:
    result = _ip("-o", "link", "show")
    names: list[str] = []
    for line in result.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _interfaces_on(bridge: str) -> list[str]:
    result = _ip("-o", "link", "show", "master", bridge)
    return [line.split(":", 2)[1].strip().split("@", 1)[0] for line in result.stdout.splitlines()]


def taken_subnets() -> list[int]:
    """Third octets of the 10.241.x.0/24s some interface of this machine already uses."""
    result = _ip("-o", "-4", "addr", "show")
    taken: list[int] = []
    prefix = nr.POD_NETWORK_PREFIX + "."
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.startswith(prefix):
                with contextlib.suppress(ValueError, IndexError):
                    taken.append(int(word.split(".")[2]))
    return taken


def _create_bridge(net: nr.NodeNet) -> None:
    if net.bridge in interfaces():
        _ip("link", "del", net.bridge)
    for args in (
        ("link", "add", net.bridge, "type", "bridge"),
        ("addr", "add", net.bridge_address, "dev", net.bridge),
        ("link", "set", net.bridge, "up"),
    ):
        result = _ip(*args)
        if result.returncode != 0:
            raise NodeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def _delete_bridge(bridge: str) -> None:
    if bridge not in interfaces():
        return
    for port in _interfaces_on(bridge):
        _ip("link", "del", port)
    _ip("link", "del", bridge)


def _read_net(layout: nr.NodeLayout) -> nr.NodeNet | None:
    try:
        data = json.loads(layout.net_file.read_text())
        return nr.NodeNet(str(data["bridge"]), int(data["subnet_index"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Cgroups: with cgroupfs and no QoS cgroups the kubelet names no cgroup parent, and the CRI
# plugin puts each container in <controller>/k8s.io/<container id> (shared by every
# containerd of the machine, so only the node's own container ids are removed).


CGROUP_MOUNT = Path("/sys/fs/cgroup")


def container_ids(layout: nr.NodeLayout) -> list[str]:
    """Ids of the node's containers and sandboxes (their task bundles' directory names)."""
    tasks = layout.containerd_state / "io.containerd.runtime.v2.task" / nr.CRI_NAMESPACE
    with contextlib.suppress(OSError):
        return sorted(p.name for p in tasks.iterdir())
    return []


def container_cgroups(ids: Sequence[str]) -> list[Path]:
    """The containers' cgroup directories that exist, in every controller."""
    if not CGROUP_MOUNT.is_dir():
        return []
    found: list[Path] = []
    for controller in CGROUP_MOUNT.iterdir():
        for cid in ids:
            path = controller / nr.CRI_NAMESPACE / cid
            if path.is_dir():
                found.append(path)
    return found


def _cgroup_pids(cgroups: Sequence[Path]) -> list[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in (cgroup / "cgroup.procs").read_text().split())
    return sorted(pids)


def _remove_cgroups(cgroups: Sequence[Path]) -> None:
    for cgroup in cgroups:
        with contextlib.suppress(OSError):
            cgroup.rmdir()


# ---------------------------------------------------------------------------------------------
# Start


@dataclass
class StartedNode:
    name: str
    net: nr.NodeNet
    containerd: ManagedProcess
    kubelet: ManagedProcess
    images: dict[str, str]


Launch = Callable[[str, list[str]], ManagedProcess]


def _containerd_ready(ctr: Path, layout: nr.NodeLayout) -> bool:
    if not layout.containerd_socket.exists():
        return False
    argv = nr.ctr_argv(ctr, layout, "version")
    return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0


def import_image(
    tools: NodeTools, layout: nr.NodeLayout, recipe: images.ImageRecipe, cache: Path
) -> None:
    """Load the recipe's archive into the node's containerd, unless it is there already."""
    listed = subprocess.run(
        nr.ctr_argv(tools.ctr, layout, "images", "ls", "-q"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if recipe.reference in listed.stdout.split():
        return
    archive = images.build_image(recipe, cache)
    argv = nr.ctr_argv(
        tools.ctr, layout, "images", "import", f"--base-name={recipe.repository}", str(archive)
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise NodeError(f"importing {recipe.reference} into {layout.name} failed: {result.stderr}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def start_node(
    cluster: render.Layout,
    index: int,
    tools: NodeTools,
    cache: Path,
    kubeconfig_text: str,
    launch: Launch,
    timeout: float,
    cluster_dns: Sequence[str] = (),
    extra_images: Sequence[images.ImageRecipe] = (),
) -> StartedNode:
    """Bring one real node up to the point where its kubelet runs (registration follows)."""
    name = nr.real_node_name(REAL_TIER, index)
    layout = nr.NodeLayout(nodes_root(cluster.root) / name)
    nr.check_socket_path(layout)
    teardown_node(layout)  # whatever a crashed run left of it
    layout.root.mkdir(parents=True)
    layout.work_dir.mkdir(parents=True, exist_ok=True)
    net = nr.choose_node_net(cluster.root, index, taken_subnets())
    _write(layout.net_file, json.dumps(net.as_dict()))
    _create_bridge(net)

    pause = images.pause_recipe(tools.pause)
    config = nr.render_containerd_config(layout, pause.reference)
    _write(layout.containerd_config, nr.render_toml(config))
    _write(
        layout.cni_conf_dir / "10-braid.conflist",
        json.dumps(nr.render_cni_conflist(net, layout), indent=2),
    )
    containerd = launch(f"{name}-containerd", nr.containerd_argv(tools.containerd, layout))
    wait_until(
        lambda: _containerd_ready(tools.ctr, layout),
        f"{name}'s containerd to answer",
        timeout,
        containerd,
        interval=0.25,
    )
    imported: dict[str, str] = {}
    for recipe in (pause, images.busybox_recipe(), *extra_images):
        import_image(tools, layout, recipe, cache)
        imported[recipe.name] = recipe.reference

    port, healthz = free_ports(2)
    kubelet_config = nr.render_kubelet_config(
        layout,
        net,
        nr.KubeletPorts(port, healthz),
        cluster.pki.ca_cert,
        cluster_dns,
    )
    _write(layout.kubelet_config, yaml.safe_dump(kubelet_config))
    _write(layout.kubelet_kubeconfig, kubeconfig_text, 0o600)
    argv = nr.kubelet_argv(tools.kubelet, layout, net, nr.node_labels(REAL_TIER))
    kubelet = launch(f"{name}-kubelet", argv)
    log_event(logger, "node.started", node=name, ip=net.node_ip, bridge=net.bridge)
    return StartedNode(name, net, containerd, kubelet, imported)


def restart_component(
    cluster: render.Layout, node: str, role: str, down_s: float = 0.0, timeout: float = 90.0
) -> int:
    """Stop a real node's kubelet or containerd and start it again as it was (fault tests).

    Same command line, log and pid file; what the node's pods see is their kubelet or
    runtime going away for a while (``down_s`` longer). Returns the new pid once it
    answers again.
    """
    layout = nr.NodeLayout(nodes_root(cluster.root) / node)
    pids = [pid for pid, r in node_processes(layout).items() if r == role]
    if role not in ("kubelet", "containerd") or not pids:
        raise NodeError(f"{node} has no running {role} to restart")
    argv = cmdline(pids[0])
    stop_pids(pids)
    if down_s > 0:
        time.sleep(down_s)
    component = f"{node}-{role}"
    proc = start_process(
        component,
        argv,
        cluster.log(component),
        env=render.GO_RUNTIME_ENV,
        pid_path=cluster.pid_file(component),
        owned=False,  # the node's, not the command's that restarted it
    )
    ctr = shutil.which("ctr") or "ctr"
    check: Callable[[], bool] = (
        (lambda: kubelet_healthy(layout) is True)
        if role == "kubelet"
        else (lambda: _containerd_ready(Path(ctr), layout))
    )
    wait_until(check, f"{component} to answer after a restart", timeout, proc, interval=0.25)
    log_event(logger, "node.component_restarted", node=node, role=role, pid=proc.pid)
    return proc.pid


# ---------------------------------------------------------------------------------------------
# Tear-down


def _kill(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        left = [pid for pid in left if pid_alive(pid) and not _zombie(pid)]
        if left:
            time.sleep(0.05)
    return left


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_pids(pids: Sequence[int], timeout: float = 10.0) -> None:
    """TERM, then KILL what is left after ``timeout``."""
    _kill(pids, signal.SIGTERM)
    left = _wait_gone(pids, timeout)
    if left:
        _kill(left, signal.SIGKILL)
        _wait_gone(left, 5.0)


def teardown_node(layout: nr.NodeLayout) -> list[str]:
    """Remove every trace of the node from the machine; returns the roles that were running.

    The kubelet goes first (it would restart what is killed under it), then the containers
    (killing a PID namespace's first process ends the whole namespace), the shims, and
    containerd. Mounts, the bridge, cgroups and files follow.
    """
    if not layout.root.exists() and not layout.work_dir.exists():
        return []
    stopped: list[str] = []
    ids = container_ids(layout)
    for role, timeout in (("kubelet", 10.0), ("container", 5.0), ("shim", 5.0)):
        pids = [pid for pid, r in node_processes(layout).items() if r == role]
        if role == "container":
            # Also whatever sits in the containers' cgroups (a shim killed by a crash
            # leaves its container without the parent that finds it).
            pids = sorted({*pids, *_cgroup_pids(container_cgroups(ids))})
            _kill(pids, signal.SIGKILL)
            _wait_gone(pids, timeout)
        else:
            stop_pids(pids, timeout)
        if pids:
            stopped.append(role)
    containerd = [pid for pid, role in node_processes(layout).items() if role == "containerd"]
    stop_pids(containerd)
    if containerd:
        stopped.append("containerd")
    # Anything a container forked after its namespace's first process died.
    stop_pids([pid for pid in node_processes(layout)], 2.0)
    for directory in (layout.work_dir, layout.root):
        _unmount_all(directory)
    net = _read_net(layout)
    if net is not None:
        _delete_bridge(net.bridge)
    _remove_cgroups(container_cgroups(ids))
    left = mounts_under(layout.work_dir) + mounts_under(layout.root)
    if left:
        raise NodeError(f"mounts of {layout.name} survived tear-down: {left}")
    shutil.rmtree(layout.root, ignore_errors=True)
    shutil.rmtree(layout.work_dir, ignore_errors=True)
    log_event(logger, "node.torn_down", node=layout.name, stopped=",".join(stopped) or "-")
    return stopped


def teardown_all(cluster_root: Path) -> list[str]:
    """Tear down every real node of the cluster; returns ``node/role`` for what was running."""
    stopped: list[str] = []
    layouts = node_layouts(cluster_root)
    for layout in layouts:
        stopped += [f"{layout.name}/{role}" for role in teardown_node(layout)]
    with contextlib.suppress(OSError):
        nodes_root(cluster_root).rmdir()
    if layouts and not _running("kubelet"):
        remove_kubelet_chains()
    if layouts and not _running("containerd"):
        _remove_shared_leftovers()
    return stopped


def _running(name: str) -> bool:
    """Whether any process called ``name`` (of any stack) runs on this machine."""
    return any((argv := cmdline(pid)) and Path(argv[0]).name == name for pid in all_pids())


def kubelets_running() -> bool:
    return _running("kubelet")


def _shared_dirs() -> list[Path]:
    """Directories every containerd of the machine shares: the shims' sockets, the CRI
    namespace's parent cgroups. They go (when empty) once the last containerd has."""
    dirs = [Path("/run/containerd/s"), Path("/run/containerd")]
    dirs += [nr.WORK_ROOT, nr.WORK_ROOT.parent]
    if CGROUP_MOUNT.is_dir():
        dirs += [controller / nr.CRI_NAMESPACE for controller in CGROUP_MOUNT.iterdir()]
    return dirs


def _remove_shared_leftovers() -> None:
    for directory in _shared_dirs():
        with contextlib.suppress(OSError):
            directory.rmdir()  # only ever an empty one


#: The chains every kubelet keeps in iptables (a canary that tells it the tables were
#: flushed, and the hint kube-proxy reads to pick iptables' backend). They are the machine's,
#: not one node's: they go once the last kubelet on the machine has.
KUBELET_CHAINS = (
    ("filter", "KUBE-FIREWALL"),
    ("mangle", "KUBE-IPTABLES-HINT"),
    ("mangle", "KUBE-KUBELET-CANARY"),
    ("nat", "KUBE-KUBELET-CANARY"),
    ("filter", "KUBE-KUBELET-CANARY"),
)


def kubelet_chains_left(rules: str) -> list[str]:
    """The kubelet chains ``iptables-save`` output still declares."""
    return sorted({chain for _table, chain in KUBELET_CHAINS if f":{chain} " in rules})


def jumps_to(rules: str, table: str, chains: Sequence[str]) -> list[list[str]]:
    """Rules of ``table`` in ``iptables-save`` output that jump to one of ``chains`` from
    elsewhere, as the arguments that delete them (``-D CHAIN ...``)."""
    found: list[list[str]] = []
    current = ""
    for line in rules.splitlines():
        if line.startswith("*"):
            current = line[1:].strip()
        elif current == table and line.startswith("-A "):
            args = shlex.split(line)
            target = args[args.index("-j") + 1] if "-j" in args else ""
            if target in chains and args[1] not in chains:
                found.append(["-D", *args[1:]])
    return found


def remove_kubelet_chains() -> None:
    """Delete the kubelet's chains: the rules that jump to them first, then the chains."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None or shutil.which(f"{tool}-save") is None:
            continue
        saved = subprocess.run(
            [f"{tool}-save"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
        for table in sorted({t for t, _ in KUBELET_CHAINS}):
            chains = [c for t, c in KUBELET_CHAINS if t == table]
            commands = [["-t", table, *rule] for rule in jumps_to(saved, table, chains)]
            for chain in chains:
                commands += [["-t", table, "-F", chain], ["-t", table, "-X", chain]]
            for args in commands:
                subprocess.run(
                    [tool, "-w", "5", *args], capture_output=True, check=False, timeout=30
                )
