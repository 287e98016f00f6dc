"""The routing table: which paths of one local model take traffic, and with what weight.

The path controller decides weights (``OffloadPolicy.status.activePaths``); the operator
writes them, with the policy's exit thresholds and latency bound, as one JSON document into
the gateway's ConfigMap (key ``routing.json``); the gateway reads that file and reloads it
when it changes. In local mode (``braid serve``) a person edits the same file by hand. The
type lives in ``braid.api`` because three components share it and none may import the
others: the operator renders it, the controller fills it in, the gateway obeys it.

Plain snake_case JSON like the path catalog: it is a file format, not a custom resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from braid.api.v1alpha1.offloadpolicy import (
    DIMEE_MODE_DESCRIPTION,
    DimeeMode,
    OffloadPolicySpec,
    OffloadPolicyStatus,
)

SCHEMA_VERSION: Literal[1] = 1
ROUTING_FILE = "routing.json"
"""Key in the gateway's ConfigMap and file name in a local runtime's state directory."""
DIMEE_POOLS_FILE = "dimee-pools.json"
"""The pools document ``braid dimee export`` writes, and its name inside the pools archive."""
DIMEE_ARTIFACT_DIR = "dimee"
"""Where the gateway's fetch plan unpacks a policy's pools archive, under the gateway's
artifacts directory (``braid gateway --artifacts-dir``; the chart mounts it at
``/var/lib/braid/artifacts``)."""


class RoutingModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathWeight(RoutingModel):
    """One active path and its share of the traffic (weights are normalised by their sum)."""

    id: str = Field(min_length=1, description="Path id from the model's catalog.")
    weight: float = Field(ge=0, description="Relative share of requests; 0 parks the path.")


class ExitRule(RoutingModel):
    """Take the exit head after ``block`` when the max-softmax confidence reaches ``confidence``.

    A path that ends in an exit head but has no rule always exits there (that is how the
    catalog measured its accuracy); a rule makes the exit adaptive: unconfident samples go on
    through the rest of the original path.
    """

    block: int = Field(ge=0, description="The exit head after this block.")
    confidence: float = Field(gt=0, le=1, description="Threshold on max-softmax, in (0, 1].")


class DimeeRouting(RoutingModel):
    """Per-sample tier routing (DIMEE): the gateway sends each sample to its pool's tier."""

    mode: DimeeMode = Field(default="fixed", description=DIMEE_MODE_DESCRIPTION)
    pools: str = Field(min_length=1, description="Path of the pools artifact (dimee-pools.json).")
    fetched: bool = Field(
        default=False,
        description="pools is relative to the gateway's artifacts directory, where its init "
        "container put the fetched pools archive (the policy's poolsArtifact); the gateway "
        "refuses to start without it rather than route without DIMEE.",
    )
    prior_count: int = Field(
        default=100, ge=1, description="adaptive: weight of a validation pool in the mean."
    )


class RoutingTable(RoutingModel):
    """What the gateway needs to route requests of one local model; immutable once parsed.

    The gateway swaps the whole table atomically: a request reads the table once when it
    starts and finishes with it, so a reload never changes a request in flight.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    model: str = Field(min_length=1, description="The local model (catalog ``local_model``).")
    generation: int = Field(
        default=0, ge=0, description="Bumped by the writer on each change; logged on reload."
    )
    paths: list[PathWeight] = Field(min_length=1, description="Active paths with weights.")
    exits: list[ExitRule] = Field(default_factory=list, description="Adaptive exit thresholds.")
    latency_bound_us: int | None = Field(
        default=None,
        ge=1,
        description="L_T, µs: a host hop that is expected to miss it is not tried (fallback).",
    )
    fallback_path: str | None = Field(
        default=None,
        description="Where requests go when a host fails; default: the catalog's original path.",
    )
    dimee: DimeeRouting | None = Field(
        default=None,
        description="Per-sample tier routing; read when the gateway starts (not on reloads).",
    )

    @model_validator(mode="after")
    def _check(self) -> RoutingTable:
        ids = [p.id for p in self.paths]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"paths listed twice: {duplicates}")
        if sum(p.weight for p in self.paths) <= 0:
            raise ValueError("the weights of the paths sum to 0: no path would take traffic")
        blocks = [e.block for e in self.exits]
        if len(set(blocks)) != len(blocks):
            raise ValueError("one exit rule per block")
        return self

    def unknown_paths(self, known: Iterable[str]) -> list[str]:
        """Ids this table names that are not in ``known`` (a catalog's path ids)."""
        known_ids = set(known)
        named = [p.id for p in self.paths]
        if self.fallback_path is not None:
            named.append(self.fallback_path)
        return sorted({i for i in named if i not in known_ids})

    def threshold(self, block: int) -> float | None:
        """The confidence threshold of the exit after ``block``, if one is set."""
        for rule in self.exits:
            if rule.block == block:
                return rule.confidence
        return None


class Endpoints(RoutingModel):
    """Where the Triton servers of a model's hops listen (``host:port`` of their gRPC ports).

    The catalog says *whose* server runs a hop (``local`` or ``host``); this says where that
    server is. ``models`` overrides the address of single Triton models, for a deployment
    that splits one provider's models over several servers (the operator publishes one
    Service per Block).
    """

    servers: dict[str, str] = Field(
        default_factory=dict, description="Server role (local, host) -> gRPC address."
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Triton model name -> gRPC address (overrides)."
    )

    def address(self, triton_model: str, server: str) -> str | None:
        """The address that serves ``triton_model`` run by ``server``; ``None`` if unknown."""
        return self.models.get(triton_model) or self.servers.get(server)


def single_path_table(model: str, path_id: str, generation: int = 0) -> RoutingTable:
    """All traffic on one path: the table a gateway starts with before any decision."""
    return RoutingTable(
        model=model, generation=generation, paths=[PathWeight(id=path_id, weight=1)]
    )


def routing_table_from_policy(
    spec: OffloadPolicySpec,
    status: OffloadPolicyStatus | None,
    *,
    model: str,
    original_path: str,
    generation: int = 0,
) -> RoutingTable:
    """The table for a policy and its current status: the pure step between controller and gateway.

    The controller's ``activePaths`` become the weights (the original path when it has
    decided nothing yet); the spec's exit thresholds, ``L_T`` and DIMEE settings (when enabled)
    come along unchanged.
    ``generation`` is the writer's own counter, so each reload can be told apart in the
    gateway's log and metrics.
    """
    active = [PathWeight(id=a.id, weight=a.weight) for a in (status.active_paths if status else [])]
    dimee = spec.dimee
    routing = None
    if dimee is not None and dimee.enabled and dimee.pools_artifact is not None:
        routing = DimeeRouting(
            mode=dimee.mode,
            pools=f"{DIMEE_ARTIFACT_DIR}/{DIMEE_POOLS_FILE}",
            fetched=True,
            prior_count=dimee.prior_count,
        )
    elif dimee is not None and dimee.enabled and dimee.pools:
        routing = DimeeRouting(mode=dimee.mode, pools=dimee.pools, prior_count=dimee.prior_count)
    if not active or sum(p.weight for p in active) <= 0:
        active = [PathWeight(id=original_path, weight=1)]
    return RoutingTable(
        model=model,
        generation=generation,
        paths=active,
        exits=[ExitRule(block=e.block, confidence=e.confidence) for e in spec.early_exits],
        latency_bound_us=spec.latency_bound_microseconds,
        fallback_path=original_path,
        dimee=routing,
    )
