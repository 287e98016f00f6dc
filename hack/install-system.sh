#!/usr/bin/env bash
# Debian packages the harness needs. Idempotent and quiet when everything is there.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# nginx serves https:// artifacts to the fetcher's tests (the package's own service is stopped).
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
# Fashion-MNIST, the local provider's task in `braid models build`.
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
# The real nodes of the local stack (dev/src/braid_dev/stack/nodes.py): a containerd + runc
# per node, the CNI bridge plugins, iptables/conntrack for kube-proxy; and what builds their
# images without a container engine: umoci (OCI layouts), busybox-static (the smallest
# root filesystem), mmdebstrap (Debian root filesystems for the Python images).
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
file_is_static() { [ -f "$1" ] && ! ldd "$1" >/dev/null 2>&1; }
file_is_static /bin/busybox || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "[install-system] apt-get install ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package starts a system Prometheus on :9090; the harness runs its own.
  $SUDO pkill -x prometheus 2>/dev/null || true
  $SUDO pkill -x nginx 2>/dev/null || true
fi
