"""Training loops: the local model once, then links and exit heads with every block frozen.

Links are trained in two stages (the survey's head-network distillation, then its eq. 3):

1. *Feature mimicry*: the link learns to reproduce the tensor that the skipped part of the
   path would have produced (for a skip link, the input of block ``lin``; for a cross entry
   link, the host's own features of the same image at ``hin``; for a cross exit link, the
   input of local block ``lin``). This needs only cached block outputs, so it is cheap.
2. *Task fine-tuning*: cross-entropy plus knowledge distillation from the original local
   model's logits, back-propagated through the frozen downstream blocks into the links only
   (back-propagation stops at the entry link, as in CoDE).

Blocks are frozen, so their outputs on the training subset are computed once and cached in
memory; every link starts from the cached output of its ``lout`` block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from braid.tooling.split import Block

ProgressFn = Callable[[], None]


@dataclass(frozen=True)
class TrainConfig:
    """How the build trains the local model, its links and exit heads (part of its hash)."""

    local_epochs: int = 6
    local_samples: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    link_samples: int = 15000
    mimic_epochs: int = 3
    finetune_epochs: int = 2
    finetune_samples: int = 10000
    link_lr: float = 3e-3
    exit_epochs: int = 3
    kd_alpha: float = 0.5
    kd_tau: float = 4.0
    seed: int = 0


@dataclass(frozen=True)
class Distillation:
    """Survey eq. 3: ``alpha * CE + (1 - alpha) * tau^2 * KL(teacher || student)``."""

    alpha: float = 0.5
    tau: float = 4.0

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        if self.alpha >= 1.0:
            return ce
        kl = F.kl_div(
            F.log_softmax(logits / self.tau, dim=1),
            F.log_softmax(teacher / self.tau, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return self.alpha * ce + (1.0 - self.alpha) * self.tau**2 * kl


def _backward(loss: torch.Tensor) -> None:
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _cosine(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=max(1, total_steps),
        pct_start=0.15,
    )


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_step: ProgressFn | None = None,
    augment: bool = True,
) -> None:
    """Train the local model end to end (Adam, one-cycle schedule, light augmentation).

    The augmentation (random horizontal flips and 2-pixel shifts) is cheap on CPU and worth
    about a point of test accuracy on Fashion-MNIST at a handful of epochs.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * math.ceil(len(labels) / batch_size)
    sched = _cosine(opt, steps)
    model.train()
    for _ in range(epochs):
        for idx in batches(len(labels), batch_size, gen):
            x = _augment(images[idx], gen) if augment else images[idx]
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            _backward(loss)
            opt.step()
            sched.step()
            if on_step:
                on_step()
    model.eval()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def mimic(
    trainable: nn.Module,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    targets: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_step: ProgressFn | None = None,
) -> None:
    """Stage 1: fit ``trainable(inputs[idx])`` to ``targets[idx]`` (MSE, per-batch scaled)."""
    if epochs <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in trainable.parameters() if p.requires_grad], lr=lr)
    sched = _cosine(opt, epochs * math.ceil(n / batch_size))
    trainable.train()
    for _ in range(epochs):
        for idx in batches(n, batch_size, gen):
            target = targets(idx)
            # Scale by the target's energy so deep, large-valued features and shallow ones
            # train at the same pace under one learning rate.
            loss = F.mse_loss(trainable(inputs(idx)), target) / (target.pow(2).mean() + 1e-6)
            opt.zero_grad(set_to_none=True)
            _backward(loss)
            opt.step()
            sched.step()
            if on_step:
                on_step()
    trainable.eval()


def finetune(
    trainables: Sequence[nn.Module],
    forward: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    teacher: torch.Tensor,
    *,
    distillation: Distillation,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_step: ProgressFn | None = None,
) -> None:
    """Stage 2: CE + KD through the frozen rest of the path; only ``trainables`` learn.

    ``forward(idx)`` runs the whole path from the cached entry features of samples ``idx``.
    """
    if epochs <= 0:
        return
    params = [p for m in trainables for p in m.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    n = len(labels)
    sched = _cosine(opt, epochs * math.ceil(n / batch_size))
    for m in trainables:
        m.train()
    for _ in range(epochs):
        for idx in batches(n, batch_size, gen):
            loss = distillation.loss(forward(idx), labels[idx], teacher[idx])
            opt.zero_grad(set_to_none=True)
            _backward(loss)
            opt.step()
            sched.step()
            if on_step:
                on_step()
    for m in trainables:
        m.eval()


def run_modules(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``modules`` one after the other."""
    for module in modules:
        x = module(x)
    return x


def block_outputs(
    blocks: Sequence[Block], images: torch.Tensor, upto: int | None = None
) -> list[torch.Tensor]:
    """Outputs of blocks 0..upto (default all) on ``images``, computed once."""
    outs: list[torch.Tensor] = []
    x = images
    last = len(blocks) - 1 if upto is None else upto
    for block in blocks[: last + 1]:
        x = run_batched(block.module, x)
        outs.append(x)
    return outs


@torch.no_grad()
def run_batched(
    module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """``module(x)`` in batches without gradients (for caching features and evaluating)."""
    outs = [module(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs)
