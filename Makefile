# braid — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BRAID_CACHE ?= $(HOME)/.cache/braid
export BRAID_CACHE
VENV ?= $(BRAID_CACHE)/venv
PY := $(VENV)/bin/python
# The install stamp is keyed by the dependency pins, so changing pyproject.toml reinstalls.
STAMP := $(VENV)/.braid-$(shell cat pyproject.toml dev/pyproject.toml | sha256sum | cut -c1-16)
export PATH := $(VENV)/bin:$(BRAID_CACHE)/bin:$(PATH)
# The venv is shared by every checkout on the machine; this checkout's sources come first,
# whichever checkout the venv's editable install points at.
export PYTHONPATH := $(CURDIR)/src:$(CURDIR)/dev/src$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help manifests install install-python install-system install-binaries lint fmt test test-unit test-integration test-e2e demo bench cluster-up cluster-down cluster-status clean

help: ## List the targets with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: install-system install-python install-binaries ## Install everything: Debian packages, the Python venv, the Go-built control plane

install-python: $(STAMP) ## Create/refresh the venv under ~/.cache/braid (pinned deps, braid and its rig braid-dev, editable)

$(STAMP): pyproject.toml dev/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -e '.[tooling,triton,dev]' -e ./dev
	@rm -f $(VENV)/.braid-* && touch $@

install-system: ## Debian packages the harness runs (Prometheus; containerd, runc, CNI plugins, umoci for real nodes)
	@bash hack/install-system.sh

install-binaries: ## Build kube-apiserver, controller-manager, scheduler, kubectl, kubelet, kube-proxy, etcd, kwok, helm, CoreDNS, pause (cached by version)
	@bash hack/cluster/build-binaries.sh all

lint: install-python ## ruff (lint + format check), mypy --strict on src/ and bench/, import-linter layer contracts
	$(VENV)/bin/ruff check src dev/src tests bench operator controllers
	$(VENV)/bin/ruff format --check src dev/src tests bench operator controllers
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench
	$(VENV)/bin/lint-imports

manifests: install-python ## Regenerate crds/*.yaml, the chart's copy, docs/crds/*.md and the chart's Prometheus files from src/braid
	$(PY) -m braid.tooling.manifests crds
	$(PY) -m braid.tooling.manifests charts/braid/files/crds
	$(PY) -m braid.tooling.manifests --docs docs/crds
	$(PY) -m braid.tooling.manifests --monitoring charts/braid/files/monitoring

fmt: install-python ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src dev/src tests bench operator controllers
	$(VENV)/bin/ruff format src dev/src tests bench operator controllers

test: install lint ## Install, lint, then run every test tier (unit, integration, e2e)
	@bash hack/run-tests.sh unit integration e2e

test-unit: install-python ## Unit tier only (pure functions, no servers)
	@bash hack/run-tests.sh unit

test-integration: install-python install-system ## Integration tier only (tritonserver, Prometheus, gateway)
	@bash hack/run-tests.sh integration

test-e2e: install ## e2e tier only (the real control plane, kwok, helm)
	@bash hack/run-tests.sh e2e

cluster-up: install ## Start the local control plane (idempotent); prints the kubeconfig
	$(VENV)/bin/braid dev cluster up

cluster-down: install-python ## Stop the local control plane and everything it started
	$(VENV)/bin/braid dev cluster down

cluster-status: install-python ## Show what of the local control plane is running
	$(VENV)/bin/braid dev cluster status

demo: install ## Install, start the local stack and run the main job end to end
	$(VENV)/bin/braid demo

bench: install ## Run the benchmarks (JSON under results/, plots under docs/img/)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## Stop the local stack and remove build outputs in the repo (the cache stays)
	-$(VENV)/bin/braid dev cluster down
	rm -rf .pytest_cache .mypy_cache .ruff_cache
