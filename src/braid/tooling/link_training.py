"""Training one link, pair of cross links or exit head of a path, with every block frozen.

``braid.tooling.build`` decides which units need training (the rest come from its cache) and
caches the block outputs they all start from; this module trains one unit from those, in the
two stages ``braid.tooling.train`` describes (feature mimicry, then task fine-tuning with
distillation from the original local model).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from braid.tooling import train as training
from braid.tooling.links import make_exit_head, make_link
from braid.tooling.paths import LinkPlan, PathPlan
from braid.tooling.split import Block


@dataclass(frozen=True)
class LinkTraining:
    """What every unit of one build is trained from; the same for all of them."""

    config: training.TrainConfig
    distillation: training.Distillation
    local_blocks: Sequence[Block]
    host_blocks: Sequence[Block]
    local_outputs: Sequence[torch.Tensor]
    """Output of every local block on the training subset (block ``i`` at index ``i``)."""
    host_outputs: Sequence[torch.Tensor]
    """The same for the host's blocks before the latest cross entry (``hin``); empty when no
    cross path entering after block 0 is trained."""
    labels: torch.Tensor
    teacher: torch.Tensor
    """The original local model's logits on the training subset."""
    finetune_samples: int
    """Stage 2 uses the first this many samples of the training subset."""
    on_step: Callable[[], None]

    def steps(self, plan: PathPlan) -> int:
        """Optimiser steps that training ``plan``'s unit takes (for the progress bar)."""
        config = self.config
        batches = -(-len(self.labels) // config.batch_size)
        mimic = config.mimic_epochs * batches * (2 if plan.kind == "cross" else 1)
        if plan.kind == "exit":
            return mimic + config.exit_epochs * batches
        return mimic + config.finetune_epochs * -(-self.finetune_samples // config.batch_size)


def fresh_module(link: LinkPlan, seed: int) -> nn.Module:
    """An untrained link or exit head, initialised from a seed of its own name."""
    torch.manual_seed(_seed_of(link.name, seed))
    if link.kind == "exit":
        return make_exit_head(link.in_shape, link.out_shape[0])
    return make_link(link.in_shape, link.out_shape, link.size)


def _seed_of(name: str, seed: int) -> int:
    return (int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) + seed) % (2**31)


def train_unit(
    plan: PathPlan, modules: Sequence[nn.Module], context: LinkTraining, seed: int
) -> None:
    """Train ``modules``, the links (or exit head) of ``plan``, in place."""
    if plan.kind == "skip":
        _train_skip(plan, modules[0], context, seed)
    elif plan.kind == "exit":
        _train_exit(plan, modules[0], context, seed)
    else:
        _train_cross(plan, modules, context, seed)


def _train_exit(plan: PathPlan, head: nn.Module, context: LinkTraining, seed: int) -> None:
    block = plan.exit_after
    assert block is not None
    features = context.local_outputs[block]
    config = context.config

    def forward(idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = head(features[idx])
        return out

    training.finetune(
        [head],
        forward,
        context.labels,
        context.teacher,
        distillation=context.distillation,
        epochs=config.exit_epochs,
        batch_size=config.batch_size,
        lr=config.link_lr,
        seed=seed,
        on_step=context.on_step,
    )


def _train_skip(plan: PathPlan, link: nn.Module, context: LinkTraining, seed: int) -> None:
    lout, lin = plan.lout, plan.lin
    assert lout is not None
    assert lin is not None
    src, target = context.local_outputs[lout], context.local_outputs[lin - 1]
    _mimic(link, lambda idx: src[idx], target, context, seed)
    tail = [b.module for b in context.local_blocks[lin:]]
    _finetune([link], lambda idx: training.run_modules(tail, link(src[idx])), context, seed)


def _train_cross(
    plan: PathPlan, pair: Sequence[nn.Module], context: LinkTraining, seed: int
) -> None:
    lout, hin, hout, lin = plan.lout, plan.hin, plan.hout, plan.lin
    assert lout is not None
    assert hin is not None
    assert hout is not None
    assert lin is not None
    entry, exit_ = pair
    src = context.local_outputs[lout]
    # The entry link learns to hand the host what the host's own first blocks would have
    # computed on the same image; the host blocks then see the kind of features they know.
    host_target = context.host_outputs[hin - 1] if hin > 0 else None
    if host_target is not None:
        _mimic(entry, lambda idx: src[idx], host_target, context, seed)
    host_mods = [b.module for b in context.host_blocks[hin : hout + 1]]
    with torch.no_grad():
        mid = training.run_batched(lambda x: training.run_modules(host_mods, entry(x)), src)
    target = context.local_outputs[lin - 1]
    _mimic(exit_, lambda idx: mid[idx], target, context, seed + 7)
    tail = [b.module for b in context.local_blocks[lin:]]
    _finetune(
        [entry, exit_],
        lambda idx: training.run_modules(
            tail, exit_(training.run_modules(host_mods, entry(src[idx])))
        ),
        context,
        seed,
    )


def _mimic(
    trainable: nn.Module,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    context: LinkTraining,
    seed: int,
) -> None:
    """Stage 1 of a link: reproduce ``target`` (cached features) from ``inputs``."""
    config = context.config
    training.mimic(
        trainable,
        inputs,
        lambda idx: target[idx],
        len(context.labels),
        epochs=config.mimic_epochs,
        batch_size=config.batch_size,
        lr=config.link_lr,
        seed=seed,
        on_step=context.on_step,
    )


def _finetune(
    trainables: Sequence[nn.Module],
    forward: Callable[[torch.Tensor], torch.Tensor],
    context: LinkTraining,
    seed: int,
) -> None:
    """Stage 2 of a link: on the first ``finetune_samples``, at a third of the link rate."""
    config = context.config
    samples = context.finetune_samples
    training.finetune(
        trainables,
        forward,
        context.labels[:samples],
        context.teacher[:samples],
        distillation=context.distillation,
        epochs=config.finetune_epochs,
        batch_size=config.batch_size,
        lr=config.link_lr / 3,
        seed=seed,
        on_step=context.on_step,
    )
