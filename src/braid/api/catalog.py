"""The path catalog: every executable path through a provider's blocks, measured.

``braid models build`` writes one catalog per local model (``catalog.json`` beside the Triton
model repository). The operator reads it to know which Triton models a path needs and where
they run, the path controller reads its metrics to evaluate the CoDE cost F(p), and the
gateway executes a path by calling its hops in order. Path ids are stable strings so custom
resources (``OffloadPolicy.spec.candidatePaths``) can name paths across rebuilds.

Units: accuracy is a fraction in [0, 1]; times are microseconds at batch 1; parameter counts
are plain counts (the cost function converts to millions); bytes are per sample.

The file format is versioned by ``schema_version``; its JSON Schema is committed beside this
module (``path_catalog.schema.json``) and generated from these models, so consumers in other
languages can validate a catalog without braid.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from braid.api.common import TensorSpec
from braid.api.v1alpha1.model import Partition

SCHEMA_VERSION: Literal[1] = 1
SCHEMA_FILE = "path_catalog.schema.json"

Server = Literal["local", "host"]
"""Whose server runs a hop: the local provider's, or the host provider's (cross links too)."""

PathKind = Literal["original", "skip", "cross", "exit", "skip+exit"]
HopRole = Literal["block", "link", "exit"]


class CatalogModel(BaseModel):
    """Catalog entries are plain snake_case JSON (a file format, not a custom resource)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BlockInfo(CatalogModel):
    """One frozen block of a provider's model, as served by one Triton model."""

    index: int = Field(ge=0, description="Position of the block in the partition (B<index>).")
    triton_model: str = Field(min_length=1, description="Triton model serving the block.")
    input: TensorSpec
    output: TensorSpec
    params: int = Field(ge=0, description="Parameter count.")
    macs: int = Field(ge=0, description="Multiply-accumulates per sample.")
    compute_us: float = Field(ge=0, description="Median compute time at batch 1, µs.")


class ProviderModel(CatalogModel):
    """A provider's model: what it does and how it is cut into blocks."""

    name: str = Field(min_length=1, description="Model name, e.g. fmnist-cnn.")
    role: Literal["local", "host"]
    task: str = Field(description="What the model was trained for, e.g. fashion-mnist.")
    source: str = Field(description="Where the frozen weights come from.")
    accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Test accuracy on its own task, if measured here."
    )
    input: TensorSpec
    output: TensorSpec
    partition: Partition
    blocks: list[BlockInfo]


class Hop(CatalogModel):
    """One call of a path: a Triton model, where it runs and what it consumes and produces."""

    triton_model: str = Field(min_length=1)
    role: HopRole
    server: Server
    provider: str = Field(description="Model whose provider serves the hop.")
    input: TensorSpec
    output: TensorSpec
    params: int = Field(ge=0)
    macs: int = Field(ge=0)
    compute_us: float = Field(ge=0, description="Median compute time at batch 1, µs.")


class Crossing(CatalogModel):
    """A tensor that leaves one server for another (only tensors cross, never weights)."""

    after_hop: int = Field(ge=0, description="Index of the hop whose output crosses.")
    source: Server
    target: Server
    bytes: int = Field(ge=0, description="Bytes per sample.")


class PathMetrics(CatalogModel):
    """What the CoDE cost needs, measured in the build that wrote the catalog."""

    accuracy: float = Field(ge=0, le=1, description="Test accuracy A_p, fraction.")
    params_local: int = Field(ge=0, description="C_p^l: parameters on the local server.")
    params_host: int = Field(ge=0, description="C_p^h: parameters on the host server.")
    macs_local: int = Field(ge=0)
    macs_host: int = Field(ge=0)
    compute_us_local: float = Field(ge=0, description="T_p^{cp,l} unloaded, µs at batch 1.")
    compute_us_host: float = Field(ge=0, description="T_p^{cp,h} unloaded, µs at batch 1.")
    bytes_crossing: int = Field(ge=0, description="Bytes per sample over all crossings.")


class ExitPoint(CatalogModel):
    """An exit head used adaptively: exit when max-softmax confidence >= ``confidence``.

    Measured on the test set with the rest of the original path taking the samples that do
    not exit, so the path controller (and the gateway's ``ExitRule``) can pick a threshold by
    accuracy and expected local compute without running anything.
    """

    confidence: float = Field(gt=0, le=1, description="Threshold on max-softmax.")
    exit_rate: float = Field(ge=0, le=1, description="Fraction of samples that exit.")
    accuracy: float = Field(ge=0, le=1, description="Accuracy of exit + original remainder.")
    compute_us_local: float = Field(ge=0, description="Expected local compute time, µs.")


class PathEntry(CatalogModel):
    """One executable path with a stable id (e.g. ``fmnist-cnn/skip/1-4/reduced4``)."""

    id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9./:+\-]*$")
    kind: PathKind
    lout: int | None = Field(default=None, ge=0, description="Last local block before a link.")
    lin: int | None = Field(default=None, ge=0, description="First local block after a link.")
    host_model: str | None = None
    hin: int | None = Field(default=None, ge=0, description="First host block of a cross path.")
    hout: int | None = Field(default=None, ge=0, description="Last host block of a cross path.")
    exit_after: int | None = Field(default=None, ge=0, description="Block after which it exits.")
    link_size: str | None = Field(default=None, description="normal or reduced<k>.")
    hops: list[Hop] = Field(min_length=1)
    crossings: list[Crossing] = Field(default_factory=list)
    metrics: PathMetrics
    exit_profile: list[ExitPoint] | None = Field(
        default=None,
        description="Exit paths only: the head used adaptively, by confidence threshold.",
    )


class Measurement(CatalogModel):
    """How the times were taken, so a reader can judge them."""

    batch_size: int = 1
    torch_threads: int = Field(default=1, description="Intra-op threads of the timed runtime.")
    repeats: int
    statistic: Literal["median"] = "median"
    device: str = "cpu"
    runtime: str | None = Field(
        default=None,
        description="What ran the timed modules (the block runtime, e.g. onnxruntime and "
        "the ONNX opset); None in catalogs written before it was recorded.",
    )


class PathCatalog(CatalogModel):
    """Every path of one local model, with the models it uses. Versioned file format."""

    schema_version: Literal[1] = SCHEMA_VERSION
    build_hash: str = Field(description="Hash of the build configuration that produced it.")
    local_model: str = Field(description="Name of the local provider's model.")
    baseline_accuracy: float = Field(ge=0, le=1, description="L_A: the original path's accuracy.")
    original_path: str = Field(description="Id of the original path (the fallback).")
    models: list[ProviderModel] = Field(min_length=1)
    measurement: Measurement
    paths: list[PathEntry] = Field(min_length=1)

    def path(self, path_id: str) -> PathEntry:
        """The entry with ``path_id``; ``KeyError`` names the id when there is none."""
        for entry in self.paths:
            if entry.id == path_id:
                return entry
        raise KeyError(f"no path {path_id!r} in the catalog of {self.local_model}")


def catalog_json_schema() -> dict[str, Any]:
    """The JSON Schema of the catalog, generated from the models above."""
    schema = PathCatalog.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://braid.dev/schemas/path-catalog/v{SCHEMA_VERSION}.json"
    return schema


def committed_json_schema() -> dict[str, Any]:
    """The schema file shipped in the package (what other languages validate against)."""
    text = resources.files("braid.api").joinpath(SCHEMA_FILE).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded
