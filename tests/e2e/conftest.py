"""The e2e tier's real control plane: etcd, kube-apiserver, controller-manager, scheduler and
six kwok nodes, started once per session.

A cluster that ``braid dev cluster up`` left running (in the same state dir) is reused and
left running; a cluster this fixture started is stopped by it, also when tests fail. Set
``BRAID_STATE_DIR`` to give the tests a cluster of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from braid.settings import Settings, get_settings
from braid_dev.stack import cluster as devcluster
from braid_dev.stack.artifact_servers import S3Store
from braid_dev.stack.operator_process import install_operator_prerequisites, start_operator
from braid_dev.stack.processes import ManagedProcess
from tests.e2e.helpers import wait_for


@dataclass(frozen=True)
class E2ECluster:
    """What tests get: kubectl on the cluster, its settings and whether it was reused."""

    access: devcluster.ClusterAccess
    settings: Settings
    reused: bool

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> str:
        """kubectl's stdout; a failure raises with kubectl's stderr in the message."""
        return self.access.kubectl(*args, input=input, check=check, timeout=timeout).stdout

    def kubectl_json(self, *args: str) -> Any:
        return self.access.kubectl_json(*args)


@pytest.fixture(scope="session")
def cluster() -> Iterator[E2ECluster]:
    settings = get_settings()
    try:
        devcluster.find_binaries(settings.bin_dir)
        devcluster.find_kubectl(settings.bin_dir)
    except devcluster.ClusterError as exc:
        pytest.fail(f"the e2e tier needs the control-plane binaries: {exc}", pytrace=False)
    try:
        result = devcluster.up(settings)
    except devcluster.ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield E2ECluster(devcluster.access(settings), settings, reused=result.already_running)
    finally:
        if not result.already_running:
            devcluster.down(settings)


ISOLATED = "isolated-"


def _test_namespace(cluster: E2ECluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # Pods are refused until the service-account controller has made the default account.
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False) != "",
        f"the default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: E2ECluster) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (without waiting for it to go)."""
    yield from _test_namespace(cluster, "e2e-")


@pytest.fixture
def isolated_namespace(cluster: E2ECluster) -> Iterator[str]:
    """A namespace the session's operator ignores, for tests that run their own operator."""
    yield from _test_namespace(cluster, ISOLATED)


@pytest.fixture(scope="session")
def operator(
    cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """The braid operator as a real process, with its ServiceAccount's least privileges."""
    install_operator_prerequisites(cluster.access)
    # Namespaces named isolated-* belong to tests that run operators of their own. One kopf
    # pattern, not two: separate patterns are a union ("*" alone would take them back).
    process = start_operator(
        cluster.access, tmp_path_factory.mktemp("operator"), namespaces=[f"!{ISOLATED}*"]
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def crds(cluster: E2ECluster) -> E2ECluster:
    """The CRDs, server-side applied as the rest of the suite does (they may already be there)."""
    install_operator_prerequisites(cluster.access)
    return cluster


SAMPLES = Path(__file__).resolve().parents[2] / "crds" / "samples"


@pytest.fixture(scope="module")
def samples(cluster: E2ECluster, operator: ManagedProcess) -> Iterator[None]:
    """``crds/samples`` applied for the module's tests, deleted after them."""
    cluster.kubectl("apply", "-f", str(SAMPLES))
    try:
        yield
    finally:
        # Models and Links carry the operator's finalizer: delete them while the operator
        # still runs, and before their namespaces, whose controller backs off (seconds,
        # then more) while content with a finalizer remains. Then wait for the namespaces:
        # the next module applies them again.
        objects, namespaces = _sample_files()
        for files in (objects, namespaces):
            cluster.kubectl(
                "delete",
                *(f"--filename={f}" for f in files),
                "--ignore-not-found",
                "--wait=true",
                "--timeout=180s",
                check=False,
                timeout=210,
            )


def _sample_files() -> tuple[list[Path], list[Path]]:
    """``crds/samples``' files: the braid objects', and the namespaces'."""
    files = sorted(SAMPLES.glob("*.yaml"))
    namespaces = [f for f in files if "namespace" in f.name]
    return [f for f in files if f not in namespaces], namespaces


@pytest.fixture(scope="module")
def store(cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    """An S3-compatible store (versitygw) on the real node's bridge, where pods fetch from."""
    from braid_dev import real_deploy
    from braid_dev.stack.artifact_servers import start_s3_store

    s3 = start_s3_store(
        tmp_path_factory.mktemp("store"),
        tmp_path_factory.mktemp("versitygw"),
        cluster.settings.bin_dir,
        host=real_deploy.node_ip(cluster.access),
    )
    try:
        yield s3
    finally:
        s3.stop()
