"""The exported repository serves every path of its catalog with the outputs torch computes.

``braid models build --quick`` (the test profile: small epochs, subsets and grid) exports
into a temporary folder; a real tritonserver loads it; for every path in ``catalog.json``
the test chains the path's Triton models hop by hop over gRPC, as the gateway will, and
compares the final logits with the in-process torch path on a batch of test images.

Tolerance: rtol=1e-4, atol=1e-4 on the logits, and the same predicted class. Each hop is
the module exported to ONNX and run by onnxruntime on one intra-op thread, and the dynamic
batcher may concatenate requests, so float32 sums can be ordered differently than in the
torch reference; over up to nine chained hops that stays well under 1e-4, while a wrong module,
a wrong hop order or a lost layer changes logits by orders of magnitude more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from braid.api.catalog import PathCatalog, committed_json_schema
from braid.tooling.export import CATALOG_FILE, read_catalog
from braid.tooling.pipeline import PipelineOutput, run_pipeline
from braid_dev.stack.triton import TritonServer, start_triton

RTOL = 1e-4
ATOL = 1e-4
BATCH = 16


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory: pytest.TempPathFactory) -> PipelineOutput:
    """The quick profile, exported into a fresh folder (artifacts cached under BRAID_CACHE)."""
    out = tmp_path_factory.mktemp("model-repo")
    return run_pipeline("quick", out, results_path=out.parent / "code-quick.json")


@pytest.fixture(scope="module")
def served(
    quick_build: PipelineOutput, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, Path]]:
    repo = quick_build.out
    server = start_triton(
        repo, workdir=tmp_path_factory.mktemp("triton-model-repo"), name="model-repo", timeout=480.0
    )
    try:
        yield server, repo
    finally:
        server.stop()


def test_catalog_file_matches_schema_and_build(quick_build: PipelineOutput) -> None:
    path = quick_build.out / CATALOG_FILE
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, committed_json_schema())
    catalog = read_catalog(path)
    assert catalog == quick_build.result.catalog
    kinds = {p.kind for p in catalog.paths}
    assert kinds == {"original", "skip", "cross", "exit", "skip+exit"}


def test_every_catalog_model_is_served(served: tuple[TritonServer, Path]) -> None:
    server, repo = served
    catalog = read_catalog(repo / CATALOG_FILE)
    needed = {h.triton_model for p in catalog.paths for h in p.hops}
    assert needed <= set(server.models)


def _torch_path(
    build: PipelineOutput, catalog: PathCatalog, path_id: str, x: torch.Tensor
) -> np.ndarray:
    with torch.inference_mode():
        for hop in catalog.path(path_id).hops:
            x = build.result.modules[hop.triton_model](x)
    return x.numpy()


def _triton_path(
    client: grpcclient.InferenceServerClient, catalog: PathCatalog, path_id: str, x: np.ndarray
) -> np.ndarray:
    for hop in catalog.path(path_id).hops:
        assert list(x.shape[1:]) == hop.input.shape, f"{hop.triton_model}: shape mismatch"
        tensor = grpcclient.InferInput(hop.input.name, list(x.shape), hop.input.datatype)
        tensor.set_data_from_numpy(np.ascontiguousarray(x))
        result = client.infer(
            hop.triton_model, [tensor], outputs=[grpcclient.InferRequestedOutput(hop.output.name)]
        )
        x = result.as_numpy(hop.output.name)
    return x


def test_every_path_through_triton_matches_torch(
    quick_build: PipelineOutput, served: tuple[TritonServer, Path]
) -> None:
    server, repo = served
    catalog = read_catalog(repo / CATALOG_FILE)
    images = quick_build.result.test_images[:BATCH]
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        for entry in catalog.paths:
            expected = _torch_path(quick_build, catalog, entry.id, images.clone())
            got = _triton_path(client, catalog, entry.id, images.numpy())
            assert got.shape == (BATCH, 10), entry.id
            np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=entry.id)
            assert (got.argmax(1) == expected.argmax(1)).all(), entry.id
    finally:
        client.close()


ACCURACY_TOLERANCE = 0.005
"""Served vs catalog accuracy: float32 sums in another order may flip a borderline sample
or two of the 2,000; blocks served with other weights or statistics move it by points."""


def test_served_paths_are_as_accurate_as_the_catalog_says(
    quick_build: PipelineOutput, served: tuple[TritonServer, Path]
) -> None:
    """Every path, served hop by hop, classifies the build's test set as well as the catalog
    claims: the catalog's figures are what the controller trades accuracy against, so they
    must describe the exported models, not the in-process ones."""
    server, repo = served
    catalog = read_catalog(repo / CATALOG_FILE)
    images = quick_build.result.test_images.numpy()
    labels = quick_build.result.test_labels.numpy()
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        for entry in catalog.paths:
            logits = np.concatenate(
                [
                    _triton_path(client, catalog, entry.id, images[i : i + 64])
                    for i in range(0, len(images), 64)
                ]
            )
            served_accuracy = float((logits.argmax(1) == labels).mean())
            assert served_accuracy == pytest.approx(
                entry.metrics.accuracy, abs=ACCURACY_TOLERANCE
            ), entry.id
    finally:
        client.close()


def test_second_build_reuses_every_artifact(
    quick_build: PipelineOutput, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``braid models build --quick`` again: nothing retrained or re-measured, same catalog."""
    from typer.testing import CliRunner

    from braid.cli import app

    out = tmp_path_factory.mktemp("model-repo-again")
    result = CliRunner().invoke(app, ["models", "build", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "cached" in result.output
    assert read_catalog(out / CATALOG_FILE) == quick_build.result.catalog
