"""The ``braid.dev/v1alpha1`` custom resources: Model, Block, Link, OffloadPolicy."""

from braid.api.v1alpha1.block import Block, BlockSpec
from braid.api.v1alpha1.link import Link, LinkSpec
from braid.api.v1alpha1.model import Model, ModelSpec
from braid.api.v1alpha1.offloadpolicy import OffloadPolicy, OffloadPolicySpec
from braid.api.v1alpha1.registry import KINDS, KindInfo

__all__ = [
    "KINDS",
    "Block",
    "BlockSpec",
    "KindInfo",
    "Link",
    "LinkSpec",
    "Model",
    "ModelSpec",
    "OffloadPolicy",
    "OffloadPolicySpec",
]
