"""How a real node is wired: containerd's config, the CNI network, the kubelet's config,
its identity and its network; and what goes into a locally built image."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from braid_dev.stack import cluster_render as render
from braid_dev.stack import images, nodes
from braid_dev.stack import node_render as nr

CLUSTER = Path("/state/cluster")
LAYOUT = nr.NodeLayout(CLUSTER / "nodes" / "braid-local-real-0")
NET = nr.NodeNet("brd12345678" + "0", 17)


def test_containerd_config_is_valid_toml_with_the_node_own_paths() -> None:
    text = nr.render_toml(nr.render_containerd_config(LAYOUT, "braid.local/pause:abc"))
    config = tomllib.loads(text)
    assert config["version"] == 2
    for key in ("root", "state"):
        assert config[key].startswith(str(LAYOUT.work_dir) + "/")
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)
    assert config["ttrpc"]["address"].startswith(str(LAYOUT.work_dir))
    runc_options = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert runc_options["options"]["Root"].startswith(str(LAYOUT.work_dir))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    # Without CAP_SYS_RESOURCE every sandbox dies unless this is on.
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == "braid.local/pause:abc"
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["stream_server_port"] == "0"
    assert cri["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False


def test_toml_quotes_dotted_keys_and_escapes_strings() -> None:
    text = nr.render_toml({"a.b": {"x": 'say "hi"', "flag": True, "n": [1, 2]}, "top": "v"})
    assert tomllib.loads(text) == {"a.b": {"x": 'say "hi"', "flag": True, "n": [1, 2]}, "top": "v"}


def test_cni_network_adds_no_iptables_rules_and_keeps_leases_in_the_node() -> None:
    conflist = nr.render_cni_conflist(NET, LAYOUT)
    bridge = conflist["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == NET.bridge
    assert bridge["ipMasq"] is False
    assert all(p["type"] != "portmap" for p in conflist["plugins"])
    ipam = bridge["ipam"]
    assert ipam["dataDir"].startswith(str(LAYOUT.work_dir))
    assert ipam["ranges"] == [[{"subnet": "10.241.17.0/24", "gateway": "10.241.17.1"}]]


def test_kubelet_config_has_the_settings_this_machine_needs() -> None:
    config = nr.render_kubelet_config(
        LAYOUT, NET, nr.KubeletPorts(10250, 10248), Path("/ca.crt"), ["10.96.0.10"]
    )
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupsPerQOS"] is False
    assert config["enforceNodeAllocatable"] == []
    assert config["failSwapOn"] is False
    assert config["address"] == NET.node_ip
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert config["clusterDNS"] == ["10.96.0.10"]
    # Imported images cannot be pulled back, so image GC must never remove one.
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["registerWithTaints"] == [nr.REAL_NODE_TAINT]
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    for key in ("podLogsDir", "volumePluginDir"):
        assert config[key].startswith(str(LAYOUT.work_dir))


def test_kubelet_runs_as_the_node_with_pool_labels_kwok_does_not_select() -> None:
    labels = nr.node_labels("local")
    argv = nr.kubelet_argv(Path("/bin/kubelet"), LAYOUT, NET, labels)
    flags = dict(arg[2:].split("=", 1) for arg in argv[1:])
    assert flags["hostname-override"] == "braid-local-real-0"
    assert flags["node-ip"] == NET.node_ip
    assert flags["root-dir"].startswith(str(LAYOUT.work_dir))
    given = dict(pair.split("=", 1) for pair in flags["node-labels"].split(","))
    assert given[render.TIER_LABEL] == "local"
    assert given[render.POOL_LABEL] == "local-real"
    kwok_key, _ = render.KWOK_NODE_LABEL
    assert kwok_key not in given


def test_node_certificates_name_the_node_in_the_nodes_group() -> None:
    (spec,) = nr.node_cert_specs(["braid-local-real-0"])
    assert spec.common_name == "system:node:braid-local-real-0"
    assert spec.organizations == ("system:nodes",)
    assert spec.client
    assert not spec.server


def test_node_net_avoids_taken_subnets_and_fits_interface_names() -> None:
    first = nr.choose_node_net(CLUSTER, 0, [])
    assert len(first.bridge) <= 15
    assert first.node_ip == f"10.241.{first.subnet_index}.1"
    again = nr.choose_node_net(CLUSTER, 0, [first.subnet_index])
    assert again.subnet_index != first.subnet_index
    assert again.bridge == first.bridge
    other_node = nr.choose_node_net(CLUSTER, 1, [])
    assert other_node.bridge != first.bridge
    with pytest.raises(ValueError, match="no free"):
        nr.choose_node_net(CLUSTER, 0, list(range(1, 251)))


def test_another_state_dir_gets_other_interface_names() -> None:
    assert nr.bridge_name(Path("/a/cluster"), 0) != nr.bridge_name(Path("/b/cluster"), 0)


def test_a_deep_state_dir_still_fits_unix_socket_paths() -> None:
    # Sockets live under a short directory, so even a deep state dir fits sun_path.
    deep = nr.NodeLayout(Path("/" + "d" * 200) / "cluster" / "nodes" / "braid-local-real-0")
    nr.check_socket_path(deep)
    assert len(str(deep.containerd_socket)) < 80
    assert deep.containerd_socket != LAYOUT.containerd_socket


def test_image_tag_follows_the_content(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"one")
    recipe = images.ImageRecipe("x", (images.ImageFile(payload, "/payload"),), cmd=("/payload",))
    first = recipe.reference
    assert first.startswith("braid.local/x:")
    assert images.ImageRecipe("x", recipe.files, cmd=("/payload",)).reference == first
    payload.write_bytes(b"two")
    assert recipe.reference != first
    other_cmd = images.ImageRecipe("x", recipe.files, cmd=("/other",))
    assert other_cmd.reference != recipe.reference


def test_the_same_recipe_writes_the_same_layer(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"data")
    recipe = images.ImageRecipe(
        "x",
        (images.ImageFile(payload, "/opt/app/payload", 0o755),),
        symlinks=(("/bin/app", "/opt/app/payload"),),
        directories=("/tmp",),
        text_files=(("/etc/motd", "hi\n"),),
    )
    images.write_layer(recipe, tmp_path / "a.tar")
    payload.touch()  # a new mtime on the host changes nothing in the layer
    images.write_layer(recipe, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


SAVED = """*filter
:INPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -s 10.0.0.0/8 -m comment --comment "someone else's" -j ACCEPT
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -j DROP
COMMIT
*nat
-A OUTPUT -j KUBE-FIREWALL
COMMIT
"""


def test_only_the_jumps_into_kubelet_chains_are_deleted() -> None:
    assert nodes.jumps_to(SAVED, "filter", ["KUBE-FIREWALL"]) == [
        ["-D", "INPUT", "-j", "KUBE-FIREWALL"]
    ]
    assert nodes.kubelet_chains_left(SAVED) == ["KUBE-FIREWALL"]
