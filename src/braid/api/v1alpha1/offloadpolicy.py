"""``OffloadPolicy``: how one local model may trade accuracy for time across paths.

Units (shared with ``braid.policy.cost``): accuracy as a fraction in [0, 1], times in
microseconds, parameter counts in millions. With them, CoDE's experiment-4 coefficients
(a=40, c_l=1e-6, c_h=2e-5, d_l=10, d_h=10) are the defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braid.api.common import (
    DNS_1035_LABEL,
    DNS_LABEL,
    ApiModel,
    ArtifactRef,
    Condition,
    ObjectRef,
    cel,
)


class CostCoefficients(ApiModel):
    """Coefficients of CoDE eq. 1: F(p) = e^{a(L_A-A_p)} + b T_cm + c_l T_l + c_h T_h + d_l C_l + d_h C_h."""

    # e^{a(L_A - A_p)} with L_A - A_p <= 1 stays a finite float for a <= 700 (e^709 is the
    # largest double); the other terms are bounded so one cannot drown every other.
    a: float = Field(
        default=40.0, ge=0, le=700, description="Accuracy sensitivity (per unit of accuracy)."
    )
    b: float = Field(default=1e-6, ge=0, le=1e3, description="Cost per µs of communication time.")
    c_local: float = Field(
        default=1e-6, ge=0, le=1e3, description="Cost per µs of local compute (idle load)."
    )
    c_host: float = Field(
        default=2e-5, ge=0, le=1e3, description="Cost per µs of host compute (idle load)."
    )
    d_local: float = Field(
        default=10.0, ge=0, le=1e6, description="Cost per million local parameters."
    )
    d_host: float = Field(
        default=10.0, ge=0, le=1e6, description="Cost per million host parameters."
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.a + self.b + self.cLocal + self.cHost + self.dLocal + self.dHost > 0.0",
                    "at least one cost coefficient must be positive: with all of them 0 every "
                    "path costs the same and the choice is arbitrary",
                    ".a",
                )
            ]
        }
    }


class ExitThreshold(ApiModel):
    block: int = Field(ge=0, le=63, description="Exit head after this block.")
    confidence: float = Field(
        gt=0.0,
        le=1.0,
        description="Exit when max-softmax confidence reaches this value, in (0, 1].",
    )


DimeeMode = Literal["fixed", "adaptive", "adaptive-routed"]
DIMEE_MODE_DESCRIPTION = (
    "fixed: Ours-F, the dev centroids; adaptive: Ours-D, the centroid of the pool each "
    "sample turned out to be in (from its tier's exits) moves towards it; "
    "adaptive-routed: the centroid each sample is sent to moves towards it."
)


class Dimee(ApiModel):
    """Per-sample tier routing by difficulty pools (DIMEE).

    The model is served three ways: its first ``mobileLayers`` layers on the local tier, the
    first ``edgeLayers`` on the edge, all of it on the cloud. ``braid dimee export`` picks
    the exit threshold α and the pools' centroids from these costs and writes them to the
    ``pools`` artifact; the gateway routes each sample to the tier of its nearest centroid.
    """

    enabled: bool = Field(default=False, description="Route each sample to a tier by difficulty.")
    mode: DimeeMode = Field(default="fixed", description=DIMEE_MODE_DESCRIPTION)
    lambda_mobile: float = Field(default=0.1, ge=0, description="Per-layer cost on mobile.")
    lambda_edge: float = Field(default=0.05, ge=0, description="Per-layer cost on the edge.")
    offload_edge: float = Field(default=0.1, ge=0, description="Offload cost mobile -> edge.")
    offload_cloud: float = Field(default=0.3, ge=0, description="Offload cost mobile -> cloud.")
    cloud_charge: float = Field(default=0.1, ge=0, description="Per-sample cloud charge (gamma).")
    mobile_layers: int = Field(
        default=2, ge=1, le=1023, description="m: layers served on the mobile (local) tier."
    )
    edge_layers: int = Field(
        default=4, ge=2, le=1023, description="n > m: layers served on the edge tier."
    )
    pools: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=r"^/?[A-Za-z0-9_][A-Za-z0-9_./-]*\.json$",
        description=(
            "The pools artifact (dimee-pools.json written by braid dimee export) as the "
            "gateway sees it, e.g. a file in its model repository mount: a .json path with "
            "no '..' segment; the gateway reads at most a bounded size."
        ),
    )
    pools_artifact: ArtifactRef | None = Field(
        default=None,
        description=(
            "The pools artifact by URI (s3://, gs:// or https://), as a cluster delivers it: "
            "the archive dimee-pools.tar that braid dimee export writes (dimee-pools.json and "
            "the word-embedding table it names; format is not read). The operator renders it "
            "into the gateway's fetch plan (ConfigMap braid-gateway-plan-<policy>); the "
            "gateway's init container fetches it and checks sha256 before the gateway starts."
        ),
    )
    prior_count: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="adaptive: how many samples a validation pool counts as in the running mean.",
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.edgeLayers > self.mobileLayers",
                    "edgeLayers must be greater than mobileLayers",
                    ".edgeLayers",
                ),
                cel(
                    "!self.enabled || has(self.pools) || has(self.poolsArtifact)",
                    "an enabled DIMEE routing needs its pools artifact (pools or poolsArtifact)",
                    ".pools",
                ),
                cel(
                    "!has(self.pools) || !has(self.poolsArtifact)",
                    "set one of pools (a file the gateway reads) or poolsArtifact (a URI it "
                    "fetches), not both",
                    ".poolsArtifact",
                ),
                cel(
                    "!has(self.pools) || !self.pools.matches('(^|/)\\\\.\\\\.(/|$)')",
                    "pools must not contain a '..' path segment",
                    ".pools",
                    "'pools ' + self.pools + ' has a \\'..\\' path segment'",
                ),
            ]
        }
    }


class Hysteresis(ApiModel):
    # A margin of 1 asks a new path to cost nothing. Below it, a path that stays cheaper for
    # the dwell time still takes over (the controller's CheaperForDwell); with no dwell only
    # the margin applies, and a large one would hold the first path whatever the load.
    cost_margin: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="A new path must be this fraction cheaper than the active one to take over "
        "at once; above 0.5 it needs minDwellSeconds > 0, or the active path could freeze.",
    )
    min_dwell_seconds: int = Field(
        default=30, ge=0, le=86400, description="Least time a decision holds before the next."
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.costMargin <= 0.5 || self.minDwellSeconds > 0",
                    "a costMargin above 0.5 with minDwellSeconds 0 freezes the active path: "
                    "set minDwellSeconds > 0 (a path cheaper for that long takes over) or a "
                    "smaller margin",
                    ".costMargin",
                )
            ]
        }
    }


class HostRef(ApiModel):
    namespace: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Host provider's namespace."
    )
    model: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_1035_LABEL,
        description="Host model; empty allows all of them.",
    )


class OffloadPolicySpec(ApiModel):
    """Desired behaviour for one local model."""

    model_ref: ObjectRef = Field(description="The local provider's Model.")
    cost: CostCoefficients = Field(
        default_factory=CostCoefficients, description="Coefficients of the CoDE cost F(p)."
    )
    latency_bound_microseconds: int = Field(
        ge=1, le=60_000_000, description="L_T: the end-to-end latency bound of a path, µs."
    )
    allowed_hosts: list[HostRef] = Field(
        default_factory=list, max_length=32, description="Providers this model may offload to."
    )
    candidate_paths: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Path ids from the catalog; empty together with allPaths=true means all.",
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": 253,
                "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]*$",
            },
            "x-kubernetes-list-type": "set",
        },
    )
    all_paths: bool = Field(default=False, description="Consider every path of the catalog.")
    early_exits: list[ExitThreshold] = Field(
        default_factory=list,
        max_length=64,
        description="Exit thresholds per block; one rule per block, on a block with an exit head.",
        # Keyed by block: two rules for one block are refused as a duplicate, not resolved by
        # whichever the router reads last.
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["block"],
        },
    )
    dimee: Dimee | None = Field(default=None, description="Per-sample tier routing.")
    hysteresis: Hysteresis = Field(
        default_factory=Hysteresis, description="Damping so the active path does not flap."
    )

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "(has(self.allPaths) && self.allPaths) != "
                    "(has(self.candidatePaths) && size(self.candidatePaths) > 0)",
                    "set exactly one of allPaths=true or a non-empty candidatePaths",
                    ".candidatePaths",
                ),
                cel(
                    "!has(self.modelRef.__namespace__) || !has(self.allowedHosts) "
                    "|| self.allowedHosts.all(h, h.namespace != self.modelRef.__namespace__)",
                    "allowedHosts names other providers' namespaces, not the policy's model's own",
                    ".allowedHosts",
                ),
            ]
        }
    }


class ActivePath(ApiModel):
    id: str = Field(description="Path id from the catalog.")
    weight: float = Field(ge=0, le=1, description="Share of traffic.")


InfeasibleReason = Literal["OverLatencyBound", "TierSaturated", "HostNotAllowed", "MetricsMissing"]
INFEASIBLE_REASON_DESCRIPTION = (
    "Why the path may not be chosen. OverLatencyBound: its modelled latency exceeds L_T; "
    "TierSaturated: a tier it runs on is busy at or beyond its capacity without this model's "
    "traffic; HostNotAllowed: its host model is not in spec.allowedHosts; MetricsMissing: a "
    "tier it runs on reports no metrics, so it has no cost."
)


class CostTerms(ApiModel):
    """The six terms of CoDE eq. 1 for one path, as the controller priced them this round.

    The compute terms are ``c x priceFactor x T``: the tier's price rises with its load (see
    ``status.load``) and ``T`` is the path's time there, stretched by queueing.
    """

    accuracy: float = Field(description="e^{a(L_A - A_p)}: the accuracy lost against L_A.")
    communication: float = Field(description="b T_cm: time spent crossing between tiers.")
    local_compute: float = Field(description="c_l T_cp_l on the local tier, at its load.")
    host_compute: float = Field(description="c_h T_cp_h on the host tier, at its load.")
    local_params: float = Field(description="d_l C_l: local parameters, millions.")
    host_params: float = Field(description="d_h C_h: host parameters, millions.")


class TierStretch(ApiModel):
    """How much longer than its catalog (idle) time a path runs on each tier this round."""

    local: float | None = Field(default=None, description="Loaded / idle local compute time.")
    host: float | None = Field(default=None, description="Loaded / idle host compute time.")


class TierLoad(ApiModel):
    """One tier as the controller measured it (smoothed) and priced it this round."""

    tier: str = Field(description="local or host.")
    utilisation: float = Field(description="rho: busy executions / capacity (smoothed).")
    price_factor: float = Field(
        description="1 / (1 - rho), rho clipped at 0.95: the factor on c_l (c_h) this round."
    )


class PathCost(ApiModel):
    id: str
    cost: float | None = Field(
        default=None, description="F(p), 4 significant digits; absent without metrics."
    )
    feasible: bool = Field(description="May be chosen: meets L_T, tiers not saturated, allowed.")
    reason: InfeasibleReason | None = Field(default=None, description=INFEASIBLE_REASON_DESCRIPTION)
    message: str | None = Field(default=None, description="The figures behind reason.")
    latency_microseconds: float | None = Field(
        default=None, description="Modelled T_cp_l + T_cp_h + T_cm under the measured load."
    )
    stretch: TierStretch | None = Field(
        default=None, description="Queueing stretch of the path's compute per tier (M/D/1)."
    )
    terms: CostTerms | None = Field(default=None, description="The terms F(p) sums.")


class OffloadPolicyStatus(ApiModel):
    observed_generation: int | None = None
    active_path: str | None = Field(default=None, description="Path with the largest weight.")
    active_paths: list[ActivePath] = Field(default_factory=list)
    cost: float | None = Field(default=None, description="F(p) of the active path.")
    runner_up: str | None = Field(
        default=None, description="The cheapest feasible candidate besides the active path."
    )
    margin: float | None = Field(
        default=None,
        description=(
            "(F(runner-up) - F(active)) / F(active): how much dearer the runner-up is; "
            "negative while hysteresis holds a dearer active path."
        ),
    )
    load: list[TierLoad] = Field(
        default_factory=list, max_length=8, description="Per tier: the load F(p) was priced at."
    )
    costs: list[PathCost] = Field(default_factory=list, description="F(p) of every candidate.")
    candidate_paths: int | None = Field(
        default=None, description="Catalog paths this policy may route to and can serve now."
    )
    routing_config_map: str | None = Field(
        default=None, description="ConfigMap the gateway reads its routing table from."
    )
    last_decision_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class OffloadPolicy(ApiModel):
    api_version: str = "braid.dev/v1alpha1"
    kind: Literal["OffloadPolicy"] = "OffloadPolicy"
    spec: OffloadPolicySpec
