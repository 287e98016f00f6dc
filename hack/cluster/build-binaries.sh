#!/usr/bin/env bash
# Builds the local control plane's binaries from their Go modules and caches them under
# $BRAID_CACHE/bin, keyed by version, so a second run is a no-op. There is no container
# engine on the machines braid is developed and tested on, so kind/k3d cannot run; these
# binaries are what a real cluster runs, only started as local processes.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
# Prometheus 3 (module v0.316.0) with Kubernetes service discovery alone: Debian's 2.42 is
# built without kubernetes_sd_configs, which the metrics-contract test needs.
PROMETHEUS_SD_VERSION="${PROMETHEUS_SD_VERSION:-v0.316.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

CACHE="${BRAID_CACHE:-$HOME/.cache/braid}"
BIN="$CACHE/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"

export GOFLAGS="${GOFLAGS:--trimpath -buildvcs=false}"
export CGO_ENABLED=0
LDFLAGS="-s -w"
# Two cores: more parallel compiles only thrash memory and the other core's tests.
PAR="${BRAID_GO_PARALLEL:-2}"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

have() { # have NAME VERSION -> cached binary exists
  [ -x "$BIN/$1-$2" ]
}

link() { # link NAME VERSION -> stable name used by the harness
  ln -sfn "$1-$2" "$BIN/$1"
}

build_kubernetes() {
  # kubelet and kube-proxy run the local stack's real nodes (dev/src/braid_dev/stack/nodes.py).
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local missing=0
  for n in "${names[@]}"; do have "$n" "$K8S_VERSION" || missing=1; done
  if [ "$missing" = 0 ]; then for n in "${names[@]}"; do link "$n" "$K8S_VERSION"; done; return; fi
  local dir="$WORK/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  local staging="v0.${K8S_VERSION#v1.}"
  log "kubernetes $K8S_VERSION (staging $staging): writing go.mod"
  (
    cd "$dir"
    # k8s.io/kubernetes replaces its staging modules with ./staging paths; a module of our
    # own must instead pin each of them to the matching published v0.X.Y.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module braid.dev/hack/kubernetes"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" \
        | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}' | sort -u
    } > go.mod
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    go mod tidy -e >/dev/null 2>&1 || true
    go mod download all >/dev/null 2>&1 || true
    for n in "${names[@]}"; do
      have "$n" "$K8S_VERSION" && continue
      log "go build $n"
      go build -p "$PAR" -tags tools -ldflags "$LDFLAGS -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
        -o "$BIN/$n-$K8S_VERSION.tmp" "k8s.io/kubernetes/cmd/$n"
      mv "$BIN/$n-$K8S_VERSION.tmp" "$BIN/$n-$K8S_VERSION"
    done
  )
  for n in "${names[@]}"; do link "$n" "$K8S_VERSION"; done
}

build_simple() { # build_simple NAME VERSION MODULE PACKAGE [TAGS] -> one main package from a go.mod of our own
  local name=$1 version=$2 module=$3 pkg=$4 tags="tools${5:+,$5}"
  if ! have "$name" "$version"; then
    local dir="$WORK/$name-$version"
    mkdir -p "$dir"
    log "$name $version: go build $pkg"
    (
      cd "$dir"
      # `go install X@v` refuses modules with replace lines (etcd's has them); requiring the
      # module and building its main package from our own go.mod works for all of them.
      printf 'module braid.dev/hack/%s\n\ngo 1.24\n\nrequire %s %s\n' "$name" "$module" "$version" > go.mod
      printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > tools.go
      go mod tidy -e >/dev/null 2>&1 || true
      go build -p "$PAR" -tags "$tags" -ldflags "$LDFLAGS" -o "$BIN/$name-$version.tmp" "$pkg"
      mv "$BIN/$name-$version.tmp" "$BIN/$name-$version"
    )
  fi
  link "$name" "$version"
}

build_etcd() { build_simple etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3; }
build_kwok() { build_simple kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok; }
build_helm() { build_simple helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm; }
# An S3-compatible server (Apache-2.0) over a local directory: the tests' real s3:// store.
build_prometheus_sd() { build_simple prometheus-sd "$PROMETHEUS_SD_VERSION" github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/prometheus remove_all_sd,enable_kubernetes_sd; }
build_versitygw() { build_simple versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw; }

build_from_source() { # build_from_source NAME VERSION SRC_DIR [REQUIRE...] -> a main package of ours
  local name=$1 version=$2 src=$3
  shift 3
  if ! have "$name" "$version"; then
    local dir="$WORK/$name-$version"
    mkdir -p "$dir"
    log "$name $version: go build $src"
    (
      cd "$dir"
      printf 'module braid.dev/hack/%s\n\ngo 1.24\n' "$name" > go.mod
      for req in "$@"; do printf 'require %s\n' "$req" >> go.mod; done
      cp "$src"/*.go .
      go mod tidy -e >/dev/null 2>&1 || true
      go build -p "$PAR" -ldflags "$LDFLAGS" -o "$BIN/$name-$version.tmp" .
      mv "$BIN/$name-$version.tmp" "$BIN/$name-$version"
    )
  fi
  link "$name" "$version"
}

# CoreDNS from its Go module, with the plugins a cluster's DNS uses (hack/cluster/coredns).
build_coredns() { # versioned by CoreDNS's version and our main.go's hash (its plugin list)
  local version
  version="$COREDNS_VERSION-$(sha256sum "$HACK/cluster/coredns/main.go" | cut -c1-8)"
  build_from_source coredns "$version" "$HACK/cluster/coredns" \
    "github.com/coredns/coredns $COREDNS_VERSION"
}

# The real nodes' sandbox ("pause") program; versioned by its source's hash.
build_pause() {
  local version
  version="src-$(sha256sum "$HACK/images/pause/main.go" | cut -c1-12)"
  build_from_source pause "$version" "$HACK/images/pause"
}

what="${1:-all}"
start=$(date +%s)
case "$what" in
  all)
    build_etcd
    build_kwok
    build_helm
    build_versitygw
    build_prometheus_sd
    build_kubernetes
    build_coredns
    build_pause
    ;;
  kubernetes) build_kubernetes ;;
  coredns) build_coredns ;;
  pause) build_pause ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  helm) build_helm ;;
  versitygw) build_versitygw ;;
  prometheus-sd) build_prometheus_sd ;;
  *) echo "usage: $0 [all|kubernetes|etcd|kwok|helm|versitygw|prometheus-sd|coredns|pause]" >&2; exit 2 ;;
esac
log "done in $(( $(date +%s) - start ))s; binaries in $BIN"
