"""Per-kind facts the CRDs are generated from: names, short names, printer columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from braid.api.common import cel
from braid.api.v1alpha1.block import BlockSpec, BlockStatus
from braid.api.v1alpha1.link import LinkSpec, LinkStatus
from braid.api.v1alpha1.model import ModelSpec, ModelStatus
from braid.api.v1alpha1.offloadpolicy import OffloadPolicySpec, OffloadPolicyStatus

_READY: dict[str, str | int] = {
    "name": "Ready",
    "type": "string",
    "jsonPath": ".status.conditions[?(@.type=='Ready')].status",
}
_REASON: dict[str, str | int] = {
    "name": "Reason",
    "type": "string",
    "jsonPath": ".status.conditions[?(@.type=='Ready')].reason",
}
_MESSAGE: dict[str, str | int] = {
    "name": "Message",
    "type": "string",
    "priority": 1,
    "jsonPath": ".status.conditions[?(@.type=='Ready')].message",
}
"""Shown with ``-o wide``: why a Block does not serve (an image, an artifact, a crash)."""
_AGE: dict[str, str | int] = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
}

_DNS_1035 = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _name_rule(pattern: str, longest: int, why: str) -> dict[str, Any]:
    """A rule on ``metadata.name`` (the only metadata CEL may read), naming the bad name."""
    return cel(
        f"self.metadata.name.matches('{pattern}') && size(self.metadata.name) <= {longest}",
        f"metadata.name must match {pattern} and have at most {longest} characters: {why}",
        ".metadata.name",
        f"'metadata.name ' + self.metadata.name + ' must match {pattern} and have at most "
        f"{longest} characters: {why}'",
    )


# A Link's name is its Triton model's name; a block model is "<model>.<block>" and an exit
# head "<model>.exit.<n>", so a Link of either shape could replace a host's own model in
# Triton and in the gateway's endpoint map. Link names have at least two dots
# ("<host>.xin.<local>.<...>", "<model>.skip.<lout>-<lin>...") or none.
_LINK_NAME_RULES = (
    _name_rule("^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$", 200, "it is the Triton model name of the link"),
    cel(
        "!self.metadata.name.matches('^[^.]+[.][^.]+$') "
        "&& !self.metadata.name.matches('^[^.]+[.]exit[.][0-9]+$')",
        "metadata.name must not have the shape of a block model (<model>.<block>) or an exit "
        "head (<model>.exit.<n>): those names belong to the models' own Triton models",
        ".metadata.name",
        "'metadata.name ' + self.metadata.name + ' has the shape of a block model "
        "(<model>.<block>) or an exit head (<model>.exit.<n>), which name the Triton models"
        " of the Models themselves'",
    ),
)


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[dict[str, str | int], ...] = field(default_factory=tuple)
    name_max_length: int = 253
    """The longest name; also bounds the cost the API server estimates for the name rules."""
    name_rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """CEL rules on the object's name: what derived objects (Deployments, Services, label
    values, Triton model names) need of it, refused when the resource is created."""


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="Model",
        plural="models",
        short_names=("bmodel", "bm"),
        spec=ModelSpec,
        status=ModelStatus,
        description="A provider's frozen DNN, cut into blocks; publishes shapes, never weights.",
        name_max_length=63,
        name_rules=(_name_rule(_DNS_1035, 63, "it is a label value and a Triton model prefix"),),
        columns=(
            _READY,
            {"name": "Tier", "type": "string", "jsonPath": ".spec.homeTier"},
            {"name": "Blocks", "type": "integer", "jsonPath": ".status.blocks"},
            {"name": "Paths", "type": "integer", "jsonPath": ".status.paths"},
            {"name": "Accuracy", "type": "number", "jsonPath": ".spec.baselineAccuracy"},
            _AGE,
        ),
    ),
    KindInfo(
        kind="Block",
        plural="blocks",
        short_names=("bblock", "bb"),
        spec=BlockSpec,
        status=BlockStatus,
        description="One deployable segment of a Model, served by Triton on a tier's node pool.",
        name_max_length=56,
        name_rules=(
            _name_rule(_DNS_1035, 56, "it names the Deployment and Service triton-<name>"),
        ),
        columns=(
            _READY,
            _REASON,
            {"name": "Model", "type": "string", "jsonPath": ".spec.modelRef.name"},
            {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
            {"name": "First", "type": "integer", "jsonPath": ".spec.partitions.first"},
            {"name": "Last", "type": "integer", "jsonPath": ".spec.partitions.last"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Available", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "GPU", "type": "integer", "jsonPath": ".spec.resources.gpu"},
            _AGE,
            _MESSAGE,
        ),
    ),
    KindInfo(
        kind="Link",
        plural="links",
        short_names=("blink", "bl"),
        spec=LinkSpec,
        status=LinkStatus,
        description="A learnable link between blocks: a skip link or one half of a cross-connection.",
        name_max_length=200,
        name_rules=_LINK_NAME_RULES,
        columns=(
            _READY,
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "From", "type": "string", "jsonPath": ".spec.from.model.name"},
            {"name": "Out", "type": "integer", "jsonPath": ".spec.from.block"},
            {"name": "To", "type": "string", "jsonPath": ".spec.to.model.name"},
            {"name": "In", "type": "integer", "jsonPath": ".spec.to.block"},
            {"name": "Reduction", "type": "integer", "jsonPath": ".spec.architecture.reduction"},
            _AGE,
        ),
    ),
    KindInfo(
        kind="OffloadPolicy",
        plural="offloadpolicies",
        short_names=("opol", "op"),
        spec=OffloadPolicySpec,
        status=OffloadPolicyStatus,
        description="How one local model trades accuracy for time across paths (CoDE, DIMEE).",
        name_max_length=63,
        name_rules=(
            _name_rule(_DNS_1035, 63, "it is a label value and names the routing ConfigMap"),
        ),
        columns=(
            _READY,
            {"name": "Model", "type": "string", "jsonPath": ".spec.modelRef.name"},
            {"name": "Active-Path", "type": "string", "jsonPath": ".status.activePath"},
            # F(p) as the status stores it: 4 significant digits, not a float's 16.
            {"name": "F", "type": "number", "jsonPath": ".status.cost"},
            {"name": "Runner-Up", "type": "string", "jsonPath": ".status.runnerUp"},
            {"name": "Margin", "type": "number", "jsonPath": ".status.margin", "priority": 1},
            {
                "name": "Paths",
                "type": "integer",
                "jsonPath": ".status.candidatePaths",
                "priority": 1,
            },
            {
                "name": "L_T-us",
                "type": "integer",
                "jsonPath": ".spec.latencyBoundMicroseconds",
                "priority": 1,
            },
            _AGE,
        ),
    ),
)
