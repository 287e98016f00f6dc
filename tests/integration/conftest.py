"""Session-wide real servers for the integration tier: one tritonserver, one Prometheus.

Each server is started once per session (a Triton model loads in ~2 s, a whole server in a
few seconds on 2 cores) and stopped by the fixture that started it, also when tests fail.
Tests must not change their state (load/unload models, reload Prometheus); tests that need
that start their own servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from braid.api.common import TensorSpec
from braid.render.prometheus_config import ScrapeTarget
from braid.tooling.triton_repository import write_onnx_model
from braid_dev.local_runtime import LocalRuntime, start_local_runtime
from braid_dev.stack.prometheus import PrometheusServer, start_prometheus
from braid_dev.stack.triton import TritonServer, start_triton
from braid_dev.synthetic import SyntheticModels, build_synthetic_repository

LINEAR_MODEL = "tiny_linear"
CONV_MODEL = "tiny_conv"
TRITON_JOB = "triton"
TRITON_LABELS = {"tier": "local", "server": "tiny"}


class TinyConv(nn.Module):
    """A small conv net with two outputs (logits and pooled features), like a block with an
    early-exit head: it exercises multi-output responses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(features), features


@dataclass
class TinyRepository:
    """A model repository on disk plus the in-process modules it was exported from."""

    path: Path
    modules: dict[str, nn.Module] = field(default_factory=dict)


@pytest.fixture(scope="session")
def tiny_model_repository(tmp_path_factory: pytest.TempPathFactory) -> TinyRepository:
    """Two tiny ONNX models: an MLP (exported from zeros its input spec gives) and a
    two-output CNN (exported with the example given)."""
    torch.manual_seed(0)
    repo = TinyRepository(path=tmp_path_factory.mktemp("model-repo"))
    linear = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    write_onnx_model(
        repo.path,
        LINEAR_MODEL,
        linear,
        inputs=[TensorSpec(name="INPUT__0", datatype="FP32", shape=[16])],
        outputs=[TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[4])],
        max_batch_size=8,
    )
    conv = TinyConv().eval()
    write_onnx_model(
        repo.path,
        CONV_MODEL,
        conv,
        inputs=[TensorSpec(name="IMAGE", datatype="FP32", shape=[3, 8, 8])],
        outputs=[
            TensorSpec(name="LOGITS", datatype="FP32", shape=[3]),
            TensorSpec(name="FEATURES", datatype="FP32", shape=[4]),
        ],
        max_batch_size=8,
        example_inputs=(torch.zeros(1, 3, 8, 8),),
    )
    repo.modules = {LINEAR_MODEL: linear, CONV_MODEL: conv}
    return repo


@pytest.fixture(scope="session")
def triton_server(
    tiny_model_repository: TinyRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """A tritonserver serving the tiny repository, ready (proven by inference on each model)."""
    server = start_triton(
        tiny_model_repository.path, workdir=tmp_path_factory.mktemp("triton"), name="tiny"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus_server(
    triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A Prometheus scraping the Triton server's metrics every second."""
    server = start_prometheus(
        [ScrapeTarget(address=triton_server.metrics_address, job=TRITON_JOB, labels=TRITON_LABELS)],
        workdir=tmp_path_factory.mktemp("prometheus"),
        scrape_interval="1s",
    )
    try:
        yield server
    finally:
        server.stop()


# -- the data plane: a synthetic provider pair served by one tritonserver per tier ------------


@pytest.fixture(scope="session")
def synthetic_models(tmp_path_factory: pytest.TempPathFactory) -> SyntheticModels:
    """Four local blocks, a skip link, an exit head and a cross path through a host block."""
    return build_synthetic_repository(tmp_path_factory.mktemp("synthetic-repo"))


@pytest.fixture(scope="session")
def local_runtime(
    synthetic_models: SyntheticModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRuntime]:
    """The synthetic pair on two tritonservers (local, host), as ``braid serve`` runs them."""
    runtime = start_local_runtime(
        synthetic_models.repository,
        synthetic_models.catalog,
        tmp_path_factory.mktemp("local-runtime"),
    )
    try:
        yield runtime
    finally:
        runtime.stop()
